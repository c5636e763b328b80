"""``DataIterator``: what Ray Data's ``Dataset.iterator()`` and ``streaming_split`` hand
out: an object to iterate once per epoch, as batches (``iter_batches``), rows
(``iter_rows``) or tensors (``iter_torch_batches``), or to collect (``materialize``).
A subclass says how to get one epoch's batches; the rest follows from it.

>>> import streambatch as sb
>>> it = sb.range(5).iterator()
>>> sorted(r["id"] for r in it.iter_rows()), it.materialize().count()
([0, 1, 2, 3, 4], 5)
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa

from streambatch.connectors.block_joins import block_to_rows


class DataIterator:
    """One source of batches, iterated once per epoch (subclasses: a dataset's, a rank's
    share of a ``streaming_split``; each also has ``iter_torch_batches``)."""

    def iter_batches(self, *, batch_size=256, batch_format="default", drop_last=False,
                     prefetch_batches=1, local_shuffle_buffer_size=None,
                     local_shuffle_seed=None) -> Iterator:
        """One epoch's batches (``batch_format`` as in ``Dataset.iter_batches``)."""
        raise NotImplementedError

    def iter_rows(self) -> Iterator[dict]:
        """One epoch's rows as dicts (a tensor column's value: an n-d numpy array)."""
        for batch in self.iter_batches(batch_size=None, batch_format="pyarrow"):
            yield from block_to_rows(batch)

    def materialize(self):
        """One epoch's rows, held in memory, as a ``MaterializedDataset``."""
        from streambatch.connectors.memory import ArrowSource
        from streambatch.dataset import MaterializedDataset
        from streambatch.operators import logical as L

        tables = [b for b in self.iter_batches(batch_size=None, batch_format="pyarrow")
                  if isinstance(b, pa.Table)]
        return MaterializedDataset(L.Read(ArrowSource(tables, split=False), name="Materialized"),
                                   None, tables)


class DatasetIterator(DataIterator):
    """A dataset's batches: each call runs its plan again (``Dataset.iterator()``)."""

    def __init__(self, dataset) -> None:
        self._dataset = dataset

    def __repr__(self) -> str:
        return f"DataIterator({self._dataset!r})"

    def iter_batches(self, **options) -> Iterator:
        return self._dataset.iter_batches(**options)

    def iter_torch_batches(self, **options) -> Iterator:
        return iter(self._dataset.iter_torch_batches(**options))

    def stats(self):
        """The last run's statistics."""
        return self._dataset.stats()
