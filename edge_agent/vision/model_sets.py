"""Which networks estimate gender and age: the *model sets* a configuration names.

A model set (``EstimatorConfig.models``) is dlib's pair, face-api's network, or both (an
ensemble), each at a precision. Every member of a set hands back the same two things per
crop, a gender distribution ``[2]`` (female, male) and an age distribution ``[81]`` over
dlib's age classes, calibrated (``calibration.CALIBRATION``), so aggregation has one code
path and every event keeps an age range. An ensemble averages its members'
distributions, weighted by ``MEMBER_WEIGHTS``.

A *fused* set (``HEADS``) adds gender and age heads on the face embedding
(``heads.py``, trained by ``edge-agent train-heads``) and multiplies their distributions
with its members' calibrated ones, with exponents fitted by likelihood.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Literal

from edge_agent.config import MODEL_SET_NAMES
from edge_agent.vision.model_files import Precision

Member = Literal["dlib", "faceapi"]
# A member's precision is its files' (model_files.Precision), or "mixed" for dlib: the int8
# age network with the fp32 gender network, whose int8 build loses more gender accuracy than
# the bound allows. face-api comes as fp32 and fp16 (float16 weights: int8 lost too much age
# accuracy, models/manifest.json).
MemberPrecision = Literal[Precision, "mixed"]

# Model set -> its members; an ensemble averages them (MEMBER_WEIGHTS).
MODEL_SETS: Final[Mapping[str, tuple[tuple[Member, MemberPrecision], ...]]] = {
    "dlib-mixed": (("dlib", "mixed"),),
    "dlib-int8": (("dlib", "int8"),),
    "dlib-fp32": (("dlib", "fp32"),),
    "faceapi-fp16": (("faceapi", "fp16"),),
    "faceapi-fp32": (("faceapi", "fp32"),),
    "ensemble-int8": (("dlib", "int8"), ("faceapi", "fp16")),
    "ensemble-fp32": (("dlib", "fp32"), ("faceapi", "fp32")),
    "dlib-heads": (("dlib", "mixed"),),  # + HEADS
}
# Fused sets -> the manifest key of the heads on the embedding they fuse with their members.
HEADS: Final[Mapping[str, str]] = {"dlib-heads": "heads_fairface"}
# The face-recognition network whose embedding the heads read (what the agent computes once
# per person for returns, ReturnsConfig.model's default).
HEADS_EMBEDDING: Final[Precision] = "int8"
assert tuple(MODEL_SETS) == MODEL_SET_NAMES, "config.py and model_sets.py list the same sets"

# The variants each member averages when EstimatorConfig.variants is "default": the
# measured best under the per-face budget (docs/models.md).
DEFAULT_VARIANTS: Final[Mapping[Member, str]] = {"dlib": "zoom", "faceapi": "none"}
# How much each member counts in an ensemble (normalised over the set's members).
MEMBER_WEIGHTS: Final[Mapping[Member, float]] = {"dlib": 1.0, "faceapi": 1.0}
