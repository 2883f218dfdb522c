"""The shape the code keeps so that people can carry it on (issue "A house anyone can
carry on"): modules small enough to hold in one's head, an app factory that only wires,
and every HTTP route a module-level function of its resource's router."""

from __future__ import annotations

import importlib
import inspect

from fastapi import APIRouter
from fastapi.routing import APIRoute

from cloud_hub.api.app import create_app
from cloud_hub.settings import HubSettings
from tests.paths import REPO

MAX_MODULE_LINES = 450
MAX_CREATE_APP_LINES = 80


def test_no_module_is_over_450_lines() -> None:
    sizes = {
        str(path.relative_to(REPO)): len(path.read_text(encoding="utf-8").splitlines())
        for package in ("edge_agent", "cloud_hub")
        for path in (REPO / package).rglob("*.py")
    }
    assert len(sizes) > 50
    too_long = {name: lines for name, lines in sizes.items() if lines > MAX_MODULE_LINES}
    assert not too_long, f"split these by what they do: {too_long}"


def test_create_app_only_wires() -> None:
    lines = inspect.getsource(create_app).splitlines()
    assert len(lines) < MAX_CREATE_APP_LINES, f"create_app is {len(lines)} lines"


def test_every_route_is_importable_from_its_router_module() -> None:
    """Each API route is a module-level function of a router module under cloud_hub.api,
    and the routers together are every path the app documents."""
    routed: set[str] = set()
    for path in sorted((REPO / "cloud_hub" / "api").glob("*.py")):
        module = importlib.import_module(f"cloud_hub.api.{path.stem}")
        for router in (v for v in vars(module).values() if isinstance(v, APIRouter)):
            for route in router.routes:
                assert isinstance(route, APIRoute)
                endpoint = route.endpoint
                assert getattr(module, endpoint.__name__) is endpoint, (
                    f"{route.path}: {endpoint.__qualname__} is not a module-level function"
                )
                routed.add(route.path)
    documented = set(create_app(HubSettings()).openapi()["paths"])
    assert len(documented) >= 15
    assert documented <= routed, f"routes not in a router module: {documented - routed}"
