"""One camera's chain: frame -> detect -> track -> (track ended) -> estimate -> event.

Detection runs on every processed frame; landmarks, chips and the networks run only when
a track ends, on that track's best crops, batched across all tracks ending together.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

import structlog

from edge_agent.aggregate import age_estimate, combine, gender_estimate
from edge_agent.attributes import AttributeModels
from edge_agent.config import AgentConfig
from edge_agent.contract import PersonEvent, uuid7
from edge_agent.counting_line import camera_line
from edge_agent.detector import BlazeFaceDetector
from edge_agent.estimator import DemographicsEstimator
from edge_agent.landmarks import FaceMeshLandmarker
from edge_agent.model_files import ModelFiles, locate_models
from edge_agent.sources import Frame
from edge_agent.timing import StageTimes
from edge_agent.tracker import IouTracker, Track

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Models:
    """The loaded networks one camera thread uses (LiteRT interpreters are per thread)."""

    files: ModelFiles
    detector: BlazeFaceDetector
    estimator: DemographicsEstimator
    versions: dict[str, str]  # what each event reports it was estimated with


def load_models(config: AgentConfig, times: StageTimes | None = None) -> Models:
    """Locate, verify and load every network the agent runs."""
    files = locate_models(config.models_dir)
    det_cfg = config.detector
    spec = files.detector(det_cfg.model)
    detector = BlazeFaceDetector(
        spec.path, det_cfg.model, det_cfg.score_threshold, num_threads=det_cfg.threads
    )
    landmarker = FaceMeshLandmarker(files.face_landmark, num_threads=det_cfg.threads)
    gender_path, age_path, gender_key, age_key = files.attribute_models(config.estimator.models)
    attributes = AttributeModels(
        gender_path, age_path, files.means, files.scale, files.input_name, det_cfg.threads
    )
    estimator = DemographicsEstimator(
        landmarker,
        attributes,
        gender_size=files.gender_chip_size,
        age_size=files.age_chip_size,
        tta=config.estimator.tta,
        times=times,
    )
    keys = {
        det_cfg.model: f"face_detection_{det_cfg.model}",
        "face_landmark": "face_landmark",
        "gender": gender_key,
        "age": age_key,
    }
    versions = {name: files.versions[key] for name, key in keys.items()}
    return Models(files, detector, estimator, versions)


class CameraPipeline:
    """Turns one camera's frames into person events."""

    def __init__(
        self,
        device_id: str,
        camera_id: str,
        config: AgentConfig,
        models: Models,
        times: StageTimes | None = None,
        on_event: Callable[[PersonEvent], None] | None = None,
    ) -> None:
        self.device_id = device_id
        self.camera_id = camera_id
        self.models = models
        line = camera_line(config, camera_id)
        self.tracker = IouTracker(config.tracker, config.detector.min_face_px, line)
        self.min_face_score = config.estimator.min_face_score
        self.rejected_tracks = 0  # tracks whose crops the face mesh did not take for faces
        self.times = times or StageTimes()
        self.on_event = on_event
        self._first_wall: Frame | None = None

    def process(self, frame: Frame) -> list[PersonEvent]:
        """Detect and track one frame; return events for people who just left."""
        if self._first_wall is None:
            self._first_wall = frame
        with self.times.stage("detect"):
            detections = self.models.detector.detect(frame.rgb)
        with self.times.stage("track"):
            ended = self.tracker.update(detections, frame.t, frame.rgb)
        return self._events(ended)

    def in_view(self) -> int:
        """Confirmed people the tracker follows now (occupancy); safe from another
        thread, since the tracker replaces its list of tracks rather than editing it."""
        min_hits = self.tracker.config.min_hits
        return sum(1 for track in self.tracker.active if track.hits >= min_hits)

    def finish(self) -> list[PersonEvent]:
        """The stream ended: every person still in view becomes an event."""
        return self._events(self.tracker.finish())

    def _events(self, tracks: Sequence[Track]) -> list[PersonEvent]:
        if not tracks or self._first_wall is None:
            return []
        crops = [crop for track in tracks for crop in track.crops]
        estimates = iter(self.models.estimator.estimate(crops))
        files = self.models.files
        origin = self._first_wall.wall - timedelta(seconds=self._first_wall.t)
        events: list[PersonEvent] = []
        for track in tracks:
            pairs = [(next(estimates), crop.quality) for crop in track.crops]
            faces = [(e, q) for e, q in pairs if e.face_score >= self.min_face_score]
            if pairs and not faces:
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
            gender = age = None
            if faces:
                gender_p, age_p = combine([e for e, _ in faces], [q for _, q in faces])
                gender = gender_estimate(gender_p, files.gender_labels)
                age = age_estimate(age_p, files.age_weights)
            event = PersonEvent(
                event_id=uuid7(),
                device_id=self.device_id,
                camera_id=self.camera_id,
                track_id=track.track_id,
                first_seen=origin + timedelta(seconds=track.first_seen),
                last_seen=origin + timedelta(seconds=track.last_seen),
                dwell_s=round(track.last_seen - track.first_seen, 3),
                gender=gender,
                age=age,
                direction=track.direction,
                crops=len(faces),
                models=self.models.versions,
            )
            events.append(event)
            if self.on_event is not None:
                self.on_event(event)
        return events
