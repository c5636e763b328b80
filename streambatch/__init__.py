"""streambatch: a streaming-batch engine for heterogeneous (CPU + GPU) data processing.

>>> import streambatch as sb
>>> sorted(r["x"] for r in sb.range(5).map(lambda r: {"x": r["id"] * 10}).take_all())
[0, 10, 20, 30, 40]
"""

from streambatch import _early_zygote  # noqa: F401 - first: it starts the workers' parent
from streambatch.compute import ActorPoolStrategy, TaskPoolStrategy
from streambatch.context import DataContext, init
from streambatch.dataset import Dataset, MaterializedDataset
from streambatch.executor.contract import (
    ColumnNotFoundError,
    ColumnTypeError,
    Resources,
    RowConversionError,
    StreamBatchError,
    SumOverflowError,
    UDFReturnTypeError,
)
from streambatch.executor.errors import (
    BlockLostError,
    NonDeterministicError,
    StageStuckError,
    TooManyErrorsError,
    UnplaceableError,
    UserCodeError,
    WorkerDiedError,
)
from streambatch.executor.options import (
    ExecutionOptions,
    ExecutionResources,
    LocalOptions,
    RayOptions,
)
from streambatch.executor.stats import DatasetStats, StageStats
from streambatch.loader.iterator import DataIterator
from streambatch.operators.aggregates import AggregateFn, Count, Max, Mean, Min, Std, Sum
from streambatch.read_api import (
    BlockMetadata,
    Datasource,
    FileShuffleConfig,
    Partitioning,
    PathPartitionFilter,
    ReadTask,
    from_arrow,
    from_blocks,
    from_huggingface,
    from_items,
    from_numpy,
    from_pandas,
    from_polars,
    from_torch,
    range,
    range_tensor,
    read_binary_files,
    read_csv,
    read_datasource,
    read_images,
    read_json,
    read_numpy,
    read_parquet,
    read_text,
)
from streambatch.read_formats import read_sql, read_webdataset
from streambatch.read_lakehouse import read_delta, read_iceberg, read_lance

__version__ = "0.1.0"

__all__ = [
    "ActorPoolStrategy", "DataContext", "DataIterator", "Dataset", "DatasetStats",
    "ExecutionOptions", "ExecutionResources", "LocalOptions", "MaterializedDataset", "RayOptions", "Resources",
    "StageStats", "TaskPoolStrategy", "init",
    "AggregateFn", "Count", "Sum", "Min", "Max", "Mean", "Std",
    # every error of executor/errors.py a user can meet (UDFFailure stays inside workers)
    "BlockLostError", "ColumnNotFoundError", "ColumnTypeError", "NonDeterministicError",
    "ResumeMismatchError", "RowConversionError", "StageStuckError", "StreamBatchError",
    "SumOverflowError", "TooManyErrorsError", "UDFReturnTypeError", "UnplaceableError",
    "UserCodeError", "WorkerDiedError",
    # sources, and the contract of a user's own source (Datasink: see _LAZY)
    "range", "range_tensor", "from_arrow", "from_blocks", "from_huggingface", "from_items",
    "from_numpy", "from_pandas", "from_polars", "from_torch", "read_binary_files", "read_csv",
    "read_datasource", "read_images", "read_json", "read_numpy", "read_parquet", "read_sql",
    "read_delta", "read_iceberg", "read_lance",
    "read_text", "read_webdataset", "BlockMetadata", "Datasource", "FileShuffleConfig",
    "Partitioning", "PathPartitionFilter", "ReadTask",
]


# Names users can meet that live in modules ``import streambatch`` does not load.
_LAZY_ERRORS = {
    "Datasink": "streambatch.connectors.sink_contract",
    "WriteResult": "streambatch.connectors.sink_contract",
    "SchemaMismatchError": "streambatch.connectors.parquet_schema",
    "ResumeMismatchError": "streambatch.connectors.manifest",
    "FileReadError": "streambatch.connectors.file_based",
    "RankStuckError": "streambatch.loader.split",
    "RankLostError": "streambatch.loader.split",
    "NestedWorkerError": "streambatch.executor.backends.local",
    "UnpicklableUDFError": "streambatch.executor.backends.udf_pickle",
    "WorkerSetupError": "streambatch.executor.errors",
}


def __getattr__(name: str):
    """Lazy attributes: lookup tables, errors of optional modules, and ``sb.torch``
    (PyTorch adapters; torch loads later).

    >>> import streambatch as sb
    >>> issubclass(sb.SchemaMismatchError, ValueError), issubclass(sb.RankLostError, sb.RankStuckError)
    (True, True)
    """
    if name in _LAZY_ERRORS:
        import importlib

        return getattr(importlib.import_module(_LAZY_ERRORS[name]), name)
    if name in ("FreshCache", "SQLiteTable", "RedisTable", "PostgresTable"):
        import importlib  # redis / psycopg load only on connect

        return getattr(importlib.import_module("streambatch.connectors.lookup"), name)
    if name == "torch":
        import importlib

        return importlib.import_module("streambatch.torch")
    raise AttributeError(f"module 'streambatch' has no attribute {name!r}")
