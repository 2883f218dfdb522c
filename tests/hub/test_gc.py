"""``cloud-hub serve`` keeps the cycle collector out of the ingest path (see
``cloud_hub.cli._quiet_gc``): start-up objects frozen, a larger first threshold."""

from __future__ import annotations

import gc

from cloud_hub.cli import _quiet_gc


def test_quiet_gc_freezes_start_up_objects_and_raises_the_first_threshold() -> None:
    before = gc.get_threshold()
    try:
        _quiet_gc(0)
        assert gc.get_threshold() == before and gc.get_freeze_count() == 0
        _quiet_gc(12_345)
        assert gc.get_threshold() == (12_345, before[1], before[2])
        assert gc.get_freeze_count() > 1000  # everything the imports made
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
