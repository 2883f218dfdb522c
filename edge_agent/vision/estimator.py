"""From a face in a frame to gender and age probabilities: landmarks, chips, networks.

The one path every caller shares (the video pipeline, ``edge-agent eval``, benchmarks),
so the accuracy measured offline is the accuracy of what runs on the device. Work is
batched: all chips of all faces in one call go through each network once.

Which networks run is a *model set* (``EstimatorConfig.models``, ``MODEL_SETS``): dlib's
pair, face-api's network, or both (an ensemble), each as int8 or float32. Every member
of a set hands back the same two things per crop, a gender distribution ``[2]`` (female,
male) and an age distribution ``[81]`` over dlib's age classes, calibrated
(``CALIBRATION``), so aggregation has one code path and every event keeps an age range.
face-api's age is one number; it becomes a distribution with the spread its errors have
on held-out faces (``age_distribution``). An ensemble averages its members'
distributions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal, Protocol

import numpy as np
from numpy.typing import NDArray

from edge_agent.config import MODEL_SET_NAMES, EstimatorConfig
from edge_agent.timing import StageTimes
from edge_agent.vision.align import box_chip, chip_variants, variant_set
from edge_agent.vision.attributes import AttributeModels, FaceApiModel
from edge_agent.vision.landmarks import FaceMeshLandmarker
from edge_agent.vision.model_files import ModelFiles

# A crop keeps this many face-box sides around the face: enough for the mesh's rotated
# 1.5x ROI and the chip's 0.2 padding, little enough to stay cheap to keep per track.
CROP_SIDES = 2.2

Member = Literal["dlib", "faceapi"]
# One face's chips for one member: a list per network, one chip per variant.
FaceChips = list[list[NDArray[np.uint8]]]
# dlib has int8 and fp32 files ("mixed": the int8 age network with the fp32 gender network,
# whose int8 build loses more gender accuracy than the bound allows); face-api fp32 and fp16
# (float16 weights: int8 lost too much age accuracy, models/manifest.json).
Precision = Literal["fp32", "fp16", "int8", "mixed"]

# Model set -> its members; an ensemble averages them (MEMBER_WEIGHTS).
MODEL_SETS: Final[Mapping[str, tuple[tuple[Member, Precision], ...]]] = {
    "dlib-mixed": (("dlib", "mixed"),),
    "dlib-int8": (("dlib", "int8"),),
    "dlib-fp32": (("dlib", "fp32"),),
    "faceapi-fp16": (("faceapi", "fp16"),),
    "faceapi-fp32": (("faceapi", "fp32"),),
    "ensemble-int8": (("dlib", "int8"), ("faceapi", "fp16")),
    "ensemble-fp32": (("dlib", "fp32"), ("faceapi", "fp32")),
}
assert tuple(MODEL_SETS) == MODEL_SET_NAMES, "config.py and estimator.py list the same sets"

# The variants each member averages when EstimatorConfig.variants is "default": the
# measured best under the per-face budget (docs/models.md).
DEFAULT_VARIANTS: Final[Mapping[Member, str]] = {"dlib": "zoom", "faceapi": "none"}
# face-api's crop side in pixels (its network's input).
FACEAPI_SIZE: Final = 112


@dataclass(frozen=True, slots=True)
class Calibration:
    """How a model set's outputs become calibrated distributions.

    ``gender_temperature`` divides the log-odds of the (variant- and member-averaged) male
    probability: above 1 less confident, below 1 more. Age: the set's point estimate
    (dlib: the expected value of its 81 classes; face-api: its regression; an ensemble:
    their weighted mean) becomes a Gaussian over the classes with that mean and spread
    ``a + b * age + c * s`` years (``age_sigma`` = (a, b, c)), where ``s`` is the spread the
    networks themselves show: the standard deviation of the mixture of dlib's
    distribution and face-api's point (0 for face-api alone, the members' disagreement
    and dlib's own spread in an ensemble).
    """

    gender_temperature: float = 1.0
    age_sigma: tuple[float, float, float] = (2.0, 0.2, 0.0)


# Fitted by bench/calibration.py (docs/models.md, "Calibration"): gender temperatures on
# lfw_gender_dev, age spreads on utkface_dev; the figures it reports are held out.
CALIBRATION: Final[Mapping[str, Calibration]] = {
    "dlib-mixed": Calibration(1.115, (1.97, 0.105, 0.7)),
    "dlib-int8": Calibration(0.957, (1.97, 0.105, 0.7)),
    "dlib-fp32": Calibration(1.115, (2.23, 0.098, 0.71)),
    "faceapi-fp16": Calibration(0.682, (2.6, 0.095, 0.0)),
    "faceapi-fp32": Calibration(0.682, (2.6, 0.095, 0.0)),
    "ensemble-int8": Calibration(0.635, (1.66, 0.076, 0.57)),
    "ensemble-fp32": Calibration(0.643, (1.62, 0.065, 0.65)),
}
assert set(CALIBRATION) == set(MODEL_SETS), "every model set has its calibration"
# How much each member counts in an ensemble (normalised over the set's members).
MEMBER_WEIGHTS: Final[Mapping[Member, float]] = {"dlib": 1.0, "faceapi": 1.0}


@dataclass(frozen=True, slots=True)
class FaceCrop:
    """A face cut out of a frame, with its box and keypoints in the crop's coordinates."""

    image: NDArray[np.uint8]
    box: NDArray[np.float32]
    keypoints: NDArray[np.float32]
    quality: float

    @classmethod
    def cut(
        cls,
        rgb: NDArray[np.uint8],
        box: NDArray[np.float32],
        keypoints: NDArray[np.float32],
        quality: float,
    ) -> FaceCrop:
        """Copy the face's neighbourhood out of ``rgb`` so the frame can be released."""
        height, width = rgb.shape[:2]
        centre = (box[:2] + box[2:]) / 2.0
        half = CROP_SIDES * float(max(box[2] - box[0], box[3] - box[1])) / 2.0
        x1, y1 = max(0, int(centre[0] - half)), max(0, int(centre[1] - half))
        x2, y2 = min(width, int(centre[0] + half) + 1), min(height, int(centre[1] + half) + 1)
        offset = np.array([x1, y1], np.float32)
        return cls(
            image=np.ascontiguousarray(rgb[y1:y2, x1:x2]),
            box=(box.reshape(2, 2) - offset).reshape(4),
            keypoints=keypoints - offset,
            quality=quality,
        )


