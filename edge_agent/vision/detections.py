"""The data that flows between the stages: detections, face crops, face estimates.

One object holding NumPy arrays (boxes, scores, keypoints) rather than a list of tuples,
so each stage can work on all faces of a frame at once and no stage guesses the layout.
The detector makes :class:`Detections`, the tracker keeps :class:`FaceCrop` s of them,
the estimator turns crops into :class:`FaceEstimate` s. Data only (NumPy, no model
runtime), so a stage that handles them imports none of the networks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import NDArray

# BlazeFace keypoint order (the subject's right eye appears on the image's left).
RIGHT_EYE: Final = 0
LEFT_EYE: Final = 1
NOSE_TIP: Final = 2
MOUTH: Final = 3
RIGHT_EAR: Final = 4
LEFT_EAR: Final = 5
NUM_KEYPOINTS: Final = 6
# A crop keeps this many face-box sides around the face: enough for the mesh's rotated
# 1.5x ROI and the chip's 0.2 padding, little enough to stay cheap to keep per track.
CROP_SIDES: Final = 2.2


@dataclass(frozen=True, slots=True)
class Detections:
    """Faces (or people) found in one frame, in pixel coordinates of that frame.

    ``boxes`` is ``[N, 4]`` as ``x1, y1, x2, y2``; ``scores`` is ``[N]``; ``keypoints`` is
    ``[N, K, 2]`` as ``x, y``: for faces ``K = 6`` in the BlazeFace order above, for a
    person detector that gives boxes only ``K = 0`` (see :meth:`boxes_only`).
    """

    boxes: NDArray[np.float32]
    scores: NDArray[np.float32]
    keypoints: NDArray[np.float32]

    @classmethod
    def empty(cls) -> Detections:
        """No faces."""
        return cls(
            np.zeros((0, 4), np.float32),
            np.zeros((0,), np.float32),
            np.zeros((0, NUM_KEYPOINTS, 2), np.float32),
        )

    @classmethod
    def boxes_only(cls, boxes: NDArray[np.float32], scores: NDArray[np.float32]) -> Detections:
        """Boxes and scores without keypoints (a person detector's output)."""
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        return cls(boxes, np.asarray(scores, np.float32), np.zeros((len(boxes), 0, 2), np.float32))

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def __getitem__(self, index: NDArray[np.bool_] | NDArray[np.intp] | slice) -> Detections:
        return Detections(self.boxes[index], self.scores[index], self.keypoints[index])

    def shifted(self, dx: float, dy: float) -> Detections:
        """The same faces in a larger image whose origin is ``(-dx, -dy)`` from this one's
        (from a region of interest back to the whole frame)."""
        if not dx and not dy:
            return self
        offset = np.array([dx, dy], np.float32)
        boxes = (self.boxes.reshape(-1, 2, 2) + offset).reshape(-1, 4)
        return Detections(boxes, self.scores, self.keypoints + offset)

    @property
    def widths(self) -> NDArray[np.float32]:
        """Box widths in pixels."""
        return self.boxes[:, 2] - self.boxes[:, 0]


def iou_matrix(a: NDArray[np.float32], b: NDArray[np.float32]) -> NDArray[np.float32]:
    """Pairwise intersection over union of two ``[N, 4]`` and ``[M, 4]`` box arrays."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), np.float32)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    result: NDArray[np.float32] = (inter / np.maximum(union, 1e-6)).astype(np.float32)
    return result


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
