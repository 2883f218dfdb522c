"""deploy/docker-compose.yml and deploy/hub.Dockerfile, checked without pulling an image.

The images cannot be pulled on the development machine, so the file is checked for what
would make it fail at `docker compose up`: every service has an image or a build, what
others wait for has a healthcheck, every HUB_* variable is a real setting and the ones
the hub needs to reach its services are set, secrets come from deploy/.env, and every
host path and Dockerfile COPY source exists. Where `docker compose` or `docker-compose`
is installed, `config -q` validates it as well (docs/hub.md).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml  # type: ignore[import-untyped]  # no types-PyYAML in the dev extras

from cloud_hub.settings import HubSettings
from tests.paths import REPO

DEPLOY = REPO / "deploy"
COMPOSE_FILE = DEPLOY / "docker-compose.yml"
DOCKERFILE = DEPLOY / "hub.Dockerfile"
ENV_EXAMPLE = DEPLOY / ".env.example"

HUB_FIELDS = {f"HUB_{name.upper()}" for name in HubSettings.model_fields}
# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}
REFERENCE = re.compile(r"\$\{(?P<name>\w+)(?P<op>:?[-?])?(?P<arg>[^}]*)\}")
# Values that are secrets: each must come from deploy/.env and be required (`:?`).
SECRETS = {
    "timescaledb": {"POSTGRES_PASSWORD"},
    "hub": {"PGPASSWORD", "HUB_MQTT_PASSWORD", "HUB_API_KEYS", "HUB_LIVE_TOKEN_SECRET"},
    "grafana": {"GF_SECURITY_ADMIN_PASSWORD"},
}
# Without these the hub would look for its services on 127.0.0.1 (the defaults), be
# unreachable from the host, or lose its broker session when the container is recreated.
HUB_NEEDS = {
    "HUB_DATABASE_URL",
    "HUB_MQTT_HOST",
    "HUB_MQTT_USERNAME",
    "HUB_MQTT_PASSWORD",
    "HUB_MQTT_CLIENT_ID",
    "HUB_REDIS_URL",
    "HUB_HTTP_HOST",
    "HUB_API_KEYS",
    "HUB_LIVE_TOKEN_SECRET",
}
DUMMY_ENV = {
    "POSTGRES_PASSWORD": "pg-secret",
    "HUB_LIVE_TOKEN_SECRET": "t" * 43,
    "GRAFANA_ADMIN_PASSWORD": "grafana-secret",
    "HUB_MQTT_USERNAME": "hub",
    "HUB_MQTT_PASSWORD": "mqtt-secret",
    "HUB_API_KEYS": "admin-key:admin:" + "0" * 64,
}


def _compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict)
    return data


def _services() -> dict[str, dict[str, Any]]:
    services = _compose()["services"]
    assert isinstance(services, dict)
    return services


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):  # the `- NAME=value` form
        env = dict(item.split("=", 1) for item in env)
    return {str(key): str(value) for key, value in env.items()}


def _interpolated(value: str) -> tuple[str, str, str] | None:
    """(name, operator, argument) when the whole value is one ${...} reference."""
    match = REFERENCE.fullmatch(value)
    return (match["name"], match["op"] or "", match["arg"]) if match else None


def _depends_on(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    deps = service.get("depends_on", {})
    if isinstance(deps, list):
        return {name: {} for name in deps}
    assert isinstance(deps, dict)
    return deps


def _bind_sources(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(host path, container path) of each bind mount (short or long syntax)."""
    binds = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            if volume.get("type") == "bind":
                binds.append((volume["source"], volume["target"]))
            continue
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/", "~")):
            binds.append((source, target))
    return binds


