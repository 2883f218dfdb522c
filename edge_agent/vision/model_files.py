"""Find the agent's model files on disk and verify them before anything loads them.

The agent never downloads a model: ``python models/build.py`` produces the files, with a
copy of ``manifest.json``, and this module finds that directory, checks every file's
sha256 against the manifest once, and hands the rest of the agent the paths together with
the preprocessing constants the models were trained with, so no other module hard-codes
them. Standard library only, so importing it costs nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Literal

from edge_agent.vision.model_specs import (
    HeadsSpec,
    PersonDetectorSpec,
    floats,
    heads_spec,
    person_spec,
)

__all__ = [
    "DEFAULT_MODELS_DIR",
    "ENV_VAR",
    "MANIFEST_NAME",
    "REPO_MODELS_DIR",
    "DetectorSpec",
    "DetectorVariant",
    "FaceApiSpec",
    "HeadsSpec",
    "ModelFiles",
    "PersonDetectorSpec",
    "Precision",
    "locate_models",
]

ENV_VAR: Final = "EDGE_AGENT_MODELS"
DEFAULT_MODELS_DIR: Final = Path("/var/lib/edge-agent/models")
REPO_MODELS_DIR: Final = Path(__file__).resolve().parents[2] / "models" / "dist"
MANIFEST_NAME: Final = "manifest.json"
SUPPORTED_SCHEMA: Final = 1
_BUILD_HINT: Final = (
    f"run `python models/build.py` (it writes models/dist) or point ${ENV_VAR} at its output"
)

DetectorVariant = Literal["short_range", "full_range"]
_DETECTOR_KEYS: Final[Mapping[DetectorVariant, str]] = MappingProxyType(
    {"short_range": "face_detection_short_range", "full_range": "face_detection_full_range"}
)
_REQUIRED: Final = (*_DETECTOR_KEYS.values(), "face_landmark", "age", "gender")
# The int8 age and gender models: verified when the manifest lists them (models/build.py).
_OPTIONAL: Final = ("age_int8", "gender_int8")

# How a model file stores its weights. Not every network has every precision: dlib's age
# and gender networks come as fp32 and int8, face-api's as fp32 plus the reduced precision
# that kept their accuracy (models/manifest.json).
Precision = Literal["fp32", "fp16", "int8"]
# face-api's networks rebuilt as ONNX (optional, verified when listed): the fp32 rebuild under
# the base key, reduced-precision variants under base key + "_fp16" / "_int8".
_FACEAPI_BASES: Final = ("faceapi_age_gender", "faceapi_face_recognition")
_FACEAPI_SUFFIX: Final[Mapping[Precision, str]] = MappingProxyType(
    {"fp32": "", "fp16": "_fp16", "int8": "_int8"}
)
_FACEAPI_KEYS: Final = tuple(b + s for b in _FACEAPI_BASES for s in _FACEAPI_SUFFIX.values())
# Person detectors: every entry with this task (optional, verified when listed); the config
# names one by its manifest key (``PeopleConfig.model``).
_PERSON_TASK: Final = "person_detection"
# Gender and age heads on the face embedding (``edge-agent train-heads``): every entry with
# this task (optional, verified when listed); a fused model set names one by its key.
_HEADS_TASK: Final = "attribute_heads"


@dataclass(frozen=True, slots=True)
class DetectorSpec:
    """One BlazeFace variant: its file and what decoding its raw outputs needs."""

    path: Path
    input_name: str
    input_size: int  # square input, 128 (short range) or 192 (full range)
    boxes_output: str  # [1, num_anchors, 16]: cx, cy, w, h, 6 keypoints (x, y), input pixels
    scores_output: str  # [1, num_anchors, 1]: logits
    num_anchors: int
    strides: tuple[int, ...]
    anchor_offset: float
    interpolated_scale_aspect_ratio: float
    num_keypoints: int
    box_scale: float
    score_clipping: float
    min_score: float
    nms_threshold: float


@dataclass(frozen=True, slots=True)
class FaceApiSpec:
    """One face-api network rebuilt as ONNX: its file and what feeding it takes.

    The input is NHWC float32 RGB with raw pixel values (``value_range``, 0..255), a square
    crop already resized to ``input_size``; the graph itself subtracts ``means`` and divides
    by ``divisor``, so callers must not normalize. ``preprocessing`` is the manifest's
    description of face-api's crop, pad-to-square and resize rules.
    """

    key: str  # manifest key, for ModelFiles.versions
    path: Path
    input_name: str
    input_size: int  # 112 (age/gender) or 150 (face recognition)
    layout: str  # "NHWC"
    dtype: str  # "float32"
    color_order: str  # "RGB"
    value_range: tuple[float, float]  # what to feed: raw 0..255 values
    means: tuple[float, float, float]  # subtracted inside the graph
    divisor: float  # divided by inside the graph
    output_names: tuple[str, ...]  # ("age", "gender") or ("embedding",)
    labels: tuple[str, ...]  # gender columns, ("female", "male"); () for the embedding
    preprocessing: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ModelFiles:
    """Verified model paths plus the manifest constants the agent needs to use them."""

    root: Path
    short_range: Path
    full_range: Path
    face_landmark: Path  # MediaPipe face mesh (468 points); see manifest for its I/O
    age: Path
    gender: Path
    age_int8: Path | None  # static int8 quantization of ``age``; None for an older manifest
    gender_int8: Path | None
    detectors: Mapping[DetectorVariant, DetectorSpec]
    age_weights: tuple[float, ...]  # 81 class weights; age = sum(p * w)
    gender_labels: tuple[str, ...]  # ("female", "male"), index = output column
    means: tuple[float, float, float]  # RGB channel means subtracted from byte values
    scale: float  # multiply after subtracting the means (1/256)
    age_chip_size: int
    gender_chip_size: int
    chip_padding: float  # dlib face-chip padding
    input_name: str  # ONNX input of both attribute models
    output_name: str  # ONNX output (softmax probabilities) of both attribute models
    versions: Mapping[str, str]  # model name -> version, for PersonEvent.models
    manifest: Mapping[str, Any]  # the whole parsed manifest, for anything else
    # face-api networks by manifest key, those the manifest lists (faceapi_age_gender(), ...)
    faceapi: Mapping[str, FaceApiSpec] = field(default_factory=lambda: MappingProxyType({}))
    person_detectors: Mapping[str, PersonDetectorSpec] = field(
        default_factory=lambda: MappingProxyType({})
    )
    heads: Mapping[str, HeadsSpec] = field(default_factory=lambda: MappingProxyType({}))

    def attribute_heads(self, key: str) -> HeadsSpec:
        """The heads a fused model set names; FileNotFoundError when the manifest lists no
        such heads (an older build)."""
        if key not in self.heads:
            raise FileNotFoundError(
                f"{self.root} has no attribute heads {key!r} (it has "
                f"{sorted(self.heads) or 'none'}); rebuild with models/build.py"
            )
        return self.heads[key]

    def person_detector(self, name: str) -> PersonDetectorSpec:
        """The person detector ``PeopleConfig.model`` names; FileNotFoundError when the
        manifest lists no such model (an older build, or a typo in the configuration)."""
        if name not in self.person_detectors:
            have = sorted(self.person_detectors) or "none"
            raise FileNotFoundError(
                f"{self.root} has no person detector {name!r} (it has {have}); "
                "rebuild with models/build.py"
            )
        return self.person_detectors[name]

    def detector(self, variant: DetectorVariant) -> DetectorSpec:
        """The detector the configuration names (``DetectorConfig.model``)."""
        return self.detectors[variant]

    def attribute_models(self, precision: Precision) -> tuple[Path, Path, str, str]:
        """``(gender path, age path, gender key, age key)`` for ``EstimatorConfig.models``.

        The keys name the manifest entries (for ``versions``). Raises FileNotFoundError
        for fp16 (dlib's networks have no such build) and when int8 is asked for and the
        manifest has no int8 models.
        """
        if precision == "fp16":
            raise FileNotFoundError("dlib's networks have no fp16 build (int8 or fp32)")
        if precision == "fp32":
            return self.gender, self.age, "gender", "age"
        if self.gender_int8 is None or self.age_int8 is None:
            raise FileNotFoundError(
                f"{self.root} has no int8 age/gender models; rebuild with models/build.py"
            )
        return self.gender_int8, self.age_int8, "gender_int8", "age_int8"

    def faceapi_age_gender(self, precision: Precision = "fp32") -> FaceApiSpec:
        """face-api's age and gender network: ``age`` [N] in years, ``gender`` [N, 2].

        Raises FileNotFoundError when the manifest has no such file (fp16 is the reduced
        precision variant built for this network; int8 lost too much age accuracy).
        """
        return self._faceapi("faceapi_age_gender", precision)

    def face_recognition(self, precision: Precision = "fp32") -> FaceApiSpec:
        """face-api's port of dlib's face recognition ResNet: ``embedding`` [N, 128].

        Raises FileNotFoundError when the manifest has no such file (int8 is the reduced
        precision variant built for this network).
        """
        return self._faceapi("faceapi_face_recognition", precision)

    def _faceapi(self, base: str, precision: Precision) -> FaceApiSpec:
        key = base + _FACEAPI_SUFFIX[precision]
        if key not in self.faceapi:
            have = [p for p, suffix in _FACEAPI_SUFFIX.items() if base + suffix in self.faceapi]
            raise FileNotFoundError(
                f"{self.root} has no {key} model (it has {have or 'none'}); "
                "rebuild with models/build.py"
            )
        return self.faceapi[key]


def locate_models(models_dir: Path | None = None) -> ModelFiles:
    """Find and verify the model directory.

    Searches ``models_dir``, then ``$EDGE_AGENT_MODELS``, then ``/var/lib/edge-agent/models``,
    then the repository's ``models/dist``. A directory given explicitly (argument or
    environment) must hold the files: a typo there raises instead of silently falling
    back to other files. The default locations are skipped when they hold no manifest.

    Raises:
        FileNotFoundError: No directory with a manifest, or a file it lists is missing.
        ValueError: The manifest is unreadable or a file's sha256 does not match it.
    """
    explicit: list[tuple[str, Path]] = []
    if models_dir is not None:
        explicit.append(("models_dir", Path(models_dir)))
    env = os.environ.get(ENV_VAR)
    if env:
        explicit.append((f"${ENV_VAR}", Path(env)))
    if explicit:
        origin, root = explicit[0]
        if not (root / MANIFEST_NAME).is_file():
            raise FileNotFoundError(
                f"{origin} is {root}, which has no {MANIFEST_NAME}; {_BUILD_HINT}"
            )
        return _load(root)
    searched = [DEFAULT_MODELS_DIR, REPO_MODELS_DIR]
    for root in searched:
        if (root / MANIFEST_NAME).is_file():
            return _load(root)
    places = ", ".join(str(root) for root in searched)
    raise FileNotFoundError(f"no model files found (searched {places}); {_BUILD_HINT}")


def sha256_file(path: Path) -> str:
    """Hash a file in 1 MiB chunks (model files and wheels need not fit in memory twice);
    the one definition the agent, ``models/build.py`` and the image recipe share."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _load(root: Path) -> ModelFiles:
    """Parse the manifest in ``root`` and verify every model file it lists."""
    manifest_path = root / MANIFEST_NAME
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"{manifest_path} is unreadable ({error}); {_BUILD_HINT}") from error
    if not isinstance(manifest, dict) or manifest.get("schema_version") != SUPPORTED_SCHEMA:
        raise ValueError(f"{manifest_path}: unsupported manifest schema; {_BUILD_HINT}")
    models = manifest.get("models", {})
    missing = [key for key in _REQUIRED if key not in models]
    if missing:
        raise ValueError(f"{manifest_path} lacks models {missing}; {_BUILD_HINT}")
    try:
        tasks = (_PERSON_TASK, _HEADS_TASK)
        tasked = (key for key, m in models.items() if m.get("task") in tasks)
        optional = (*_OPTIONAL, *_FACEAPI_KEYS, *tasked)
        listed = (*_REQUIRED, *(key for key in optional if key in models))
        paths = {key: _verified(root, models[key]) for key in listed}
        return _assemble(root, manifest, paths)
    except (KeyError, TypeError, IndexError) as error:
        raise ValueError(f"{manifest_path} is malformed ({error!r}); {_BUILD_HINT}") from error


