"""Which face belongs to which person, and whether it looks at the camera.

A person's face is where the head is: inside the person's box horizontally, in its upper
part vertically. Each face goes to at most one person and each person takes at most one
face per frame, nearest to the expected head position first, so two people walking close
together keep their own faces.

**Frontal** (a face that looks at the camera, for ``watcher`` and ``attention_s``) is read
from BlazeFace's keypoints, in the face's own axes (along the line through the eyes and
across it, so a tilted head counts by its turn alone): the nose tip lies within
``FRONTAL_YAW`` eye distances of the point midway between the eyes along the eye line
(the nose drifts toward one eye as the head turns; 0.25 is about 30 degrees of yaw for a
typical nose depth), and across it between ``PITCH_RANGE`` of the way from the eyes to
the mouth (a head bent far down or up leaves it).
"""

from __future__ import annotations

from typing import Final, Protocol

import numpy as np
from numpy.typing import NDArray

from edge_agent.vision.detections import LEFT_EYE, MOUTH, NOSE_TIP, RIGHT_EYE, Detections

FRONTAL_YAW: Final = 0.25
# Where the nose tip lies from the eyes (0) to the mouth (1) on a frontal face; a head bent
# far down or up leaves the range.
PITCH_RANGE: Final = (0.25, 0.8)
# The head's expected centre in a person box: horizontally centred, this far down the box
# (a standing person's head is about an eighth of their height).
HEAD_DOWN: Final = 0.12
# A face's centre may lie this far outside the box sideways (arms, loose boxes), and no
# lower than this fraction of the box's height from its top.
SIDE_SLACK: Final = 0.15
UPPER_PART: Final = 0.5
# A frontal face counts toward attention for the time since the camera's previous face
# detection, at most this long (a stalled camera does not turn into minutes of attention).
MAX_ATTENTION_STEP_S: Final = 0.5


class LooksAtCamera(Protocol):
    """A track that counts faces and the time they looked at the camera."""

    faces_seen: int
    frontal_seen: int
    attention_s: float


def frontal(faces: Detections) -> NDArray[np.bool_]:
    """Per face: does it look at the camera (see the module's definition)? Measured along
    the eye axis and across it, so a tilted head (roll) is judged by its turn alone."""
    if len(faces) == 0 or faces.keypoints.shape[1] <= MOUTH:
        return np.zeros(len(faces), np.bool_)
    kp = faces.keypoints.astype(np.float64)
    axis = kp[:, LEFT_EYE] - kp[:, RIGHT_EYE]
    eye_dist = np.maximum(np.linalg.norm(axis, axis=1), 1.0)
    along = axis / eye_dist[:, None]
    across = np.stack([-along[:, 1], along[:, 0]], axis=1)  # toward the mouth
    eye_mid = (kp[:, RIGHT_EYE] + kp[:, LEFT_EYE]) / 2.0
    nose = kp[:, NOSE_TIP] - eye_mid
    mouth_depth = np.einsum("ij,ij->i", kp[:, MOUTH] - eye_mid, across)
    yaw = np.abs(np.einsum("ij,ij->i", nose, along)) / eye_dist
    pitch = np.einsum("ij,ij->i", nose, across) / np.maximum(mouth_depth, 1.0)
    result: NDArray[np.bool_] = (
        (yaw <= FRONTAL_YAW) & (pitch > PITCH_RANGE[0]) & (pitch < PITCH_RANGE[1])
    )
    return result


def assign_faces(person_boxes: NDArray[np.float32], faces: Detections) -> NDArray[np.intp]:
    """Per face, the index of the person box it belongs to, or -1 for none."""
    owner = np.full(len(faces), -1, np.intp)
    if len(faces) == 0 or len(person_boxes) == 0:
        return owner
    people = np.asarray(person_boxes, np.float32).reshape(-1, 4)
    centres = (faces.boxes[:, :2] + faces.boxes[:, 2:]) / 2.0  # [F, 2]
    widths = np.maximum(people[:, 2] - people[:, 0], 1.0)  # [P]
    heights = np.maximum(people[:, 3] - people[:, 1], 1.0)
    head_x = (people[:, 0] + people[:, 2]) / 2.0
    head_y = people[:, 1] + HEAD_DOWN * heights
    fx, fy = centres[:, None, 0], centres[:, None, 1]  # [F, 1]
    inside = (
        (fx >= people[None, :, 0] - SIDE_SLACK * widths)
        & (fx <= people[None, :, 2] + SIDE_SLACK * widths)
        & (fy >= people[None, :, 1] - SIDE_SLACK * heights)
        & (fy <= people[None, :, 1] + UPPER_PART * heights)
        & (faces.widths[:, None] <= 1.2 * widths[None, :])
    )
    cost = np.hypot(fx - head_x[None, :], fy - head_y[None, :]) / widths[None, :]
    cost = np.where(inside, cost, np.inf)
    taken: set[int] = set()
    for flat in np.argsort(cost, axis=None):
        face, person = divmod(int(flat), len(people))
        if not np.isfinite(cost[face, person]):
            break
        if owner[face] >= 0 or person in taken:
            continue
        owner[face] = person
        taken.add(person)
    return owner


def observe_face(track: LooksAtCamera, is_frontal: bool, step_s: float) -> None:
    """Count one face seen on ``track``; a frontal one adds the time since the previous
    face detection (capped) to the track's attention."""
    track.faces_seen += 1
    if is_frontal:
        track.frontal_seen += 1
        track.attention_s += min(max(step_s, 0.0), MAX_ATTENTION_STEP_S)
