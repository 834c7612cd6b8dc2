"""What every process forked from a revision zygote (a replica or a job worker) undoes of the
fork before user code runs: the zygote's signal handling, its RNG state and its thread counts."""

from __future__ import annotations

import os
import random
import signal
import sys


def reset_signals() -> None:
    """The zygote's wakeup fd and SIGCHLD handler are its own; SIGINT is the server's to send."""
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def reseed_and_size(threads: int) -> None:
    """Every fork inherits the zygote's RNG state (without a reseed, siblings draw alike) and
    its single-threaded math libraries: give this process its own seeds and ``threads``."""
    random.seed()
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = str(threads)
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()
    torch = sys.modules.get("torch")
    if torch is not None:
        # The zygote never ran torch ops, so its intra-op pool starts here, after the fork.
        torch.set_num_threads(threads)
        torch.seed()


def is_out_of_memory(exc: BaseException) -> bool:
    """An allocation refused (under RLIMIT_AS); torch reports one as a RuntimeError."""
    return isinstance(exc, MemoryError) or (
        isinstance(exc, RuntimeError) and "DefaultCPUAllocator: can't allocate memory" in str(exc))
