"""Heads on the face embedding: `edge-agent train-heads` on fairface_dev, its ONNX file, the
shipped heads and the fused model set (docs/models.md, "Heads on the embedding").

Trains on the real fairface_dev faces in ../shared/data (read there, never copied), the one
set here whose licence (CC BY 4.0) allows fitting on it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import time
from pathlib import Path

import numpy as np
import pytest

from edge_agent.cli import build_parser
from edge_agent.config import AgentConfig
from edge_agent.pipeline import load_models
from edge_agent.tools import train_heads
from edge_agent.tools.evaluate import central_face, load_rgb, read_labels
from edge_agent.tools.train_heads import Trained
from edge_agent.vision.heads import Fusion, fuse_age, fuse_gender, group_classes, spread_groups
from edge_agent.vision.model_files import locate_models
from edge_agent.vision.model_sets import HEADS
from tests.paths import REPO, SHARED_DATA

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("sklearn")  # the train extra (in dev)

FAIRFACE = SHARED_DATA / "faces" / "fairface_dev"
SHIPPED = REPO / "models" / "heads" / "heads-fairface.onnx"
KEY = HEADS["dlib-heads"]


def _predict(path: Path, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    gender, age = session.run(None, {"embedding": embeddings.astype(np.float32)})
    return np.asarray(gender), np.asarray(age)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Trained, Path, float]:
    """The command's work on fairface_dev (3 folds to keep the suite quick), timed."""
    out = tmp_path_factory.mktemp("heads")
    started = time.perf_counter()
    result = train_heads.run([FAIRFACE], out, "heads", k=3)
    return result, out, time.perf_counter() - started


def test_the_command_is_wired_into_the_cli() -> None:
    args = build_parser().parse_args(["train-heads", str(FAIRFACE), "--out", "/tmp/x"])
    assert args.fn.__name__ == "_train_heads" and args.folds == 5
    assert args.images_dir == [FAIRFACE] and args.name == "heads-fairface"


