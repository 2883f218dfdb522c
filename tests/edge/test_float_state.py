"""Running the models must not change the calling thread's floating-point behaviour."""

from __future__ import annotations

import numpy as np

from edge_agent.config import AgentConfig
from edge_agent.pipeline import load_models


def subnormals_work() -> bool:
    tiny = np.finfo(np.float32).smallest_subnormal
    return bool(np.float32(tiny) * np.float32(1.0) != 0) and 5e-324 != 0.0


def test_inference_leaves_subnormal_arithmetic_alone() -> None:
    assert subnormals_work()
    for models in ("int8", "fp32"):
        loaded = load_models(AgentConfig.model_validate({"estimator": {"models": models}}))
        chips64 = [np.full((64, 64, 3), 128, np.uint8)]
        chips32 = [np.full((32, 32, 3), 128, np.uint8)]
        loaded.estimator._models.age(chips64)
        loaded.estimator._models.gender(chips32)
        # Flush-to-zero set by a runtime on this thread would make every later float
        # computation here (the tracker, the aggregation, a caller's own code) differ.
        assert subnormals_work(), f"{models} inference switched on flush-to-zero"
