"""The on-device face embedding against dlib's own: speed, fidelity and discrimination.

Reference: dlib's frontal (HOG) detector, ``shape_predictor_5_face_landmarks`` and
``dlib_face_recognition_resnet_model_v1`` with ``compute_face_descriptor`` (no jitter),
from the ``face-recognition-models`` package. Ours: ``edge_agent.vision.embedding.FaceEmbedder``
(the ONNX conversion of the same network), fp32 and int8.

1. Speed, on ``utkface_dev`` (each 200x200 chip in a black canvas padded by 100 px, so
   dlib's detector and chip see the whole face): milliseconds per face for chip + network,
   batch 1 and batched, calls interleaved dlib / fp32 / int8 so machine noise hits all
   three alike; the ratios come from this one run.
2. Fidelity, on the same faces: cosine similarity to dlib's descriptor, split by where
   the error comes from:
   - ``network``: our network on dlib's own chip (``dlib.get_face_chip``): conversion and
     quantization only;
   - ``+ chip``: our chip cutter (``align.face_chip``) on dlib's five landmarks;
   - ``+ landmarks``: the device path: BlazeFace, ``FaceCrop``, face-mesh dlib-5 points,
     our chip and network;
   and, for scale, dlib's own network on our chips (chip error and landmark error alone).
3. Discrimination. ``lfw_gender_dev`` has one photo per person (no identity pairs), so
   - impostors: every pair of its different people;
   - same person, synthetic: each photo against its mirror image, a 6 % zoom with an 8 px
     shift, and a JPEG-quality-25 blurred copy, each detected and landmarked afresh;
   - same person, real: the video clips with several people, tracked by the agent's IoU
     tracker: crops of one track (frames apart, pose and expression changing) are
     same-person pairs, crops of two tracks that are in view at the same time are
     different people. dlib's reference uses its 5-point predictor on BlazeFace's box here
     (its HOG detector misses many of these small faces).
   For each: the cosine distributions, and decisions at dlib's 0.6 Euclidean threshold on
   raw descriptors (dlib's and ours) and at cosine thresholds on our unit embeddings.

Usage: ``python bench/embedding.py [--limit N] [--lfw N] [--timed N] [--threads 1]``.
Needs the ``edge`` extra, dlib (``dlib-bin``) and ``face-recognition-models``, and the
built model files. Images are read in place from ``../shared/data`` and never copied.
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import dlib
import face_recognition_models
import numpy as np
from numpy.typing import NDArray

from edge_agent.config import TrackerConfig
from edge_agent.tracking.tracker import IouTracker, Track
from edge_agent.vision.detections import FaceCrop
from edge_agent.vision.embedding import CHIP_PADDING, CHIP_SIZE, FaceEmbedder, cosine
from edge_agent.vision.face_detector import BlazeFaceDetector
from edge_agent.vision.landmarks import FaceMeshLandmarker
from edge_agent.vision.model_files import ModelFiles, Precision, locate_models

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
UTKFACE = SHARED / "faces" / "utkface_dev"
LFW = SHARED / "faces" / "lfw_gender_dev"
CLIPS = (
    "intel_face-demographics-walking-and-pause.mp4",
    "intel_face-demographics-walking.mp4",
    "intel_head-pose-face-detection-female-and-male.mp4",
)
PAD = 100
DLIB_THRESHOLD = 0.6  # dlib's Euclidean distance below which two faces are one person
PRECISIONS: tuple[Precision, ...] = ("fp32", "int8")
Image = NDArray[np.uint8]
Points = NDArray[np.float64]
Vector = NDArray[np.float64]


@dataclass(slots=True)
class Dlib:
    """dlib's reference: detector, 5-point shape predictor, face-recognition network."""

    detector: Any
    predictor: Any
    net: Any

    @classmethod
    def load(cls) -> Dlib:
        return cls(
            dlib.get_frontal_face_detector(),
            dlib.shape_predictor(
                face_recognition_models.pose_predictor_five_point_model_location()
            ),
            dlib.face_recognition_model_v1(
                face_recognition_models.face_recognition_model_location()
            ),
        )

    def shape(self, rgb: Image, upsample: int = 0) -> Any | None:
        """Five landmarks of the detection nearest the image centre, or None."""
        found = list(self.detector(rgb, upsample))
        if not found:
            return None
        height, width = rgb.shape[:2]
        best = min(
            found,
            key=lambda r: (r.center().x - width / 2) ** 2 + (r.center().y - height / 2) ** 2,
        )
        return self.predictor(rgb, best)

    def descriptor(self, rgb: Image, shape: Any) -> Vector:
        return np.asarray(self.net.compute_face_descriptor(rgb, shape), np.float64)

    def on_chip(self, chip: Image) -> Vector:
        """dlib's network on a 150x150 chip someone else cut."""
        return np.asarray(self.net.compute_face_descriptor(np.ascontiguousarray(chip)), np.float64)