def _verified(root: Path, entry: Mapping[str, Any]) -> Path:
    path = root / str(entry["file"]["name"])
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} is missing; {_BUILD_HINT}")
    actual, expected = sha256_file(path), str(entry["file"]["sha256"])
    if actual != expected:
        raise ValueError(
            f"{path} has sha256 {actual}, its manifest says {expected}: the file is corrupt "
            f"or from another build; {_BUILD_HINT}"
        )
    return path


def _detector_spec(path: Path, entry: Mapping[str, Any]) -> DetectorSpec:
    anchors, post = entry["anchors"], entry["postprocessing"]
    boxes, scores = entry["outputs"]
    offset_x, offset_y = anchors["anchor_offset"]
    if offset_x != offset_y:
        raise ValueError(f"{entry['name']}: non-square anchor offsets are not supported")
    return DetectorSpec(
        path=path,
        input_name=str(entry["input"]["name"]),
        input_size=int(entry["input"]["shape"][1]),
        boxes_output=str(boxes["name"]),
        scores_output=str(scores["name"]),
        num_anchors=int(anchors["num_anchors"]),
        strides=tuple(int(s) for s in anchors["strides"]),
        anchor_offset=float(offset_x),
        interpolated_scale_aspect_ratio=float(anchors["interpolated_scale_aspect_ratio"]),
        num_keypoints=int(post["num_keypoints"]),
        box_scale=float(post["box_scale"]),
        score_clipping=float(post["score_clipping"]),
        min_score=float(post["min_score"]),
        nms_threshold=float(post["nms"]["min_suppression_threshold"]),
    )


