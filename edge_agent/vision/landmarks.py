"""Five dlib-style landmarks from MediaPipe's face mesh, for dlib-exact alignment.

BlazeFace's six keypoints (eye centres, nose tip, mouth, ears) are too coarse to place a
face the way dlib's five-point model does (eye corners, bottom of the nose), and the
gender and age networks are sensitive to that placement. MediaPipe's face mesh
(``face_landmark.tflite``, Apache-2.0, in the same wheel as BlazeFace) gives 468 points
from which the five dlib points are read directly. It runs only on the few crops a track
keeps, never per frame.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import cv2
import numpy as np
from ai_edge_litert.interpreter import Interpreter
from numpy.typing import NDArray

from edge_agent.vision.detections import LEFT_EYE, RIGHT_EYE

_INPUT: Final = 192
_ROI_SCALE: Final = 1.5  # MediaPipe's face-detection-to-ROI enlargement
# Mesh indices of dlib's five points, in dlib's order: image-right eye outer, inner;
# image-left eye outer, inner; bottom of the nose.
DLIB5_FROM_MESH: Final = (263, 362, 33, 133, 2)


class FaceMeshLandmarker:
    """Runs the face mesh on a rotated square ROI around one detection."""

    def __init__(self, model_path: Path, num_threads: int = 1) -> None:
        self._interpreter = Interpreter(model_path=str(model_path), num_threads=num_threads)
        self._interpreter.allocate_tensors()
        self._input = self._interpreter.get_input_details()[0]["index"]
        outputs = self._interpreter.get_output_details()
        self._points = next(o["index"] for o in outputs if int(np.prod(o["shape"])) == 468 * 3)
        self._presence = next(o["index"] for o in outputs if int(np.prod(o["shape"])) == 1)

    def dlib5(
        self, rgb: NDArray[np.uint8], box: NDArray[np.float32], keypoints: NDArray[np.float32]
    ) -> tuple[NDArray[np.float64], float]:
        """The five dlib-order landmarks ``[5, 2]`` in image pixels, and a face score.

        The score is the mesh's own face-presence probability: near 1 for a face, low
        for what fooled the detector (the back of a head, a pattern), so callers can
        drop those before they become people.
        """
        centre = (box[:2] + box[2:]) / 2.0
        side = _ROI_SCALE * float(max(box[2] - box[0], box[3] - box[1]))
        eye_dx, eye_dy = keypoints[LEFT_EYE] - keypoints[RIGHT_EYE]
        angle = float(np.arctan2(eye_dy, eye_dx))
        scale = _INPUT / max(side, 1.0)
        cos, sin = np.cos(angle) * scale, np.sin(angle) * scale
        # Rotates the eyes level and maps the ROI onto the model's input square.
        linear = np.array([[cos, sin], [-sin, cos]])
        shift = np.array([_INPUT / 2, _INPUT / 2]) - linear @ centre
        matrix = np.hstack([linear, shift[:, None]]).astype(np.float32)
        roi = cv2.warpAffine(rgb, matrix, (_INPUT, _INPUT), flags=cv2.INTER_LINEAR)

        self._interpreter.set_tensor(self._input, (roi.astype(np.float32) / 255.0)[None])
        self._interpreter.invoke()
        mesh = self._interpreter.get_tensor(self._points).reshape(468, 3)[:, :2]
        chosen = mesh[list(DLIB5_FROM_MESH)].astype(np.float64)
        points: NDArray[np.float64] = (chosen - shift) @ np.linalg.inv(linear).T
        logit = float(self._interpreter.get_tensor(self._presence).reshape(-1)[0])
        return points, float(1.0 / (1.0 + np.exp(-np.clip(logit, -80.0, 80.0))))