def points_of(shape: Any) -> Points:
    return np.array([(p.x, p.y) for p in shape.parts()], np.float64)


@dataclass(slots=True)
class Ours:
    """The device path up to the landmarks: BlazeFace, the crop, face-mesh dlib-5 points."""

    detector: BlazeFaceDetector
    mesh: FaceMeshLandmarker

    def face(self, rgb: Image) -> tuple[Image, Points] | None:
        """The crop and its dlib-5 points for the face nearest the image centre."""
        found = self.detector.detect(rgb)
        if len(found) == 0:
            return None
        height, width = rgb.shape[:2]
        centres = (found.boxes[:, :2] + found.boxes[:, 2:]) / 2.0
        i = int(np.argmin(((centres - (width / 2, height / 2)) ** 2).sum(axis=1)))
        crop = FaceCrop.cut(rgb, found.boxes[i], found.keypoints[i], float(found.scores[i]))
        points, _ = self.mesh.dlib5(crop.image, crop.box, crop.keypoints)
        return crop.image, points


def read_rgb(path: Path) -> Image:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)  # grayscale files become 3 equal channels
    if bgr is None:
        raise SystemExit(f"cannot read {path}")
    return np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), np.uint8)


def padded(rgb: Image) -> Image:
    return np.ascontiguousarray(
        cv2.copyMakeBorder(rgb, PAD, PAD, PAD, PAD, cv2.BORDER_CONSTANT, value=(0, 0, 0))
    )


def stats(values: Iterable[float]) -> str:
    v = np.asarray(list(values), np.float64)
    if v.size == 0:
        return "n/a"
    return (
        f"median {np.median(v):.4f}  p5 {np.percentile(v, 5):.4f}  min {v.min():.4f}  (n={v.size})"
    )


def p95(values: Sequence[float]) -> float:
    return float(np.percentile(values, 95))


def batched(
    embedder: FaceEmbedder, images: Sequence[Image], points: Sequence[Points], raw: bool
) -> NDArray[np.float32]:
    """Embeddings in chunks of 64 (raw network output if ``raw``)."""
    parts = []
    for start in range(0, len(images), 64):
        chunk_i, chunk_p = images[start : start + 64], points[start : start + 64]
        if raw:
            parts.append(embedder.descriptors(embedder.chips(chunk_i, chunk_p)))
        else:
            parts.append(embedder.embed(chunk_i, chunk_p))
    return np.concatenate(parts) if parts else np.zeros((0, 128), np.float32)


# --------------------------------------------------------------------------- UTKFace


@dataclass(slots=True)
class UtkFace:
    canvas: Image
    shape: Any
    dlib_points: Points
    reference: Vector
    ours: tuple[Image, Points] | None


