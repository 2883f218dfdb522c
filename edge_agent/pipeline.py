"""One camera's chain: frame -> detect -> track -> (person left) -> estimate -> event.

Per frame, within the device's budget: people are detected ``people.detect_fps`` times a
second (the tracker's motion model carries them in between), and not at all while the
scene stands still; faces are looked for only while someone is in view (around their
heads when that is a small part of the frame) and on every person-detection frame.
Landmarks, chips and the networks run only when a person leaves, on their best face
crops, batched across all people (of every camera, in the agent: edge_agent/scheduler.py)
leaving together.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog

from edge_agent.camera.sources import Frame
from edge_agent.config import AgentConfig
from edge_agent.contract import PersonEvent, uuid7
from edge_agent.delivery.clock import SYSTEM_CLOCK, AgentClock
from edge_agent.timing import StageTimes
from edge_agent.tracking.aggregate import (
    age_estimate,
    band_probabilities,
    combine,
    female_probability,
    gender_estimate,
)
from edge_agent.tracking.counting_line import camera_line
from edge_agent.tracking.people import PeopleTracker, Person, face_only
from edge_agent.tracking.returning_visitors import Embedder, ReturnMatcher
from edge_agent.vision.detections import FaceCrop, FaceEstimate
from edge_agent.vision.detector import Detector, detect_in_roi
from edge_agent.vision.estimator import DemographicsEstimator
from edge_agent.vision.face_detector import BlazeFaceDetector
from edge_agent.vision.landmarks import FaceMeshLandmarker
from edge_agent.vision.model_files import ModelFiles, locate_models
from edge_agent.vision.motion import MotionGate

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Models:
    """The loaded networks. ``detector`` is for the thread that loaded them (LiteRT
    interpreters are not shared between threads); the scheduler's detection workers make
    their own with :func:`make_detector`."""

    files: ModelFiles
    detector: Detector
    estimator: DemographicsEstimator
    versions: dict[str, str]  # what each event reports it was estimated with
    embedder: Embedder | None = None  # one face embedding per person, for returns
    person_detector: Detector | None = None  # None: people off, faces only


def make_detector(config: AgentConfig, files: ModelFiles) -> Detector:
    """The configured detector (BlazeFace) with its own interpreter (one per thread that
    detects)."""
    det_cfg = config.detector
    spec = files.detector(det_cfg.model)
    return BlazeFaceDetector(
        spec.path, det_cfg.model, det_cfg.score_threshold, num_threads=det_cfg.threads
    )


def make_person_detector(config: AgentConfig, files: ModelFiles) -> Detector | None:
    """The configured person detector with its own session, or ``None`` when people
    detection is off."""
    if not config.people.enabled:
        return None
    from edge_agent.vision.person_detector import PersonDetector

    spec = files.person_detector(config.people.model)
    return PersonDetector(spec, config.people.score_threshold, num_threads=config.people.threads)


def load_models(config: AgentConfig, times: StageTimes | None = None) -> Models:
    """Locate, verify and load every network the agent runs."""
    files = locate_models(config.models_dir)
    det_cfg = config.detector
    detector = make_detector(config, files)
    landmarker = FaceMeshLandmarker(files.face_landmark, num_threads=det_cfg.threads)
    estimator = DemographicsEstimator.load(
        config.estimator, files, landmarker, det_cfg.threads, times
    )
    keys = {
        det_cfg.model: f"face_detection_{det_cfg.model}",
        "face_landmark": "face_landmark",
        **estimator.model_keys,
    }
    if config.people.enabled:
        keys["person"] = config.people.model
    versions = {name: files.versions[key] for name, key in keys.items()}
    person_detector = make_person_detector(config, files)
    return Models(files, detector, estimator, versions, person_detector=person_detector)


@dataclass(frozen=True, slots=True)
class EndedTracks:
    """People who just left one camera's view, waiting for estimation.

    ``origin_mono`` is the camera's stream clock zero on the monotonic clock, which the
    pipeline's :class:`AgentClock` turns into wall time when the events are built (and the
    clock gate again, should the clock not have been set then); ``origin_wall``, when
    given, is zero on the media's own timeline instead (offline analysis of a file).
    """

    pipeline: CameraPipeline
    tracks: list[Person]
    origin_mono: float
    origin_wall: datetime | None = None

    @property
    def crops(self) -> int:
        """Face crops these tracks carry (the estimation cost)."""
        return sum(len(track.crops) for track in self.tracks)

    def mono_at(self, t: float) -> float | None:
        """Stream time ``t`` on the monotonic clock (``None`` on a media timeline)."""
        return None if self.origin_wall is not None else self.origin_mono + t

    def timeline(self) -> Callable[[float], datetime]:
        """Stream seconds -> UTC time, for every event of this batch alike."""
        if self.origin_wall is not None:
            origin = self.origin_wall
            return lambda t: origin + timedelta(seconds=t)
        wall_at = self.pipeline.clock.converter()
        return lambda t: wall_at(self.origin_mono + t)


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A built event and its times on the monotonic clock (``None`` on a media
    timeline), which the clock gate needs to re-stamp it."""

    event: PersonEvent
    first_mono: float | None
    last_mono: float | None


