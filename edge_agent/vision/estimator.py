"""From a face in a frame to gender and age probabilities: landmarks, chips, networks.

The one path every caller shares (the video pipeline, ``edge-agent eval``, benchmarks),
so the accuracy measured offline is the accuracy of what runs on the device. Work is
batched: all chips of all faces in one call go through each network once.

Which networks run is a *model set* (``EstimatorConfig.models``; ``model_sets.py``):
dlib's pair, face-api's network, or both (an ensemble). Each member here cuts its chips
and runs its networks; ``calibration.py`` turns their raw outputs into calibrated
distributions, a gender ``[2]`` (female, male) and an age ``[81]`` over dlib's classes.
A fused set (``model_sets.HEADS``) then multiplies those with what its heads on the face
embedding say (``heads.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

import numpy as np
from numpy.typing import NDArray

from edge_agent.config import EstimatorConfig
from edge_agent.timing import StageTimes
from edge_agent.vision.align import box_chip, chip_variants, variant_set
from edge_agent.vision.attributes import AttributeModels, FaceApiModel
from edge_agent.vision.calibration import CALIBRATION, Calibration, RawOutputs, finish
from edge_agent.vision.detections import FaceCrop, FaceEstimate
from edge_agent.vision.embedding import FaceEmbedder
from edge_agent.vision.heads import HeadsMember, HeadsModel
from edge_agent.vision.landmarks import FaceMeshLandmarker
from edge_agent.vision.model_files import ModelFiles, Precision
from edge_agent.vision.model_sets import (
    DEFAULT_VARIANTS,
    HEADS,
    HEADS_EMBEDDING,
    MODEL_SETS,
    Member,
    MemberPrecision,
)

# One face's chips for one member: a list per network, one chip per variant.
FaceChips = list[list[NDArray[np.uint8]]]
# face-api's crop side in pixels (its network's input).
FACEAPI_SIZE: Final = 112


class MemberNetworks(Protocol):
    """One member's network (pair) of a model set: chips for a face, then batched inference."""

    member: Member
    precision: MemberPrecision
    keys: dict[str, str]  # event model name -> manifest key

    def chips(
        self, image: NDArray[np.uint8], points: NDArray[np.float64], variants: str
    ) -> FaceChips: ...

    def run(self, chips: Sequence[FaceChips], times: StageTimes) -> RawOutputs: ...


@dataclass(eq=False)
class DlibMember:
    """dlib's gender (32 px chips) and age (64 px chips) networks."""

    models: AttributeModels
    precision: MemberPrecision
    gender_size: int
    age_size: int
    keys: dict[str, str]
    member: Member = field(default="dlib", init=False)

    def chips(
        self, image: NDArray[np.uint8], points: NDArray[np.float64], variants: str
    ) -> FaceChips:
        """``[gender chips, age chips]`` of one face, one per variant."""
        return [
            chip_variants(image, points, self.gender_size, variants),
            chip_variants(image, points, self.age_size, variants),
        ]

    def run(self, chips: Sequence[FaceChips], times: StageTimes) -> RawOutputs:
        """Both networks on every face's chips, one batch each."""
        faces, per_face = len(chips), len(chips[0][0])
        with times.stage("gender"):
            gender = self.models.gender([c for face in chips for c in face[0]])
        with times.stage("age"):
            age = self.models.age([c for face in chips for c in face[1]])
        return RawOutputs(gender.reshape(faces, per_face, 2), age.reshape(faces, per_face, -1))


@dataclass(eq=False)
class FaceApiMember:
    """face-api's one network on 112 px upright face crops (``align.box_chip``)."""

    model: FaceApiModel
    precision: MemberPrecision
    keys: dict[str, str]
    member: Member = field(default="faceapi", init=False)

    def chips(
        self, image: NDArray[np.uint8], points: NDArray[np.float64], variants: str
    ) -> FaceChips:
        """``[crops]`` of one face, one per variant."""
        return [[box_chip(image, points, FACEAPI_SIZE, variant=v) for v in variant_set(variants)]]

    def run(self, chips: Sequence[FaceChips], times: StageTimes) -> RawOutputs:
        """The network on every face's crops, one batch."""
        faces, per_face = len(chips), len(chips[0][0])
        with times.stage("age_gender"):
            years, gender = self.model.predict([c for face in chips for c in face[0]])
        return RawOutputs(gender.reshape(faces, per_face, 2), years.reshape(faces, per_face))