def test_training_on_fairface_is_quick_and_writes_loadable_onnx(
    trained: tuple[Trained, Path, float],
) -> None:
    result, out, seconds = trained
    assert seconds < 120, f"train-heads took {seconds:.0f} s on 270 faces"
    assert len(result.features.files) == len(read_labels(FAIRFACE)) == 270
    gender, age = _predict(out / "heads.onnx", result.features.embeddings)
    assert gender.shape == (270, 2) and age.shape == (270, 9)
    np.testing.assert_allclose(gender.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(age.sum(axis=1), 1.0, atol=1e-5)
    fragment = json.loads((out / "heads.json").read_text(encoding="utf-8"))
    data = (out / "heads.onnx").read_bytes()
    assert fragment["file"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert fragment["training"]["folds"] == 3
    # Cross-validated figures are there and sane: both heads beat chance by far.
    heads = fragment["training"]["cross_validated"]
    assert heads["gender"]["heads"]["accuracy"] > 0.7
    assert heads["age"]["heads"]["likeliest_group_accuracy"] > 0.25  # chance: 0.11


def test_onnx_equals_scikit_learn(trained: tuple[Trained, Path, float]) -> None:
    result, out, _ = trained
    x = result.features.embeddings
    gender, age = _predict(out / "heads.onnx", x)
    np.testing.assert_allclose(gender, result.gender.model.predict_proba(x), atol=2e-5)
    np.testing.assert_allclose(age, result.age.model.predict_proba(x), atol=2e-5)


def test_the_shipped_heads_are_the_manifests_and_retrain_the_same(
    trained: tuple[Trained, Path, float],
) -> None:
    manifest = json.loads((REPO / "models" / "manifest.json").read_text(encoding="utf-8"))
    entry = manifest["models"][KEY]
    data = SHIPPED.read_bytes()
    assert hashlib.sha256(data).hexdigest() == entry["file"]["sha256"] == entry["source"]["sha256"]
    assert entry["license"]["attribution"] == "FairFace, Kärkkäinen and Joo, CC BY 4.0"
    files = locate_models()  # verifies the built copy against the manifest
    spec = files.attribute_heads(KEY)
    assert spec.path.read_bytes() == data
    # Refitted with the shipped C on the same faces, the heads say the same.
    result = trained[0]
    x = result.features.embeddings
    male, group = result.features.male, result.features.group
    training = entry["training"]
    gender = train_heads.make_head(training["gender_c"]).fit(x[male >= 0], male[male >= 0])
    age = train_heads.make_head(training["age_c"]).fit(x[group >= 0], group[group >= 0])
    shipped_gender, shipped_age = _predict(SHIPPED, x)
    np.testing.assert_allclose(shipped_gender, gender.predict_proba(x), atol=1e-4)
    np.testing.assert_allclose(shipped_age, age.predict_proba(x), atol=1e-4)


def test_fusion_is_a_product_of_experts() -> None:
    ages = locate_models().age_weights
    groups = train_heads.group_bounds()
    index = group_classes(groups, ages)
    assert index[0] == 0 and index[-1] == len(groups) - 1  # 0.25 years and 80+
    # Groups in proportion to their classes: flat over the classes.
    heads = np.bincount(index)[None] / len(ages)
    spread = spread_groups(heads, index)
    np.testing.assert_allclose(spread[0], 1 / len(ages))
    dlib = np.exp(-0.5 * ((np.asarray(ages) - 30.0) / 5.0) ** 2)[None]
    dlib /= dlib.sum()
    # A flat head with weight 1 and dlib with weight 1: dlib's shape is unchanged.
    np.testing.assert_allclose(fuse_age(spread, dlib, (1.0, 1.0))[0], dlib[0], atol=1e-6)
    # Gender: log-odds add with their weights.
    fused = fuse_gender(np.array([0.8]), np.array([0.8]), Fusion().gender)
    assert fused[0, 1] == pytest.approx(16 / 17, abs=1e-6)
    assert fuse_gender(np.array([0.8]), np.array([0.3]), (1.0, 0.0))[0, 1] == pytest.approx(0.8)


def test_the_fused_set_gives_valid_distributions_on_real_faces() -> None:
    config = AgentConfig.model_validate(
        {
            "detector": {"model": "short_range", "score_threshold": 0.5},
            "estimator": {"models": "dlib-heads"},
        }
    )
    models = load_models(config)
    assert models.versions["heads"] == "fairface-dev-1"
    assert models.estimator.heads is not None
    rows = read_labels(FAIRFACE)[:6]
    crops = [central_face(models, load_rgb(FAIRFACE / row.file)) for row in rows]
    assert all(crop is not None for crop in crops)
    estimates = models.estimator.estimate([c for c in crops if c is not None])
    assert len(estimates) == len(rows)
    for estimate in estimates:
        assert estimate.gender.shape == (2,) and estimate.age.shape == (81,)
        assert estimate.gender.sum() == pytest.approx(1.0, abs=1e-5)
        assert estimate.age.sum() == pytest.approx(1.0, abs=1e-4)
        assert (estimate.age >= 0).all() and (estimate.gender >= 0).all()
    assert models.estimator.times.samples["heads"], "the heads' stage is timed"


def test_build_copies_the_committed_heads_after_checking_them() -> None:
    spec = importlib.util.spec_from_file_location("models_build", REPO / "models" / "build.py")
    assert spec is not None and spec.loader is not None
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    manifest = build.load_manifest()
    entry = manifest["models"][KEY]
    assert build.build_model(entry, None, manifest["models"]) == SHIPPED.read_bytes()
    assert "repository" not in {s.get("registry") for s in build.wheels_of(manifest).values()}
    assert b"FairFace, K\xc3\xa4rkk\xc3\xa4inen and Joo, CC BY 4.0" in build.notice_text(manifest)
    tampered = {**entry, "source": {**entry["source"], "sha256": "0" * 64}}
    with pytest.raises(build.BuildError, match="pinned"):
        build.build_model(tampered, None, manifest["models"])
