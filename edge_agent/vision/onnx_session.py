"""One way to open an ONNX network on the device, shared by every onnxruntime model.

The CPU provider only, a fixed number of threads per session (the agent's cores are
shared between cameras), and no flush-to-zero switch that would leak to other code.
"""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort


def cpu_session(path: Path, threads: int) -> ort.InferenceSession:
    """An inference session on the CPU with ``threads`` intra-op threads."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Not "session.set_denormal_as_zero": it flips the calling thread's FTZ/DAZ flags, which
    # silently changes float arithmetic for everything else on that thread (found when a
    # test's float generator stopped seeing subnormals). The weights are flushed instead.
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
