"""What `python -m app` serves: the Streamlit lab (``main.py``) behind ``app.guard.LabGuard``,
which refuses requests for foreign hosts (DNS rebinding) and gives each browser its owner cookie.

`streamlit run app/serve.py` finds ``app`` below and serves it; `streamlit run app/main.py` still
works, without the middleware (main.py then checks Host and Origin itself before any page runs).
"""

import pathlib
import sys

import streamlit as st
from starlette.middleware import Middleware

_ROOT = str(pathlib.Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:  # this file is imported as `serve`, from app/
    sys.path.insert(0, _ROOT)

from app.deep_links import routes  # noqa: E402
from app.guard import LabGuard  # noqa: E402

# routes(): deep links open without two 404s (app/deep_links.py)
app = st.App("main.py", middleware=[Middleware(LabGuard)], routes=routes())