def load_utk(limit: int | None, ref: Dlib, ours: Ours) -> tuple[list[UtkFace], int]:
    paths = sorted(UTKFACE.glob("*.jpg"))
    if not paths:
        raise SystemExit(f"no images under {UTKFACE}")
    if limit:
        paths = paths[:: max(1, len(paths) // limit)][:limit]
    faces, missed = [], 0
    for path in paths:
        canvas = padded(read_rgb(path))
        shape = ref.shape(canvas)
        if shape is None:
            missed += 1
            continue
        faces.append(
            UtkFace(
                canvas, shape, points_of(shape), ref.descriptor(canvas, shape), ours.face(canvas)
            )
        )
    return faces, missed


def speed(
    faces: Sequence[UtkFace],
    ref: Dlib,
    embedders: dict[Precision, FaceEmbedder],
    timed: int,
    batch: int,
    repeat: int,
) -> None:
    """ms per face for chip + network, batch 1 and batched, interleaved."""
    faces = faces[:timed]
    calls: dict[str, Callable[[Sequence[UtkFace]], object]] = {
        "dlib": lambda fs: (
            ref.net.compute_face_descriptor(
                [f.canvas for f in fs], [dlib.full_object_detections([f.shape]) for f in fs]
            )
            if len(fs) > 1
            else ref.net.compute_face_descriptor(fs[0].canvas, fs[0].shape)
        ),
    }
    for precision, embedder in embedders.items():
        calls[f"onnx {precision}"] = lambda fs, e=embedder: e.embed(
            [f.canvas for f in fs], [f.dlib_points for f in fs]
        )
    names = list(calls)
    for fs in (faces[:3], faces[:batch]):  # warm-up: allocations, caches, thread pools
        for name in names:
            calls[name](fs[:1])
            calls[name](fs)

    def run(groups: list[Sequence[UtkFace]]) -> dict[str, tuple[list[float], list[float]]]:
        wall: dict[str, list[float]] = {n: [] for n in names}
        cpu: dict[str, list[float]] = {n: [] for n in names}
        for k, group in enumerate(groups):
            order = names if k % 2 == 0 else names[::-1]
            for name in order:
                w0, c0 = time.perf_counter(), time.process_time()
                calls[name](group)
                wall[name].append((time.perf_counter() - w0) * 1e3 / len(group))
                cpu[name].append((time.process_time() - c0) * 1e3 / len(group))
        return {n: (wall[n], cpu[n]) for n in names}

    singles = run([[f] for f in faces])
    groups = [faces[i : i + batch] for i in range(0, len(faces) - batch + 1, batch)] * repeat
    many = run(groups) if groups else {}
    dlib_1 = float(np.median(singles["dlib"][0]))
    dlib_b = float(np.median(many["dlib"][0])) if many else float("nan")
    print(f"\n## Speed: chip + network, ms per face ({len(faces)} faces, batch {batch})")
    print(
        f"{'':<12}{'b1 median':>10}{'b1 p95':>9}{'cpu':>7}{'vs dlib':>9}"
        f"{'bN median':>11}{'bN p95':>9}{'cpu':>7}{'vs dlib':>9}"
    )
    for name in names:
        w1, c1 = singles[name]
        line = (
            f"{name:<12}{np.median(w1):>10.2f}{p95(w1):>9.2f}{np.median(c1):>7.1f}"
            f"{dlib_1 / np.median(w1):>8.2f}x"
        )
        if many:
            wb, cb = many[name]
            line += (
                f"{np.median(wb):>11.2f}{p95(wb):>9.2f}{np.median(cb):>7.1f}"
                f"{dlib_b / np.median(wb):>8.2f}x"
            )
        print(line)
    print("(cpu: process CPU ms per face; cpu > wall means more than one thread worked)")


def fidelity(faces: Sequence[UtkFace], ref: Dlib, embedders: dict[Precision, FaceEmbedder]) -> None:
    references = np.stack([f.reference for f in faces])
    dlib_chips = [
        np.asarray(dlib.get_face_chip(f.canvas, f.shape, size=CHIP_SIZE, padding=CHIP_PADDING))
        for f in faces
    ]
    with_mesh = [i for i, f in enumerate(faces) if f.ours is not None]
    print(f"\n## Fidelity on utkface_dev: cosine to dlib's descriptor ({len(faces)} faces)")
    for precision, embedder in embedders.items():
        net = np.concatenate(
            [embedder.descriptors(dlib_chips[i : i + 64]) for i in range(0, len(faces), 64)]
        )
        chip = batched(embedder, [f.canvas for f in faces], [f.dlib_points for f in faces], True)
        device = batched(
            embedder,
            [faces[i].ours[0] for i in with_mesh],  # type: ignore[index]
            [faces[i].ours[1] for i in with_mesh],  # type: ignore[index]
            True,
        )
        print(f"onnx {precision}")
        print(f"  network (dlib's chip)         {stats(cosine(net, references))}")
        print(f"  + chip (dlib's landmarks)     {stats(cosine(chip, references))}")
        print(f"  + landmarks (device path)     {stats(cosine(device, references[with_mesh]))}")
    embedder = embedders["fp32"]
    our_chips = embedder.chips([f.canvas for f in faces], [f.dlib_points for f in faces])
    mesh_chips = embedder.chips(
        [faces[i].ours[0] for i in with_mesh],  # type: ignore[index]
        [faces[i].ours[1] for i in with_mesh],  # type: ignore[index]
    )
    on_ours = np.stack([ref.on_chip(c) for c in our_chips])
    on_mesh = np.stack([ref.on_chip(c) for c in mesh_chips])
    print("dlib's network, for scale")
    print(f"  our chip, dlib's landmarks    {stats(cosine(on_ours, references))}")
    print(f"  our chip, mesh landmarks      {stats(cosine(on_mesh, references[with_mesh]))}")
    if len(with_mesh) < len(faces):
        print(f"  ({len(faces) - len(with_mesh)} faces BlazeFace did not find)")
    if "int8" in embedders:
        a = batched(
            embedders["fp32"], [f.canvas for f in faces], [f.dlib_points for f in faces], False
        )
        b = batched(
            embedders["int8"], [f.canvas for f in faces], [f.dlib_points for f in faces], False
        )
        print(f"int8 vs fp32 (same chips)       {stats(cosine(a, b))}")
    norms = np.linalg.norm(references, axis=1)
    r = float(np.median(norms))
    print(
        f"dlib descriptor norms: median {r:.3f} (range {norms.min():.3f}..{norms.max():.3f}); "
        f"euclid 0.6 at that norm is cosine {1 - DLIB_THRESHOLD**2 / (2 * r * r):.3f}"
    )


# --------------------------------------------------------------------------- discrimination


@dataclass(slots=True)
class Pairs:
    """Per method: cosine and Euclidean distance of same-person and different-person pairs."""

    same_cos: dict[str, NDArray[np.float64]]
    same_euc: dict[str, NDArray[np.float64]]
    diff_cos: dict[str, NDArray[np.float64]]
    diff_euc: dict[str, NDArray[np.float64]]
    lfw_people: dict[str, NDArray[np.float64]] | None = None  # one raw descriptor per person


def scores(
    pairs: Sequence[tuple[Vector, Vector]],
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Cosine and Euclidean distance of each pair."""
    if not pairs:
        return np.zeros(0), np.zeros(0)
    a, b = (np.stack(x) for x in zip(*pairs, strict=True))
    return cosine(a, b), np.linalg.norm(a - b, axis=1)


def all_pairs(v: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Cosine and Euclidean distance of every pair of rows (upper triangle), without copies."""
    upper = np.triu_indices(len(v), 1)
    gram = v @ v.T
    squared = (v * v).sum(axis=1)
    cos = (gram / np.sqrt(np.outer(squared, squared)))[upper]
    euc = np.sqrt(np.maximum(squared[:, None] + squared[None] - 2 * gram, 0.0))[upper]
    return cos, euc


def augmentations(rgb: Image) -> list[Image]:
    """The same photo changed the way a second sighting might change it."""
    height, width = rgb.shape[:2]
    mirror = np.ascontiguousarray(rgb[:, ::-1])
    zoom = cv2.getRotationMatrix2D((width / 2, height / 2), 0.0, 1.06)
    zoom[:, 2] += (8.0, -6.0)
    shifted = np.asarray(
        cv2.warpAffine(rgb, zoom, (width, height), borderMode=cv2.BORDER_REPLICATE), np.uint8
    )
    ok, jpeg = cv2.imencode(
        ".jpg", cv2.GaussianBlur(rgb, (5, 5), 1.0), [cv2.IMWRITE_JPEG_QUALITY, 25]
    )
    assert ok
    degraded = np.asarray(cv2.imdecode(jpeg, cv2.IMREAD_UNCHANGED), np.uint8)
    return [mirror, shifted, degraded]


def describe_all(
    images: Sequence[Image], ref: Dlib, ours: Ours, embedders: dict[Precision, FaceEmbedder]
) -> dict[str, Vector] | None:
    """Each method's raw descriptors of several images, or None if any face is missed."""
    shapes, found = [], []
    for rgb in images:
        shape, face = ref.shape(rgb, upsample=1), ours.face(rgb)
        if shape is None or face is None:
            return None
        shapes.append(shape)
        found.append(face)
    out: dict[str, Vector] = {
        "dlib": np.stack([ref.descriptor(rgb, s) for rgb, s in zip(images, shapes, strict=True)])
    }
    for precision, embedder in embedders.items():
        out[f"onnx {precision}"] = embedder.descriptors(
            embedder.chips([f[0] for f in found], [f[1] for f in found])
        ).astype(np.float64)
    return out


def lfw_pairs(
    augmented: int, people: int, ref: Dlib, ours: Ours, embedders: dict[Precision, FaceEmbedder]
) -> Pairs:
    """Impostors: every pair of ``people`` photos; same person: ``augmented`` of them, each
    against its three changed copies."""
    paths = sorted(LFW.glob("*.jpg"))[:people]
    with_copies = set(paths[:: max(1, len(paths) // augmented)][:augmented])
    originals: dict[str, list[Vector]] = {}
    same: dict[str, list[tuple[Vector, Vector]]] = {}
    skipped = 0
    for path in paths:
        rgb = read_rgb(path)
        images = [rgb, *augmentations(rgb)] if path in with_copies else [rgb]
        described = describe_all(images, ref, ours, embedders)
        if described is None:
            skipped += 1
            continue
        for method, vectors in described.items():
            originals.setdefault(method, []).append(vectors[0])
            same.setdefault(method, []).extend((vectors[0], v) for v in vectors[1:])
    matrices = {method: np.stack(v) for method, v in originals.items()}
    different = {method: all_pairs(v) for method, v in matrices.items()}
    same_scores = {method: scores(p) for method, p in same.items()}
    print(
        f"\nLFW: {len(next(iter(matrices.values())))} people, {len(with_copies)} of them with "
        f"changed copies ({skipped} skipped: a detector missed a version)"
    )
    return Pairs(
        {m: v[0] for m, v in same_scores.items()},
        {m: v[1] for m, v in same_scores.items()},
        {m: v[0] for m, v in different.items()},
        {m: v[1] for m, v in different.items()},
        matrices,
    )


def video_pairs(
    ref: Dlib, files: ModelFiles, ours: Ours, embedders: dict[Precision, FaceEmbedder]
) -> Pairs:
    detector = BlazeFaceDetector(files.full_range, "full_range", score_threshold=0.6)
    same: dict[str, list[tuple[Vector, Vector]]] = {}
    different: dict[str, list[tuple[Vector, Vector]]] = {}
    summary = []
    for clip in CLIPS:
        tracker = IouTracker(TrackerConfig(best_crops=8), min_face_px=24)
        capture = cv2.VideoCapture(str(SHARED / "video" / clip))
        fps = capture.get(cv2.CAP_PROP_FPS) or 12.0
        tracks: list[Track] = []
        frame = 0
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            rgb = np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), np.uint8)
            tracks += tracker.update(detector.detect(rgb), frame / fps, rgb)
            frame += 1
        capture.release()
        tracks += tracker.finish()
        tracks = [t for t in tracks if len(t.crops) >= 2]
        per_track: list[dict[str, Vector]] = []
        for track in tracks:
            vectors: dict[str, list[Vector]] = {}
            for crop in track.crops:
                x1, y1, x2, y2 = (round(float(v)) for v in crop.box)
                shape = ref.predictor(crop.image, dlib.rectangle(x1, y1, x2, y2))
                points, _ = ours.mesh.dlib5(crop.image, crop.box, crop.keypoints)
                vectors.setdefault("dlib", []).append(ref.descriptor(crop.image, shape))
                for precision, embedder in embedders.items():
                    raw = embedder.descriptors(embedder.chips([crop.image], [points]))[0]
                    vectors.setdefault(f"onnx {precision}", []).append(raw.astype(np.float64))
            per_track.append({m: np.stack(v) for m, v in vectors.items()})
        for a in range(len(tracks)):
            for method, v in per_track[a].items():
                same.setdefault(method, []).extend(
                    (v[i], v[j]) for i in range(len(v)) for j in range(i + 1, len(v))
                )
            for b in range(a + 1, len(tracks)):
                ta, tb = tracks[a], tracks[b]
                if ta.first_seen <= tb.last_seen and tb.first_seen <= ta.last_seen:
                    for method in per_track[a]:
                        different.setdefault(method, []).extend(
                            (x, y) for x in per_track[a][method] for y in per_track[b][method]
                        )
        summary.append(f"{clip.removeprefix('intel_').removesuffix('.mp4')}: {len(tracks)} tracks")
    print("\nVideo: " + "; ".join(summary))
    same_scores = {method: scores(p) for method, p in same.items()}
    diff_scores = {method: scores(p) for method, p in different.items()}
    return Pairs(
        {m: v[0] for m, v in same_scores.items()},
        {m: v[1] for m, v in same_scores.items()},
        {m: v[0] for m, v in diff_scores.items()},
        {m: v[1] for m, v in diff_scores.items()},
    )


def report(title: str, pairs: Pairs, thresholds: Sequence[float]) -> None:
    print(f"\n## Discrimination: {title}")
    heads = "".join(f"{f'cos>={t:.2f}':>18}" for t in thresholds)
    print(
        f"{'':<11}{'same cos med/p5/min':>24}{'diff cos med/p95/max':>24}{'euclid<0.6':>18}{heads}"
    )
    print(f"{'':<11}{'':>24}{'':>24}{'TAR / TRR':>18}" + f"{'TAR / TRR':>18}" * len(thresholds))

    def rates(same_ok: NDArray[np.bool_], diff_ok: NDArray[np.bool_]) -> str:
        return f"{100 * same_ok.mean():7.2f} / {100 * diff_ok.mean():6.2f}"

    decisions: dict[str, NDArray[np.bool_]] = {}
    for method in pairs.same_cos:
        s_cos, d_cos = pairs.same_cos[method], pairs.diff_cos[method]
        s_euc, d_euc = pairs.same_euc[method], pairs.diff_euc[method]
        decisions[method] = np.concatenate([s_euc < DLIB_THRESHOLD, d_euc < DLIB_THRESHOLD])
        line = (
            f"{method:<11}"
            f"{f'{np.median(s_cos):.3f}/{np.percentile(s_cos, 5):.3f}/{s_cos.min():.3f}':>24}"
            f"{f'{np.median(d_cos):.3f}/{np.percentile(d_cos, 95):.3f}/{d_cos.max():.3f}':>24}"
            f"{rates(s_euc < DLIB_THRESHOLD, d_euc >= DLIB_THRESHOLD):>18}"
        )
        line += "".join(f"{rates(s_cos >= t, d_cos < t):>18}" for t in thresholds)
        print(line)
    print(
        f"pairs: {len(next(iter(pairs.same_cos.values())))} same, "
        f"{len(next(iter(pairs.diff_cos.values())))} different; "
        "TAR = same-person pairs accepted %, TRR = different-person pairs rejected %"
    )
    for method in decisions:
        if method != "dlib":
            agree = (decisions[method] == decisions["dlib"]).mean()
            print(f"{method}: same decision as dlib (euclid < 0.6) on {100 * agree:.2f} % of pairs")


def operating_points(lfw: Pairs, video: Pairs, thresholds: Sequence[float]) -> None:
    """Cosine thresholds at a false-accept rate on LFW's impostors, with the video TAR; and
    how often a stranger matches someone in a gallery of earlier people (``returns``
    compares each new person with everyone who left within the window)."""
    print("\n## Cosine threshold at a false-accept rate (LFW impostor pairs), video TAR there")
    for method, impostor in lfw.diff_cos.items():
        genuine = video.same_cos[method]
        cells = []
        for far in (0.01, 0.001, 0.0001):
            t = float(np.quantile(impostor, 1.0 - far))
            cells.append(f"FAR {100 * far:g} %: {t:.3f} (TAR {100 * (genuine >= t).mean():.0f} %)")
        print(f"{method:<11}" + ";  ".join(cells))
    assert lfw.lfw_people is not None
    rng = np.random.default_rng(0)
    print("\nStranger matched by someone in a gallery of G other people (LFW), % of probes")
    sizes = (10, 100, 1000)
    print(f"{'':<11}{'threshold':>10}" + "".join(f"{f'G={g}':>9}" for g in sizes))
    for method, v in lfw.lfw_people.items():
        unit = v / np.linalg.norm(v, axis=1, keepdims=True)
        sim = unit @ unit.T
        np.fill_diagonal(sim, -1.0)
        n = len(sim)
        for t in (*thresholds, 0.95):
            cells = []
            for g in sizes:
                size = min(g, n - 1)
                hits = [
                    sim[i, rng.choice(np.delete(np.arange(n), i), size, replace=False)].max() >= t
                    for i in range(n)
                ]
                cells.append(f"{100 * np.mean(hits):>8.1f}" + ("*" if size < g else " "))
            print(f"{method:<11}{t:>10.2f}" + "".join(cells))
    print("(* gallery capped at the people available)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="utkface_dev images (all)")
    parser.add_argument("--timed", type=int, default=96, help="faces timed")
    parser.add_argument("--batch", type=int, default=16, help="batch size for the batched timing")
    parser.add_argument("--repeat", type=int, default=3, help="passes over the batched timing")
    parser.add_argument("--lfw", type=int, default=300, help="LFW people with changed copies")
    parser.add_argument("--impostors", type=int, default=1000, help="LFW people for impostors")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    parser.add_argument("--thresholds", type=float, nargs="*", default=[0.91, 0.93])
    parser.add_argument("--models-dir", type=Path, default=None)
    args = parser.parse_args()

    files = locate_models(args.models_dir)
    ref = Dlib.load()
    ours = Ours(
        BlazeFaceDetector(files.short_range, "short_range", score_threshold=0.5),
        FaceMeshLandmarker(files.face_landmark),
    )
    embedders = {p: FaceEmbedder.from_model_files(files, p, args.threads) for p in PRECISIONS}
    print(
        f"CPU: {platform.processor() or platform.machine()}, dlib {dlib.__version__}, "
        f"onnxruntime threads {args.threads}"
    )

    started = time.perf_counter()
    faces, missed = load_utk(args.limit, ref, ours)
    print(
        f"utkface_dev: {len(faces)} faces ({missed} dlib's detector missed), "
        f"{time.perf_counter() - started:.0f} s to load"
    )
    speed(faces, ref, embedders, args.timed, args.batch, args.repeat)
    fidelity(faces, ref, embedders)
    lfw = lfw_pairs(args.lfw, args.impostors, ref, ours, embedders)
    report("LFW, one photo per person (same = synthetic second sighting)", lfw, args.thresholds)
    video = video_pairs(ref, files, ours, embedders)
    report(
        "video tracks (same = one track, different = tracks in view together)",
        video,
        args.thresholds,
    )
    operating_points(lfw, video, args.thresholds)


if __name__ == "__main__":
    main()
