"""Import pyarrow modules without the pandas import they trigger.

``import pyarrow.dataset`` (and so ``pyarrow.parquet``) probes for pandas at
import time, importing it (0.3-0.8 s on the 2-core box) even when no pandas
object is ever involved: on the path of a loader's first batch that is most of
the wait. While such a module is imported, this thread's pandas import is
refused; pyarrow records pandas as "not loaded yet" and still imports it the
first time a pandas conversion is really asked for (``to_pandas``,
``from_pandas``). Other threads are not affected.
"""

from __future__ import annotations

import importlib
import sys
import threading
from types import ModuleType


class _RefusePandasHere:
    """A meta-path finder that refuses ``import pandas`` in one thread only."""

    def __init__(self, thread_id: int) -> None:
        self.thread_id = thread_id

    def find_spec(self, name, path=None, target=None):
        if threading.get_ident() == self.thread_id and (name == "pandas" or
                                                          name.startswith("pandas.")):
            raise ImportError("pandas import deferred by streambatch")
        return None


def import_without_pandas(name: str) -> ModuleType:
    """``importlib.import_module(name)``, without importing pandas on the way.

    >>> pads = import_without_pandas("pyarrow.dataset")
    >>> pads.dataset(__import__("pyarrow").table({"x": [1, 2]})).count_rows()
    2
    """
    if "pandas" in sys.modules or name in sys.modules:
        return importlib.import_module(name)
    finder = _RefusePandasHere(threading.get_ident())
    sys.meta_path.insert(0, finder)
    try:
        return importlib.import_module(name)
    finally:
        sys.meta_path.remove(finder)
