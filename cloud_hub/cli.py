"""``cloud-hub``: serve, migrate, print stats, bring the whole system up for a first run;
manage API keys, device credentials and certificates (``cloud_hub.security.cli``)."""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
from collections.abc import Sequence

from cloud_hub.settings import HubSettings


def _quiet_gc(threshold: int) -> None:
    """Keep Python's cycle collector out of the ingest path.

    A hub allocates a few dozen objects per message and keeps a batch's worth alive across
    awaits, so with Python's defaults the collector runs about 18 times a second at full
    ingest and its full collections walk every object the imports made: 800-1,300 ms of
    CPU per 60,000 events (``bench/hub_ingest.py``), for a few hundred objects found in
    cycles. Freezing what exists after start-up takes it out of every scan, and a larger
    first-generation threshold lets short-lived objects die before a scan sees them:
    20-100 ms per 60,000 events. Cycles still get collected, a little later.
    """
    if threshold <= 0:
        return
    gc.collect()
    gc.freeze()
    _, second, third = gc.get_threshold()
    gc.set_threshold(threshold, second, third)


def _serve(args: argparse.Namespace, settings: HubSettings) -> int:
    import uvicorn

    from cloud_hub.api.app import create_app
    from edge_agent.logs import configure_logging

    if args.host:
        settings.http_host = args.host
    if args.port is not None:
        settings.http_port = args.port
    configure_logging(settings.log_format, settings.log_level)
    config = uvicorn.Config(
        create_app(settings),
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        access_log=False,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    _quiet_gc(settings.gc_threshold)
    server.run()
    return 0 if server.started else 1


def _migrate(_args: argparse.Namespace, settings: HubSettings) -> int:
    from cloud_hub.storage.db import prepare_database
    from edge_agent.logs import configure_logging

    configure_logging(settings.log_format, settings.log_level)
    applied = asyncio.run(prepare_database(settings.database_url))
    print(f"applied {len(applied)} migration(s): {', '.join(applied) or 'none needed'}")
    return 0


def _stats(args: argparse.Namespace, settings: HubSettings) -> int:
    from cloud_hub.tools.stats_table import fetch_stats, format_stats

    stats = fetch_stats(
        args.url or settings.api_url,
        api_key=args.api_key or os.environ.get("HUB_API_KEY"),
        start=args.start or "",
        end=args.end or "",
        bucket=args.bucket,
        device_id=args.device_id or "",
        camera_id=args.camera_id or "",
    )
    print(format_stats(stats, skip_empty=not args.all))
    return 0


def _up(args: argparse.Namespace, settings: HubSettings) -> int:
    from cloud_hub.tools.up import run_up
    from edge_agent.logs import configure_logging

    if "HUB_LOG_FORMAT" not in os.environ:
        settings.log_format = "console"  # a person is watching this terminal
    configure_logging(settings.log_format, settings.log_level)
    return asyncio.run(run_up(settings, args.source, exit_after_demo=args.exit_after_demo))


def _simulate(args: argparse.Namespace, settings: HubSettings) -> int:
    from cloud_hub.tools.simulate import SimConfig, run_simulation

    if args.count is None and args.duration is None and args.rate <= 0:
        print("--rate 0 (as fast as possible) needs --count or --duration", file=sys.stderr)
        return 2
    config = SimConfig(
        devices=args.devices,
        cameras=args.cameras,
        rate=args.rate,
        duration_s=args.duration,
        count=args.count,
        host=args.host or settings.mqtt_host,
        port=args.port or settings.mqtt_port,
        topic_root=args.topic_root or settings.topic_root,
        seed=args.seed,
        protocol=args.protocol or settings.mqtt_protocol,
        credentials=settings.broker_credentials(),
        inflight=args.inflight,
        health_interval_s=args.health_interval,
        occupancy_interval_s=args.occupancy_interval,
        backfill_days=args.backfill_days,
        device_prefix=args.prefix,
    )
    summary = run_simulation(config)
    total = config.total_events()
    return 0 if total is None or summary.events >= total else 1


def build_parser() -> argparse.ArgumentParser:
    """The command line; settings come from ``HUB_*`` environment variables."""
    parser = argparse.ArgumentParser(
        prog="cloud-hub", description="Collect person events over MQTT and serve statistics."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run MQTT ingest and the HTTP API in one process")
    serve.add_argument("--host", help="HTTP bind address (default HUB_HTTP_HOST)")
    serve.add_argument("--port", type=int, help="HTTP port (default HUB_HTTP_PORT)")
    serve.set_defaults(func=_serve)

    migrate = sub.add_parser("migrate", help="create the database and apply migrations")
    migrate.set_defaults(func=_migrate)

    stats = sub.add_parser("stats", help="print /v1/stats from a running hub as a table")
    stats.add_argument("--url", help="hub base URL (default from HUB_HTTP_HOST/PORT)")
    stats.add_argument("--start", help="ISO datetime (default 24 hours before end)")
    stats.add_argument("--end", help="ISO datetime (default now)")
    stats.add_argument("--bucket", choices=["hour", "day"], default="hour")
    stats.add_argument("--device-id")
    stats.add_argument("--camera-id")
    stats.add_argument("--all", action="store_true", help="show empty buckets too")
    stats.add_argument("--api-key", help="a read key (default: the HUB_API_KEY variable)")
    stats.set_defaults(func=_stats)

    from cloud_hub.security.cli import add_security_commands

    add_security_commands(sub)

    sim = sub.add_parser(
        "simulate", help="a fleet of simulated devices publishing contract-valid messages"
    )
    sim.add_argument("--devices", type=int, default=10, help="devices (one MQTT client each)")
    sim.add_argument("--cameras", type=int, default=2, help="cameras per device (1-64)")
    sim.add_argument(
        "--rate",
        type=float,
        default=50.0,
        help="events per second overall (0: as fast as possible)",
    )
    sim.add_argument("--duration", type=float, help="seconds to run (default: until Ctrl-C)")
    sim.add_argument("--count", type=int, help="events to send, then stop")
    sim.add_argument("--host", help="broker host (default HUB_MQTT_HOST)")
    sim.add_argument("--port", type=int, help="broker port (default HUB_MQTT_PORT)")
    sim.add_argument("--topic-root", help="topic root (default HUB_TOPIC_ROOT)")
    sim.add_argument("--protocol", choices=["5", "3.1.1"], help="default HUB_MQTT_PROTOCOL")
    sim.add_argument("--seed", type=int, default=0, help="same seed, same fleet and events")
    sim.add_argument("--prefix", default="sim", help="device ids are <prefix>-000, ...")
    sim.add_argument(
        "--inflight", type=int, default=1000, help="unacknowledged QoS 1 messages at most"
    )
    sim.add_argument("--health-interval", type=float, default=10.0, help="seconds")
    sim.add_argument("--occupancy-interval", type=float, default=10.0, help="seconds")
    sim.add_argument(
        "--backfill-days",
        type=float,
        default=0.0,
        help="spread event times over the last N days with a daily traffic shape (default: now)",
    )
    sim.set_defaults(func=_simulate)

    up = sub.add_parser(
        "up", help="first run: start what is missing, the hub, and an agent on a video"
    )
    up.add_argument("source", nargs="?", help="video file, URL or USB index (default: demo clip)")
    up.add_argument(
        "--exit-after-demo", action="store_true", help="stop once the agent's events are in"
    )
    up.set_defaults(func=_up)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``cloud-hub`` console script."""
    args = build_parser().parse_args(argv)
    settings = HubSettings()
    code: int = args.func(args, settings)
    return code


if __name__ == "__main__":
    sys.exit(main())