def _faceapi_spec(key: str, path: Path, entry: Mapping[str, Any]) -> FaceApiSpec:
    shape, pre = entry["input"]["shape"], entry["preprocessing"]
    norm = pre["normalization_in_graph"]
    if int(shape[1]) != int(shape[2]) or int(shape[3]) != 3:
        raise ValueError(f"{key}: expected a square 3-channel NHWC input, got {shape}")
    low, high = floats(pre["value_range"])
    r, g, b = floats(norm["means"])
    return FaceApiSpec(
        key=key,
        path=path,
        input_name=str(entry["input"]["name"]),
        input_size=int(shape[1]),
        layout=str(entry["input"]["layout"]),
        dtype=str(entry["input"]["dtype"]),
        color_order=str(pre["color_order"]),
        value_range=(low, high),
        means=(r, g, b),
        divisor=float(norm["divisor"]),
        output_names=tuple(str(o["name"]) for o in entry["outputs"]),
        labels=tuple(str(label) for label in entry["postprocessing"].get("labels", ())),
        preprocessing=MappingProxyType(dict(pre)),
    )


def _faceapi_specs(
    models: Mapping[str, Any], paths: Mapping[str, Path]
) -> Mapping[str, FaceApiSpec]:
    specs: dict[str, FaceApiSpec] = {}
    for base in _FACEAPI_BASES:
        for suffix in _FACEAPI_SUFFIX.values():
            key = base + suffix
            if key not in paths:
                continue
            if suffix and base in models:
                same = all(models[key][f] == models[base][f] for f in ("input", "preprocessing"))
                if not same or models[key]["outputs"] != models[base]["outputs"]:
                    raise ValueError(f"{key} and {base} disagree on the input or output tensors")
            specs[key] = _faceapi_spec(key, paths[key], models[key])
    return MappingProxyType(specs)


