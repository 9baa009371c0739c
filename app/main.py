"""GCE Lab, the Streamlit entrypoint: page setup, the password gate, the navigation.

Start it with `python -m app` (worker and server together) or `make run`.
"""

from __future__ import annotations

import math
import pathlib
import sys

# `streamlit run app/main.py` puts app/ on sys.path, not the project root that holds `app`.
_ROOT = str(pathlib.Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import streamlit as st  # noqa: E402

from app import auth, guard, ui  # noqa: E402
from app.settings import public_hosts  # noqa: E402
from app.url_state import get_bool  # noqa: E402

# A local file: a Material icon as the page icon makes the browser fetch it from fonts.gstatic.com.
FAVICON = str(pathlib.Path(__file__).resolve().parent / "assets" / "favicon.png")
st.set_page_config(page_title="GCE Lab", page_icon=FAVICON, layout="wide")


def bind_guard(password: str | None) -> None:
    """Refuse to serve a page when the server listens beyond loopback without a password (for a
    `streamlit run` started by hand; `python -m app` refuses before starting)."""
    address = st.get_option("server.address") or "0.0.0.0"
    try:
        auth.check_bind(address, password)
    except auth.BindRefused as exc:
        st.error(str(exc))
        st.stop()


def host_guard() -> None:
    """Refuse to run a page for a websocket whose Host or Origin is not the lab (DNS rebinding),
    for a `streamlit run app/main.py` started by hand; `python -m app` serves app/serve.py, whose
    middleware refuses such requests before Streamlit sees them."""
    headers = st.context.headers
    if "Host" not in headers:
        return  # not a browser's connection (AppTest)
    rules = guard.HostRules(st.get_option("server.address") or "", public_hosts())
    reason = rules.refusal(headers.get("Host"), headers.get("Origin"))
    if reason:
        st.error(reason)
        st.stop()


def password_gate(password: str | None) -> None:
    """With a password configured, nothing below runs until this session has entered it.
    Wrong passwords are counted per client address and over the lab (``auth.THROTTLE``)."""
    if not password or st.session_state.get("main_auth_ok"):
        return
    st.title("GCE Lab")
    with st.form("main_login"):
        given = st.text_input("Password", type="password", key="main_password")
        submitted = st.form_submit_button("Enter", type="primary")
    if submitted:
        attempt = auth.THROTTLE.attempt(auth.client_address(), given, password)
        if attempt.ok:
            st.session_state["main_auth_ok"] = True
            st.session_state.pop("main_password", None)
            st.rerun()
        st.error(attempt.message())
        if attempt.checked and attempt.wait > 0:
            st.caption(f"{attempt.failures} wrong passwords in a row from your address: the next try is heard in {math.ceil(attempt.wait)} s.")
    st.stop()


cfg = ui.settings()
host_guard()
bind_guard(cfg.password)
password_gate(cfg.password)

if "main_teaching_seeded" not in st.session_state:
    st.session_state["main_teaching_seeded"] = True
    st.session_state[ui.TEACH_KEY] = get_bool(st.query_params, "teach") or cfg.teaching

teaching_first = ui.teaching()  # in teaching mode the guided lesson is the first screen
pages = [
    st.Page("views/lesson.py", title="Lesson", icon=":material/school:", default=teaching_first),
    st.Page("views/launch.py", title="Launch", icon=":material/rocket_launch:", default=not teaching_first),
    st.Page("views/runs.py", title="Runs", icon=":material/monitoring:"),
    st.Page("views/compare.py", title="Compare", icon=":material/stacked_line_chart:"),
    st.Page("views/sweep.py", title="Sweep", icon=":material/show_chart:"),
    st.Page("views/paper_table.py", title="Paper table", icon=":material/table_chart:"),
    st.Page("views/theory.py", title="Theory", icon=":material/functions:"),
    st.Page("views/insight.py", title="Noise insight", icon=":material/insights:"),
]
page = st.navigation(pages)

with st.sidebar:
    st.toggle(
        "Teaching mode", key=ui.TEACH_KEY, disabled=cfg.teaching,
        help="Hides advanced controls (optimiser, schedule, admin actions). Shared links keep it (teach=1).",
    )
    st.caption("GCE: Zhang & Sabuncu, *Generalized Cross Entropy Loss for Training Deep Neural Networks with Noisy Labels*, NeurIPS 2018.")

ui.mark_page(page.url_path)
page.run()
