"""The executor's clock: real time, or a virtual one while a simulation runs.

Every time the executor and its policy read (task ages, the source allowance's
growth, backpressure intervals, stage wall times) comes from :func:`now`. A
simulated backend (``executor/backends/simulated.py``) installs its virtual clock
with :func:`use` for the run it drives, in the thread that drives it, so the
unchanged executor runs on simulated time while other threads keep real time.

>>> before = now()
>>> with use(lambda: 1000.0):
...     now()
1000.0
>>> now() >= before
True
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

_local = threading.local()


def now() -> float:
    """Seconds on this thread's clock (``time.monotonic`` unless a simulation runs)."""
    clock = getattr(_local, "clock", None)
    return clock() if clock is not None else time.monotonic()


@contextmanager
def use(clock: Callable[[], float]) -> Iterator[None]:
    """Read time from ``clock`` in this thread while the block runs (nested uses stack)."""
    before = getattr(_local, "clock", None)
    _local.clock = clock
    try:
        yield
    finally:
        _local.clock = before
