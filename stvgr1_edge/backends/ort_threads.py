"""onnxruntime's worker threads in this process: a pool per session (onnxruntime's default), or one pool shared by
every session, which int4 decoding on a CPU wants.

Why: a CPU int4 language model runs each linear as its own onnxruntime session (:mod:`.int4_mlas`), seven per
decoder layer. Per-session pools must not spin between calls (every session's worker would spin at once: a 4-layer
3B-wide step took 126 ms instead of 13), so each of those calls wakes a sleeping worker. One shared pool whose workers
spin stays warm from one matrix to the next: that model, int4 group 128, decodes 46.1 tokens/s on 2 CPU cores
against 43.5 with a pool per session (``benchmarks/engine_decode.py``, with and without ``--per-session-pools``).

``stvg-edge run`` and its siblings turn it on for a CPU run whose language model has int4 weights (``--weights int4``
/ ``--lm-head int4``, or an int4 bundle). A bundle's ONNX vision encoder then runs on that pool too: its time and the
prefill's after it were within the spread of runs with a pool per session, and of runs without onnxruntime's int4
kernel at all (``e2e_latency.py``, 3B-wide, 10 s clip: vision 3.6 / 3.8 / 3.1 s, prefill 3.4 / 4.0 / 3.6 s).

onnxruntime makes this choice for the whole process: once the shared pool exists, it refuses any session that asks
for its own pool. So the package's sessions take their options from :func:`session_options`, and the shared pool is
opt-in (:func:`share_threads`, before any session is built); a program that also builds onnxruntime sessions of its
own should leave it off, or build them with ``use_per_session_threads = False``.
"""

from __future__ import annotations

import logging
from typing import Any

from ..errors import require

logger = logging.getLogger(__name__)

_shared_threads: int | None = None


def share_threads(threads: int | None = None) -> bool:
    """Run every onnxruntime session this process builds from now on on one pool of ``threads`` workers (default:
    torch's thread count). Returns whether the shared pool is on (False where onnxruntime is missing or has none)."""
    global _shared_threads
    if _shared_threads is not None:
        return True
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    if not hasattr(ort, "set_global_thread_pool_sizes"):
        return False
    if threads is None:
        import torch

        threads = torch.get_num_threads()
    ort.set_global_thread_pool_sizes(int(threads), 1)
    _shared_threads = int(threads)
    logger.info("onnxruntime: one shared pool of %d threads for every session", threads)
    return True


def threads_shared() -> bool:
    """Whether :func:`share_threads` is on in this process."""
    return _shared_threads is not None


def session_options(intra_op_num_threads: int = 0) -> Any:
    """onnxruntime ``SessionOptions`` with errors-only logging and this process's threading: the shared pool after
    :func:`share_threads`, else a pool of its own of ``intra_op_num_threads`` (0: one per physical core) whose idle
    workers do not spin (they alternate with PyTorch ops on a small CPU and would starve them)."""
    ort = require("onnxruntime", "export", "running an ONNX graph")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if _shared_threads is not None:
        options.use_per_session_threads = False
    else:
        options.intra_op_num_threads = int(intra_op_num_threads)
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options
