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
    """'#a1b2c3d4e5f6 · lq q=0.7 | uniform 0.4 | seed 0' (no status: it would go stale)."""
    return f"#{record.id} · {record.spec.name or record.spec.label()}"


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
