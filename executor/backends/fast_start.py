"""Keep a fresh worker's first task fast.

pyarrow probes for pandas on its first ``pa.array()`` call, importing pandas
(about 0.3 s) even when no pandas object is involved. In a worker we record
pandas as "not loaded yet" instead; pyarrow still imports it the first time a
pandas conversion is really asked for (``to_pandas``, ``from_pandas``).
"""

from __future__ import annotations

import sys

import pyarrow as pa


class _RefusePandas:
    """A meta-path finder that makes ``import pandas`` fail while installed."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if name == "pandas" or name.startswith("pandas."):
            raise ImportError("pandas import deferred by streambatch")
        return None


def defer_pandas_probe() -> None:
    """Make pyarrow's pandas probe answer "not loaded" unless pandas is loaded already.

    >>> defer_pandas_probe()  # harmless when pandas is already imported
    >>> pa.array([1]).to_pylist()
    [1]
    """
    if "pandas" in sys.modules:
        return
    sys.meta_path.insert(0, _RefusePandas)
    try:
        pa.array([0])
    finally:
        sys.meta_path.remove(_RefusePandas)