class CameraPipeline:
    """One camera's detection and tracking state, and how its tracks become events.

    ``process`` does everything inline (``edge-agent analyze``, one camera); the agent's
    scheduler instead calls ``track`` on a detection worker and hands the result to
    :func:`estimate_events` on the estimation worker, batched with other cameras.
    """

    def __init__(
        self,
        device_id: str,
        camera_id: str,
        config: AgentConfig,
        models: Models,
        times: StageTimes | None = None,
        on_event: Callable[[PersonEvent], None] | None = None,
        returns: ReturnMatcher | None = None,
        clock: AgentClock = SYSTEM_CLOCK,
    ) -> None:
        self.device_id = device_id
        self.camera_id = camera_id
        self.models = models
        line = camera_line(config, camera_id)
        self.tracker = PeopleTracker(
            config.people, config.tracker, config.detector.min_face_px, line
        )
        self.people = config.people
        self.motion = MotionGate()
        self.roi = next((c.roi for c in config.cameras if c.id == camera_id), None)
        self.score_threshold = config.detector.score_threshold
        self.min_face_score = config.estimator.min_face_score
        self.rejected_tracks = 0  # face-only tracks the face mesh did not take for faces
        self.still_frames = 0  # person detections skipped: nothing moved
        self._next_people_at: float | None = None
        self._next_faces_at: float | None = None
        self.faces_fps = config.detector.detect_fps
        self.times = times or StageTimes()
        self.on_event = on_event
        self.returns = returns
        self.clock = clock
        self._origin: tuple[float, datetime | None] | None = None  # (mono, media wall)

    def apply_settings(self, config: AgentConfig) -> None:
        """Take the settings a fleet may change at run time (a live config) from the next
        frame on: thresholds, the tracker's settings, the test-time variants of the
        estimator (which every camera shares). Call between frames, in the thread
        detecting for this camera."""
        self.score_threshold = config.detector.score_threshold
        self.faces_fps = config.detector.detect_fps
        self.people = config.people
        self.tracker.apply_settings(config.people, config.tracker, config.detector.min_face_px)
        self.models.estimator.apply_settings(config.estimator)
        self.min_face_score = config.estimator.min_face_score

    def track(
        self,
        frame: Frame,
        detector: Detector | None = None,
        person_detector: Detector | None = None,
    ) -> EndedTracks:
        """Detect and track one frame (with the detectors given, else this pipeline's
        own); returns the people who just left."""
        if self._origin is None:
            wall = None if frame.wall is None else frame.wall - timedelta(seconds=frame.t)
            self._origin = (frame.mono - frame.t, wall)
        people_detector = person_detector or self.models.person_detector
        height, width = frame.rgb.shape[:2]
        ended: list[Person] = []
        people_detected = False
        if self.tracker.people is not None and people_detector is not None:
            if _due(self._next_people_at, frame.t, self.people.detect_fps):
                self._next_people_at = frame.t + 1.0 / self.people.detect_fps
                people = None
                if self.motion.moved(frame.rgb, frame.t):
                    with self.times.stage("detect_people"):
                        people = detect_in_roi(
                            people_detector, frame.rgb, self.roi, self.people.score_threshold
                        )
                    people_detected = True
                else:
                    self.still_frames += 1
                with self.times.stage("track"):
                    ended += self.tracker.people_step(people, frame.t, (width, height))
            # Someone in view: faces at their own rate; nobody: on person-detection frames
            # (a close-up face the person detector misses still counts).
            look_for_faces = people_detected or (
                self.tracker.anyone() and _due(self._next_faces_at, frame.t, self.faces_fps)
            )
        else:
            look_for_faces = _due(self._next_faces_at, frame.t, self.faces_fps)
        if look_for_faces:
            self._next_faces_at = frame.t + 1.0 / self.faces_fps
            region = None if people_detected else self.tracker.face_region(frame.t, (width, height))
            with self.times.stage("detect"):
                faces = detect_in_roi(
                    detector or self.models.detector,
                    frame.rgb,
                    _intersect(self.roi, region),
                    self.score_threshold,
                )
            with self.times.stage("track"):
                ended += self.tracker.faces_step(faces, frame.t, frame.rgb)
        return EndedTracks(self, ended, *self._origin)

    def end_stream(self) -> EndedTracks:
        """The stream stopped: everyone still in view has left. The next frame may come
        from a reopened source whose clock starts again."""
        origin = self._origin or (self.clock.monotonic(), None)
        self._origin = None
        self._next_people_at = self._next_faces_at = None
        return EndedTracks(self, self.tracker.finish(), *origin)

    def process(self, frame: Frame) -> list[PersonEvent]:
        """Detect and track one frame; return events for people who just left."""
        return estimate_events([self.track(frame)], self.models)

    def finish(self) -> list[PersonEvent]:
        """The stream ended: every person still in view becomes an event."""
        return estimate_events([self.end_stream()], self.models)

    def in_view(self) -> int:
        """Confirmed people in view now (occupancy); safe from another thread, since
        the trackers replace their lists of tracks rather than editing them."""
        return self.tracker.in_view()

    def build_events(
        self, ended: EndedTracks, estimates: Sequence[FaceEstimate]
    ) -> list[tuple[Outgoing, FaceCrop | None, FaceEstimate | None]]:
        """One event per person (a face-only track only when its crops are faces); each
        with its best crop, for the embedding. ``estimates`` are the tracks' crops'
        estimates, in order. A watcher looked at the camera for ``people.watcher_min_s``
        or more; gender and age come only with a watcher's usable face."""
        files = self.models.files
        given = iter(estimates)
        built: list[tuple[Outgoing, FaceCrop | None, FaceEstimate | None]] = []
        wall_at = ended.timeline()
        for track in ended.tracks:
            pairs = [(next(given), crop) for crop in track.crops]
            faces = [(e, c) for e, c in pairs if e.face_score >= self.min_face_score]
            if pairs and not faces and face_only(track):
                # The detector followed something that is not a face (the back of a
                # head, a poster pattern): not a person to count.
                self.rejected_tracks += 1
                log.info(
                    "track_rejected_not_a_face",
                    camera=self.camera_id,
                    track=track.track_id,
                    best_face_score=max(e.face_score for e, _ in pairs),
                )
                continue
            dwell = round(track.last_seen - track.first_seen, 3)
            # A face seen only too small for a crop cannot be checked: its keypoints count.
            verified = bool(faces) or not pairs
            attention = min(round(track.attention_s, 3), dwell) if verified else 0.0
            watcher = verified and attention >= self.people.watcher_min_s
            if not watcher:
                faces = []
            gender = age = p_female = age_bands = None
            if faces:
                gender_p, age_p = combine([e for e, _ in faces], [c.quality for _, c in faces])
                gender = gender_estimate(gender_p, files.gender_labels)
                age = age_estimate(age_p, files.age_weights)
                p_female = female_probability(gender_p, files.gender_labels)
                age_bands = band_probabilities(age_p, files.age_weights)
            event = PersonEvent(
                event_id=uuid7(),
                device_id=self.device_id,
                camera_id=self.camera_id,
                track_id=track.track_id,
                first_seen=wall_at(track.first_seen),
                last_seen=wall_at(track.last_seen),
                dwell_s=dwell,
                gender=gender,
                age=age,
                direction=track.direction,
                crops=len(faces),
                watcher=watcher,
                attention_s=attention,
                p_female=p_female,
                age_bands=age_bands,
                models=self.models.versions,
            )
            best = max(faces, key=lambda pair: pair[1].quality * pair[0].face_score, default=None)
            out = Outgoing(event, ended.mono_at(track.first_seen), ended.mono_at(track.last_seen))
            built.append((out, best[1] if best else None, best[0] if best else None))
        return built