@dataclass(frozen=True, slots=True)
class FaceEstimate:
    """One crop's averaged probabilities (``gender`` ``[2]``, ``age`` ``[81]``), how sure
    the face mesh is that the crop shows a face at all (``face_score``, 0..1), and the
    five dlib-order landmarks the chips were aligned on (``points``, float32 ``[5, 2]``,
    in the crop's pixel coordinates: image-right eye outer and inner corner, image-left
    eye outer and inner corner, bottom of the nose)."""

    gender: NDArray[np.float32]
    age: NDArray[np.float32]
    face_score: float
    points: NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class RawOutputs:
    """One member's uncalibrated outputs for a batch of faces, per variant chip.

    ``gender`` ``[N, V, 2]``; ``age`` ``[N, V, 81]`` (dlib) or ``[N, V]`` years (face-api).
    """

    gender: NDArray[np.float32]
    age: NDArray[np.float32]


def gender_calibrated(male: NDArray[np.floating], temperature: float) -> NDArray[np.float32]:
    """``[N, 2]`` (female, male) from male probabilities with their log-odds / ``T``."""
    p = np.clip(np.asarray(male, np.float64), 1e-7, 1.0 - 1e-7)
    scaled = 1.0 / (1.0 + np.exp(-np.log(p / (1.0 - p)) / temperature))
    return np.stack([1.0 - scaled, scaled], axis=-1).astype(np.float32)


def _normal_cdf(x: NDArray[np.float64]) -> NDArray[np.float64]:
    """The standard normal CDF (Abramowitz and Stegun 7.1.26, |error| < 1.5e-7)."""
    z = np.abs(x) / np.sqrt(2.0)
    t = 1.0 / (1.0 + 0.3275911 * z)
    poly = t * (
        0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429)))
    )
    erf = 1.0 - poly * np.exp(-z * z)
    result: NDArray[np.float64] = 0.5 * (1.0 + np.sign(x) * erf)
    return result


def age_distribution(
    years: NDArray[np.floating] | Sequence[float],
    spread: NDArray[np.floating] | Sequence[float] | float,
    sigma: tuple[float, float, float],
    class_ages: Sequence[float],
) -> NDArray[np.float32]:
    """Point ages as distributions over the age classes.

    A Gaussian of standard deviation ``a + b * age + c * spread`` (``sigma`` = (a, b, c))
    is binned onto the classes, the first and last class taking everything below and
    above them (dlib's oldest class holds everyone older than 80), and shifted so that
    each distribution's expected value is its point age (clipped to the classes' range),
    as dlib's ages are expected values. A point age at the very end of the range leaves
    no room for spread: its distribution is the end class alone.
    """
    ages = np.asarray(class_ages, np.float64)
    target = np.clip(np.asarray(years, np.float64).reshape(-1), ages[0], ages[-1])
    extra = np.broadcast_to(np.asarray(spread, np.float64).reshape(-1), target.shape)
    width = np.maximum(sigma[0] + sigma[1] * target + sigma[2] * extra, 0.5)[:, None]
    edges = np.concatenate([[-np.inf], (ages[1:] + ages[:-1]) / 2.0, [np.inf]])

    def dist(centre: NDArray[np.float64]) -> NDArray[np.float64]:
        cdf = _normal_cdf((edges[None, :] - centre[:, None]) / width)
        p = np.maximum(np.diff(cdf, axis=1), 0.0)
        result: NDArray[np.float64] = p / np.maximum(p.sum(axis=1, keepdims=True), 1e-300)
        return result

    # The mean rises monotonically with the Gaussian's centre: bisect for it.
    low, high = target - 10.0 * width[:, 0] - 1.0, target + 10.0 * width[:, 0] + 1.0
    for _ in range(50):
        middle = (low + high) / 2.0
        above = dist(middle) @ ages > target
        high, low = np.where(above, middle, high), np.where(above, low, middle)
    return dist((low + high) / 2.0).astype(np.float32).reshape(*np.shape(years), len(ages))


