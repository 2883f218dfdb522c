"""Check the ONNX rebuilds of face-api's networks against face-api itself, and their variants.

The reference is face-api (``@vladmandic/face-api`` 1.7.15) running in Node on TF.js's pure-JS
CPU backend (``models/faceapi_verify``, installed from its committed package-lock.json). Face
crops are cut here from real faces in ``../shared/data`` (read in place, never copied), handed
to face-api as raw pixels, and face-api builds its own network inputs (pad to square, resize)
and runs its networks. The ONNX files then run on exactly the tensors face-api built, so
the comparison is of the networks alone; this script's own re-implementation of face-api's
preprocessing (:func:`faceapi_input`) is compared with face-api's tensors too.

    (cd models/faceapi_verify && npm ci --ignore-scripts)   # once; needs the npm registry
    python models/verify_faceapi.py                   # every face-api file vs face-api
    python models/verify_faceapi.py --record tests/data/faceapi_reference.json
    python models/verify_faceapi.py --agreement 200 --latency --no-faceapi   # no node needed

``--agreement`` compares each reduced-precision file (fp16, int8) with its fp32 rebuild on
other real faces; ``--latency`` times every file per face at batch 1 and 8 on one thread.
Not part of the build or of CI: tests/test_models.py checks the built files against the
recorded reference numbers without node. Needs numpy, opencv and onnxruntime.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
NODE_DIR = HERE / "faceapi_verify"
SHARED_FACES = REPO.parent / "shared" / "data" / "faces"
DEFAULT_DIST = HERE / "dist"
KEYS = {"age_gender": "faceapi_age_gender", "face_recognition": "faceapi_face_recognition"}
# LFW photos are 250x250 with the face centred: this square holds brows to chin with about
# the margin face-api's landmark box (+10% a side) gives. UTKFace chips are used whole.
LFW_BOX = (60, 68, 130, 130)  # x, y, width, height


@dataclass(frozen=True)
class Crop:
    """One face crop: where it comes from and the box cut from it (None: the whole image)."""

    dataset: str
    file: str
    box: tuple[int, int, int, int] | None

    def as_json(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "file": self.file, "box": self.box}


def select_crops(per_dataset: int, offset: int = 0) -> list[Crop]:
    """``per_dataset`` faces from utkface_dev and lfw_gender_dev, spread over the sorted files.

    ``offset`` shifts the pick so another call takes different faces.
    """
    crops: list[Crop] = []
    for dataset, box in (("utkface_dev", None), ("lfw_gender_dev", LFW_BOX)):
        files = sorted(p.name for p in (SHARED_FACES / dataset).glob("*.jpg"))
        if len(files) < per_dataset:
            raise SystemExit(f"needs {per_dataset} faces under {SHARED_FACES / dataset}")
        step = len(files) // per_dataset
        crops += [
            Crop(dataset, files[(i * step + offset) % len(files)], box) for i in range(per_dataset)
        ]
    return crops


def load_crop(crop: Crop, faces: Path = SHARED_FACES) -> np.ndarray:
    """The crop as RGB uint8 ``[h, w, 3]`` (LFW's grayscale JPEGs give three equal channels)."""
    import cv2

    image = cv2.imread(str(faces / crop.dataset / crop.file), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(faces / crop.dataset / crop.file)
    if crop.box is not None:
        x, y, w, h = crop.box
        image = image[y : y + h, x : x + w]
    rgb: np.ndarray = np.ascontiguousarray(image[..., ::-1])
    return rgb


def faceapi_input(rgb: np.ndarray, size: int) -> np.ndarray:
    """face-api's network input for one crop: float32 ``[size, size, 3]``, values 0..255.

    ``NetInput.toBatchTensor(size, true)`` on a tensor: ``padToSquare`` with zeros, centred
    (``round(diff / 2)`` after, the rest before), then, unless already ``size`` square,
    ``tf.image.resizeBilinear(alignCorners=false, halfPixelCenters=false)``, computed as
    TF.js's CPU kernel does (double precision, one rounding to float32).
    """
    image = np.asarray(rgb, np.float32)
    height, width = image.shape[:2]
    if height != width:
        diff = abs(height - width)
        after = int(np.floor(diff * 0.5 + 0.5))  # JavaScript Math.round
        before = diff - after
        axis = 1 if height > width else 0
        pads = [(0, 0), (0, 0), (0, 0)]
        pads[axis] = (before, after)
        image = np.pad(image, pads)
    side = image.shape[0]
    if side == size:
        return image
    ratio = side / size
    src = np.arange(size, dtype=np.float64) * ratio
    lo = np.maximum(np.floor(src), 0).astype(np.int64)
    hi = np.minimum(np.ceil(src), side - 1).astype(np.int64)
    frac = src - lo
    pixels = image.astype(np.float64)
    fx = frac[None, :, None]
    top = pixels[lo][:, lo] + (pixels[lo][:, hi] - pixels[lo][:, lo]) * fx
    bottom = pixels[hi][:, lo] + (pixels[hi][:, hi] - pixels[hi][:, lo]) * fx
    out = top + (bottom - top) * frac[:, None, None]
    result: np.ndarray = out.astype(np.float32)
    return result


def run_faceapi(crops: Sequence[np.ndarray], node_dir: Path = NODE_DIR) -> dict[str, Any]:
    """face-api's inputs and outputs for ``crops`` (see faceapi_verify/verify_faceapi.mjs)."""
    node = shutil.which("node")
    if node is None:
        raise SystemExit("node is not installed; the face-api reference needs Node.js >= 18")
    if not (node_dir / "node_modules" / "@vladmandic" / "face-api").is_dir():
        raise SystemExit(
            f"run `npm ci --ignore-scripts` in {node_dir} first (needs the npm registry)"
        )
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        items, offset, blobs = [], 0, []
        for crop in crops:
            data = np.ascontiguousarray(crop, np.uint8).tobytes()
            items.append({"height": crop.shape[0], "width": crop.shape[1], "offset": offset})
            offset += len(data)
            blobs.append(data)
        (work / "crops.u8").write_bytes(b"".join(blobs))
        (work / "crops.json").write_text(json.dumps({"items": items}), encoding="utf-8")
        started = time.perf_counter()
        subprocess.run(
            [node, "verify_faceapi.mjs", str(work)], cwd=node_dir, check=True, capture_output=True
        )
        out: dict[str, Any] = json.loads((work / "faceapi.json").read_text(encoding="utf-8"))
        out["seconds"] = time.perf_counter() - started
        n = len(crops)
        for size in (112, 150):
            raw = np.fromfile(work / f"input_{size}.f32", dtype="<f4")
            out[f"input_{size}"] = raw.reshape(n, size, size, 3)
    return out


def check_node_weights(manifest: dict[str, Any], node_dir: Path = NODE_DIR) -> None:
    """The weights face-api loads in node are the ones the manifest pins for the build."""
    package = node_dir / "node_modules" / "@vladmandic" / "face-api"
    for key in KEYS.values():
        source = manifest["models"][key]["source"]
        for pinned in (source, *source["shards"]):
            path = package / pinned["path"].removeprefix("package/")
            actual = hashlib.sha256(path.read_bytes()).hexdigest()
            if actual != pinned["sha256"]:
                raise SystemExit(f"{path}: sha256 {actual}, the manifest pins {pinned['sha256']}")


def session(path: Path, threads: int = 1) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_model(sess: Any, batch: np.ndarray, chunk: int = 16) -> list[np.ndarray]:
    """All outputs of ``sess`` on ``batch``, run ``chunk`` faces at a time."""
    name = sess.get_inputs()[0].name
    parts = [sess.run(None, {name: batch[i : i + chunk]}) for i in range(0, len(batch), chunk)]
    return [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    result: np.ndarray = (a64 * b64).sum(-1) / (
        np.linalg.norm(a64, axis=-1) * np.linalg.norm(b64, axis=-1)
    )
    return result


def model_paths(dist: Path) -> tuple[dict[str, Any], dict[str, Path]]:
    """The manifest in ``dist`` and the face-api files present there, by manifest key."""
    manifest: dict[str, Any] = json.loads((dist / "manifest.json").read_text(encoding="utf-8"))
    paths = {}
    for key, entry in manifest["models"].items():
        path = dist / entry["file"]["name"]
        if key.startswith("faceapi_") and path.is_file():
            paths[key] = path
    return manifest, paths


def variants(paths: dict[str, Path], network: str) -> list[str]:
    """Manifest keys of one network in ``dist``: the fp32 rebuild first, then its variants."""
    base = KEYS[network]
    return sorted((k for k in paths if k == base or k.startswith(f"{base}_")), key=len)


def compare(
    key: str, outputs: list[np.ndarray], ref: list[np.ndarray], network: str
) -> tuple[str, dict[str, float]]:
    """One line and the figures for ``outputs`` of ``key`` against ``ref``."""
    if network == "age_gender":
        age_diff = np.abs(outputs[0].astype(np.float64) - ref[0])
        p_diff = np.abs(outputs[1].astype(np.float64) - ref[1])
        agree = float(np.mean(outputs[1].argmax(1) == ref[1].argmax(1)))
        figures = {
            "age_max": float(age_diff.max()),
            "age_mean": float(age_diff.mean()),
            "age_p95": float(np.percentile(age_diff, 95)),
            "gender_max": float(p_diff.max()),
            "gender_agreement": agree,
        }
        line = (
            f"{key}: age |diff| mean {figures['age_mean']:.2e} p95 {figures['age_p95']:.2e}"
            f" max {figures['age_max']:.2e} y; gender |p diff| max {figures['gender_max']:.2e},"
            f" same label {agree:.1%}"
        )
    else:
        cos = cosine(outputs[0], ref[0])
        dist = np.linalg.norm(outputs[0].astype(np.float64) - ref[0], axis=1)
        figures = {
            "max_abs": float(np.max(np.abs(outputs[0] - ref[0]))),
            "cosine_min": float(cos.min()),
            "cosine_mean": float(cos.mean()),
            "euclidean_max": float(dist.max()),
            "euclidean_mean": float(dist.mean()),
        }
        line = (
            f"{key}: max |diff| {figures['max_abs']:.2e}; cosine mean {cos.mean():.6f}"
            f" min {cos.min():.6f}; Euclidean shift mean {dist.mean():.4f} max {dist.max():.4f}"
        )
    return line, figures


def verify(dist: Path, per_dataset: int, record: Path | None) -> int:
    """Every face-api ONNX file on face-api's own input tensors against face-api's outputs."""
    manifest, paths = model_paths(dist)
    check_node_weights(manifest)
    crops = select_crops(per_dataset)
    images = [load_crop(c) for c in crops]
    ref = run_faceapi(images)
    versions = ref["versions"]
    print(
        f"face-api {versions['faceapi']}, tfjs {versions['tfjs']} ({versions['backend']}"
        f" backend): {len(crops)} crops in {ref['seconds']:.1f}s"
    )
    results = ref["results"]
    entry = manifest["models"][KEYS["age_gender"]]
    columns = entry["transform"]["gender_columns_from_faceapi"]
    ages = np.asarray([r["age"][0] for r in results], np.float64)
    genders = np.asarray([r["gender_faceapi_order"] for r in results], np.float64)[:, columns]
    descriptors = np.asarray([r["descriptor"] for r in results], np.float64)
    labels = [r["prediction"]["gender"] for r in results]
    female = entry["postprocessing"]["labels"].index("female")
    if any((lab == "female") != (g[female] > 0.5) for lab, g in zip(labels, genders, strict=True)):
        print("FAILED: face-api's predicted labels disagree with the documented column order")
        return 1

    failed = False
    for size in (112, 150):
        mine = np.stack([faceapi_input(img, size) for img in images])
        diff = float(np.max(np.abs(mine - ref[f"input_{size}"])))
        print(f"preprocessing {size}x{size}: max |faceapi_input - face-api's tensor| {diff:.2e}")
        failed |= diff > 1e-3
    references = {"age_gender": [ages, genders], "face_recognition": [descriptors]}
    inputs = {"age_gender": ref["input_112"], "face_recognition": ref["input_150"]}
    for network in KEYS:
        for key in variants(paths, network):
            outputs = run_model(session(paths[key]), inputs[network])
            line, figures = compare(key, outputs, references[network], network)
            print(line)
            if key == KEYS[network]:  # the fp32 rebuild must reproduce face-api
                limits = {"age_max": 1e-3, "gender_max": 1e-4, "max_abs": 1e-4}
                failed |= any(figures[k] > v for k, v in limits.items() if k in figures)
    summary = ", ".join(
        f"{c.file[:16]} {lab} {a:.0f}y" for c, lab, a in zip(crops, labels, ages, strict=True)
    )
    print(f"face-api says: {summary}")
    if record is not None:
        reference = {
            "description": (
                "Reference outputs of @vladmandic/face-api on TF.js's CPU backend for face"
                " crops from ../shared/data/faces, written by models/verify_faceapi.py --record."
                " Numbers only: the images stay in the shared data directory. gender is in the"
                " ONNX order (female, male); face-api's own order is (male, female)."
            ),
            "versions": versions,
            "preprocessing": "models/verify_faceapi.py faceapi_input(crop, size)",
            "crops": [c.as_json() for c in crops],
            "age": [round(float(a), 6) for a in ages],
            "gender": [[round(float(p), 7) for p in g] for g in genders],
            "embedding": [[round(float(v), 7) for v in d] for d in descriptors],
        }
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps(reference, indent=1) + "\n", encoding="utf-8")
        print(f"recorded {record}")
    print("FAILED" if failed else "OK: the fp32 rebuilds reproduce face-api")
    return 1 if failed else 0


def agreement(dist: Path, count: int) -> None:
    """Each reduced-precision file against its fp32 rebuild on ``count`` real faces."""
    _, paths = model_paths(dist)
    crops = select_crops(count // 2, offset=1)  # other faces than the face-api check's
    images = [load_crop(c) for c in crops]
    for network, size in (("age_gender", 112), ("face_recognition", 150)):
        keys = variants(paths, network)
        if len(keys) < 2:
            continue
        batch = np.stack([faceapi_input(img, size) for img in images])
        fp32 = [o.astype(np.float64) for o in run_model(session(paths[keys[0]]), batch)]
        for key in keys[1:]:
            line, _ = compare(key, run_model(session(paths[key]), batch), fp32, network)
            print(f"vs fp32 on {len(batch)} faces, {line}")
        if network == "face_recognition":
            norms = np.linalg.norm(fp32[0], axis=1)
            print(f"fp32 descriptor norms {norms.min():.2f} to {norms.max():.2f}")


def latency(dist: Path, repeats: int = 24) -> None:
    """Median per-face latency at batch 1 and 8, one onnxruntime thread, every variant.

    The variants of a network are timed in turns, so load from other processes on the
    machine hits them alike.
    """
    _, paths = model_paths(dist)
    rng = np.random.default_rng(0)
    for network, size in (("age_gender", 112), ("face_recognition", 150)):
        keys = variants(paths, network)
        sessions = {key: session(paths[key]) for key in keys}
        x = rng.uniform(0, 255, (8, size, size, 3)).astype(np.float32)
        times: dict[tuple[str, int], list[float]] = {(k, b): [] for k in keys for b in (1, 8)}
        for rep in range(repeats):
            for key, sess in sessions.items():
                for batch in (1, 8):
                    started = time.perf_counter()
                    sess.run(None, {sess.get_inputs()[0].name: x[:batch]})
                    if rep >= 2:  # warm-up
                        times[key, batch].append((time.perf_counter() - started) / batch)
        for key in keys:
            per_face = [1000 * statistics.median(times[key, b]) for b in (1, 8)]
            print(
                f"{key:30s} {paths[key].stat().st_size / 1e6:6.2f} MB  per face:"
                f" batch 1 {per_face[0]:.2f} ms, batch 8 {per_face[1]:.2f} ms (1 thread)"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dist", type=Path, default=DEFAULT_DIST, help="built model directory")
    parser.add_argument("--per-dataset", type=int, default=8, help="crops per dataset vs face-api")
    parser.add_argument("--record", type=Path, help="write the reference numbers to this JSON")
    parser.add_argument("--agreement", type=int, default=0, help="variants vs fp32 on N faces")
    parser.add_argument("--latency", action="store_true", help="per-face latency, one thread")
    parser.add_argument("--no-faceapi", action="store_true", help="skip the node reference run")
    args = parser.parse_args(argv)
    status = 0
    if not args.no_faceapi:
        status = verify(args.dist, args.per_dataset, args.record)
    if args.agreement:
        agreement(args.dist, args.agreement)
    if args.latency:
        latency(args.dist)
    return status


if __name__ == "__main__":
    sys.exit(main())
