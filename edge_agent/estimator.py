"""From a face in a frame to gender and age probabilities: landmarks, chips, networks.

The one path every caller shares (the video pipeline, ``edge-agent eval``, benchmarks),
so the accuracy measured offline is the accuracy of what runs on the device. Work is
batched: all chips of all faces in one call go through each network once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from edge_agent.align import chip_variants
from edge_agent.attributes import AttributeModels
from edge_agent.landmarks import FaceMeshLandmarker
from edge_agent.timing import StageTimes

# A crop keeps this many face-box sides around the face: enough for the mesh's rotated
# 1.5x ROI and the chip's 0.2 padding, little enough to stay cheap to keep per track.
CROP_SIDES = 2.2


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


class DemographicsEstimator:
    """Landmarks, aligned chips (with test-time variants) and both networks."""

    def __init__(
        self,
        landmarker: FaceMeshLandmarker,
        models: AttributeModels,
        gender_size: int = 32,
        age_size: int = 64,
        tta: bool = True,
        times: StageTimes | None = None,
    ) -> None:
        self._landmarker = landmarker
        self._models = models
        self._gender_size = gender_size
        self._age_size = age_size
        self.tta = tta
        self.times = times or StageTimes()

    def estimate(self, crops: Sequence[FaceCrop]) -> list[FaceEstimate]:
        """Probabilities per crop, in order; every crop's variants are averaged."""
        if not crops:
            return []
        gender_chips: list[NDArray[np.uint8]] = []
        age_chips: list[NDArray[np.uint8]] = []
        face_scores: list[float] = []
        landmarks: list[NDArray[np.float32]] = []
        with self.times.stage("align"):
            for crop in crops:
                points, face_score = self._landmarker.dlib5(crop.image, crop.box, crop.keypoints)
                face_scores.append(face_score)
                landmarks.append(points.astype(np.float32))
                gender_chips += chip_variants(crop.image, points, self._gender_size, self.tta)
                age_chips += chip_variants(crop.image, points, self._age_size, self.tta)
        with self.times.stage("gender"):
            gender = self._models.gender(gender_chips)
        with self.times.stage("age"):
            age = self._models.age(age_chips)
        per_crop = len(gender_chips) // len(crops)
        return [
            FaceEstimate(
                gender=gender[i * per_crop : (i + 1) * per_crop].mean(axis=0),
                age=age[i * per_crop : (i + 1) * per_crop].mean(axis=0),
                face_score=face_scores[i],
                points=landmarks[i],
            )
            for i in range(len(crops))
        ]
