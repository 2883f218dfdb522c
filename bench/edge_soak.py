"""Sustained load: N paced cameras for minutes, printing RSS, frame rate and drops.

The throughput bench's runs are short; this one shows whether memory settles under a
steady load (the target: 8 cameras at 15 fps, 640x360, with no growth). Stage samples
are drained every interval as the agent's telemetry thread does, and events are counted,
not kept, so what grows is the agent's own memory.

Usage: ``python bench/edge_soak.py [--cameras 8] [--size 640x360] [--fps 15]
[--seconds 180] [--every 15]``.
"""

from __future__ import annotations

import argparse
import resource
import sys
import threading
import time
from pathlib import Path

from edge_throughput import prepare  # type: ignore[import-not-found]

from edge_agent.config import AgentConfig
from edge_agent.contract import PersonEvent
from edge_agent.device.telemetry import CameraMeter, memory_mb
from edge_agent.runner import run_cameras


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cameras", type=int, default=8)
    parser.add_argument("--size", default="640x360")
    parser.add_argument("--fps", type=float, default=15.0)
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--every", type=float, default=15.0)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/edge-throughput-clips"))
    args = parser.parse_args()
    clips = [str(p) for p in prepare(args.cache, args.size, args.fps)]
    cameras = [
        {
            "id": f"cam{i}",
            "source": clips[i % len(clips)],
            "loop": True,
            "realtime": True,
            "fps": args.fps,
        }
        for i in range(args.cameras)
    ]
    config = AgentConfig.model_validate({"cameras": cameras, "metrics": {"port": 0}})
    meters = [CameraMeter(c.id) for c in config.cameras]
    stop = threading.Event()
    events = 0

    def count(_: PersonEvent) -> None:
        nonlocal events
        events += 1

    def report() -> None:
        start = last_t = time.monotonic()
        last_p = last_d = 0
        while not stop.wait(args.every):
            now = time.monotonic()
            processed = sum(m.processed for m in meters)
            dropped = sum(m.dropped for m in meters)
            span = now - last_t
            print(
                f"t={now - start:5.0f}s rss={memory_mb():6.1f} MB "
                f"fps={(processed - last_p) / span:6.1f} "
                f"dropped/s={(dropped - last_d) / span:5.1f} events={events}",
                flush=True,
            )
            last_p, last_d, last_t = processed, dropped, now
            for meter in meters:
                meter.take_times()  # as the telemetry thread does

    print(f"{args.cameras} cameras, {args.size} at {args.fps:g} fps, {args.seconds:g} s")
    threading.Thread(target=report, daemon=True).start()
    threading.Timer(args.seconds, stop.set).start()
    run_cameras(config, count, stop, meters=meters)
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
