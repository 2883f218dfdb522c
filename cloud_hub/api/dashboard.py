"""The dashboard: one static page, a vanilla JS module and a stylesheet, served by the
hub from ``cloud_hub/api/static`` (package data). Nothing is built and nothing comes from
another origin: the page draws its charts as inline SVG from the JSON API and follows
``/v1/live/events`` with ``EventSource``.

The files hold no data, so they are served without a key; the page asks for a ``read``
key, keeps it in ``sessionStorage`` (this tab only) and sends it as ``X-API-Key``. The
live stream is opened with the ``HttpOnly`` cookie ``POST /v1/live/token`` sets, so
neither the key nor a token goes in a URL. See docs/hub.md (Dashboard).
"""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import RedirectResponse, Response

_FILES = {
    "index.html": "text/html; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}
# Same origin only: no CDN, no inline script, no framing. The SVG charts use
# presentation attributes, not inline styles.
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


def _read(name: str) -> bytes:
    return resources.files("cloud_hub.api").joinpath("static", name).read_bytes()


def _serve(name: str) -> Response:
    return Response(_read(name), media_type=_FILES[name], headers=_HEADERS)


@router.get("/dashboard")
async def dashboard() -> Response:
    """The page."""
    return _serve("index.html")


@router.get("/dashboard/")
async def dashboard_slash() -> RedirectResponse:
    """``/dashboard/`` -> ``/dashboard``."""
    return RedirectResponse("/dashboard", status_code=308)


@router.get("/dashboard/dashboard.js")
async def dashboard_js() -> Response:
    """The page's script (an ES module)."""
    return _serve("dashboard.js")


@router.get("/dashboard/dashboard.css")
async def dashboard_css() -> Response:
    """The page's stylesheet."""
    return _serve("dashboard.css")
