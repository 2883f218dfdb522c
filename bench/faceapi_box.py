"""Where face-api's crop sits relative to the five dlib landmarks (``align.FACEAPI_BOX``).

face-api crops ``alignedRect``: the box around its 68 landmarks with 10% added on every
side. We have the face mesh, not face-api's landmarks: its jaw line (ear level down to the
chin) and brows stand in for the 68 points' outline. For every face, the box around
those mesh points (plus 10%) is mapped into the frame that aligns the face's five dlib
points onto dlib's template (the 0.2-padded unit chip of ``align.template``); the median
over the folder is the constant. No labels are read.

Usage: ``python bench/faceapi_box.py [--folder ../shared/data/faces/lfw_gender_dev]``
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from edge_agent.config import AgentConfig
from edge_agent.pipeline import load_models
from edge_agent.tools import evaluate
from edge_agent.vision.align import CHIP_PADDING, DLIB_TEMPLATE, similarity
from edge_agent.vision.landmarks import DLIB5_FROM_MESH

LFW = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "faces" / "lfw_gender_dev"
# Mesh indices standing in for dlib's 68-point outline: the face oval from ear level down
# (jaw, points 0-16) and both brows (17-26).
JAW = (234, 93, 132, 58, 172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379, 365, 397, 288)
JAW += (361, 323, 454)
BROWS = (70, 63, 105, 66, 107, 336, 296, 334, 293, 300, 46, 53, 52, 65, 55, 285, 295, 282, 283)
BROWS += (276,)
MARGIN = 0.1  # face-api's FaceLandmarks.align(): 10% of the box on each side


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=LFW)
    args = parser.parse_args()
    models = load_models(
        AgentConfig.model_validate({"detector": {"model": "short_range", "score_threshold": 0.5}})
    )
    mesh = models.estimator.landmarker
    unit = (DLIB_TEMPLATE + CHIP_PADDING) / (1 + 2 * CHIP_PADDING)
    boxes = []
    for row in evaluate.read_labels(args.folder):
        crop = evaluate.central_face(models, evaluate.load_rgb(args.folder / row.file))
        if crop is None:
            continue
        points, _ = mesh.dlib5(crop.image, crop.box, crop.keypoints)
        # The whole mesh in crop pixels: the affine map dlib5 applied to its five points.
        raw = mesh._interpreter.get_tensor(mesh._points).reshape(468, 3)[:, :2]
        five = np.hstack([raw[list(DLIB5_FROM_MESH)], np.ones((5, 1))])
        affine, *_ = np.linalg.lstsq(five, points, rcond=None)
        full = np.hstack([raw, np.ones((468, 1))]) @ affine
        matrix = similarity(points, unit).astype(np.float64)
        outline = (full @ matrix[:, :2].T + matrix[:, 2])[list(JAW + BROWS)]
        (x0, y0), (x1, y1) = outline.min(axis=0), outline.max(axis=0)
        w, h = x1 - x0, y1 - y0
        boxes.append([x0 - MARGIN * w, y0 - MARGIN * h, x1 + MARGIN * w, y1 + MARGIN * h])
    found = np.array(boxes)
    x0, y0, x1, y1 = np.median(found, axis=0)
    print(f"{len(found)} faces; median box in the unit dlib chip (x0, y0, x1, y1):")
    print(f"FACEAPI_BOX = ({x0:.4f}, {y0:.4f}, {x1:.4f}, {y1:.4f})")


if __name__ == "__main__":
    main()
