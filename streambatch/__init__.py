"""streambatch: a streaming-batch engine for heterogeneous (CPU + GPU) data processing.

>>> import streambatch as sb
>>> sorted(r["x"] for r in sb.range(5).map(lambda r: {"x": r["id"] * 10}).take_all())
[0, 10, 20, 30, 40]
"""

from streambatch.context import DataContext, init
from streambatch.dataset import Dataset
from streambatch.executor.errors import (
    StageStuckError,
    StreamBatchError,
    TooManyErrorsError,
    UDFReturnTypeError,
    UnplaceableError,
    UserCodeError,
    WorkerDiedError,
)
from streambatch.executor.options import ExecutionOptions
from streambatch.executor.stage import Resources
from streambatch.executor.stats import DatasetStats, StageStats
from streambatch.read_api import (
    from_arrow,
    from_items,
    from_numpy,
    from_pandas,
    from_polars,
    range,
    read_parquet,
)

__version__ = "0.1.0"

__all__ = [
    "DataContext", "Dataset", "DatasetStats", "ExecutionOptions", "Resources", "StageStats",
    "StageStuckError", "StreamBatchError", "TooManyErrorsError", "UDFReturnTypeError", "UnplaceableError", "UserCodeError",
    "WorkerDiedError", "from_arrow", "from_items", "from_numpy", "from_pandas", "from_polars",
    "init", "range", "read_parquet",
]


def __getattr__(name: str):
    """Lazy attributes: lookup tables (redis / psycopg load only when they connect) and
    ``sb.torch`` (PyTorch adapters; torch itself loads later)."""
    if name in ("FreshCache", "SQLiteTable", "RedisTable", "PostgresTable"):
        from streambatch.connectors import lookup

        return getattr(lookup, name)
    if name == "torch":
        import importlib

        return importlib.import_module("streambatch.torch")
    raise AttributeError(f"module 'streambatch' has no attribute {name!r}")