def estimate_events(
    batch: Sequence[EndedTracks], models: Models, times: StageTimes | None = None
) -> list[PersonEvent]:
    """Estimate every crop of every camera's ended tracks in one batch, then build the
    events; people who come back within the return window are marked as returns."""
    return [out.event for out in estimate_outgoing(batch, models, times)]


def estimate_outgoing(
    batch: Sequence[EndedTracks], models: Models, times: StageTimes | None = None
) -> list[Outgoing]:
    """:func:`estimate_events` with each event's monotonic times, for the clock gate."""
    batch = [ended for ended in batch if ended.tracks]
    if not batch:
        return []
    crops = [crop for ended in batch for track in ended.tracks for crop in track.crops]
    estimates = models.estimator.estimate(crops)
    built: list[tuple[Outgoing, FaceCrop | None, FaceEstimate | None, CameraPipeline]] = []
    start = 0
    for ended in batch:
        count = ended.crops
        for out, crop, estimate in ended.pipeline.build_events(
            ended, estimates[start : start + count]
        ):
            built.append((out, crop, estimate, ended.pipeline))
        start += count
    events = _mark_returns(built, models, times)
    outgoing = []
    for event, (out, _, _, pipeline) in zip(events, built, strict=True):
        if pipeline.on_event is not None:
            pipeline.on_event(event)
        outgoing.append(Outgoing(event, out.first_mono, out.last_mono))
    return outgoing


