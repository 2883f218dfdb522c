"""``cloud-hub up``: the whole system on one machine for a newcomer, with no configuration.

Uses the machine's broker and PostgreSQL when they answer on their usual ports and starts
embedded ones when they do not; Redis is optional. Then it serves the hub, runs an edge
agent on a video (the synthetic demo clip by default), prints the statistics once the
agent's events are in, and keeps serving until Ctrl-C (or exits, with ``--exit-after-demo``).

A video file is checked before anything starts (it exists, is a file, and OpenCV decodes a
frame of it), so a mistyped path is one line on stderr and exit status 2, not a hub that
looks like it worked. Streams and camera indices cannot be checked cheaply and are not.
Each run's agent has a device id of its own (``first-run-`` and the start time), and the
counts and statistics printed are that device's only: never an earlier run's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import structlog
import uvicorn

from cloud_hub.api.app import create_app
from cloud_hub.security.apikeys import new_key
from cloud_hub.settings import HubSettings
from cloud_hub.storage.db import database_name
from cloud_hub.tools.embedded import EmbeddedBroker, EmbeddedPostgres, postgres_answers, tcp_answers
from cloud_hub.tools.stats_table import fetch_stats, format_stats

log = structlog.get_logger(__name__)

DEMO_DEVICE_PREFIX = "first-run"
DEMO_CAMERA_ID = "cam-1"
SETTLE_S = 3.0
SETTLE_MAX_S = 60.0
BAD_SOURCE_EXIT = 2


def run_device_id(now: datetime | None = None) -> str:
    """A device id for this run only (``first-run-20260124-153012-a1b2``), so what ``up``
    counts and prints is this run's events and never an earlier run's."""
    moment = now or datetime.now(UTC)
    return f"{DEMO_DEVICE_PREFIX}-{moment:%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 (FFmpeg and OpenCV write their complaints straight to it)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def source_problem(source: str) -> str | None:
    """Why the agent could not play ``source``, or ``None`` when it can (or cannot be told).

    A file must exist, be a regular file the user may read, and give OpenCV a decoded frame
    (opened the way the agent opens it). A stream URL, a GStreamer pipeline or a camera
    index is not checked: opening one can take as long as its timeout, and the agent
    retries a live source that drops.
    """
    try:
        from edge_agent.camera.sources import SourceError, is_live, open_capture
    except ImportError:  # no OpenCV: the agent will say so itself
        return None
    if is_live(source):
        return None
    path = Path(source)
    if not path.exists():
        return "no such file"
    if path.is_dir():
        return "is a directory, not a video file"
    if not path.is_file():
        return "not a regular file (for a camera give its index, e.g. 0)"
    if not os.access(path, os.R_OK):
        return "permission denied"
    with _quiet_stderr():
        try:
            capture = open_capture(source)
        except SourceError:
            return "OpenCV cannot open it as a video (not a video, or an unsupported format)"
        try:
            ok, frame = capture.read()
        finally:
            capture.release()
    if not ok or frame is None:
        return "OpenCV cannot decode a frame of it (not a video, or an unsupported codec)"
    return None


def _free_port(host: str) -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


async def choose_services(
    settings: HubSettings, stack: contextlib.AsyncExitStack
) -> tuple[HubSettings, list[str]]:
    """Settings pointing at services that answer, starting embedded ones where needed."""
    notes: list[str] = []
    updates: dict[str, object] = {}
    if tcp_answers(settings.mqtt_host, settings.mqtt_port):
        notes.append(f"MQTT: broker at {settings.mqtt_host}:{settings.mqtt_port}")
    else:
        host = "127.0.0.1"
        port = settings.mqtt_port if not tcp_answers(host, settings.mqtt_port) else _free_port(host)
        broker = EmbeddedBroker(host, port)
        await broker.start()
        stack.push_async_callback(broker.stop)
        # amqtt: MQTT 3.1.1 only and no $share subscriptions.
        updates |= {
            "mqtt_host": host,
            "mqtt_port": port,
            "mqtt_protocol": "3.1.1",
            "share_group": "",
        }
        notes.append(f"MQTT: none answered, started embedded amqtt on {host}:{port} (3.1.1)")
    if await postgres_answers(settings.database_url):
        notes.append(f"PostgreSQL: {_redact(settings.database_url)}")
    else:
        pg = EmbeddedPostgres(settings.state_dir, database_name(settings.database_url))
        updates["database_url"] = await pg.start()
        stack.push_async_callback(pg.stop)
        notes.append(f"PostgreSQL: none answered, started embedded in {settings.state_dir}/pgdata")
    if tcp_answers(settings.http_host, settings.http_port):
        updates["http_port"] = _free_port(settings.http_host)
        notes.append(f"HTTP: port {settings.http_port} is taken, using {updates['http_port']}")
    return settings.model_copy(update=updates), notes


def _redact(url: str) -> str:
    head, sep, tail = url.rpartition("@")
    return f"{head.split('://')[0]}://…@{tail}" if sep and ":" in head.split("://")[-1] else url


def agent_config_toml(settings: HubSettings, source: str, device_id: str) -> str:
    """The agent's TOML (``edge_agent.config.AgentConfig``) for this hub and one camera."""

    def q(value: str) -> str:
        return json.dumps(value)  # a JSON string is a valid TOML basic string

    lines = [
        f"device_id = {q(device_id)}",
        f"state_dir = {q(str(settings.state_dir / 'agent'))}",  # the agent's outbox
        "",
        "[mqtt]",
        f"host = {q(settings.mqtt_host)}",
        f"port = {settings.mqtt_port}",
        f"protocol = {q(settings.mqtt_protocol)}",
        f"topic_root = {q(settings.topic_root)}",
    ]
    if settings.mqtt_username:
        lines.append(f"username = {q(settings.mqtt_username)}")
    if settings.mqtt_password:
        lines.append(f"password = {q(settings.mqtt_password)}")
    lines += ["", "[[cameras]]", f"id = {q(DEMO_CAMERA_ID)}", f"source = {q(source)}", ""]
    return "\n".join(lines)


