"""Where the output partitions of a dataset disagree on a column's type, in the engine's
own names for partitions (for ``Dataset.to_arrow``'s error)."""

from __future__ import annotations

import pyarrow as pa

from streambatch.executor.partition import Partition


def where_types_differ(tables: list[pa.Table], parts: list[Partition]) -> str:
    """Which output partition ("block i": the i-th one) first holds each type of every
    column whose type varies.

    >>> p = [Partition.from_table(pa.table({"a": [1]}), 0, (("read", f"partition {i} (ids {i})"),))
    ...      for i in range(2)]
    >>> where_types_differ([pa.table({"a": [1]}), pa.table({"a": ["x"]})], p)
    "Column 'a' is int64 first in block 0 = partition 0 (ids 0), string first in block 1 = partition 1 (ids 1)."
    """
    first: dict[str, dict] = {}
    for index, table in enumerate(tables):
        for field in table.schema:
            first.setdefault(field.name, {}).setdefault(str(field.type), index)
    return " ".join(f"Column {name!r} is " + ", ".join(
        f"{typ} first in block {i} = {_describe_partition(parts[i])}" for typ, i in types.items())
        + "." for name, types in first.items() if len(types) > 1)


def _describe_partition(part: Partition) -> str:
    """A read partition as the engine names it (``partition 2 (ids 4-5)``), else the
    read partitions a later stage's output came from."""
    if part.made_from and isinstance(part.made_from[0], tuple) and part.made_from[0][0] == "read":
        return str(part.made_from[0][1])
    reads = sorted(read for _, read in part.origins)
    return f"an output of read partition{'s' if len(reads) > 1 else ''} " + ", ".join(map(str, reads))
