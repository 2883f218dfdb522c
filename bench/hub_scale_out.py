"""Scale-out drain: how fast 1 hub and 2 hubs together store the same backlog.

Usage::

    python bench/hub_scale_out.py [--events 20000] [--rounds 3] [--hubs 1,2]
        [--batch-size 2000] [--publishers 2]

Needs the local PostgreSQL and Redis (the live cache stays on, as in production). Per
round and per hub count N, in a throwaway database and topic root:

1. N ``cloud-hub serve`` processes start (one share group, each its own client id), so
   the private Mosquitto (``max_queued_messages 0``, from ``bench/hub_ingest.py``) holds N
   persistent sessions on the shared subscription, and stop (SIGTERM: the sessions stay);
2. ``--publishers`` processes publish the backlog (QoS 1, simulated fleet events): the
   broker deals it out to the N sessions in turn;
3. the N hubs start together and drain it. Commit times come from a bench-only
   ``NOTIFY`` trigger (as in ``bench/hub_ingest.py``); rows per commit from ``xmin``.

*Drain events/s* is the combined rate between the commits that brought the stored count
to 10% and to 90% of the backlog: the hubs' start-up and the last hub's tail (the
hubs' shares are equal only to within a batch) are left out. *whole* is stored events
over first to last commit. *hub µs/ev* is the hubs' CPU time per stored event. The
medians over ``--rounds`` are printed at the end.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hub_ingest import (
    _TRIGGER,
    PG,
    Broker,
    CommitListener,
    _count,
    _cpu_s,
    _create_db,
    _drop_db,
    _port,
    _run,
    _sql,
    _wait,
    make_events,
    publish_all,
)

from cloud_hub.settings import HubSettings
from edge_agent.contract import EventTopic
from edge_agent.logs import configure_logging


@dataclass
class Drain:
    """One drain of the backlog by ``hubs`` hubs."""

    hubs: int
    stored: int
    rate: float  # combined events/s between 10% and 90% stored
    whole: float  # stored / (last commit - first commit)
    shares: list[int]  # events each hub stored (its hub_events_stored_total)
    cpu_us: float  # hub CPU per stored event, all hubs together


def _settings(url: str, root: str, port: int, index: int, args: argparse.Namespace) -> HubSettings:
    return HubSettings(
        database_url=url,
        topic_root=root,
        mqtt_port=port,
        mqtt_client_id=f"hub-{index}-{root}",
        mqtt_session_expiry_s=600,
        http_port=_port(),
        batch_size=args.batch_size,
        queue_size=args.queue_size,
        batch_max_wait_s=0.05,
        log_format="console",
        log_level="warning",
        timescaledb="off",
        metrics_public=True,  # a bench on loopback reads each hub's counter directly
    )


def _start(settings: list[HubSettings]) -> list[subprocess.Popen[bytes]]:
    """Start every hub at once, then wait until all are healthy."""
    procs = []
    for s in settings:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
        for name, value in s.model_dump().items():
            if value is not None:
                env[f"HUB_{name.upper()}"] = str(value)
        procs.append(subprocess.Popen([sys.executable, "-m", "cloud_hub.cli", "serve"], env=env))
    for s, proc in zip(settings, procs, strict=True):

        def healthy(s: HubSettings = s, proc: subprocess.Popen[bytes] = proc) -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"hub exited with {proc.returncode}")
            try:
                status: int = urllib.request.urlopen(s.api_url + "/healthz", timeout=1).status
                return status == 200
            except OSError:
                return False

        _wait(healthy, 60, "hub health")
    return procs


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        proc.wait(30)


def _stored_by(settings: HubSettings) -> int:
    with urllib.request.urlopen(settings.api_url + "/metrics", timeout=5) as response:
        text = response.read().decode()
    for line in text.splitlines():
        if line.startswith("hub_events_stored_total "):
            return int(float(line.split()[1]))
    return 0


def _wait_all(url: str, expected: int) -> int:
    """Stored events once all are in, or once the count stood still for 10 s."""
    stored, changed = 0, time.monotonic()
    while stored < expected and time.monotonic() - changed < 10:
        time.sleep(0.1)
        now = _count(url)
        if now != stored:
            stored, changed = now, time.monotonic()
    return stored


def _rates(url: str, commits: dict[int, tuple[float, float]], total: int) -> tuple[float, float]:
    """(events/s from 10% to 90% stored, events/s first to last commit)."""
    rows = _run(
        _sql(url, "SELECT xmin::text::bigint AS x, count(*) AS n FROM person_events GROUP BY 1")
    )
    timeline = sorted((commits[r["x"]][0], int(r["n"])) for r in rows if r["x"] in commits)
    done, n10, n90 = 0, 0, 0
    t10: float | None = None
    t90: float | None = None
    for at, n in timeline:
        done += n
        if t10 is None and done >= 0.1 * total:
            t10, n10 = at, done
        if t90 is None and done >= 0.9 * total:
            t90, n90 = at, done
    assert t10 is not None and t90 is not None and t90 > t10, "too few commits to time"
    whole = sum(n for _, n in timeline[1:]) / (timeline[-1][0] - timeline[0][0])
    return (n90 - n10) / (t90 - t10), whole


def drain(
    args: argparse.Namespace, broker: Broker, payloads: list[tuple[str, bytes]], n: int
) -> Drain:
    """Queue the backlog for ``n`` stopped hubs, then let them drain it together."""
    name = f"audience_bench_{uuid.uuid4().hex[:8]}"
    url = f"{PG}/{name}"
    root = f"bench-{uuid.uuid4().hex[:8]}"
    messages = [(f"{root}/{topic}", payload) for topic, payload in payloads]
    _run(_create_db(name, migrate=True))
    _run(_sql(url, _TRIGGER))
    listener = CommitListener(url)
    settings = [_settings(url, root, broker.port, i, args) for i in range(n)]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        _stop(_start(settings))  # their sessions and shared subscriptions stay
        publish_all(broker.port, "5", messages, args.publishers)
        procs = _start(settings)
        cpu0 = [_cpu_s(p.pid) for p in procs]
        stored = _wait_all(url, len(messages))
        cpu = sum(_cpu_s(p.pid) - c for p, c in zip(procs, cpu0, strict=True))
        time.sleep(0.3)  # the last notifications
        shares = [_stored_by(s) for s in settings]
        rate, whole = _rates(url, listener.commits, len(messages))
    finally:
        _stop(procs)
        listener.close()
        _run(_drop_db(name))
    return Drain(n, stored, rate, whole, shares, cpu / max(1, stored) * 1e6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--hubs", default="1,2", help="hub counts to compare")
    parser.add_argument("--batch-size", type=int, default=2000, help="HUB_BATCH_SIZE")
    parser.add_argument("--queue-size", type=int, default=20_000, help="HUB_QUEUE_SIZE")
    parser.add_argument("--publishers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    configure_logging("console", "warning")
    counts = [int(c) for c in args.hubs.split(",")]

    events = make_events(args.events, args.seed)
    # Topics without the root (each drain gets its own root).
    payloads = [
        (str(EventTopic("r", e.device_id, e.camera_id))[2:], e.model_dump_json().encode())
        for e in events
    ]
    print(
        f"{os.cpu_count()} CPUs; {args.events:,} events per drain; HUB_BATCH_SIZE="
        f"{args.batch_size}, HUB_QUEUE_SIZE={args.queue_size}; {args.rounds} rounds",
        flush=True,
    )
    broker = Broker("private")
    results: dict[int, list[Drain]] = {n: [] for n in counts}
    try:
        for r in range(args.rounds):
            for n in counts:  # interleaved, so a drift in the machine's load hits both
                d = drain(args, broker, payloads, n)
                results[n].append(d)
                print(
                    f"round {r + 1}: {n} hub(s) stored {d.stored}/{args.events} "
                    f"{d.rate:9,.0f} events/s (whole {d.whole:,.0f}), shares {d.shares}, "
                    f"{d.cpu_us:.0f} µs/ev",
                    flush=True,
                )
    finally:
        broker.stop()
    header = f"{'hubs':>4} {'drain events/s (median)':>24} {'per hub':>9} {'rounds':>30}"
    print(f"\n{header} {'hub µs/ev':>9}")
    base = statistics.median(d.rate for d in results[counts[0]])
    for n in counts:
        rates = [d.rate for d in results[n]]
        med = statistics.median(rates)
        each = ", ".join(f"{x:,.0f}" for x in rates)
        cpu = statistics.median(d.cpu_us for d in results[n])
        print(f"{n:>4} {med:>16,.0f} ({med / base:.2f}x) {med / n:>9,.0f} {each:>30} {cpu:>9.0f}")


if __name__ == "__main__":
    main()
