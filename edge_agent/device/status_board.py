"""The device's retained status: what runs, each camera's state, the config in force.

One board per agent; camera threads and the config handler change it, and every change
asks the publisher to publish it again (retained, QoS 1), so a dashboard subscribing
later still sees the current state. The last will is the contract's fixed ``offline``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from edge_agent import __version__
from edge_agent.contract import CameraState, CameraStatus, DeviceState, DeviceStatus
from edge_agent.device.live_config import LiveSettings


class StatusBoard:
    """Thread-safe current status; ``build`` renders it for the publisher."""

    def __init__(
        self,
        device_id: str,
        camera_ids: Sequence[str],
        live: LiveSettings,
        dropped: Callable[[], int],
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self.device_id = device_id
        self.live = live
        self._dropped = dropped
        self.on_change = on_change
        self._lock = threading.Lock()
        self._cameras = {camera_id: CameraState.CONNECTING for camera_id in camera_ids}
        self._errors: dict[str, str] = {}
        self._models: dict[str, str] = {}

    def set_camera(self, camera_id: str, state: CameraState, error: str | None = None) -> None:
        """Record a camera's state, and why it went down (kept while it retries, until
        it is live or has ended); publish only when the state changed. The contract's
        status carries the reason's code (``truncated``), the log and the local
        ``/healthz`` the whole message."""
        with self._lock:
            changed = self._cameras.get(camera_id) is not state
            self._cameras[camera_id] = state
            if state in (CameraState.LIVE, CameraState.ENDED):
                self._errors.pop(camera_id, None)
            elif error is not None:
                self._errors[camera_id] = error
        if changed:
            self.on_change()

    def camera_state(self, camera_id: str) -> CameraState:
        """The state last recorded for a camera."""
        with self._lock:
            return self._cameras[camera_id]

    def camera_errors(self) -> dict[str, str]:
        """Why each camera that is down (or retrying) failed last, when it is known."""
        with self._lock:
            return dict(self._errors)

    def set_models(self, versions: dict[str, str]) -> None:
        """The model versions the cameras run (reported once they are loaded)."""
        with self._lock:
            changed = versions != self._models
            self._models = dict(versions)
        if changed:
            self.on_change()

    def status(self, online: bool) -> DeviceStatus:
        """The status as the contract's model."""
        with self._lock:
            cameras = [
                CameraStatus(camera_id=c, state=s, error=_reason_code(self._errors.get(c)))
                for c, s in self._cameras.items()
            ]
            models = dict(self._models)
        return DeviceStatus(
            device_id=self.device_id,
            state=DeviceState.ONLINE if online else DeviceState.OFFLINE,
            at=datetime.now(UTC),
            agent_version=__version__,
            models=models,
            cameras=cameras,
            config_version=self.live.applied,
            config_error=self.live.error,
            outbox_dropped=self._dropped(),
        )

    def build(self, online: bool) -> bytes:
        """The status as JSON, for the publisher."""
        return self.status(online).model_dump_json().encode()

    @staticmethod
    def last_will(device_id: str) -> bytes:
        """What the broker publishes when the connection dies without a goodbye."""
        return DeviceStatus.last_will(device_id).model_dump_json().encode()


def _reason_code(error: str | None) -> str | None:
    """``truncated: 6 of 41 frames`` -> ``truncated``: the status carries codes only (no
    paths or decoder messages leave the device)."""
    if not error:
        return None
    code = error.split(":", 1)[0].strip()
    plain = code.replace("_", "").isalnum() and code.islower() and len(code) <= 32
    return code if plain else None