def _assemble(root: Path, manifest: Mapping[str, Any], paths: Mapping[str, Path]) -> ModelFiles:
    models = manifest["models"]
    people = {key for key, entry in models.items() if entry.get("task") == _PERSON_TASK}
    for key in _OPTIONAL:
        if key in models and models[key]["input"] != models[key.removesuffix("_int8")]["input"]:
            raise ValueError(f"{key} and its fp32 model disagree on the input tensor")
    age, gender = models["age"], models["gender"]
    age_pre, gender_pre = age["preprocessing"], gender["preprocessing"]
    shared = (
        age_pre["means"] == gender_pre["means"]
        and age_pre["scale"] == gender_pre["scale"]
        and age_pre["alignment"]["padding"] == gender_pre["alignment"]["padding"]
        and age["input"]["name"] == gender["input"]["name"]
        and age["outputs"][0]["name"] == gender["outputs"][0]["name"]
    )
    if not shared:
        # ModelFiles carries one normalization and one padding for both models.
        raise ValueError("age and gender manifest entries disagree on preprocessing or I/O names")
    r, g, b = floats(age_pre["means"])
    detectors: dict[DetectorVariant, DetectorSpec] = {
        variant: _detector_spec(paths[key], models[key]) for variant, key in _DETECTOR_KEYS.items()
    }
    return ModelFiles(
        root=root,
        short_range=paths[_DETECTOR_KEYS["short_range"]],
        full_range=paths[_DETECTOR_KEYS["full_range"]],
        face_landmark=paths["face_landmark"],
        age=paths["age"],
        gender=paths["gender"],
        age_int8=paths.get("age_int8"),
        gender_int8=paths.get("gender_int8"),
        detectors=MappingProxyType(detectors),
        age_weights=floats(age["postprocessing"]["class_weights"]),
        gender_labels=tuple(str(label) for label in gender["postprocessing"]["labels"]),
        means=(r, g, b),
        scale=float(age_pre["scale"]),
        age_chip_size=int(age_pre["alignment"]["chip_size"]),
        gender_chip_size=int(gender_pre["alignment"]["chip_size"]),
        chip_padding=float(age_pre["alignment"]["padding"]),
        input_name=str(age["input"]["name"]),
        output_name=str(age["outputs"][0]["name"]),
        versions=MappingProxyType({str(m["name"]): str(m["version"]) for m in models.values()}),
        manifest=MappingProxyType(dict(manifest)),
        faceapi=_faceapi_specs(models, paths),
        person_detectors=MappingProxyType(
            {k: person_spec(k, p, models[k]) for k, p in paths.items() if k in people}
        ),
        heads=MappingProxyType(
            {
                k: heads_spec(k, p, models[k])
                for k, p in paths.items()
                if models[k].get("task") == _HEADS_TASK
            }
        ),
    )