def _agent_command(config: Path) -> list[str]:
    script = Path(sys.executable).with_name("edge-agent")
    exe = str(script) if script.exists() else shutil.which("edge-agent")
    if exe is None:
        raise SystemExit("edge-agent is not installed: pip install -e '.[edge,hub]'")
    return [exe, "run", "--config", str(config)]


async def _settled(count: Callable[[], Awaitable[int]]) -> int:
    """Wait until the stored event count stops changing for a few seconds."""
    last, since, started = await count(), time.monotonic(), time.monotonic()
    while time.monotonic() - since < SETTLE_S and time.monotonic() - started < SETTLE_MAX_S:
        await asyncio.sleep(0.5)
        now = await count()
        if now != last:
            last, since = now, time.monotonic()
    return last


async def _stop_agent(agent: asyncio.subprocess.Process) -> None:
    """Stop the agent if it is still running (Ctrl-C, or an error in ``up``)."""
    if agent.returncode is None:
        agent.terminate()
        try:
            await asyncio.wait_for(agent.wait(), 10)
        except TimeoutError:
            agent.kill()
            await agent.wait()


async def _run_events(pool: asyncpg.Pool, device_id: str) -> int:
    """How many events this run's device has stored (``up`` waits for this to settle)."""
    sql = "SELECT count(*) FROM person_events WHERE device_id = $1"
    return int(await pool.fetchval(sql, device_id))


