"""The estimator on real faces: what it hands the rest of the agent per crop."""

from __future__ import annotations

import numpy as np

from edge_agent.config import AgentConfig
from edge_agent.evaluate import central_face
from edge_agent.pipeline import load_models
from tests.edge.conftest import read_rgb, utk_sample


def test_estimates_carry_the_dlib5_points_in_crop_coordinates() -> None:
    models = load_models(
        AgentConfig.model_validate({"detector": {"model": "short_range", "score_threshold": 0.5}})
    )
    crops = []
    for path in utk_sample(6):
        crop = central_face(models, read_rgb(path))
        assert crop is not None
        crops.append(crop)
    estimates = models.estimator.estimate(crops)
    assert len(estimates) == len(crops)
    for crop, estimate in zip(crops, estimates, strict=True):
        points = estimate.points
        assert points.shape == (5, 2) and points.dtype == np.float32
        height, width = crop.image.shape[:2]
        assert ((points >= 0) & (points < [width, height])).all()
        # dlib order: image-right eye corners right of the image-left ones, nose below.
        assert points[0, 0] > points[1, 0] > points[3, 0] > points[2, 0]
        assert points[4, 1] > points[:4, 1].max()
        # Inside the detector's face box.
        x1, y1, x2, y2 = crop.box
        assert (points[:, 0] > x1).all() and (points[:, 0] < x2).all()
        assert (points[:, 1] > y1).all() and (points[:, 1] < y2).all()
