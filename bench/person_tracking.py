"""Identity switches and fragmented tracks of the person tracker on the labelled clips.

A person detector runs at ``--rates`` detections per second of stream time (every frame
when the rate is at or above the clip's), the tracker (``PeopleConfig`` defaults) follows
people between detections, and on every labelled frame the confirmed tracks (lost ones
too: the pipeline still places faces in them), boxes predicted to that frame, are
matched one-to-one to the hand-labelled people at IoU >= 0.5. Labels marked
``difficult`` are neither counted nor held against the tracker. Per clip and rate:

- identities: labelled people; tracks: confirmed tracks the tracker made (what the agent
  would count);
- switches: times a labelled person's matched track id differs from the one it last
  matched, plus tracks that covered more than one labelled person (``mixed``);
- fragmented: labelled people covered by more than one track id;
- found: labelled boxes matched to a track.

Labels: ``tests/data/person_labels.json``,
``{"frames": [{"clip", "frame", "width", "height", "people": [{"id", "box", "difficult"}]}]}``
with ``frame`` the index in the order ``cv2.VideoCapture`` reads, from 0.

Usage: ``python bench/person_tracking.py [--rates 15 5] [--detector person|labels]``.
``labels`` detects the labelled boxes themselves (interpolated, jittered, some missed,
some weak): the tracker's own share of the errors, and a check of the bench.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from edge_agent.config import PeopleConfig
from edge_agent.tracking.person_tracker import PersonTracker, assign
from edge_agent.vision.detections import Detections, iou_matrix
from edge_agent.vision.detector import Detector

ROOT = Path(__file__).resolve().parents[1]
LABELS = ROOT / "tests" / "data" / "person_labels.json"
VIDEO = ROOT.parent / "shared" / "data" / "video"
MATCH_IOU = 0.5


@dataclass(frozen=True, slots=True)
class Label:
    """One hand-labelled person in one frame."""

    id: str
    box: NDArray[np.float32]
    difficult: bool


@dataclass(slots=True)
class Score:
    """One clip at one rate."""

    identities: int = 0
    tracks: int = 0
    switches: int = 0
    mixed: int = 0
    fragmented: int = 0
    labelled: int = 0
    found: int = 0


def load_labels(path: Path) -> dict[str, dict[int, list[Label]]]:
    """Clip name -> frame index -> labelled people."""
    clips: dict[str, dict[int, list[Label]]] = defaultdict(dict)
    for entry in json.loads(path.read_text())["frames"]:
        people = [
            Label(str(p["id"]), np.asarray(p["box"], np.float32), bool(p.get("difficult")))
            for p in entry["people"]
        ]
        clips[Path(entry["clip"]).name][int(entry["frame"])] = people
    return dict(clips)


def frames(path: Path) -> Iterator[tuple[int, float, NDArray[np.uint8]]]:
    """(index, stream seconds, RGB) for every frame, as ``cv2.VideoCapture`` reads them."""
    capture = cv2.VideoCapture(str(path))
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    index = 0
    try:
        while True:
            ok, bgr = capture.read()
            if not ok:
                return
            rgb = np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), np.uint8)
            yield index, index / fps, rgb
            index += 1
    finally:
        capture.release()


Seen = dict[int, list[tuple[int, NDArray[np.float32]]]]  # frame -> (track id, box)


Detect = Callable[[int, NDArray[np.uint8]], Detections]  # (frame index, RGB) -> boxes


def track_clip(
    detect: Detect, path: Path, rate: float, config: PeopleConfig, wanted: set[int]
) -> tuple[Seen, int]:
    """Run detector and tracker over a clip: the tracks seen on the ``wanted`` frames,
    and the number of confirmed tracks made."""
    tracker = PersonTracker(config)
    seen: Seen = {}
    confirmed = 0
    due = 0.0
    for index, now, rgb in frames(path):
        if now + 1e-6 >= due:
            height, width = rgb.shape[:2]
            found = detect(index, rgb)
            confirmed += len(tracker.update(found, now, (width, height)))
            due += 1.0 / rate
        if index in wanted:
            seen[index] = [
                (t.track_id, box) for t, box in tracker.predicted(now) if t.hits >= config.min_hits
            ]
    return seen, confirmed + len(tracker.finish())


def score_clip(labels: dict[int, list[Label]], seen: Seen) -> Score:
    """Match labels to tracks frame by frame; count switches and fragments."""
    score = Score()
    tracks_of: dict[str, set[int]] = defaultdict(set)
    people_of: dict[int, set[str]] = defaultdict(set)
    last: dict[str, int] = {}
    for index in sorted(labels):
        people = labels[index]
        tracks = seen.get(index, [])
        label_boxes = np.stack([p.box for p in people]) if people else np.zeros((0, 4))
        track_boxes = np.stack([b for _, b in tracks]) if tracks else np.zeros((0, 4))
        overlaps = iou_matrix(label_boxes.astype(np.float32), track_boxes.astype(np.float32))
        matched = dict(assign(overlaps, MATCH_IOU))
        for i, person in enumerate(people):
            if person.difficult:
                continue
            score.labelled += 1
            tracks_of.setdefault(person.id, set())
            if i not in matched:
                continue
            track_id = tracks[matched[i]][0]
            score.found += 1
            tracks_of[person.id].add(track_id)
            people_of[track_id].add(person.id)
            if last.get(person.id, track_id) != track_id:
                score.switches += 1
            last[person.id] = track_id
    score.identities = len(tracks_of)
    score.mixed = sum(1 for ids in people_of.values() if len(ids) > 1)
    score.switches += score.mixed
    score.fragmented = sum(1 for ids in tracks_of.values() if len(ids) > 1)
    return score


class LabelDetector:
    """The labels as a detector: each labelled person's box, interpolated between the
    frames it is labelled on (taken as there all along in between), shaken by ``jitter``
    (box heights) and missed with probability ``drop``. Isolates the tracker from the
    detector (and checks the bench)."""

    def __init__(self, labels: dict[int, list[Label]], jitter: float, drop: float) -> None:
        self._tracks: dict[str, list[tuple[int, NDArray[np.float32]]]] = defaultdict(list)
        for index in sorted(labels):
            for person in labels[index]:
                self._tracks[person.id].append((index, person.box))
        self._jitter, self._drop = jitter, drop
        self._rng = np.random.default_rng(0)

    def detect_frame(self, index: int, _rgb: NDArray[np.uint8]) -> Detections:
        """Boxes at frame ``index``, scores 0.9 (or 0.4, one in five)."""
        boxes: list[NDArray[np.float32]] = []
        for samples in self._tracks.values():
            frames = [i for i, _ in samples]
            if not frames[0] <= index <= frames[-1] or self._rng.random() < self._drop:
                continue
            at = int(np.searchsorted(frames, index))
            (i0, b0), (i1, b1) = samples[max(0, at - 1)], samples[at]
            w = 0.0 if i1 == i0 else (index - i0) / (i1 - i0)
            box = (1 - w) * b0 + w * b1
            box = box + self._rng.normal(0, self._jitter * float(box[3] - box[1]), 4)
            boxes.append(box.astype(np.float32))
        scores = np.where(self._rng.random(len(boxes)) < 0.2, 0.4, 0.9).astype(np.float32)
        return Detections.boxes_only(_stack(boxes), scores)


def _stack(boxes: list[NDArray[np.float32]]) -> NDArray[np.float32]:
    return np.stack(boxes).astype(np.float32) if boxes else np.zeros((0, 4), np.float32)


def person_detector(config: PeopleConfig, models: Path | None) -> Detector:
    """The agent's person detector (``PeopleConfig.model``), from the verified model files."""
    from edge_agent.vision.model_files import locate_models
    from edge_agent.vision.person_detector import PersonDetector

    spec = locate_models(models).person_detector(config.model)
    return PersonDetector(spec, config.score_threshold, config.threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=Path, default=LABELS)
    parser.add_argument("--video", type=Path, default=VIDEO, help="folder of the clips")
    parser.add_argument("--rates", type=float, nargs="+", default=[15.0, 5.0])
    parser.add_argument("--detector", choices=["person", "labels"], default="person")
    parser.add_argument("--jitter", type=float, default=0.03, help="labels: box heights")
    parser.add_argument("--drop", type=float, default=0.1, help="labels: miss probability")
    parser.add_argument("--clips", nargs="*", help="only these clips (file names)")
    parser.add_argument("--models", type=Path, help="model files (default: located)")
    args = parser.parse_args()

    config = PeopleConfig()
    labels = load_labels(args.labels)
    clips = [c for c in sorted(labels) if not args.clips or c in args.clips]
    print(f"detector {args.detector}, {len(clips)} clips, match IoU >= {MATCH_IOU}")
    print(f"{'clip':<46}{'rate':>5}{'ids':>5}{'tracks':>7}{'switch':>7}{'mixed':>6}", end="")
    print(f"{'frag':>5}{'found':>12}")
    totals: dict[float, Score] = defaultdict(Score)
    network = person_detector(config, args.models) if args.detector == "person" else None
    for clip in clips:
        for rate in args.rates:
            detect: Detect
            if network is None:
                detect = LabelDetector(labels[clip], args.jitter, args.drop).detect_frame
            else:
                detect = _network_detect(network, config.score_threshold)
            seen, tracks = track_clip(detect, args.video / clip, rate, config, set(labels[clip]))
            score = score_clip(labels[clip], seen)
            score.tracks = tracks
            print(_row(clip, rate, score))
            total = totals[rate]
            for name in ("identities", "tracks", "switches", "mixed", "fragmented"):
                setattr(total, name, getattr(total, name) + getattr(score, name))
            total.labelled += score.labelled
            total.found += score.found
    for rate, total in totals.items():
        print(_row("all", rate, total))


def _network_detect(detector: Detector, score_threshold: float) -> Detect:
    return lambda _index, rgb: detector.detect(rgb, score_threshold)


def _row(clip: str, rate: float, s: Score) -> str:
    found = f"{s.found}/{s.labelled}" if s.labelled else "-"
    rate_text = f"{rate:g}"
    return (
        f"{clip[:45]:<46}{rate_text:>5}{s.identities:>5}{s.tracks:>7}{s.switches:>7}"
        f"{s.mixed:>6}{s.fragmented:>5}{found:>12}"
    )


if __name__ == "__main__":
    main()