async def _run_range(pool: asyncpg.Pool, device_id: str) -> tuple[str, str]:
    """``start``/``end`` for ``/v1/stats`` that hold every event of this run's device
    (empty: the API's default range, when it has none)."""
    row = await pool.fetchrow(
        "SELECT min(last_seen) AS low, max(last_seen) AS high FROM person_events "
        "WHERE device_id = $1",
        device_id,
    )
    if row is None or row["low"] is None:
        return "", ""
    low: datetime = row["low"].astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    high: datetime = row["high"].astimezone(UTC) + timedelta(seconds=1)
    return low.isoformat(), max(high, datetime.now(UTC)).isoformat()


async def run_up(settings: HubSettings, source: str | None, *, exit_after_demo: bool) -> int:
    """Bring everything up, run the agent once, report, then serve (see module doc)."""
    if source is not None:
        problem = await asyncio.to_thread(source_problem, source)
        if problem is not None:
            print(f"cloud-hub up: {source}: {problem}", file=sys.stderr, flush=True)
            return BAD_SOURCE_EXIT
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    async with contextlib.AsyncExitStack() as stack:
        settings, notes = await choose_services(settings, stack)
        for note in notes:
            print(note, flush=True)
        # The API needs a key: one for this session only, added to any configured ones.
        api_key, entry = new_key("up-session", "admin")
        configured = settings.api_keys.strip().strip(",")
        settings = settings.model_copy(
            update={"api_keys": f"{configured},{entry.config_entry()}".strip(",")}
        )

        app = create_app(settings)
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                host=settings.http_host,
                port=settings.http_port,
                log_config=None,
                access_log=False,
                lifespan="on",
            )
        )
        serving = asyncio.create_task(server.serve(), name="http")
        while not server.started:
            if serving.done():
                print("the hub failed to start; see the log above", file=sys.stderr)
                return 1
            await asyncio.sleep(0.1)
        url = settings.api_url
        print(
            f"\nHub running.\n  statistics  {url}/v1/stats\n  events      {url}/v1/events\n"
            f"  devices     {url}/v1/devices\n  API docs    {url}/docs\n"
            f"  health      {url}/healthz\n  metrics     {url}/metrics\n"
            f"  API key     {api_key}  (this session only; send it as X-API-Key)\n"
            f"              curl -H 'X-API-Key: {api_key}' {url}/v1/stats\n",
            flush=True,
        )

        if source is None:
            from edge_agent.tools.demo_clip import make_demo_clip

            source = str(await asyncio.to_thread(make_demo_clip, settings.state_dir / "demo.mp4"))
            print(f"No source given: using the demo clip {source}", flush=True)
        device_id = run_device_id()
        config_path = settings.state_dir / "agent.toml"
        config_path.write_text(agent_config_toml(settings, source, device_id), encoding="utf-8")

        pool: asyncpg.Pool = app.state.hub.pool
        print(f"Starting the edge agent as device {device_id} ({config_path})", flush=True)
        print(
            "Statistics print when the agent's source ends; for a live source, "
            f"watch {url}/v1/stats and press Ctrl-C to stop.",
            flush=True,
        )
        agent = await asyncio.create_subprocess_exec(*_agent_command(config_path))
        stack.push_async_callback(_stop_agent, agent)
        waiting = asyncio.create_task(agent.wait(), name="agent")
        done, _ = await asyncio.wait({waiting, serving}, return_when=asyncio.FIRST_COMPLETED)
        if serving in done:  # Ctrl-C while the agent ran
            return 130
        if agent.returncode != 0:
            print(f"edge agent exited with {agent.returncode}", file=sys.stderr, flush=True)

        new = await _settled(lambda: _run_events(pool, device_id))
        print(f"\nThe agent is done: {new} new event(s) from device {device_id}.\n", flush=True)
        start, end = await _run_range(pool, device_id)
        stats = await asyncio.to_thread(
            fetch_stats, url, api_key=api_key, device_id=device_id, start=start, end=end
        )
        print(format_stats(stats), flush=True)

        if exit_after_demo:
            server.should_exit = True
        else:
            print(f"\nStill serving at {url} (Ctrl-C to stop).", flush=True)
        await serving
        return 0 if agent.returncode == 0 else 1
