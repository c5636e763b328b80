"""Dataset methods that cut a dataset into several, or pair two, with Ray Data's names:
``split``, ``split_at_indices``, ``split_proportionately``, ``train_test_split``,
``zip``, ``random_sample``, ``randomize_block_order``.

The cuts run the dataset once, in its order (``preserve_order``), and hand out
zero-copy slices of its blocks: each part is a dataset of its own, consumed as
often as needed.
"""

from __future__ import annotations

from contextlib import closing
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from streambatch import validate as v

if TYPE_CHECKING:
    from streambatch.dataset import Dataset


def _in_order(dataset) -> list[pa.Table]:
    """The dataset's blocks, in its order (one run)."""
    with closing(dataset.executor(preserve_order=True).run()) as parts:
        return [p.get() for p in parts if p.rows]


def _slices(tables: list[pa.Table], start: int, stop: int) -> list[pa.Table]:
    """Rows ``start:stop`` of the blocks, as slices of them."""
    out, offset = [], 0
    for table in tables:
        lo, hi = max(start - offset, 0), min(stop - offset, table.num_rows)
        if hi > lo:
            out.append(table.slice(lo, hi - lo))
        offset += table.num_rows
    return out


def _dataset_of(tables: list[pa.Table], template: pa.Schema | None) -> Dataset:
    from streambatch.connectors.memory import ArrowSource
    from streambatch.dataset import Dataset
    from streambatch.operators import logical as L

    if not tables and template is not None:
        tables = [template.empty_table()]
    if len(tables) > 1:  # one block (chunks of the slices, no copy): the part keeps its order
        from streambatch.connectors.block_joins import concat_blocks

        tables = [concat_blocks(tables)]
    return Dataset(L.Read(ArrowSource(tables, split=False), name="Split"))


