"""Python iterables and PyTorch datasets as sources (torch itself is never imported).

Items become rows: a dict is a row, a tuple ``(a, b, ...)`` becomes columns
``item_0, item_1, ...``, anything else goes in column ``item``. Rows become blocks
as any rows do (``row_conversion.rows_to_block``: union of keys, unified types):
tensors and PIL images become numpy arrays, and arrays (1-d included) tensor
columns (variable-shape where shapes differ); 0-d tensors and numpy scalars become
Python numbers. An item that cannot be stored fails naming its index.

>>> from streambatch.connectors.datasource import Pushdowns
>>> src = SequenceSource([{"x": i} for i in range(5)])
>>> [t["x"].to_pylist() for task in src.read_tasks(2, Pushdowns()) for t in task()]
[[0, 1, 2], [3, 4]]
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from streambatch.connectors.datasource import (
    Datasource,
    Pushdowns,
    ReadTask,
    apply_pushdowns,
    limit_tables,
)
from streambatch.connectors.memory import describe_spans, items_to_block, row_groups_of
from streambatch.connectors.row_conversion import is_torch

ROWS_PER_BLOCK = 1024


def to_value(value):
    """A 0-d tensor or numpy scalar as a Python number, a PIL image (or another object
    with ``.detach()`` and ``.numpy()``) as numpy; an n-d torch tensor stays as it is
    (``rows_to_block`` converts it, naming the item if it has no numpy dtype).

    >>> to_value(np.int64(3)), to_value([1, 2])
    (3, [1, 2])
    """
    if is_torch(value):
        return value.item() if value.ndim == 0 else value
    if hasattr(value, "detach") and hasattr(value, "numpy"):
        value = value.detach().cpu().numpy()
    elif type(value).__module__.startswith("PIL."):
        value = np.asarray(value)
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return value.item()
    if isinstance(value, np.generic):
        return value.item()
    return value


def item_to_row(item) -> dict:
    """One dataset item as a row dict.

    >>> item_to_row((1, "a")), item_to_row(5)
    ({'item_0': 1, 'item_1': 'a'}, {'item': 5})
    """
    if isinstance(item, dict):
        return {k: to_value(v) for k, v in item.items()}
    if isinstance(item, tuple):
        return {f"item_{i}": to_value(v) for i, v in enumerate(item)}
    return {"item": to_value(item)}


WHO = "from_torch"  # how conversion errors name the dataset (from_huggingface reads iterables here too)


def rows_table(rows: list[dict], start: int) -> pa.Table:
    """The rows (``item_to_row``) of the dataset's items ``start, start + 1, ...`` as one
    block (``rows_to_block``); an item that cannot be stored fails naming its index.

    >>> t = rows_table([{"a": np.zeros((2, 2)), "b": 1}, {"a": np.ones((2, 2)), "b": 2}], 0)
    >>> t.schema.field("a").type.extension_name, t["b"].to_pylist()
    ('arrow.fixed_shape_tensor', [1, 2])
    >>> try:
    ...     rows_table([{"b": 1}, {"b": "x"}], 1024)
    ... except ValueError as err:
    ...     print(str(err)[:37])
    from_torch: item 1025, key 'b': got s
    """
    return items_to_block(rows, [(start, start + len(rows))], WHO)


class SequenceSource(Datasource):
    """A map-style dataset (``len`` and ``[i]``, e.g. ``torch.utils.data.Dataset``),
    split into contiguous index ranges read in the tasks."""

    name = "Torch"
    supports_projection = supports_filter = supports_limit = True

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def read_tasks(self, parallelism: int, pushdowns: Pushdowns) -> list[ReadTask]:
        """About ``parallelism`` index ranges (rows known, bytes guessed from the first item)."""
        n = len(self.dataset)
        per_row = _row_bytes(self.dataset[0]) if n else 0
        groups = row_groups_of("sequence", n, parallelism, pushdowns) if n else []
        return [ReadTask(_seq_reader(self.dataset, [(p.start, p.end) for p in group], pushdowns),
                         rows, rows * per_row, describe_spans("items", group), tuple(group))
                for group in groups for rows in [sum(p.end - p.start for p in group)]]


def _row_bytes(item) -> int:
    return max(8, rows_table([item_to_row(item)], 0).nbytes)


def _seq_reader(dataset, spans: list[tuple[int, int]], pushdowns: Pushdowns):
    def read():
        def tables():
            for start, stop in spans:
                for s in range(start, stop, ROWS_PER_BLOCK):
                    rows = [item_to_row(dataset[i]) for i in range(s, min(s + ROWS_PER_BLOCK, stop))]
                    yield apply_pushdowns(rows_table(rows, s), pushdowns)

        return limit_tables(tables(), pushdowns.limit)

    return read


class IterableSource(Datasource):
    """An iterable (e.g. ``torch.utils.data.IterableDataset``, a Hugging Face
    ``IterableDataset``): one read task iterating it in blocks."""

    name = "Iterable"
    supports_projection = supports_filter = supports_limit = True

    def __init__(self, iterable) -> None:
        self.iterable = iterable

    def read_tasks(self, parallelism: int, pushdowns: Pushdowns) -> list[ReadTask]:
        """One task (an iterable cannot be split without reading it)."""
        return [ReadTask(_iter_reader(self.iterable, pushdowns), None, None, "iterable")]


def _iter_reader(iterable, pushdowns: Pushdowns):
    def read():
        def tables():
            rows, start = [], 0
            for item in iterable:
                rows.append(item_to_row(item))
                if len(rows) == ROWS_PER_BLOCK:
                    yield apply_pushdowns(rows_table(rows, start), pushdowns)
                    rows, start = [], start + ROWS_PER_BLOCK
            if rows:
                yield apply_pushdowns(rows_table(rows, start), pushdowns)

        return limit_tables(tables(), pushdowns.limit)

    return read


def source_for(dataset) -> Datasource:
    """A sequence source when ``dataset`` has ``len`` and ``[i]``, else an iterable one.

    >>> type(source_for(iter([1, 2]))).__name__, type(source_for([1, 2])).__name__
    ('IterableSource', 'SequenceSource')
    """
    if hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__"):
        try:
            len(dataset)
            return SequenceSource(dataset)
        except TypeError:
            pass
    if not hasattr(dataset, "__iter__"):
        raise TypeError(f"from_torch expects a map-style dataset (len and [i]) or an iterable, "
                        f"got {type(dataset).__name__}")
    return IterableSource(dataset)
