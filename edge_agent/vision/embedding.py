"""One face embedding per person, on the device, to recognise someone who comes back.

The network is dlib's 128-D face-recognition ResNet (``dlib_face_recognition_resnet_model_v1``,
CC0) in face-api's port, converted to ONNX by ``models/build.py``. Its input is dlib's face
chip: the five dlib landmarks mapped onto dlib's template by a similarity transform, 150x150
pixels with 0.25 padding (``dlib.get_face_chip``'s defaults), cut here by ``align.face_chip``
so the geometry is the one the gender and age chips already share with dlib.

``embed`` returns unit-length vectors: compare two with :func:`cosine` (a dot product of
unit vectors). dlib's own descriptors are not unit length (norms about 1.3 to 1.6) and dlib
calls two faces one person below a Euclidean distance of 0.6; ``descriptors`` returns the
network's raw output for that comparison. Embeddings never leave the device.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from edge_agent.vision.align import face_chip
from edge_agent.vision.model_files import FaceApiSpec, ModelFiles, Precision
from edge_agent.vision.onnx_session import cpu_session

__all__ = [
    "CHIP_PADDING",
    "CHIP_SIZE",
    "EMBEDDING_SIZE",
    "FaceEmbedder",
    "cosine",
]

CHIP_SIZE: Final = 150  # dlib's face-recognition chip
CHIP_PADDING: Final = 0.25
EMBEDDING_SIZE: Final = 128


class FaceEmbedder:
    """Aligned 150x150 chips and dlib's face-recognition network on onnxruntime (CPU)."""

    def __init__(self, spec: FaceApiSpec, threads: int = 1) -> None:
        expected = ("NHWC", "float32", "RGB", (0.0, 255.0), CHIP_SIZE, "embedding")
        found = (
            spec.layout,
            spec.dtype,
            spec.color_order,
            spec.value_range,
            spec.input_size,
            spec.output_names[0] if spec.output_names else None,
        )
        if found != expected:
            raise ValueError(f"{spec.path}: input/output {found}, expected {expected}")
        self.spec = spec
        self._session: ort.InferenceSession = cpu_session(spec.path, threads)

    @classmethod
    def from_model_files(
        cls, files: ModelFiles, precision: Precision = "fp32", threads: int = 1
    ) -> FaceEmbedder:
        """The embedder from the verified model directory: ``fp32`` or ``int8``.

        Raises FileNotFoundError when the manifest lists no such face-recognition model.
        """
        return cls(files.face_recognition(precision), threads)

    def chips(
        self, images: Sequence[NDArray[np.uint8]], points: Sequence[NDArray[np.floating]]
    ) -> list[NDArray[np.uint8]]:
        """dlib's 150x150 face chip (0.25 padding) of each RGB image from its dlib-5 points."""
        if len(images) != len(points):
            raise ValueError(f"{len(images)} images but {len(points)} landmark sets")
        chips = []
        for image, landmarks in zip(images, points, strict=True):
            if image.ndim != 3 or image.shape[2] != 3:
                raise ValueError(f"expected an RGB image [H, W, 3], got shape {image.shape}")
            if np.shape(landmarks) != (5, 2):
                raise ValueError(f"expected dlib-5 landmarks [5, 2], got {np.shape(landmarks)}")
            chips.append(face_chip(image, landmarks, CHIP_SIZE, padding=CHIP_PADDING))
        return chips

    def descriptors(self, chips: Sequence[NDArray[np.uint8]]) -> NDArray[np.float32]:
        """The network's raw ``[N, 128]`` output for ``N`` 150x150 RGB chips, in one run.

        On dlib's scale: comparable with ``dlib.face_recognition_model_v1`` descriptors
        and its 0.6 Euclidean same-person threshold. Not normalised.
        """
        if not chips:
            return np.zeros((0, EMBEDDING_SIZE), np.float32)
        # Raw 0..255 RGB, NHWC: the graph subtracts the means and scales by itself.
        feed = {self.spec.input_name: np.stack(chips).astype(np.float32)}
        out = np.asarray(self._session.run([self.spec.output_names[0]], feed)[0], np.float32)
        return out.reshape(len(chips), EMBEDDING_SIZE)

    def embed(
        self, images: Sequence[NDArray[np.uint8]], points: Sequence[NDArray[np.floating]]
    ) -> NDArray[np.float32]:
        """Unit-length ``[N, 128]`` embeddings of ``N`` faces, all in one network run.

        ``images`` are RGB face crops (any size, e.g. ``FaceCrop.image``); ``points`` the
        five dlib landmarks of each, in that crop's pixels and in dlib's
        ``shape_predictor_5`` order (``FaceMeshLandmarker.dlib5``).
        """
        raw = self.descriptors(self.chips(images, points))
        norms = np.linalg.norm(raw, axis=1, keepdims=True)
        unit: NDArray[np.float32] = (raw / np.maximum(norms, 1e-12)).astype(np.float32)
        return unit


def cosine(a: NDArray[np.floating], b: NDArray[np.floating]) -> NDArray[np.float64]:
    """Cosine similarity along the last axis, with NumPy broadcasting.

    Two ``[128]`` vectors give a 0-d array (``float()`` it); ``[N, 128]`` and ``[N, 128]``
    give ``[N]``; ``a[:, None]`` against ``b[None]`` gives the ``[N, M]`` matrix. Works for
    unnormalised vectors too (dlib's descriptors).
    """
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    dot = (a64 * b64).sum(axis=-1)
    norms = np.linalg.norm(a64, axis=-1) * np.linalg.norm(b64, axis=-1)
    result: NDArray[np.float64] = dot / np.maximum(norms, 1e-12)
    return result
