"""Import pyarrow modules without the pandas import they trigger.

``import pyarrow.dataset`` (and so ``pyarrow.parquet``) probes for pandas at
import time, importing it (0.3-0.8 s on the 2-core box) even when no pandas
object is ever involved: on the path of a loader's first batch that is most of
the wait. While such a module is imported, this thread's pandas import is
refused. Other threads are not affected.

pyarrow then notes pandas as missing: its conversions that import pandas
themselves (``to_pandas``, ``Table.from_pandas``) look again, but its type
checks do not (``pa.array(series)`` of a nullable pandas Series would fail).
So after a refusal, the first real ``import pandas`` in the process, by anyone,
also tells pyarrow to look again (:class:`_TellPyarrowAfterPandas`).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
from types import ModuleType


class _RefusePandasHere:
    """A meta-path finder that refuses ``import pandas`` in one thread only."""

    def __init__(self, thread_id: int) -> None:
        self.thread_id = thread_id
        self.refused = False

    def find_spec(self, name, path=None, target=None):
        if threading.get_ident() == self.thread_id and (name == "pandas" or
                                                          name.startswith("pandas.")):
            self.refused = True
            raise ImportError("pandas import deferred by streambatch")
        return None


class _TellPyarrowAfterPandas:
    """A one-shot meta-path finder: the first real ``import pandas`` runs as usual, then
    asks pyarrow for pandas once (its shim looks again and notes pandas as present)."""

    def find_spec(self, name, path=None, target=None):
        if name != "pandas":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _ThenTellPyarrow(spec.loader)
        return spec


class _ThenTellPyarrow:
    """pandas' own loader, which then refreshes pyarrow's view of pandas."""

    def __init__(self, loader) -> None:
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)
        import pyarrow.lib

        pyarrow.lib._pandas_api.pd  # noqa: B018 - the shim imports pandas again (cached now)

    def __getattr__(self, name):  # resource readers, get_data, is_package...
        return getattr(self._loader, name)


_TELLER: list = []  # the installed _TellPyarrowAfterPandas, if any


def _tell_pyarrow_when_pandas_loads() -> None:
    if not _TELLER or _TELLER[0] not in sys.meta_path:
        _TELLER[:] = [_TellPyarrowAfterPandas()]
        sys.meta_path.insert(0, _TELLER[0])


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
        if finder.refused and "pandas" not in sys.modules:
            _tell_pyarrow_when_pandas_loads()
