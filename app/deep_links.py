"""Routes that let a deep link open without 404s: each page's URL answers Streamlit's own
index.html with one line added (``routes()``, which app/serve.py gives its ``st.App``).

Opened at a page's link (/compare), Streamlit's front end does not know where the server's root
is: it asks /compare/_stcore/health and /compare/_stcore/host-config first, gets two 404s (the
browser logs them as errors), then tries /. Setting ``window.__streamlit.BACKEND_BASE_URL`` to
the page's origin, before Streamlit's script runs, tells it: it asks / at once. The pages' own
URLs and everything else stay Streamlit's.

`python -m app` serves app/serve.py, which adds these routes; `streamlit run app/main.py` still
works, with the two 404s.
"""

from __future__ import annotations

import pathlib

import streamlit
from starlette.responses import HTMLResponse
from starlette.routing import Route

HERE = pathlib.Path(__file__).resolve().parent
INDEX = pathlib.Path(streamlit.__file__).resolve().parent / "static" / "index.html"
# Runs before Streamlit's bundle (a module script, deferred): the server's root is the origin.
BASE_SCRIPT = '<script>window.__streamlit = {BACKEND_BASE_URL: window.location.origin + "/"};</script>'


def page_paths() -> list[str]:
    """The URL path of every page: a page script's name (st.Page's default url_path)."""
    return sorted(p.stem for p in (HERE / "views").glob("*.py") if not p.name.startswith("_"))


def index_html() -> str:
    """Streamlit's index.html with BASE_SCRIPT first in its head."""
    html = INDEX.read_text(encoding="utf-8")
    return html.replace("<head>", "<head>" + BASE_SCRIPT, 1)


async def _index(request) -> HTMLResponse:
    return HTMLResponse(index_html(), headers={"Cache-Control": "no-cache"})


def routes() -> list[Route]:
    """GET / and /<page> for every page: Streamlit's index with BASE_SCRIPT."""
    return [Route("/", _index), *(Route(f"/{name}", _index) for name in page_paths())]
