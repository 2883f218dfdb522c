"""The heads ``edge-agent train-heads`` fits, as one ONNX graph (``vision/heads.py`` runs it).

Written with ``onnx.helper`` rather than a converter: two linear heads are three nodes
each, and fixing every name, the opset, the IR version and the producer here means the
same weights give the same bytes whatever converter version is installed.
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

OPSET: Final = 17
IR_VERSION: Final = 8
INPUT_NAME: Final = "embedding"
OUTPUT_NAMES: Final = ("gender", "age_group")


def linear_weights(model: Any) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """A fitted scaler + logistic regression as logits ``x @ W + b`` on the raw input:
    ``[D, K]`` and ``[K]`` (binary: the first column's logit is 0)."""
    scaler, regression = model[0], model[-1]
    coef = np.asarray(regression.coef_, np.float64) / np.asarray(scaler.scale_, np.float64)
    bias = np.asarray(regression.intercept_, np.float64) - coef @ np.asarray(
        scaler.mean_, np.float64
    )
    if coef.shape[0] == 1:  # binary: softmax([0, z]) = (1 - sigmoid(z), sigmoid(z))
        coef = np.vstack([np.zeros_like(coef), coef])
        bias = np.concatenate([[0.0], bias])
    return coef.T, bias


def heads_onnx(gender: Any, age: Any, doc: str) -> bytes:
    """Both heads as one ONNX graph: ``embedding`` [N, D] -> ``gender`` [N, 2],
    ``age_group`` [N, G]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, outputs = [], [], []
    width = 0
    for name, model in zip(OUTPUT_NAMES, (gender, age), strict=True):
        w, b = linear_weights(model)
        width = w.shape[0]
        inits += [
            numpy_helper.from_array(w.astype(np.float32), f"{name}_weight"),
            numpy_helper.from_array(b.astype(np.float32), f"{name}_bias"),
        ]
        nodes += [
            helper.make_node(
                "MatMul", [INPUT_NAME, f"{name}_weight"], [f"{name}_mm"], f"{name}_mm"
            ),
            helper.make_node(
                "Add", [f"{name}_mm", f"{name}_bias"], [f"{name}_logits"], f"{name}_add"
            ),
            helper.make_node("Softmax", [f"{name}_logits"], [name], f"{name}_softmax", axis=-1),
        ]
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", w.shape[1]]))
    graph = helper.make_graph(
        nodes,
        "attribute_heads",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", width])],
        outputs,
        inits,
        doc_string=doc,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name="audience-edge train-heads",
        producer_version="1",
    )
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())
