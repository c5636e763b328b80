"""What a dataset holds, as Ray Data names it: ``count``, ``num_blocks`` (and
``num_partitions``), ``size_bytes``, ``input_files``, ``schema``, ``columns`` (a mixin
of :class:`~streambatch.dataset.Dataset`). Each runs the plan unless it can answer
from metadata."""

from __future__ import annotations

from contextlib import closing

import pyarrow as pa

from streambatch.operators.logical import LogicalOp, Read, walk


class SummaryMethods:
    """The summaries of a dataset (``self`` is a Dataset)."""

    _plan: LogicalOp

    def count(self) -> int:
        """Number of rows.

        >>> import streambatch as sb
        >>> sb.range(7).filter(lambda r: r["id"] > 2).count()
        4
        """
        with closing(self._partitions()) as parts:  # type: ignore[attr-defined]
            return sum(p.rows for p in parts)

    def num_blocks(self) -> int:
        """Number of output blocks (executes the plan), as Ray Data's ``num_blocks``.

        >>> import streambatch as sb
        >>> sb.from_items([1, 2, 3]).repartition(2).num_blocks()
        2
        """
        return self.num_partitions()

    def size_bytes(self) -> int:
        """The in-memory bytes of the output (executes the plan without keeping it).

        >>> import streambatch as sb
        >>> sb.range(4).size_bytes()
        32
        """
        with closing(self._partitions()) as parts:  # type: ignore[attr-defined]
            return sum(p.nbytes for p in parts)

    def input_files(self) -> list[str]:
        """The files the dataset's reads read, sorted (none for in-memory sources).

        >>> import streambatch as sb
        >>> sb.range(3).input_files()
        []
        """
        files: set[str] = set()
        for op in walk(self._plan):
            listing = getattr(getattr(op, "source", None), "listing", None)
            if isinstance(op, Read) and callable(listing):
                files.update(str(getattr(f, "path", f)) for f in listing()[1])
        return sorted(files)

    def num_partitions(self) -> int:
        """Number of output partitions (executes the plan).

        >>> import streambatch as sb
        >>> sb.from_items([1, 2, 3]).repartition(2).num_partitions()
        2
        """
        with closing(self._partitions()) as parts:  # type: ignore[attr-defined]
            return sum(1 for _ in parts)

    def columns(self) -> list[str] | None:
        """The output column names (None for a dataset with no rows and no known schema).

        >>> import streambatch as sb
        >>> sb.from_items([{"a": 1, "b": 2}]).select_columns(["b"]).columns()
        ['b']
        """
        schema = self.schema()
        return None if schema is None else schema.names

    def schema(self) -> pa.Schema | None:
        """The output schema (from metadata when possible, else from the first block).

        >>> import streambatch as sb
        >>> sb.range(3).schema()
        id: int64
        """
        if isinstance(self._plan, Read) and self._plan.columns is None:
            known = self._plan.source.schema()
            if known is not None:
                return known
        with closing(self.limit(1)._partitions()) as parts:  # type: ignore[attr-defined]
            first = next(parts, None)
            return first.get().schema if first is not None else None
