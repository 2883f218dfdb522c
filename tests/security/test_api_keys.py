"""API keys on the hub: 401 without or with a wrong key, 403 for too small a scope."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from cloud_hub.api.auth import RequireAdmin, require_scope
from cloud_hub.security.apikeys import find_key, new_key, parse_api_keys
from tests.conftest import HubFactory, http_get


def test_keys_parse_and_match() -> None:
    read_key, read = new_key("dash", "read")
    admin_key, admin = new_key("ops", "admin")
    keys = parse_api_keys(f"{read.config_entry()}, {admin.config_entry()}\n")
    assert find_key(keys, read_key) == read
    assert find_key(keys, admin_key) == admin
    assert find_key(keys, read_key + "x") is None
    assert read_key not in read.config_entry()  # only the hash is configured
    assert parse_api_keys("") == ()


@pytest.mark.parametrize(
    "bad",
    ["nohash", "a:read:xyz", "a:root:" + "0" * 64, "a:read:" + "0" * 64 + ",a:read:" + "1" * 64],
)
def test_bad_key_config_is_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_api_keys(bad)


def test_settings_refuse_a_bad_key_entry() -> None:
    from cloud_hub.settings import HubSettings

    with pytest.raises(ValueError, match="name:scope:sha256hex"):
        HubSettings(api_keys="oops")


def test_scope_dependency_ready_for_admin_endpoints() -> None:
    read_key, read = new_key("dash", "read")
    admin_key, admin = new_key("ops", "admin")
    app = FastAPI()
    app.state.api_keys = (read, admin)

    @app.post("/admin-thing", dependencies=[RequireAdmin])
    async def admin_thing() -> dict[str, str]:
        return {"ok": "yes"}

    @app.get("/whoami")
    async def whoami(key: Any = Depends(require_scope("read"))) -> dict[str, str]:  # noqa: B008
        return {"name": key.name}

    client = TestClient(app)
    assert client.post("/admin-thing").status_code == 401
    assert client.post("/admin-thing", headers={"X-API-Key": read_key}).status_code == 403
    assert client.post("/admin-thing", headers={"X-API-Key": admin_key}).status_code == 200
    bearer = {"Authorization": f"Bearer {admin_key}"}
    assert client.get("/whoami", headers=bearer).json() == {"name": "ops"}


def test_the_running_hub_checks_keys(hub_factory: HubFactory) -> None:
    read_key, read = new_key("dashboard", "read")
    metrics_key, metrics = new_key("prometheus", "metrics")
    hub = hub_factory.start(api_keys=f"{read.config_entry()},{metrics.config_entry()}")

    def status(path: str, headers: dict[str, str] | None = None) -> int:
        code: int = http_get(hub.base_url + path, headers)[0]
        return code

    wrong = "ahk_" + "x" * 43
    for path in ("/v1/stats", "/v1/events", "/v1/devices", "/v1/cameras/d/c/recent"):
        assert status(path) == 401, path
        assert status(path, {"X-API-Key": wrong}) == 401, path
        assert status(path, {"X-API-Key": metrics_key}) == 403, path
        assert status(path, {"X-API-Key": read_key}) == 200, path
    assert status("/v1/stats", {"Authorization": f"Bearer {read_key}"}) == 200
    assert status("/v1/stats", {"Authorization": f"Bearer {wrong}"}) == 401
    _, body = http_get(hub.base_url + "/v1/stats")
    assert body == {"detail": "an API key is required"}

    assert status("/healthz") == 200  # probes need no key
    assert status("/metrics") == 401
    assert status("/metrics", {"X-API-Key": metrics_key}) == 200
    assert status("/metrics", {"X-API-Key": read_key}) == 200  # read includes metrics
    # The API docs stay open so a person can paste a key into "Authorize".
    assert status("/openapi.json") == 200


def test_metrics_can_be_left_to_the_network(hub_factory: HubFactory) -> None:
    hub = hub_factory.start(metrics_public=True)
    assert http_get(hub.base_url + "/metrics")[0] == 200
    assert http_get(hub.base_url + "/v1/stats")[0] == 401


def test_apikey_cli_prints_a_working_entry() -> None:
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "cloud_hub.cli", "apikey", "create", "--scope", "admin"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    lines = [line for line in out.splitlines() if line and not line.endswith(":")]
    key, entry = lines[0], lines[1]
    assert entry.startswith("admin-key:admin:")
    found = find_key(parse_api_keys(entry), key)
    assert found is not None and found.scope == "admin"