def _mark_returns(
    built: Sequence[tuple[Outgoing, FaceCrop | None, FaceEstimate | None, CameraPipeline]],
    models: Models,
    times: StageTimes | None,
) -> list[PersonEvent]:
    """One embedding per person (their best crop), matched against recent departures."""
    events = [out.event for out, *_ in built]
    wanted = [
        i
        for i, (_, crop, estimate, pipeline) in enumerate(built)
        if crop is not None and estimate is not None and pipeline.returns is not None
    ]
    if models.embedder is None or not wanted:
        return events
    with (times or StageTimes()).stage("embed"):
        embeddings = models.embedder.embed(
            [built[i][1].image for i in wanted],  # type: ignore[union-attr]
            [built[i][2].points for i in wanted],  # type: ignore[union-attr]
        )
    for i, embedding in zip(wanted, embeddings, strict=True):
        event, pipeline = events[i], built[i][3]
        returns = pipeline.returns
        assert returns is not None
        previous = returns.match(embedding, event.camera_id, event.first_seen)
        if previous is not None:
            event = event.model_copy(update={"return_of": previous.event_id})
            events[i] = event
        returns.remember(embedding, event.camera_id, event.last_seen, event.event_id, previous)
    return events


def _intersect(
    a: tuple[float, float, float, float] | None, b: tuple[float, float, float, float] | None
) -> tuple[float, float, float, float] | None:
    """The overlap of two regions (frame fractions; ``None`` is the whole frame)."""
    if a is None or b is None:
        return a or b
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    if x2 <= x1 or y2 <= y1:
        return a  # apart: the camera's own region of interest wins
    return x1, y1, x2, y2


def _due(next_at: float | None, t: float, rate: float) -> bool:
    """Time for a detection at ``rate`` per second: due, never done, or the stream's
    clock went back (a reopened source starts again at 0)."""
    return next_at is None or t >= next_at or t < next_at - 1.0 / rate