class SplitMethods:
    """Mixed into ``Dataset``."""

    def split_at_indices(self, indices: list[int]) -> list[Dataset]:
        """Datasets of rows ``[0:i0]``, ``[i0:i1]``, ..., ``[ik:]`` (in the dataset's order).

        >>> import streambatch as sb
        >>> [d.count() for d in sb.range(10).split_at_indices([2, 5])]
        [2, 3, 5]
        """
        points = list(indices)
        if any(not isinstance(i, int) or i < 0 for i in points) or points != sorted(points):
            raise ValueError(f"split_at_indices: expected sorted non-negative ints, got {indices!r}")
        tables = _in_order(self)
        schema = tables[0].schema if tables else None
        total = sum(t.num_rows for t in tables)
        bounds = [0] + [min(i, total) for i in points] + [total]
        return [_dataset_of(_slices(tables, a, b), schema) for a, b in zip(bounds, bounds[1:], strict=False)]

    def split(self, n: int, *, equal: bool = False) -> list[Dataset]:
        """``n`` datasets of consecutive rows, sizes differing by at most one row
        (``equal=True``: exactly equal, the remainder left out, as Ray Data does).

        >>> import streambatch as sb
        >>> [d.count() for d in sb.range(10).split(3)], [d.count() for d in sb.range(10).split(3, equal=True)]
        ([4, 3, 3], [3, 3, 3])
        """
        n = v.positive_int("n", n)
        tables = _in_order(self)
        total = sum(t.num_rows for t in tables)
        base, extra = divmod(total, n)
        sizes = [base] * n if equal else [base + (1 if i < extra else 0) for i in range(n)]
        schema = tables[0].schema if tables else None
        out, start = [], 0
        for size in sizes:
            out.append(_dataset_of(_slices(tables, start, start + size), schema))
            start += size
        return out

    def split_proportionately(self, proportions: list[float]) -> list[Dataset]:
        """Datasets of these fractions of the rows, and one of the rest (Ray Data's).

        >>> import streambatch as sb
        >>> [d.count() for d in sb.range(10).split_proportionately([0.2, 0.5])]
        [2, 5, 3]
        """
        if not proportions or any(p <= 0 for p in proportions) or sum(proportions) >= 1:
            raise ValueError("split_proportionately: proportions must be positive and sum to "
                             f"less than 1, got {proportions!r}")
        total = self.count()  # type: ignore[attr-defined]
        return self.split_at_indices(_proportional_points(proportions, total,
                                                          "split_proportionately"))

    def train_test_split(self, test_size: float | int, *, shuffle: bool = False,
                         seed: int | None = None) -> tuple[Dataset, Dataset]:
        """(train, test): the last ``test_size`` of the rows (a fraction, or a count) are
        the test set; ``shuffle=True`` shuffles all rows first (``seed`` repeats it).

        >>> import streambatch as sb
        >>> train, test = sb.range(10).train_test_split(0.3)
        >>> train.count(), [r["id"] for r in test.take_all()]
        (7, [7, 8, 9])
        """
        ds: Any = self.random_shuffle(seed=seed) if shuffle else self  # type: ignore[attr-defined]
        total = ds.count()
        if isinstance(test_size, float):
            if not 0 < test_size < 1:
                raise ValueError(f"train_test_split: test_size must be in (0, 1), got {test_size}")
            test_rows = total - _proportional_points([1 - test_size], total,
                                                     "train_test_split")[0]
        else:
            test_rows = v.positive_int("test_size", test_size)
            if test_rows >= total:  # (as Ray Data: the train set would be empty)
                raise ValueError(f"train_test_split: test_size={test_rows} leaves no row of "
                                 f"the {total} for the train set")
        train, test = ds.split_at_indices([total - test_rows])
        return train, test

    def zip(self, other: Dataset) -> Dataset:
        """The columns of ``other`` beside this dataset's, row by row (both in their order;
        the same number of rows). A column name both have gets ``_1`` on ``other``'s side.

        >>> import streambatch as sb
        >>> sb.range(3).zip(sb.range(3).map(lambda r: {"sq": r["id"] ** 2})).take_all()
        [{'id': 0, 'sq': 0}, {'id': 1, 'sq': 1}, {'id': 2, 'sq': 4}]
        """
        left, right = _in_order(self), _in_order(other)
        rows = sum(t.num_rows for t in left), sum(t.num_rows for t in right)
        if rows[0] != rows[1]:
            raise ValueError(f"zip: the datasets have {rows[0]} and {rows[1]} rows; zip needs "
                             "the same number of rows on both sides")
        if not rows[0]:
            return _dataset_of([], None)
        a = pa.concat_tables(left, promote_options="permissive").combine_chunks()
        b = pa.concat_tables(right, promote_options="permissive").combine_chunks()
        for name in b.column_names:
            taken = set(a.column_names)
            out = name if name not in taken else next(
                f"{name}_{i}" for i in range(1, len(taken) + 2) if f"{name}_{i}" not in taken)
            a = a.append_column(out, b[name])
        return _dataset_of([a], None)

    def random_sample(self, fraction: float, *, seed: int | None = None) -> Dataset:
        """About ``fraction`` of the rows, each kept with that probability (``seed``:
        the same rows in every run of the same layout).

        >>> import streambatch as sb
        >>> 300 < sb.range(1000).random_sample(0.5, seed=1).count() < 700
        True
        """
        if not 0 <= fraction <= 1:
            raise ValueError(f"random_sample: fraction must be in [0, 1], got {fraction}")
        from streambatch.operators import logical as L

        return self._with(L.Sample(self._plan, fraction=fraction, seed=seed))  # type: ignore[attr-defined]

    def randomize_block_order(self, *, seed: int | None = None) -> Dataset:
        """The same rows, its read partitions in a random order (``seed`` repeats it).
        The reads are reordered, so only row-local operators may come between them and
        this call: after a ``limit`` it would change which rows are kept (``limit(100)``
        kept rows 800-899), after a sort, groupby, shuffle or join it could not change
        the order; both are a ValueError.

        >>> import streambatch as sb
        >>> sorted(r["id"] for r in sb.range(10, override_num_blocks=5).randomize_block_order(seed=2).take_all())
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
        >>> sb.range(10).limit(3).randomize_block_order()
        Traceback (most recent call last):
        ...
        ValueError: randomize_block_order after Limit[3]: it reorders the reads, which would change the rows the limit keeps; call it before the limit, or use random_shuffle()
        """
        import random
        from dataclasses import replace

        from streambatch.loader.epochs import ReadOrderSource
        from streambatch.operators import logical as L
        from streambatch.operators.all_to_all import AllToAll

        for op in L.walk(self._plan):  # type: ignore[attr-defined]
            if isinstance(op, L.Limit):
                raise ValueError(f"randomize_block_order after {op.label}: it reorders the "
                                 "reads, which would change the rows the limit keeps; call it "
                                 "before the limit, or use random_shuffle()")
            if isinstance(op, AllToAll):
                raise ValueError(f"randomize_block_order after {op.label}: it reorders the "
                                 "reads, which cannot change the order of that operator's "
                                 "output; call it before, or use random_shuffle()")
        order_seed = seed if seed is not None else random.getrandbits(31)

        def wrap(op):
            if isinstance(op, L.Read):
                return replace(op, source=ReadOrderSource(op.source, order_seed, epoch=0,
                                                          drawn=seed is None))
            return op.with_inputs(*(wrap(child) for child in op.inputs)) if op.inputs else op

        from streambatch.dataset import Dataset

        return Dataset(wrap(self._plan))  # type: ignore[attr-defined]


def _proportional_points(proportions: list[float], total: int,
                         who: str = "split_proportionately") -> list[int]:
    """Where to cut ``total`` rows for these proportions, as Ray Data cuts them: each cut
    at ``int(total * cumulative proportion)``, moved down so that every part holds at
    least one row; a ValueError when the rows are too few for that.

    >>> _proportional_points([0.2, 0.5], 10), _proportional_points([0.1, 0.1], 10)
    ([2, 7], [1, 2])
    >>> _proportional_points([0.1, 0.1], 3)
    Traceback (most recent call last):
    ...
    ValueError: split_proportionately: 3 rows cannot make 3 non-empty parts of proportions [0.1, 0.1] (and the rest)
    """
    acc, points = 0.0, []
    for p in proportions:
        acc += p
        points.append(int(total * acc))
    less = 0
    for i in range(len(points) - 2, -1, -1):
        points[i] -= less
        if points[i] == points[i + 1]:
            less += 1
            points[i] -= 1
    if any(point <= 0 for point in points) or points[-1] >= total:
        raise ValueError(f"{who}: {total} rows cannot make "
                         f"{len(points) + 1} non-empty parts of proportions {proportions!r} "
                         f"(and the rest)")
    return points