def _named_volumes(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> named volume."""
    named = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, str) and not volume.startswith((".", "/", "~")):
            source, target = volume.split(":")[:2]
            named[target] = source
    return named


def test_every_service_has_an_image_or_a_build_and_a_pinned_tag() -> None:
    services = _services()
    assert {"timescaledb", "mosquitto", "redis", "hub"} <= services.keys()
    for name, service in services.items():
        assert "image" in service or "build" in service, name
        image = service.get("image")
        if image is not None:
            # name:tag, the tag pinned (a ${...} default counts: it is checked at build).
            assert re.fullmatch(r"[\w./-]+:[\w.${}:-]+", image), f"{name}: {image}"
            assert "latest" not in image.rsplit(":", 1)[-1], f"{name}: {image}"
    assert re.fullmatch(
        r"timescale/timescaledb:\d+\.\d+\.\d+-pg\d+", services["timescaledb"]["image"]
    )
    assert services["mosquitto"]["image"].startswith("eclipse-mosquitto:2")
    assert services["redis"]["image"].startswith("redis:7")


def test_what_others_wait_for_has_a_healthcheck() -> None:
    services = _services()
    for name, service in services.items():
        for dependency, spec in _depends_on(service).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            # A bare `depends_on` waits for the container to start, not to be usable.
            assert spec.get("condition") == "service_healthy", f"{name} -> {dependency}"
            check = services[dependency].get("healthcheck")
            assert check and check.get("test") and not check.get("disable"), dependency
            profiles = set(services[dependency].get("profiles", []))
            assert profiles <= set(service.get("profiles", [])), (
                f"{name} would wait for {dependency}, which its profile does not start"
            )
    assert set(_depends_on(services["hub"])) == {"timescaledb", "mosquitto", "redis"}
    assert "pg_isready" in str(services["timescaledb"]["healthcheck"]["test"])
    assert "/healthz" in str(services["hub"]["healthcheck"]["test"])
    for name in ("timescaledb", "mosquitto", "redis", "hub"):
        assert not services[name].get("profiles"), f"{name} must start without a profile"


def test_hub_variables_are_real_settings_and_reach_the_services() -> None:
    services = _services()
    env = _environment(services["hub"])
    unknown = {key for key in env if key.startswith("HUB_")} - HUB_FIELDS
    assert not unknown, f"not HubSettings fields: {sorted(unknown)}"
    missing = HUB_NEEDS - env.keys()
    assert not missing, f"the hub needs {sorted(missing)}"

    database = urlsplit(env["HUB_DATABASE_URL"])
    assert database.hostname == "timescaledb" and database.hostname in services
    assert database.password is None, "the database password belongs in deploy/.env"
    assert env["HUB_MQTT_HOST"] == "mosquitto"
    assert urlsplit(env["HUB_REDIS_URL"]).hostname == "redis"
    assert env["HUB_HTTP_HOST"] == "0.0.0.0"
    client_id = _interpolated(env["HUB_MQTT_CLIENT_ID"])
    assert client_id is None or client_id[1] == ":-", "a stable default client id"

    # The literal values are valid settings (references are checked through deploy/.env).
    literal = {
        key.removeprefix("HUB_").lower(): value
        for key, value in env.items()
        if key.startswith("HUB_") and _interpolated(value) is None
    }
    HubSettings.model_validate(literal)

    # The port the hub listens on is the one published, probed and scraped.
    port = env.get("HUB_HTTP_PORT", "8000")
    assert any(str(p).endswith(f":{port}") for p in services["hub"]["ports"])
    assert f"127.0.0.1:{port}/healthz" in str(services["hub"]["healthcheck"]["test"])


def test_secrets_come_from_the_env_file_and_are_required() -> None:
    services = _services()
    for name, keys in SECRETS.items():
        env = _environment(services[name])
        for key in keys:
            reference = _interpolated(env[key])
            assert reference is not None, f"{name}: {key} is written inline"
            assert reference[1] == ":?", f"{name}: {key} must fail when unset or empty"

    # Every variable the file requires is in .env.example, every HUB_* there is a setting.
    required = {
        match["name"]
        for match in REFERENCE.finditer(COMPOSE_FILE.read_text())
        if match["op"] == ":?"
    }
    example = {
        line.split("=", 1)[0].lstrip("# ").strip()
        for line in ENV_EXAMPLE.read_text().splitlines()
        if re.match(r"#? ?[A-Z_]+=", line)
    }
    assert required <= example, f"not in .env.example: {sorted(required - example)}"
    referenced = {match["name"] for match in REFERENCE.finditer(COMPOSE_FILE.read_text())}
    for names in (example, referenced):
        unknown = {key for key in names if key.startswith("HUB_")} - HUB_FIELDS
        assert not unknown, f"HUB_* names that are no setting: {sorted(unknown)}"
    assert set(DUMMY_ENV) == required | {"HUB_MQTT_USERNAME"}


def test_host_paths_exist_in_the_repository() -> None:
    compose = _compose()
    for name, service in compose["services"].items():
        for source, _target in _bind_sources(service):
            path = (DEPLOY / source).resolve()
            assert path.is_relative_to(DEPLOY), f"{name}: {source} is outside deploy/"
            assert path.exists(), f"{name}: {source} does not exist"
        for volume in _named_volumes(service).values():
            assert volume in compose.get("volumes", {}), f"{name}: volume {volume} undeclared"
        for secret in service.get("secrets", []):
            secret_name = secret if isinstance(secret, str) else secret["source"]
            assert secret_name in compose.get("secrets", {}), f"{name}: {secret_name}"
    # Secret files are the operator's, made at setup: under deploy/secrets/, not shipped.
    for name, secret in compose.get("secrets", {}).items():
        path = (DEPLOY / secret["file"]).resolve()
        assert path.is_relative_to(DEPLOY / "secrets"), name
    build = compose["services"]["hub"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE


def test_broker_runs_the_shipped_configuration() -> None:
    mosquitto = _services()["mosquitto"]
    binds = dict(_bind_sources(mosquitto))
    config_dir = "/etc/mosquitto/audience"
    assert binds.get("./mosquitto") == config_dir
    conf_text = (DEPLOY / "mosquitto" / "mosquitto.conf").read_text()
    conf = dict(line.split(None, 1) for line in conf_text.splitlines() if line and line[0] != "#")
    assert f"-c {config_dir}/mosquitto.conf" in " ".join(mosquitto["command"])
    # The files the configuration names are in the mounted directory (passwd is made at
    # setup by `cloud-hub broker hub-user`; include_dir must exist or the broker stops).
    for key in ("password_file", "acl_file", "include_dir"):
        assert conf[key].startswith(f"{config_dir}/"), key
    assert (DEPLOY / "mosquitto" / "acl").is_file()
    assert (DEPLOY / "mosquitto" / conf["include_dir"].removeprefix(f"{config_dir}/")).is_dir()
    # Persistence and the queue limits the hub's delivery guarantee relies on.
    assert conf["persistence"] == "true"
    assert conf["persistence_location"].rstrip("/") in _named_volumes(mosquitto)
    queued = int(conf["max_queued_messages"])  # 0: no limit; Mosquitto's default is 1000
    assert queued == 0 or queued > 1000
    assert "1883" in str(mosquitto["ports"])


def test_dockerfile_copies_what_exists_and_runs_the_hub_unprivileged() -> None:
    build = _services()["hub"]["build"]
    context = (DEPLOY / build["context"]).resolve()
    lines = []
    for raw in DOCKERFILE.read_text().replace("\\\n", " ").splitlines():
        if raw.strip() and not raw.lstrip().startswith("#"):
            lines.append(raw.strip())
    froms = [line.split()[1] for line in lines if line.upper().startswith("FROM ")]
    assert froms and all(re.fullmatch(r"python:3\.11\.\d+-slim-\w+", image) for image in froms)
    copies = [line.split()[1:] for line in lines if line.upper().startswith("COPY ")]
    assert copies
    for args in copies:
        if any(arg.startswith("--from") for arg in args):
            continue
        sources = [arg for arg in args if not arg.startswith("--")][:-1]
        for source in sources:
            assert (context / source).exists(), f"COPY {source}: not in the build context"
    users = [line.split()[1] for line in lines if line.upper().startswith("USER ")]
    assert users and users[-1] not in ("root", "0"), "the hub runs as root"
    cmd = [line for line in lines if line.upper().startswith("CMD ")][-1]
    assert cmd == 'CMD ["cloud-hub", "serve"]'
    assert "audience_hub-" in DOCKERFILE.read_text() and "pip wheel" in DOCKERFILE.read_text()


def _compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, text=True, check=False
        )
        if probe.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_compose_config_validates_where_compose_is_installed(tmp_path: Path) -> None:
    """`config -q` where Compose is installed; the structural tests above run regardless."""
    command = _compose_command()
    if command is None:
        return  # nothing more to check here; the other tests do not depend on it
    env_file = tmp_path / "env"
    env_file.write_text("".join(f"{key}={value}\n" for key, value in DUMMY_ENV.items()))
    base = [*command, "--project-directory", str(DEPLOY), "-f", str(COMPOSE_FILE)]
    for profile in ([], ["--profile", "monitoring"]):
        done = subprocess.run(
            [*base, "--env-file", str(env_file), *profile, "config", "-q"],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
    # Without deploy/.env's secrets it refuses to start instead of running without them.
    empty = tmp_path / "empty"
    empty.write_text("")
    done = subprocess.run(
        [*base, "--env-file", str(empty), "config", "-q"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode != 0 and "POSTGRES_PASSWORD" in done.stderr
