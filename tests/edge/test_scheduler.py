"""The many-camera scheduler: paced cameras drop frames instead of queueing them, files
lose none, ended tracks of several cameras are estimated in one batch, and a region of
interest limits detection to part of the frame."""

from __future__ import annotations

import numpy as np

from edge_agent.camera.sources import Frame, read_frames
from edge_agent.config import AgentConfig
from edge_agent.contract import PersonEvent
from edge_agent.device.telemetry import CameraMeter
from edge_agent.pipeline import CameraPipeline, EndedTracks, Models, load_models
from edge_agent.scheduler import Scheduler
from edge_agent.vision.detector import detect_in_roi as _detect
from tests.paths import WALK_AND_PAUSE


def _config(*camera_ids: str, **camera: object) -> AgentConfig:
    cameras = [{"id": c, "source": str(WALK_AND_PAUSE), **camera} for c in camera_ids]
    return AgentConfig.model_validate({"cameras": cameras, "metrics": {"port": 0}})


def _scheduler(
    config: AgentConfig, models: Models, events: list[PersonEvent]
) -> tuple[Scheduler, list[CameraMeter]]:
    scheduler = Scheduler(config, models, events.append)
    meters = []
    for camera in config.cameras:
        meter = CameraMeter(camera.id)
        pipeline = CameraPipeline(config.device_id, camera.id, config, models, meter.times)
        scheduler.add_camera(pipeline, meter)
        meters.append(meter)
    return scheduler, meters


def test_a_camera_the_detectors_cannot_keep_up_with_drops_frames() -> None:
    config = _config("door")
    events: list[PersonEvent] = []
    scheduler, (meter,) = _scheduler(config, load_models(config), events)
    lane = scheduler.lanes["door"]
    frames = list(read_frames("door", str(WALK_AND_PAUSE)))[:5]
    for frame in frames:  # the workers have not started: nobody takes the frames
        scheduler.submit(lane, frame, wait=False)
    assert isinstance(lane.item, Frame) and lane.item.index == 4, "only the newest is kept"
    scheduler.start()
    scheduler.end_stream(lane)
    scheduler.close()
    assert (meter.processed, meter.dropped) == (1, 4)


def test_a_file_loses_no_frame_and_gives_the_same_people_as_one_pipeline() -> None:
    config = _config("door")
    models = load_models(config)
    reference = CameraPipeline(config.device_id, "door", config, models)
    expected = [e for f in read_frames("door", str(WALK_AND_PAUSE)) for e in reference.process(f)]
    expected += reference.finish()

    events: list[PersonEvent] = []
    scheduler, (meter,) = _scheduler(config, models, events)
    lane = scheduler.lanes["door"]
    scheduler.start()
    count = 0
    for frame in read_frames("door", str(WALK_AND_PAUSE)):
        scheduler.submit(lane, frame, wait=True)
        count += 1
    scheduler.end_stream(lane)
    scheduler.close()
    assert (meter.processed, meter.dropped) == (count, 0)
    assert len(events) == len(expected) == 3
    assert [(e.track_id, e.gender and e.gender.value) for e in events] == [
        (e.track_id, e.gender and e.gender.value) for e in expected
    ]


def test_tracks_of_two_cameras_are_estimated_in_one_batch() -> None:
    config = _config("door", "hall")
    models = load_models(config)
    events: list[PersonEvent] = []
    scheduler, meters = _scheduler(config, models, events)
    ended: list[EndedTracks] = []
    for camera_id in ("door", "hall"):
        pipeline = scheduler.lanes[camera_id].pipeline
        for frame in read_frames(camera_id, str(WALK_AND_PAUSE)):
            ended.append(pipeline.track(frame))
        ended.append(pipeline.end_stream())
    ended = [e for e in ended if e.tracks]
    scheduler._estimate(ended)
    assert scheduler.estimate_batches["align"] == 1, "one batch for everything"
    assert {e.camera_id for e in events} == {"door", "hall"}
    assert len(events) == 6
    assert [m.events for m in meters] == [3, 3]


def test_a_region_of_interest_finds_the_same_face_at_the_same_place() -> None:
    config = _config("door")
    models = load_models(config)
    frames = list(read_frames("door", str(WALK_AND_PAUSE)))
    frame = next(f for f in frames if len(models.detector.detect(f.rgb)) == 1)
    whole = models.detector.detect(frame.rgb)
    height, width = frame.rgb.shape[:2]
    x1, y1, x2, y2 = whole.boxes[0]
    pad = 2.0 * (x2 - x1)
    roi = (
        max(0.0, (x1 - pad) / width),
        max(0.0, (y1 - pad) / height),
        min(1.0, (x2 + pad) / width),
        min(1.0, (y2 + pad) / height),
    )
    inside = _detect(models.detector, frame.rgb, roi)
    assert len(inside) == 1
    assert np.abs(inside.boxes[0] - whole.boxes[0]).max() < 0.1 * (x2 - x1)
    # A region away from every face finds nothing, in any frame.
    corner = (0.0, 0.0, 0.05, 0.05)
    assert all(len(_detect(models.detector, f.rgb, corner)) == 0 for f in frames[::5])
