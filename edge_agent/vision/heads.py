"""Gender and age heads on the face embedding, fused with dlib's calibrated outputs.

The seed's design: compute a face's features once (the 128-D face-recognition embedding,
``embedding.FaceEmbedder``), then read gender and age off them with small linear heads.
The heads are trained by ``edge-agent train-heads`` (scikit-learn at training time; the
device runs their ONNX file on onnxruntime, NumPy for the rest): a logistic regression
for gender and a multinomial one over FairFace's age groups (0-2, 3-9, 10-19, ...,
70+), the groups the only licensed training set here is labelled in.

A fused set (``model_sets.HEADS``) multiplies the heads' distributions with its dlib
member's calibrated ones, each raised to a weight fitted by likelihood on out-of-fold
predictions (a product of experts):

- gender: ``logit p = w_head * logit p_head + w_dlib * logit p_dlib``;
- age: the heads' group distribution is spread evenly over the dlib classes in each group,
  then ``q(c) ~ p_head(c) ** w_head * p_dlib(c) ** w_dlib`` over the 81 classes, so every
  set still hands back a distribution over dlib's classes, its shape within a group
  coming from dlib.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from edge_agent.timing import StageTimes
from edge_agent.vision.embedding import FaceEmbedder
from edge_agent.vision.model_files import HeadsSpec
from edge_agent.vision.onnx_session import cpu_session

_EPS = 1e-12


def _log_odds(male: NDArray[np.floating]) -> NDArray[np.float64]:
    p = np.clip(np.asarray(male, np.float64), 1e-7, 1.0 - 1e-7)
    result: NDArray[np.float64] = np.log(p / (1.0 - p))
    return result


def group_classes(
    groups: Sequence[tuple[str, float, float]], class_ages: Sequence[float]
) -> NDArray[np.int64]:
    """The group index of each age class: the group whose ``[low, high]`` holds its age."""
    ages = np.asarray(class_ages, np.float64)
    index = np.full(len(ages), -1, np.int64)
    for g, (_, low, high) in enumerate(groups):
        index[(ages >= low) & (ages <= high)] = g
    if (index < 0).any() or len(set(index.tolist())) != len(groups):
        raise ValueError(f"age groups {groups} do not cover the classes {tuple(ages)} once each")
    return index


def spread_groups(
    group_probs: NDArray[np.floating], classes: NDArray[np.int64]
) -> NDArray[np.float64]:
    """``[N, G]`` group probabilities as ``[N, C]`` class probabilities, each group's
    probability shared evenly by its classes."""
    counts = np.bincount(classes, minlength=group_probs.shape[1]).astype(np.float64)
    result: NDArray[np.float64] = np.asarray(group_probs, np.float64)[:, classes] / counts[classes]
    return result


def class_groups(
    class_probs: NDArray[np.floating], classes: NDArray[np.int64], n_groups: int
) -> NDArray[np.float64]:
    """``[N, C]`` class probabilities summed into ``[N, G]`` groups."""
    result = np.zeros((len(class_probs), n_groups))
    for g in range(n_groups):
        result[:, g] = np.asarray(class_probs, np.float64)[:, classes == g].sum(axis=1)
    return result


@dataclass(frozen=True, slots=True)
class Fusion:
    """The exponents of the product of experts: ``(head, dlib)`` for gender and for age."""

    gender: tuple[float, float] = (1.0, 1.0)
    age: tuple[float, float] = (1.0, 1.0)


def fuse_gender(
    head_male: NDArray[np.floating], dlib_male: NDArray[np.floating], weights: tuple[float, float]
) -> NDArray[np.float32]:
    """``[N, 2]`` (female, male): the weighted sum of both log-odds."""
    z = weights[0] * _log_odds(head_male) + weights[1] * _log_odds(dlib_male)
    male = 1.0 / (1.0 + np.exp(-z))
    return np.stack([1.0 - male, male], axis=-1).astype(np.float32)


def fuse_age(
    head_classes: NDArray[np.floating],
    dlib_age: NDArray[np.floating],
    weights: tuple[float, float],
) -> NDArray[np.float32]:
    """``[N, C]``: the normalised product of both class distributions, each to its weight."""
    log_q = weights[0] * np.log(np.asarray(head_classes, np.float64) + _EPS)
    log_q = log_q + weights[1] * np.log(np.asarray(dlib_age, np.float64) + _EPS)
    log_q -= log_q.max(axis=1, keepdims=True)
    q: NDArray[np.float64] = np.exp(log_q)
    result: NDArray[np.float32] = (q / q.sum(axis=1, keepdims=True)).astype(np.float32)
    return result


class HeadsModel:
    """The heads' ONNX file: ``[N, 128]`` unit embeddings -> gender ``[N, 2]`` (female,
    male) and age-group ``[N, G]`` probabilities."""

    def __init__(self, spec: HeadsSpec, threads: int = 1) -> None:
        self.spec = spec
        self._session = cpu_session(spec.path, threads)

    def predict(
        self, embeddings: NDArray[np.float32]
    ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """Both heads on a batch of embeddings."""
        if len(embeddings) == 0:
            return np.zeros((0, 2), np.float32), np.zeros(
                (0, len(self.spec.age_groups)), np.float32
            )
        feed = {self.spec.input_name: np.ascontiguousarray(embeddings, np.float32)}
        gender, age = self._session.run(list(self.spec.output_names), feed)
        return np.asarray(gender, np.float32), np.asarray(age, np.float32)


@dataclass(eq=False)
class HeadsMember:
    """The embedding network and the heads on it, for a fused set."""

    embedder: FaceEmbedder
    model: HeadsModel
    class_ages: tuple[float, ...]
    keys: dict[str, str]
    classes: NDArray[np.int64] = field(init=False)

    def __post_init__(self) -> None:
        self.classes = group_classes(self.model.spec.age_groups, self.class_ages)

    @property
    def fusion(self) -> Fusion:
        """The product-of-experts exponents the manifest gives for these heads."""
        spec = self.model.spec
        return Fusion(spec.fusion_gender, spec.fusion_age)

    def run(
        self,
        images: Sequence[NDArray[np.uint8]],
        points: Sequence[NDArray[np.floating]],
        times: StageTimes,
    ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """Gender ``[N, 2]`` and age-group ``[N, G]`` probabilities of N faces."""
        with times.stage("heads"):
            return self.model.predict(self.embedder.embed(images, points))

    def fuse(
        self,
        dlib_gender: NDArray[np.float32],
        dlib_age: NDArray[np.float32],
        head_gender: NDArray[np.float32],
        head_groups: NDArray[np.float32],
    ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """The fused calibrated ``[N, 2]`` gender and ``[N, 81]`` age distributions."""
        fusion = self.fusion
        gender = fuse_gender(head_gender[:, 1], dlib_gender[:, 1], fusion.gender)
        age = fuse_age(spread_groups(head_groups, self.classes), dlib_age, fusion.age)
        return gender, age
