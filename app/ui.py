"""Streamlit helpers shared by the pages: the cached store client, page-entry state seeding from
the URL, the teaching flag, run pickers and safe text. Pages stay short by leaning on these.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import streamlit as st

from app.settings import LabSettings, load_settings
from jobs.client import LabClient

PAGE_KEY = "_lab_page"  # url path of the page shown in the previous run
ENTERED_KEY = "_lab_entered"  # True during the first run of a page after navigating to it
TEACH_KEY = "main_teaching"


@st.cache_resource(show_spinner=False)
def _client(store_key: str) -> LabClient:
    # One client (and connection pool) per store, shared by all sessions of this server.
    del store_key  # only the cache key: LabClient reads $GCE_LAB_DB_URL / $GCE_LAB_HOME itself
    return LabClient()


def settings() -> LabSettings:
    return load_settings()


def client() -> LabClient:
    return _client(settings().store_key)


# --- page state ------------------------------------------------------------------------------
def mark_page(url_path: str) -> None:
    """Called by main.py before running a page: remembers whether this run enters it."""
    st.session_state[ENTERED_KEY] = st.session_state.get(PAGE_KEY) != url_path
    st.session_state[PAGE_KEY] = url_path


def entered() -> bool:
    """True on the first run of a page after arriving at it (new session or navigation)."""
    return bool(st.session_state.get(ENTERED_KEY, True))


def seed(values: Mapping[str, Any], *, force: bool = False) -> None:
    """Put widget values into session state before the widgets are created. With ``force``,
    replace what is there (on page entry, the URL wins)."""
    for key, value in values.items():
        if force or key not in st.session_state:
            st.session_state[key] = value


def saved(page: str) -> dict[str, Any]:
    """The query parameters this page wrote last in this session (restored on re-entry)."""
    return dict(st.session_state.get(f"_saved_{page}", {}))


def page_params(page: str, keys: Sequence[str]) -> dict[str, Any]:
    """The parameters to read on entry: the URL's if it has any of this page's ``keys``, else
    the ones this session saved when it last left the page."""
    current = {k: v for k, v in st.query_params.to_dict().items() if k in keys}
    return current or saved(page)


def write_url(page: str, params: Mapping[str, str]) -> None:
    """Make the browser URL hold exactly ``params`` (and the teaching flag), and remember them."""
    out = {k: str(v) for k, v in params.items() if v not in (None, "")}
    st.session_state[f"_saved_{page}"] = dict(out)
    if teaching():
        out["teach"] = "1"
    if st.query_params.to_dict() != out:
        st.query_params.from_dict(out)


def teaching() -> bool:
    return bool(st.session_state.get(TEACH_KEY, False)) or settings().teaching


# --- runs ------------------------------------------------------------------------------------
def run_label(record) -> str:
    """'#a1b2c3d4e5f6 · lq q=0.7 | uniform 0.4 | seed 0 · my name': a name never hides the
    loss, q or seed (no status: it would go stale)."""
    name = f" · {record.spec.name}" if record.spec.name else ""
    return f"#{record.id} · {record.spec.label()}{name}"


def pick_runs(
    label: str, key: str, records: Sequence, *, help: str | None = None, max_selections: int | None = None
) -> list[str]:
    """A multiselect of run ids showing '#id · label · status'; returns the chosen ids."""
    by_id = {r.id: r for r in records}
    st.session_state[key] = [i for i in st.session_state.get(key, []) if i in by_id]
    return st.multiselect(
        label, options=list(by_id), key=key, help=help, max_selections=max_selections,
        format_func=lambda i: run_label(by_id[i]) if i in by_id else f"#{i}",
        placeholder="choose runs",
    )


def pick_run(label: str, key: str, records: Sequence, *, help: str | None = None) -> str | None:
    """A selectbox of one run id; None when there is none."""
    by_id = {r.id: r for r in records}
    if st.session_state.get(key) not in by_id:
        st.session_state[key] = next(iter(by_id), None)
    return st.selectbox(
        label, options=list(by_id), key=key, help=help,
        format_func=lambda i: run_label(by_id[i]) if i in by_id else f"#{i}",
    )


_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~$])")


def md_escape(text: str) -> str:
    """User text made inert for st.markdown and friends: no links, images, HTML or formatting."""
    return _MD_SPECIAL.sub(r"\\\1", str(text))


def filter_runs(prefix: str, records: Sequence, *, exclude: Sequence[str] = (),
                total: int | None = None) -> tuple[list, dict[str, list]]:
    """Filters by any spec field, status and tag (those that vary among ``records``), in a row of
    multiselects; (the records that pass, the choices), with a caption 'showing m of n runs'
    (n: ``total`` when the list was cut short). Chosen values live in session state under
    ``prefix + 'f_' + field`` (seed them from the URL with seed_filters)."""
    from app import compare_logic as cl

    options = cl.filter_options(records)
    options = {k: v for k, v in options.items() if k not in exclude}
    if st.session_state.get(prefix + "filter_note"):
        st.info(st.session_state[prefix + "filter_note"], icon=":material/filter_alt_off:")
    with st.expander("Filters: " + ", ".join(_chosen_text(prefix, options) or ["none"]), expanded=bool(_chosen_text(prefix, options))):
        extra = [k for k in options if k not in cl.FILTER_FIELDS and k not in ("status", "tag")]
        shown = [k for k in options if k in cl.FILTER_FIELDS or k in ("status", "tag")]
        more = st.multiselect("More fields", extra, key=prefix + "f_more", placeholder="any other spec field") if extra else []
        cols = st.columns(4)
        chosen = {}
        for i, field in enumerate([*shown, *more]):
            key = prefix + "f_" + field
            st.session_state[key] = [v for v in st.session_state.get(key, []) if v in options[field]]
            chosen[field] = cols[i % 4].multiselect(field.replace("_", " "), options[field], key=key, placeholder="any")
    kept = cl.apply_filters(records, chosen)
    n = max(total or 0, len(records))
    note = "" if n == len(records) else f" (the newest {len(records)} are listed)"
    st.caption(cl.showing(len(kept), n).capitalize() + note + ".")
    return kept, {k: v for k, v in chosen.items() if v}


def _chosen_text(prefix: str, options: Mapping[str, Sequence]) -> list[str]:
    out = []
    for field in options:
        values = st.session_state.get(prefix + "f_" + field) or []
        if values:
            out.append(f"{field} = {', '.join(map(str, values))}")
    return out


def filter_params(prefix: str) -> dict[str, str]:
    """The filters chosen under ``prefix`` as URL parameters 'f.<field>=v1,v2'."""
    out = {}
    for key, values in st.session_state.items():
        if isinstance(key, str) and key.startswith(prefix + "f_") and key != prefix + "f_more" and values:
            out["f." + key[len(prefix) + 2:]] = ",".join(map(str, values))
    return out


def seed_filters(prefix: str, params: Mapping[str, Any], records: Sequence) -> None:
    """Filter choices from URL parameters 'f.<field>=v1,v2' (values matched as the options show
    them). A value every run has filters nothing and is dropped quietly; a field or value no run
    has is dropped and named in a one-line note that filter_runs shows."""
    from app import compare_logic as cl

    seen = cl.filter_options(records, varying_only=False)
    options = {k: v for k, v in seen.items() if len(v) > 1 or k == "tag"}  # what filter_options offers
    for key in [k for k in st.session_state if isinstance(k, str) and k.startswith(prefix + "f_")]:
        del st.session_state[key]
    dropped = []
    for name, text in params.items():
        field = name[2:] if name.startswith("f.") else None
        if field is None:
            continue
        by_text = {str(v): v for v in seen.get(field, [])}
        asked = [t for t in str(text).split(",") if t]
        dropped += [f"{field} = {t}" for t in asked if t not in by_text]
        if field in options:
            st.session_state[prefix + "f_" + field] = [by_text[t] for t in asked if t in by_text]
    st.session_state[prefix + "filter_note"] = (
        f"The link's filter {', '.join(dropped)} matches no run here, so it was left out." if dropped else None)


def empty_state(message: str, page: str, link_label: str) -> None:
    """An info box with a link to where the data comes from."""
    st.info(message)
    st.page_link(page, label=link_label, icon=":material/arrow_forward:")


def guarded(action: Callable[[], Any], what: str) -> Any:
    """Run a store action; on a user-facing error show it instead of a traceback."""
    try:
        return action()
    except (KeyError, ValueError) as exc:
        st.error(f"Could not {what}: {exc}")
        return None
