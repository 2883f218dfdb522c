"""Whole-person boxes from NanoDet (COCO class 0) on onnxruntime, for people who never face
the camera.

The network (``models/build.py`` rebuilds it from TF.js weights, see models/README.md) ends at
its three detection heads; the decoding NanoDet itself does after them is the few lines below:
a sigmoid score per grid cell, box sides as the expected value of an 11-bin distribution
(Generalized Focal Loss) times the stride, measured from the cell centre, then NMS. The frame
keeps its aspect ratio: it is scaled so its longer side is ``input_size`` and padded with
black to a multiple of 32, so a 16:9 frame costs about 60% of a square input and people are
not squeezed (stretched to a square, a third of them went unseen: docs/models.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import cv2
import numpy as np
from numpy.typing import NDArray

from edge_agent.vision.detections import Detections, iou_matrix
from edge_agent.vision.model_files import PersonDetectorSpec
from edge_agent.vision.onnx_session import cpu_session

__all__ = ["PersonDetector", "decode_levels", "letterbox", "nms"]

_LOGIT_LIMIT: Final = 80.0  # exp() overflows float32 past ~88


def letterbox(rgb: NDArray[np.uint8], size: int, multiple: int) -> tuple[NDArray[np.uint8], float]:
    """``rgb`` scaled so its longer side is ``size``, pasted top-left on a black canvas whose
    sides are multiples of ``multiple``; returns the canvas and the scale (input / frame)."""
    height, width = rgb.shape[:2]
    scale = size / max(height, width)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    canvas_w, canvas_h = -(-new_w // multiple) * multiple, -(-new_h // multiple) * multiple
    canvas = np.zeros((canvas_h, canvas_w, 3), np.uint8)
    canvas[:new_h, :new_w] = cv2.resize(rgb, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    return canvas, scale


def nms(boxes: NDArray[np.float32], scores: NDArray[np.float32], iou: float) -> NDArray[np.intp]:
    """Indices of the boxes hard non-maximum suppression keeps, best first."""
    order = np.argsort(-scores, kind="stable")
    overlaps = iou_matrix(boxes[order], boxes[order])
    suppressed = np.zeros(len(order), bool)
    keep: list[int] = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(int(order[i]))
        suppressed |= overlaps[i] > iou
    return np.asarray(keep, np.intp)


def decode_levels(
    scores: Sequence[NDArray[np.float32]],
    distributions: Sequence[NDArray[np.float32]],
    strides: Sequence[int],
    threshold: float,
    center_offset: float = 0.5,
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Boxes (input pixels, ``x1, y1, x2, y2``) and scores of the cells scoring at least
    ``threshold``, before NMS.

    Per level: ``scores`` ``[H, W]`` probabilities, ``distributions`` ``[4 * (reg_max + 1),
    H, W]`` logits for the left, top, right and bottom sides in that order; the cell at
    column ``x`` is centred at ``(x + center_offset) * stride``.
    """
    all_boxes, all_scores = [], []
    for score, dist, stride in zip(scores, distributions, strides, strict=True):
        ys, xs = np.nonzero(score >= threshold)
        if len(ys) == 0:
            continue
        logits = dist[:, ys, xs].T.reshape(len(ys), 4, -1)
        logits = logits - logits.max(axis=2, keepdims=True)
        weights = np.exp(logits)
        bins = np.arange(logits.shape[2], dtype=np.float32)
        sides = (weights @ bins) / weights.sum(axis=2) * np.float32(stride)
        cx = (xs.astype(np.float32) + center_offset) * stride
        cy = (ys.astype(np.float32) + center_offset) * stride
        all_boxes.append(
            np.stack([cx - sides[:, 0], cy - sides[:, 1], cx + sides[:, 2], cy + sides[:, 3]], 1)
        )
        all_scores.append(score[ys, xs])
    if not all_boxes:
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)
    boxes = np.concatenate(all_boxes).astype(np.float32)
    return boxes, np.concatenate(all_scores).astype(np.float32)


class PersonDetector:
    """Finds people (whole-body boxes, no keypoints) in an RGB frame of any size (a
    :class:`~edge_agent.vision.detector.Detector`)."""

    def __init__(
        self,
        spec: PersonDetectorSpec,
        score_threshold: float = 0.25,
        num_threads: int = 1,
        input_size: int | None = None,
    ) -> None:
        self.spec = spec
        self.score_threshold = score_threshold
        self.input_size = spec.input_size if input_size is None else input_size
        if self.input_size % spec.size_multiple:
            raise ValueError(
                f"input_size {self.input_size}: not a multiple of {spec.size_multiple}"
            )
        self._session = cpu_session(spec.path, num_threads)
        self._outputs = list(spec.output_names)
        self._means = np.asarray(spec.means, np.float32).reshape(3, 1, 1)
        self._stds = np.asarray(spec.stds, np.float32).reshape(3, 1, 1)
        self._bgr = spec.color_order == "BGR"

    def raw(self, rgb: NDArray[np.uint8]) -> tuple[list[NDArray[np.float32]], float]:
        """The heads' outputs (``[1, channels, H / stride, W / stride]`` per stride) for
        ``rgb``, and the scale from frame to network input pixels."""
        canvas, scale = letterbox(rgb, self.input_size, self.spec.size_multiple)
        chw = (canvas[..., ::-1] if self._bgr else canvas).transpose(2, 0, 1)
        tensor = chw.astype(np.float32)[None]
        if not self.spec.normalization_in_graph:
            tensor = (tensor - self._means) / self._stds
        outputs = self._session.run(self._outputs, {self.spec.input_name: tensor})
        return [np.asarray(o, np.float32) for o in outputs], scale

    def detect(self, rgb: NDArray[np.uint8], score_threshold: float | None = None) -> Detections:
        """People scoring at least ``score_threshold`` (``None``: the detector's own), boxes
        in ``rgb``'s pixel coordinates, clipped to the frame."""
        threshold = self.score_threshold if score_threshold is None else score_threshold
        heads, scale = self.raw(rgb)
        spec = self.spec
        cls = spec.person_class
        scores = [
            1.0 / (1.0 + np.exp(-np.clip(h[0, cls], -_LOGIT_LIMIT, _LOGIT_LIMIT))) for h in heads
        ]
        dists = [h[0, spec.num_classes :] for h in heads]
        boxes, found = decode_levels(scores, dists, spec.strides, threshold, spec.center_offset)
        if len(found) == 0:
            return Detections.boxes_only(boxes, found)
        keep = nms(boxes, found, spec.nms_iou)
        height, width = rgb.shape[:2]
        boxes = boxes[keep] / np.float32(scale)
        boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, width)
        boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, height)
        return Detections.boxes_only(boxes, found[keep])
