"""The estimator on real faces: what it hands the rest of the agent per crop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from edge_agent.camera.sources import read_frames
from edge_agent.config import MODEL_SET_NAMES, AgentConfig, EstimatorConfig
from edge_agent.pipeline import CameraPipeline, load_models
from edge_agent.tools.evaluate import central_face
from edge_agent.tracking.aggregate import age_estimate
from edge_agent.vision.calibration import age_distribution, gender_calibrated
from edge_agent.vision.detections import FaceCrop
from edge_agent.vision.model_files import locate_models
from edge_agent.vision.model_sets import DEFAULT_VARIANTS, MODEL_SETS
from tests.edge.conftest import read_rgb, utk_sample
from tests.paths import VIDEO

DETECTOR = {"model": "short_range", "score_threshold": 0.5}


def utk_crops(count: int) -> list[FaceCrop]:
    """The central face of ``count`` UTKFace chips, as the eval finds them."""
    models = load_models(AgentConfig.model_validate({"detector": DETECTOR}))
    crops = []
    for path in utk_sample(count):
        crop = central_face(models, read_rgb(path))
        assert crop is not None
        crops.append(crop)
    return crops


def test_estimates_carry_the_dlib5_points_in_crop_coordinates() -> None:
    models = load_models(AgentConfig())
    crops = utk_crops(6)
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


# ---------------------------------------------------------------- model sets


def test_old_model_names_stay_aliases_of_the_dlib_sets(tmp_path: Path) -> None:
    assert EstimatorConfig(models="int8").models == "dlib-int8"
    assert EstimatorConfig(models="fp32").models == "dlib-fp32"
    assert set(MODEL_SET_NAMES) == set(MODEL_SETS)
    # An existing agent file with the old spelling still loads, and runs the same files.
    path = tmp_path / "agent.toml"
    path.write_text('[estimator]\nmodels = "fp32"\ntta = false\n')
    config = AgentConfig.load(path)
    assert config.estimator.models == "dlib-fp32"
    old = load_models(config)
    assert old.versions["gender"] == old.files.versions["gender"]
    assert old.versions["age"] == old.files.versions["age"]
    int8 = load_models(AgentConfig.model_validate({"estimator": {"models": "int8"}}))
    assert int8.versions["age"] == int8.files.versions["age_int8"]
    with pytest.raises(ValidationError):
        EstimatorConfig(models="int4")


def test_every_model_set_gives_distributions_or_says_what_is_missing() -> None:
    files = locate_models()
    crops = utk_crops(4)
    loaded = 0
    for name, members in MODEL_SETS.items():
        config = AgentConfig.model_validate({"estimator": {"models": name}})
        try:
            models = load_models(config)
        except FileNotFoundError as error:
            assert "faceapi" in str(error), "only face-api files may be missing"
            continue
        loaded += 1
        assert {k for m in models.estimator.members for k in m.keys} <= set(models.versions)
        assert len(models.estimator.members) == len(members)
        for estimate in models.estimator.estimate(crops):
            assert estimate.gender.shape == (2,) and estimate.age.shape == (81,)
            assert estimate.gender.sum() == pytest.approx(1.0, abs=1e-5)
            assert estimate.age.sum() == pytest.approx(1.0, abs=1e-4)
            assert estimate.face_score > 0.9
    assert loaded >= 2, f"the dlib sets always load ({files.root})"


# ---------------------------------------------------------------- calibration pieces


def test_gender_temperature_keeps_the_answer_and_softens_it() -> None:
    male = np.array([0.02, 0.3, 0.5, 0.8, 0.999])
    same = gender_calibrated(male, 1.0)
    np.testing.assert_allclose(same[:, 1], male, atol=1e-6)
    np.testing.assert_allclose(same.sum(axis=1), 1.0, atol=1e-6)
    soft = gender_calibrated(male, 2.0)
    assert ((soft[:, 1] > 0.5) == (male > 0.5)).all()
    assert (np.abs(soft[:, 1] - 0.5) <= np.abs(male - 0.5) + 1e-7).all()
    assert soft[4, 1] < 0.99


def test_age_distribution_keeps_the_regressed_age_as_its_mean() -> None:
    ages = locate_models().age_weights
    years = np.array([0.5, 3.0, 25.0, 47.3, 79.0, 95.0, -4.0])
    dist = age_distribution(years, 0.0, (3.0, 0.1, 0.0), ages)
    assert dist.shape == (7, 81)
    np.testing.assert_allclose(dist.sum(axis=1), 1.0, atol=1e-5)
    means = dist.astype(np.float64) @ np.asarray(ages)
    np.testing.assert_allclose(means, np.clip(years, ages[0], ages[-1]), atol=0.05)
    # The spread grows with age as configured: the 80% range is wider at 60 than at 20,
    # and with the networks' own spread.
    young, old, unsure = (
        age_estimate(d.astype(np.float64), ages)
        for d in age_distribution([20.0, 60.0, 20.0], [0.0, 0.0, 5.0], (3.0, 0.1, 1.0), ages)
    )
    assert old.high - old.low > young.high - young.low > 4
    assert unsure.high - unsure.low > young.high - young.low + 5
    # Near the oldest class the range stays open-ended there instead of collapsing.
    near_80 = age_estimate(age_distribution([76.0], 0.0, (3.0, 0.1, 0.0), ages)[0], ages)
    assert near_80.high == 80 and near_80.low < 70


def test_variants_follow_tta_and_each_members_default() -> None:
    models = load_models(AgentConfig())
    estimator = models.estimator
    member = estimator.members[0]
    assert estimator.variants == "default"
    assert estimator.variants_of(member) == DEFAULT_VARIANTS[member.member]
    estimator.tta = False  # what a pushed config with tta = false does
    assert estimator.variants_of(member) == "none"
    estimator.tta, estimator.variants = True, "full"
    assert estimator.variants_of(member) == "full"
    raw = estimator.raw(utk_crops(2))[2][0]
    assert raw.gender.shape == (2, 14, 2) and raw.age.shape == (2, 14, 81)


# ---------------------------------------------------------------- a real track


def test_a_real_tracks_crops_combine_into_the_right_gender() -> None:
    """The woman and the man of the head-pose clips: every track's combined estimate
    (what the event publishes) is right and confident, with an age range."""
    config = AgentConfig()
    models = load_models(config)
    for clip, truth in (
        ("intel_head-pose-face-detection-female.mp4", "female"),
        ("intel_head-pose-face-detection-male.mp4", "male"),
    ):
        pipeline = CameraPipeline("dev", "cam", config, models)
        events = []
        for frame in read_frames("cam", str(VIDEO / clip)):
            events += pipeline.process(frame)
        events += pipeline.finish()
        assert events, clip
        for event in events:
            assert event.gender is not None and event.age is not None
            assert event.gender.value.value == truth, (clip, event.gender)
            assert event.gender.confidence > 0.8
            assert event.age.low < event.age.value < event.age.high
            # An honest 80% range for a face of unknown age is years wide, not one class.
            assert event.age.high - event.age.low >= 5, event.age
            assert 15 <= event.age.value <= 60
