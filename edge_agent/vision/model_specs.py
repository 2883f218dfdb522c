"""The manifest's descriptions of the optional networks a model directory may hold: person
detectors and the heads on the face embedding (``model_files`` finds and verifies the
files; these say how to feed them and read their outputs). Standard library only."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["HeadsSpec", "PersonDetectorSpec", "floats", "heads_spec", "person_spec"]


@dataclass(frozen=True, slots=True)
class PersonDetectorSpec:
    """A person detector (NanoDet heads): input float32 ``[1, 3, H, W]``, raw 0..255 in
    ``color_order``, sides multiples of ``size_multiple`` (``input_size``: default longer
    side); per stride ``s`` one ``[1, num_classes + 4 * (reg_max + 1), H / s, W / s]`` output:
    class logits, then box-side distribution logits (left, top, right, bottom)."""

    key: str  # manifest key = the name PeopleConfig.model uses
    path: Path
    input_name: str
    input_size: int
    size_multiple: int
    color_order: str  # "BGR" or "RGB"
    means: tuple[float, float, float]  # in color_order
    stds: tuple[float, float, float]
    normalization_in_graph: bool
    output_names: tuple[str, ...]  # one per stride
    strides: tuple[int, ...]
    num_classes: int
    person_class: int
    reg_max: int
    center_offset: float  # cell x is centred at (x + center_offset) * stride
    nms_iou: float


@dataclass(frozen=True, slots=True)
class HeadsSpec:
    """Linear gender and age heads on the face embedding (``vision/heads.py``).

    Input ``[N, input_size]`` float32: the unit-length embeddings of the face-recognition
    network ``embedding`` (a manifest key) computes. Outputs: gender probabilities
    ``[N, 2]`` (``gender_labels``) and age-group probabilities ``[N, G]``, group ``g``
    being ``age_groups[g]`` = (label, youngest, oldest age in years). ``fusion_*`` are the
    (head, dlib) exponents of the product of experts a fused set forms.
    """

    key: str
    path: Path
    input_name: str
    input_size: int
    embedding: str
    output_names: tuple[str, str]  # (gender, age groups)
    gender_labels: tuple[str, ...]
    age_groups: tuple[tuple[str, float, float], ...]
    fusion_gender: tuple[float, float]
    fusion_age: tuple[float, float]


def floats(values: Sequence[Any]) -> tuple[float, ...]:
    return tuple(float(v) for v in values)


def person_spec(key: str, path: Path, entry: Mapping[str, Any]) -> PersonDetectorSpec:
    shape, pre, post = entry["input"]["shape"], entry["preprocessing"], entry["postprocessing"]
    if entry["input"]["layout"] != "NCHW" or int(shape[1]) != 3:
        raise ValueError(f"{key}: expected a 3-channel NCHW input, got {shape}")
    norm = pre["normalization"]
    b0, b1, b2 = floats(norm["means"])
    s0, s1, s2 = floats(norm["stds"])
    return PersonDetectorSpec(
        key=key,
        path=path,
        input_name=str(entry["input"]["name"]),
        input_size=int(pre["input_size"]),
        size_multiple=int(pre["size_multiple"]),
        color_order=str(pre["color_order"]),
        means=(b0, b1, b2),
        stds=(s0, s1, s2),
        normalization_in_graph=bool(norm["in_graph"]),
        output_names=tuple(str(o["name"]) for o in entry["outputs"]),
        strides=tuple(int(o["stride"]) for o in entry["outputs"]),
        num_classes=int(post["num_classes"]),
        person_class=int(post["person_class"]),
        reg_max=int(post["reg_max"]),
        center_offset=float(post["center_offset"]),
        nms_iou=float(post["nms_iou"]),
    )


def heads_spec(key: str, path: Path, entry: Mapping[str, Any]) -> HeadsSpec:
    shape, post = entry["input"]["shape"], entry["postprocessing"]
    gender, age = (str(o["name"]) for o in entry["outputs"])
    fusion = post["fusion"]
    head_g, dlib_g = floats(fusion["gender"])
    head_a, dlib_a = floats(fusion["age"])
    return HeadsSpec(
        key=key,
        path=path,
        input_name=str(entry["input"]["name"]),
        input_size=int(shape[1]),
        embedding=str(entry["input"]["embedding"]),
        output_names=(gender, age),
        gender_labels=tuple(str(label) for label in post["gender_labels"]),
        age_groups=tuple((str(g[0]), float(g[1]), float(g[2])) for g in post["age_groups"]),
        fusion_gender=(head_g, dlib_g),
        fusion_age=(head_a, dlib_a),
    )
