"""Hub ingest throughput: publish N events over the local broker, time until all are stored.

Usage: ``python bench/hub_ingest.py [N] [--protocol 5|3.1.1] [--batch-size 500]``.
Needs the local PostgreSQL and Mosquitto; uses a throwaway database and topic root.
Prints events per second end to end (publish start to last row committed), with the
publisher's own rate alongside, since one Python publisher can be the bottleneck.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid

import asyncpg
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from cloud_hub.settings import HubSettings
from edge_agent.contract import PersonEvent

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from conftest import event_topic, make_event, settings_env

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _count(url: str) -> int:
    async def run() -> int:
        conn = await asyncpg.connect(url)
        try:
            return int(await conn.fetchval("SELECT count(*) FROM person_events"))
        finally:
            await conn.close()

    return asyncio.run(run())


def _publish(root: str, events: list[PersonEvent], protocol: str) -> float:
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"bench-pub-{uuid.uuid4().hex[:6]}",
        protocol=mqtt.MQTTv5 if protocol == "5" else mqtt.MQTTv311,
    )
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", 1883)
    client.loop_start()
    started = time.perf_counter()
    infos = [client.publish(event_topic(root, e), e.model_dump_json(), qos=1) for e in events]
    for info in infos:
        info.wait_for_publish(60)
    elapsed = time.perf_counter() - started
    client.disconnect()
    client.loop_stop()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("n", type=int, nargs="?", default=20_000)
    parser.add_argument("--protocol", choices=["5", "3.1.1"], default="5")
    parser.add_argument("--batch-size", type=int, default=500)
    args = parser.parse_args()

    name = f"audience_bench_{uuid.uuid4().hex[:8]}"
    url = f"postgresql://postgres@127.0.0.1:5432/{name}"
    root = f"bench-{uuid.uuid4().hex[:8]}"
    settings = HubSettings(
        database_url=url,
        topic_root=root,
        mqtt_protocol=args.protocol,
        mqtt_client_id=f"hub-{root}",
        mqtt_session_expiry_s=60,
        http_port=_port(),
        batch_size=args.batch_size,
        log_format="console",
        log_level="warning",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")} | settings_env(settings)
    hub = subprocess.Popen([sys.executable, "-m", "cloud_hub.cli", "serve"], env=env)
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(settings.api_url + "/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        events = [make_event(f"dev-{i % 50}", f"cam-{i % 4}", track_id=i) for i in range(args.n)]
        started = time.perf_counter()
        publish_s = _publish(root, events, args.protocol)
        stored, last_change = 0, time.perf_counter()
        while stored < args.n and time.perf_counter() - last_change < 5:
            time.sleep(0.05)
            now = _count(url)
            if now != stored:
                stored, last_change = now, time.perf_counter()
        total_s = last_change - started
        print(
            f"protocol {args.protocol} batch {args.batch_size}: {stored}/{args.n} events stored "
            f"in {total_s:.2f} s = {stored / total_s:,.0f} events/s end to end "
            f"(publisher alone {args.n / publish_s:,.0f}/s)"
        )
        if stored < args.n:
            print(
                f"{args.n - stored} dropped by the broker: see docs/hub.md on broker queue limits"
            )
    finally:
        hub.terminate()
        hub.wait()

        async def drop() -> None:
            conn = await asyncpg.connect(ADMIN)
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await conn.close()

        asyncio.run(drop())


if __name__ == "__main__":
    main()