def select_variants(raw: RawOutputs, variants: str) -> RawOutputs:
    """The chips of a named variant set, picked out of the 14 of ``"full"``."""
    full = variant_set("full")
    index = [full.index(v) for v in variant_set(variants)]
    return RawOutputs(raw.gender[:, index], raw.age[:, index])


@dataclass(frozen=True, slots=True)
class Points:
    """A set's uncalibrated point estimates for N faces: male probability, mean age and
    the networks' own spread in years."""

    male: NDArray[np.float64]
    age: NDArray[np.float64]
    spread: NDArray[np.float64]


def points(
    members: Sequence[Member], raws: Sequence[RawOutputs], class_ages: Sequence[float]
) -> Points:
    """Average each member's variants, then the members (``MEMBER_WEIGHTS``)."""
    weights = np.array([MEMBER_WEIGHTS[m] for m in members], np.float64)
    weights /= weights.sum()
    grid = np.asarray(class_ages, np.float64)
    male = np.zeros(len(raws[0].gender))
    first, second = np.zeros_like(male), np.zeros_like(male)
    for w, member, raw in zip(weights, members, raws, strict=True):
        male += w * raw.gender.mean(axis=1)[:, 1]
        if member == "dlib":  # a distribution over the classes
            dist = raw.age.mean(axis=1).astype(np.float64)
            first += w * (dist @ grid)
            second += w * (dist @ grid**2)
        else:  # years
            years = raw.age.mean(axis=1).astype(np.float64)
            first += w * years
            second += w * years**2
    return Points(male, first, np.sqrt(np.maximum(second - first**2, 0.0)))


def calibrated(
    found: Points, calibration: Calibration, class_ages: Sequence[float]
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Calibrated ``[N, 2]`` gender and ``[N, 81]`` age distributions."""
    gender = gender_calibrated(found.male, calibration.gender_temperature)
    a, b, c = calibration.age_sigma
    return gender, age_distribution(found.age, found.spread, (a, b, c), class_ages)


def finish(
    members: Sequence[Member],
    raws: Sequence[RawOutputs],
    calibration: Calibration,
    class_ages: Sequence[float],
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """A set's outputs (one ``RawOutputs`` per member) as calibrated distributions."""
    return calibrated(points(members, raws, class_ages), calibration, class_ages)


class _Member(Protocol):
    """One network (pair) of a model set: chips for a face, then batched inference."""

    member: Member
    precision: Precision
    keys: dict[str, str]  # event model name -> manifest key

    def chips(
        self, image: NDArray[np.uint8], points: NDArray[np.float64], variants: str
    ) -> FaceChips: ...

    def run(self, chips: Sequence[FaceChips], times: StageTimes) -> RawOutputs: ...


class DlibMember:
    """dlib's gender (32 px chips) and age (64 px chips) networks."""

    member: Member = "dlib"

    def __init__(
        self,
        models: AttributeModels,
        precision: Precision,
        gender_size: int,
        age_size: int,
        keys: dict[str, str],
    ) -> None:
        self.models = models
        self.precision = precision
        self.gender_size = gender_size
        self.age_size = age_size
        self.keys = keys

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


class FaceApiMember:
    """face-api's one network on 112 px upright face crops (``align.box_chip``)."""

    member: Member = "faceapi"

    def __init__(
        self,
        model: FaceApiModel,
        precision: Precision,
        keys: dict[str, str],
    ) -> None:
        self.model = model
        self.precision = precision
        self.keys = keys

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
        members: Sequence[_Member],
        class_ages: Sequence[float],
        calibration: Calibration | None = None,
        tta: bool = True,
        variants: str = "default",
        times: StageTimes | None = None,
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
        return cls(
            landmarker, members, files.age_weights, calibration, config.tta, config.variants, times
        )

    @property
    def model_keys(self) -> dict[str, str]:
        """Event model name -> manifest key, for ``PersonEvent.models``."""
        return {name: key for m in self.members for name, key in m.keys.items()}

    @property
    def _models(self) -> AttributeModels:
        """The dlib networks of this set (for tests that drive them directly)."""
        member = next(m for m in self.members if isinstance(m, DlibMember))
        return member.models

    def variants_of(self, member: _Member) -> str:
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
        return [
            FaceEstimate(gender=gender[i], age=age[i], face_score=scores[i], points=landmarks[i])
            for i in range(len(crops))
        ]


def load_member(member: Member, precision: Precision, files: ModelFiles, threads: int) -> _Member:
    """One member's networks, verified and loaded."""
    if member == "dlib":
        if precision == "fp16":
            raise FileNotFoundError("dlib's networks have no fp16 build (int8 or fp32)")
        # "mixed": the int8 age network with the fp32 gender network.
        gender_precision: Literal["fp32", "int8"] = "int8" if precision == "int8" else "fp32"
        age_precision: Literal["fp32", "int8"] = "fp32" if precision == "fp32" else "int8"
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
