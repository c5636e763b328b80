"""All of a dataset's rows in another library's form: ``to_arrow``, ``to_pandas``,
``to_polars``, ``to_numpy`` (a mixin of :class:`~streambatch.dataset.Dataset`; each runs
the plan)."""

from __future__ import annotations

from contextlib import closing

import pyarrow as pa

from streambatch._dependencies import import_optional
from streambatch.connectors.block_joins import join_blocks
from streambatch.operators.batch_format import to_batch
from streambatch.type_report import where_types_differ


class ConversionMethods:
    """The conversions of a dataset (``self`` is a Dataset)."""

    def to_arrow(self) -> pa.Table:
        """All rows as one pyarrow Table: a zero-copy concatenation of the blocks when
        their schemas agree; else missing columns are null, types promoted where no
        value changes and tensor columns whose shapes differ between blocks made
        variable-shape. Columns with no common type fail naming the partitions.

        >>> import streambatch as sb
        >>> sb.range(3).to_arrow().num_rows
        3
        >>> sb.range(3).map(lambda r: {}).to_arrow().num_rows  # rows of no columns count
        3
        """
        with closing(self._partitions(ordered=True)) as running:  # type: ignore[attr-defined]
            parts = list(running)
            tables = [p.get() for p in parts]
        keep = [i for i, t in enumerate(tables) if t.num_rows] or list(range(len(tables)))[:1]
        if not keep:
            return pa.table({})
        tables, parts = [tables[i] for i in keep], [parts[i] for i in keep]
        try:
            return join_blocks(tables)
        except ValueError as err:
            raise ValueError(f"Dataset.to_arrow: the output partitions cannot be joined into "
                             f"one table: {err}. {where_types_differ(tables, parts)}") from err

    def to_pandas(self, limit: int | None = None):
        """All rows as a pandas DataFrame; ``limit``: a ValueError when the dataset holds
        more rows than that (as Ray Data's), before holding them all.

        >>> import streambatch as sb
        >>> sb.range(2, override_num_blocks=1).to_pandas()["id"].tolist()
        [0, 1]
        >>> sb.range(5).to_pandas(limit=3)
        Traceback (most recent call last):
        ...
        ValueError: to_pandas: the dataset has more than limit=3 rows; raise the limit, or take() fewer rows
        """
        import_optional("pandas", extra="pandas", what="to_pandas()")
        if limit is None:
            return to_batch(self.to_arrow(), "pandas")  # (a tensor cell: an n-d array)
        table = self.limit(limit + 1).to_arrow()  # type: ignore[attr-defined]
        if table.num_rows > limit:
            raise ValueError(f"to_pandas: the dataset has more than limit={limit} rows; "
                             "raise the limit, or take() fewer rows")
        return to_batch(table, "pandas")

    def to_polars(self):
        """All rows as a polars DataFrame.

        >>> import streambatch as sb
        >>> sb.range(2).to_polars().shape
        (2, 1)
        """
        return import_optional("polars", extra="polars", what="to_polars()").from_arrow(self.to_arrow())

    def to_numpy(self, column: str | None = None):
        """All rows as numpy: one array for ``column`` (tensor columns as n-d arrays,
        zero-copy when the rows are in one block), else a dict of column -> array.

        >>> import streambatch as sb, numpy as np
        >>> sb.from_numpy(np.ones((3, 2, 2))).to_numpy("data").shape
        (3, 2, 2)
        """
        from streambatch.connectors.tensors import is_tensor_type, tensor_to_numpy

        chosen = self if column is None else self.select_columns([column])  # type: ignore[attr-defined]
        table = chosen.to_arrow()
        out = {name: tensor_to_numpy(col) if is_tensor_type(col.type) else col.to_numpy()
               for name, col in zip(table.column_names, table.columns, strict=True)}
        return out if column is None else out[column]