class DemographicsEstimator:
    """Landmarks, then every member's chips (with test-time variants) and networks."""

    def __init__(
        self,
        landmarker: FaceMeshLandmarker,
        members: Sequence[MemberNetworks],
        class_ages: Sequence[float],
        calibration: Calibration | None = None,
        tta: bool = True,
        variants: str = "default",
        times: StageTimes | None = None,
        heads: HeadsMember | None = None,
    ) -> None:
        if not members:
            raise ValueError("a model set needs at least one member")
        self.landmarker = landmarker
        self.members = list(members)
        self.class_ages = tuple(class_ages)
        self.calibration = calibration or Calibration()
        self.tta = tta  # False: one plain chip per network (live-switchable)
        self.variants = variants
        self.times = times or StageTimes()
        self.heads = heads  # a fused set's heads on the embedding, else None

    @classmethod
    def load(
        cls,
        config: EstimatorConfig,
        files: ModelFiles,
        landmarker: FaceMeshLandmarker,
        threads: int = 1,
        times: StageTimes | None = None,
    ) -> DemographicsEstimator:
        """The estimator for ``config.models`` (a set name; ``int8``/``fp32`` are aliases
        of ``dlib-int8``/``dlib-fp32``) with its verified files and calibration."""
        members = [
            load_member(member, precision, files, threads)
            for member, precision in MODEL_SETS[config.models]
        ]
        calibration = CALIBRATION[config.models]
        heads = load_heads(HEADS[config.models], files, threads) if config.models in HEADS else None
        return cls(
            landmarker,
            members,
            files.age_weights,
            calibration,
            config.tta,
            config.variants,
            times,
            heads,
        )

    def apply_settings(self, config: EstimatorConfig) -> None:
        """Take the settings a fleet may change at run time (``tta``); the model set and
        its variants stay what the estimator was loaded with."""
        self.tta = config.tta

    @property
    def model_keys(self) -> dict[str, str]:
        """Event model name -> manifest key, for ``PersonEvent.models``."""
        keys = {name: key for m in self.members for name, key in m.keys.items()}
        return keys | (self.heads.keys if self.heads is not None else {})

    @property
    def _models(self) -> AttributeModels:
        """The dlib networks of this set (for tests that drive them directly)."""
        member = next(m for m in self.members if isinstance(m, DlibMember))
        return member.models

    def variants_of(self, member: MemberNetworks) -> str:
        """The variant set one member averages now."""
        if not self.tta:
            return "none"
        return DEFAULT_VARIANTS[member.member] if self.variants == "default" else self.variants

    def raw(
        self, crops: Sequence[FaceCrop]
    ) -> tuple[list[NDArray[np.float32]], list[float], list[RawOutputs]]:
        """Landmarks, face scores and every member's per-variant outputs, uncalibrated."""
        landmarks: list[NDArray[np.float32]] = []
        scores: list[float] = []
        chips: list[list[FaceChips]] = [[] for _ in self.members]
        with self.times.stage("align"):
            for crop in crops:
                found, face_score = self.landmarker.dlib5(crop.image, crop.box, crop.keypoints)
                landmarks.append(found.astype(np.float32))
                scores.append(face_score)
                for i, member in enumerate(self.members):
                    chips[i].append(member.chips(crop.image, found, self.variants_of(member)))
        outputs = [m.run(c, self.times) for m, c in zip(self.members, chips, strict=True)]
        return landmarks, scores, outputs

    def estimate(self, crops: Sequence[FaceCrop]) -> list[FaceEstimate]:
        """Probabilities per crop, in order; every crop's variants are averaged."""
        if not crops:
            return []
        landmarks, scores, outputs = self.raw(crops)
        members = [m.member for m in self.members]
        gender, age = finish(members, outputs, self.calibration, self.class_ages)
        if self.heads is not None:
            images = [crop.image for crop in crops]
            head_gender, head_groups = self.heads.run(images, landmarks, self.times)
            gender, age = self.heads.fuse(gender, age, head_gender, head_groups)
        return [
            FaceEstimate(gender=gender[i], age=age[i], face_score=scores[i], points=landmarks[i])
            for i in range(len(crops))
        ]


def load_heads(key: str, files: ModelFiles, threads: int) -> HeadsMember:
    """A fused set's heads and the embedding network they read, verified and loaded."""
    spec = files.attribute_heads(key)
    embedder = FaceEmbedder.from_model_files(files, HEADS_EMBEDDING, threads)
    if embedder.spec.key != spec.embedding or spec.gender_labels != files.gender_labels:
        raise ValueError(
            f"{key}: reads {spec.embedding} with labels {spec.gender_labels}, expected "
            f"{embedder.spec.key} with {files.gender_labels}"
        )
    keys = {"heads": spec.key, "embedding": embedder.spec.key}
    return HeadsMember(embedder, HeadsModel(spec, threads), files.age_weights, keys)


def load_member(
    member: Member, precision: MemberPrecision, files: ModelFiles, threads: int
) -> MemberNetworks:
    """One member's networks, verified and loaded."""
    if member == "dlib":
        # "mixed": the int8 age network with the fp32 gender network (no fp16 build: the
        # files say so).
        gender_precision: Precision = "fp32" if precision == "mixed" else precision
        age_precision: Precision = "int8" if precision == "mixed" else precision
        gender_path, _, gender_key, _ = files.attribute_models(gender_precision)
        _, age_path, _, age_key = files.attribute_models(age_precision)
        models = AttributeModels(
            gender_path, age_path, files.means, files.scale, files.input_name, threads
        )
        keys = {"gender": gender_key, "age": age_key}
        return DlibMember(models, precision, files.gender_chip_size, files.age_chip_size, keys)
    if precision == "mixed":
        raise FileNotFoundError("face-api has one network: fp32 or fp16")
    spec = files.faceapi_age_gender(precision)
    if spec.labels != files.gender_labels or spec.input_size != FACEAPI_SIZE:
        raise ValueError(f"{spec.key}: expected {files.gender_labels} at {FACEAPI_SIZE} px")
    age_out, gender_out = spec.output_names
    model = FaceApiModel(spec.path, spec.input_name, age_out, gender_out, threads)
    return FaceApiMember(model, precision, {"age_gender": spec.key})
