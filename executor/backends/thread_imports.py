"""What a stage's UDF imports as it runs on the driver's threads.

A UDF often imports lazily: inside the function (``from PIL import Image``), or
through a package that loads its parts on first use (``numpy.random``, Pillow's JPEG
plugin). When an "auto" stage moves from threads to worker processes, each new worker
would import all of it again in its first task (W2: 58 ms of a worker's first 250 ms);
the zygote imports it once instead, before it forks them (``LocalBackend._warm_for``).
Only imports made on the stage's own task threads are noted: a module the training
loop imports at the same time is not the workers' to load.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class _Recorder:
    """A meta path finder that finds nothing: it notes each module name looked up on a
    thread that asked for it (:func:`imports_into`), and lets the next finder find it."""

    def __init__(self) -> None:
        self.local = threading.local()

    def find_spec(self, name: str, path=None, target=None) -> None:
        names = getattr(self.local, "names", None)
        if names is not None:
            names.add(name)


_RECORDER = _Recorder()
_INSTALL = threading.Lock()


@contextmanager
def imports_into(names: set[str]) -> Iterator[None]:
    """Add to ``names`` the modules first imported on this thread inside the block.

    >>> names = set(); _ = sys.modules.pop("json.tool", None)
    >>> with imports_into(names):
    ...     import json.tool
    >>> "json.tool" in names
    True
    """
    with _INSTALL:
        if _RECORDER not in sys.meta_path:
            sys.meta_path.insert(0, _RECORDER)
    before = getattr(_RECORDER.local, "names", None)
    _RECORDER.local.names = names
    try:
        yield
    finally:
        _RECORDER.local.names = before
