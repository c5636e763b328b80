"""Dataset: an immutable handle on a logical plan. Nothing runs until a consumer is called."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from contextlib import closing

import pyarrow as pa

from streambatch import validate as v
from streambatch.all_to_all import AllToAllMethods
from streambatch.compute import resolved_concurrency
from streambatch.connectors.block_joins import block_to_rows
from streambatch.conversions import ConversionMethods
from streambatch.executor.iteration import prefetched
from streambatch.executor.partition import Partition
from streambatch.executor.stats import DatasetStats
from streambatch.operators import logical as L
from streambatch.operators.all_to_all import orders_output
from streambatch.operators.batch_format import check_batch_format, to_batch
from streambatch.operators.columns import renamed_names
from streambatch.operators.optimizer import optimize
from streambatch.operators.planner import render_stages
from streambatch.session import Session
from streambatch.splits import SplitMethods
from streambatch.summaries import SummaryMethods
from streambatch.writes import WriteMethods


class Dataset(AllToAllMethods, ConversionMethods, SplitMethods, SummaryMethods, WriteMethods):
    """A lazy, immutable plan of read / transform operators.

    >>> import streambatch as sb
    >>> ds = sb.range(10).map(lambda r: {"id": r["id"], "sq": r["id"] ** 2})
    >>> sorted(ds.filter(lambda r: r["id"] % 3 == 0).take_all(), key=lambda r: r["id"])[:2]
    [{'id': 0, 'sq': 0}, {'id': 3, 'sq': 9}]

    ``take``, ``take_all``, ``take_batch``, ``show``, ``iter_rows`` and ``to_*`` return
    rows in input order; ``iter_batches``, ``iter_torch_batches`` and writes stream
    partitions as they finish (set
    ``DataContext.get_current().execution_options.preserve_order = True`` to keep
    input order there too).
    """

    def __init__(self, plan: L.LogicalOp, produced_by: DatasetStats | None = None) -> None:
        self._plan = plan
        self._produced_by = produced_by
        self._stats: DatasetStats | None = produced_by

    def _with(self, op: L.LogicalOp) -> Dataset:
        return Dataset(op, self._produced_by)

    def __repr__(self) -> str:
        return f"Dataset(plan={self._plan.label})"

    # ---- transforms -----------------------------------------------------------------
    def map(self, fn, *, fn_args=(), fn_kwargs=None, fn_constructor_args=(),
            fn_constructor_kwargs=None, num_cpus=None, num_gpus=None, concurrency=None,
            compute=None, releases_gil: bool = False, on_error: str = "raise") -> Dataset:
        """Apply ``fn`` to each row (a dict) and return a dict. ``fn`` may be a class:
        constructed once per worker (with ``fn_constructor_args``), then called per row.

        ``on_error="skip"`` sends rows whose call raised to :meth:`dead_letters`.
        ``releases_gil=True`` runs ``fn`` on threads in the driver instead of in
        worker processes (it then need not be picklable): a function called per row
        is Python, which holds the GIL, so the default is processes (map_batches
        measures its UDF instead).

        >>> import streambatch as sb
        >>> sorted(r["y"] for r in sb.range(3).map(lambda r: {"y": r["id"] + 1}).take_all())
        [1, 2, 3]
        """
        return self._with(L.MapRows(self._plan, v.resources(num_cpus, num_gpus),
                                    v.concurrency(resolved_concurrency(compute, concurrency)),
                                    fn=v.callable_fn("map", fn),
                                    releases_gil=v.releases_gil(releases_gil),
                                    on_error=v.on_error(on_error),
                                    **udf_args("map", fn, fn_args, fn_kwargs, fn_constructor_args,
                                               fn_constructor_kwargs)))

    def map_batches(self, fn, *, batch_size: int | None | str = "default",
                    batch_format: str | None = "default", fn_args=(), fn_kwargs=None,
                    fn_constructor_args=(), fn_constructor_kwargs=None, num_cpus=None,
                    num_gpus=None, memory=None, resources=None, concurrency=None, compute=None,
                    releases_gil: bool | None = None, on_error: str = "raise", max_retries: int = 0,
                    retry_exceptions=None) -> Dataset:
        """Apply ``fn`` to batches (default: blocks as they come, at most 1024 rows each;
        ``None`` = whole partitions).

        ``fn`` may be a class: it is constructed once per worker with
        ``fn_constructor_args``. A numpy/pyarrow/Pillow/torch UDF that releases the
        GIL runs on threads without copying blocks between processes, one that holds it
        in worker processes: measured on the first tasks unless ``releases_gil`` says
        (``stats()`` shows the choice). On threads a UDF shares the driver's module
        state (globals, locks); ``releases_gil=False`` gives it processes of its own.
        ``on_error="skip"`` sends the rows of a batch whose call raised to
        :meth:`dead_letters`; ``max_retries`` re-runs a task whose UDF raised one of
        ``retry_exceptions`` (any exception when not given), e.g. a rate limit.

        >>> import streambatch as sb
        >>> sb.range(4).map_batches(lambda b: {"n": [len(b["id"])]}, batch_size=2,
        ...                         batch_format="numpy").take_all()
        [{'n': 2}, {'n': 2}]
        """
        default = isinstance(batch_size, str) and batch_size == "default"
        size = 1024 if default else v.positive_int("batch_size", _integer(batch_size), True)
        op = L.MapBatches(self._plan, v.resources(num_cpus, num_gpus, memory, resources),
                          v.concurrency(resolved_concurrency(compute, concurrency)),
                          fn=v.callable_fn("map_batches", fn),
                          batch_size=size, batch_size_given=not default,
                          batch_format=check_batch_format(batch_format),
                          **udf_args("map_batches", fn, fn_args, fn_kwargs, fn_constructor_args,
                                     fn_constructor_kwargs),
                          releases_gil=v.releases_gil(releases_gil), on_error=v.on_error(on_error),
                          max_retries=v.non_negative_int("max_retries", max_retries),
                          retry_exceptions=tuple(retry_exceptions) if retry_exceptions else None)
        return self._with(op)

    def filter(self, fn=None, *, expr=None, fn_args=(), fn_kwargs=None, fn_constructor_args=(),
               fn_constructor_kwargs=None, concurrency=None, compute=None,
               releases_gil: bool = False, on_error: str = "raise") -> Dataset:
        """Keep rows where ``fn(row)`` is true, or where the pyarrow expression ``expr`` holds.
        ``fn`` may be a class (constructed once per worker). ``releases_gil=True`` runs
        ``fn`` on threads in the driver.

        >>> import streambatch as sb, pyarrow.compute as pc
        >>> sb.range(6, override_num_blocks=1).filter(expr=pc.field("id") > 3).take_all()
        [{'id': 4}, {'id': 5}]
        """
        if (fn is None) == (expr is None):
            raise ValueError("filter takes exactly one of fn (a row predicate) or expr "
                             "(a pyarrow.compute expression)")
        fn = v.callable_fn("filter", fn) if fn is not None else None
        if expr is not None:
            v.expression("filter", expr)
        return self._with(L.Filter(self._plan, concurrency=v.concurrency(
                                       resolved_concurrency(compute, concurrency)), fn=fn,
                                   expr=expr, releases_gil=v.releases_gil(releases_gil),
                                   on_error=v.on_error(on_error),
                                   **udf_args("filter", fn, fn_args, fn_kwargs,
                                              fn_constructor_args, fn_constructor_kwargs)))

    def flat_map(self, fn, *, fn_args=(), fn_kwargs=None, fn_constructor_args=(),
                 fn_constructor_kwargs=None, concurrency=None, compute=None,
                 releases_gil: bool = False, on_error: str = "raise") -> Dataset:
        """Apply ``fn`` to each row and return a list of rows. ``fn`` may be a class
        (constructed once per worker); ``releases_gil=True``: on threads in the driver.

        >>> import streambatch as sb
        >>> sb.range(2).flat_map(lambda r: [r, r]).count()
        4
        """
        return self._with(L.FlatMap(self._plan, concurrency=v.concurrency(
                                        resolved_concurrency(compute, concurrency)),
                                    fn=v.callable_fn("flat_map", fn),
                                    releases_gil=v.releases_gil(releases_gil),
                                    on_error=v.on_error(on_error),
                                    **udf_args("flat_map", fn, fn_args, fn_kwargs,
                                               fn_constructor_args, fn_constructor_kwargs)))

    def select_columns(self, cols) -> Dataset:
        """Keep only ``cols`` (pushed into parquet reads).

        >>> import streambatch as sb
        >>> sb.from_items([{"a": 1, "b": 2}]).select_columns(["b"]).take_all()
        [{'b': 2}]
        """
        cols = v.column_list("select_columns", cols)
        twice = sorted({c for c in cols if cols.count(c) > 1})
        if twice:  # (two output columns of one name: Polars refuses it too)
            raise ValueError(f"select_columns names {twice} more than once; name each "
                             "column once (add_column makes a copy under another name)")
        return self._with(L.Project(self._plan, columns=cols))

    def drop_columns(self, cols) -> Dataset:
        """Remove ``cols``.

        >>> import streambatch as sb
        >>> sb.from_items([{"a": 1, "b": 2}]).drop_columns("a").take_all()
        [{'b': 2}]
        """
        return self._with(L.Project(self._plan, columns=v.column_list("drop_columns", cols),
                                    keep=False))

    def rename_columns(self, mapping: dict) -> Dataset:
        """Rename columns by an ``{old: new}`` mapping. A new name that another column
        keeps, or two columns onto one name, is refused (a ValueError naming it).

        >>> import streambatch as sb
        >>> sb.from_items([{"a": 1}]).rename_columns({"a": "z"}).take_all()
        [{'z': 1}]
        """
        if not isinstance(mapping, dict) or not mapping:
            raise ValueError(f"rename_columns expects a non-empty dict {{old: new}}, got {mapping!r}")
        renamed_names([old for old, new in mapping.items() if old != new], mapping,
                      "rename_columns")  # two columns onto one name ({b: b} renames nothing)
        return self._with(L.RenameColumns(self._plan, mapping=tuple(mapping.items())))

    def add_column(self, col: str, fn, *, batch_format: str = "pandas") -> Dataset:
        """Add column ``col`` = ``fn(batch)`` (a Series, array or list), or replace it.

        >>> import streambatch as sb
        >>> ds = sb.range(2, override_num_blocks=1)
        >>> ds.add_column("d", lambda b: b["id"] * 2, batch_format="numpy").take_all()
        [{'id': 0, 'd': 0}, {'id': 1, 'd': 2}]
        """
        return self._with(L.AddColumn(self._plan, name=col, fn=v.callable_fn("add_column", fn),
                                      batch_format=check_batch_format(batch_format)))

    def with_column(self, col: str, expr) -> Dataset:
        """Add (or replace) column ``col`` computed by a ``pyarrow.compute`` expression.

        >>> import streambatch as sb, pyarrow.compute as pc
        >>> sb.range(2, override_num_blocks=1).with_column("d", pc.field("id") * 2).take_all()
        [{'id': 0, 'd': 0}, {'id': 1, 'd': 2}]
        """
        v.expression("with_column", expr)
        return self.add_column(col, lambda t: _evaluated(expr, t), batch_format="pyarrow")

    def limit(self, limit: int) -> Dataset:
        """The first ``limit`` rows produced (reads stop early).

        >>> import streambatch as sb
        >>> sb.range(1000).limit(3).count(), sb.range(9).limit(limit=2).count()
        (3, 2)
        """
        return self._with(L.Limit(self._plan, n=v.non_negative_int("limit", limit)))

    def union(self, *others: Dataset) -> Dataset:
        """Rows of this dataset followed by the rows of ``others``.

        >>> import streambatch as sb
        >>> sb.range(2).union(sb.range(3)).count()
        5
        """
        for other in others:
            if not isinstance(other, Dataset):
                raise TypeError(f"union expects Datasets, got {type(other).__name__}")
        return self._with(L.Union(parts=(self._plan, *(o._plan for o in others))))

    def repartition(self, num_blocks: int, *, shuffle: bool = False,
                    seed: int | None = None) -> Dataset:
        """Redistribute rows into ``num_blocks`` equal partitions (in order), or with
        ``shuffle=True`` into ``num_blocks`` partitions of rows chosen at random (an
        all-to-all exchange; ``seed`` makes it repeatable).

        >>> import streambatch as sb
        >>> sb.range(10).repartition(3).num_partitions()
        3
        """
        n = v.positive_int("num_blocks", num_blocks)
        if shuffle:
            from streambatch.operators.all_to_all import Shuffle

            return self._with(Shuffle(input=self._plan, seed=seed, permute=False,
                                      num_partitions=n))
        return self._with(L.Repartition(self._plan, n=n))

    def lookup(self, table, *, on: str, how: str = "left", columns=None, cache=None) -> Dataset:
        """Add the ``columns`` of ``table``'s row whose key equals column ``on``, through a
        per-worker ``FreshCache`` (default: adaptive, 1 s staleness bound); ``how="left"``
        keeps unmatched rows with nulls, ``"inner"`` drops them.

        >>> import streambatch as sb
        >>> from streambatch.connectors.lookup import DictTable
        >>> users = DictTable({1: {"name": "ada"}}, key="id")
        >>> sb.from_items([{"id": 1}, {"id": 2}]).lookup(users, on="id", how="inner").take_all()
        [{'id': 1, 'name': 'ada'}]
        """
        from streambatch.operators.lookup import lookup_op
        return self._with(lookup_op(self._plan, table, on, how, columns, cache))

    # ---- execution ------------------------------------------------------------------
    @property
    def logical_plan(self) -> L.LogicalOp:
        """The dataset's logical plan (for consumers built on the engine; read-only).

        >>> import streambatch as sb
        >>> sb.range(3).limit(2).logical_plan.label
        'Limit[2]'
        """
        return self._plan

    def executor(self, *, plan: L.LogicalOp | None = None, listener=None,
                 done: dict | None = None, preserve_order: bool | None = None):
        """A streaming executor of this dataset (nothing runs until its ``run()`` is
        iterated), for consumers built on the engine (the training loader). ``plan``
        replaces the dataset's plan by a rewrite of it (wrapped reads, say); ``listener``
        (an ``OutputListener``) hears of final outputs and settled reads; ``done`` leaves
        out what a resumed write has; ``preserve_order`` overrides the context's.
        This dataset's :meth:`stats` and :meth:`dead_letters` then report that run.

        >>> import streambatch as sb
        >>> sum(p.rows for p in sb.range(5).executor().run())
        5
        """
        session = Session.current()
        if preserve_order is not None:
            session = session.with_options(preserve_order=preserve_order)
        executor = session.executor(self._plan if plan is None else plan, listener, done)
        executor.stats.parent = self._produced_by
        self._stats = executor.stats
        self._dead = executor.dead_letters
        return executor

    def _in_order(self) -> bool:
        """Whether the rows come out in an order that means something: the context's
        ``preserve_order`` or an ordering all-to-all in the plan (a sort)."""
        return Session.current().options.preserve_order or orders_output(self.logical_plan)

    def _partitions(self, listener=None, done: dict | None = None,
                    ordered: bool = False) -> Generator[Partition]:
        """The running job's output partitions (``ordered``: in input order, whatever the
        context says). Consume inside ``with closing(...)``: an error raised while
        consuming then stops the job and frees its workers and store at once, not when
        the generator is garbage-collected."""
        return self.executor(listener=listener, done=done,
                             preserve_order=True if ordered else None).run()

    def iter_batches(self, *, batch_size: int | None = 256, batch_format: str | None = "default",
                     prefetch_batches: int = 1, drop_last: bool = False,
                     local_shuffle_buffer_size: int | None = None,
                     local_shuffle_seed: int | None = None) -> Iterator:
        """Batches of exactly ``batch_size`` rows (the last may be short unless ``drop_last``);
        ``local_shuffle_buffer_size``: rows drawn at random from a buffer of that many.

        >>> import streambatch as sb
        >>> [len(b["id"]) for b in sb.range(10).iter_batches(batch_size=4, batch_format="numpy")]
        [4, 4, 2]
        """
        batch_size = v.positive_int("batch_size", _integer(batch_size), allow_none=True)
        batch_format = check_batch_format(batch_format)
        if local_shuffle_buffer_size is not None or local_shuffle_seed is not None:
            from streambatch.loader.epochs import batch_iterable

            return iter(batch_iterable(self, batch_format, batch_size, drop_last, prefetch_batches,
                                       local_shuffle_buffer_size, local_shuffle_seed))

        from streambatch.loader.batches import table_batches

        def batches():
            with closing(self._partitions()) as parts:
                tables = (p.get() for p in parts)
                for batch in table_batches(tables, batch_size, drop_last, self._in_order()):
                    yield to_batch(batch, batch_format)

        return prefetched(batches, prefetch_batches)

    def iter_torch_batches(self, *, batch_size: int | None = 256, dtypes=None, device="auto",
                           collate_fn=None, drop_last: bool = False, prefetch_batches: int = 1,
                           pin_memory: bool | None = None, local_shuffle_buffer_size=None,
                           local_shuffle_seed: int | None = None):
        """Batches as ``{column: torch.Tensor}`` (zero-copy from Arrow), assembled off-thread.

        Each ``iter()`` of the result is one epoch (the plan runs again); it has
        ``state_dict()`` / ``load_state_dict()`` to resume mid-epoch. A CUDA
        ``device`` gets pinned memory and non-blocking copies. See
        ``streambatch.loader.epochs`` for shuffling and resumption.

        >>> import streambatch as sb
        >>> [tuple(b["id"].shape) for b in sb.range(5).iter_torch_batches(batch_size=2)]
        [(2,), (2,), (1,)]
        """
        from streambatch.loader.epochs import torch_iterable

        return torch_iterable(self, batch_size=batch_size, dtypes=dtypes, device=device,
                              collate_fn=collate_fn, drop_last=drop_last,
                              prefetch_batches=prefetch_batches, pin_memory=pin_memory,
                              local_shuffle_buffer_size=local_shuffle_buffer_size,
                              local_shuffle_seed=local_shuffle_seed)

    def iterator(self):
        """A ``DataIterator`` over this dataset (``iter_batches``, ``iter_rows``,
        ``iter_torch_batches``, ``materialize``), as Ray Data's.

        >>> import streambatch as sb
        >>> [len(b["id"]) for b in sb.range(5).iterator().iter_batches(batch_size=2)]
        [2, 2, 1]
        """
        from streambatch.loader.iterator import DatasetIterator

        return DatasetIterator(self)

    def streaming_split(self, n: int, *, equal: bool = False, timeout_s: float = 600.0) -> list:
        """``n`` iterators fed by one running pipeline, one per data-parallel rank.

        With ``equal=False`` (the default, as in Ray Data) a rank that is not
        reading leaves its batches to the ranks that are, so one rank may wait for
        another to finish. With ``equal=True`` (what data-parallel training needs)
        every rank gets the same number of batches per epoch, so all ranks must
        read together: one that takes no batch for ``timeout_s`` fails the others
        with an error naming it. Iterate each split (``iter_batches`` /
        ``iter_torch_batches``) from its own thread or process.

        >>> import streambatch as sb
        >>> [s.rank for s in sb.range(10).streaming_split(3)]
        [0, 1, 2]
        """
        from streambatch.loader.split_ranks import streaming_split

        return streaming_split(self, n, equal, timeout_s)

    def iter_rows(self) -> Iterator[dict]:
        """Rows as dicts; a tensor column's value is one n-d numpy array per row.

        >>> import streambatch as sb, numpy as np
        >>> [r["id"] for r in sb.range(3, override_num_blocks=3).iter_rows()]  # input order
        [0, 1, 2]
        >>> next(sb.from_numpy(np.zeros((2, 3, 4))).iter_rows())["data"].shape
        (3, 4)
        """
        with closing(self._partitions(ordered=True)) as parts:
            for part in parts:
                yield from block_to_rows(part.get())

    def take(self, limit: int = 20) -> list[dict]:
        """Up to ``limit`` rows as dicts (tensor columns as n-d numpy arrays, as in take_all).

        >>> import streambatch as sb
        >>> len(sb.range(100).take(2))
        2
        """
        limited = self.limit(limit)
        rows = limited.take_all()
        self._stats = limited._stats
        return rows

    def take_batch(self, batch_size: int = 20, *, batch_format: str | None = "default"):
        """The first ``batch_size`` rows as one batch (``batch_format`` as in iter_batches).

        >>> import streambatch as sb
        >>> sb.range(100, override_num_blocks=1).take_batch(3, batch_format="numpy")["id"].tolist()
        [0, 1, 2]
        >>> sb.range(3).filter(lambda r: False).take_batch()
        Traceback (most recent call last):
        ...
        ValueError: take_batch: the dataset is empty (no rows to make a batch of)
        """
        limited = self.limit(batch_size)
        table = limited.to_arrow()  # the first rows, in input order
        self._stats = limited._stats  # (as take's)
        if not table.num_rows:  # (as Ray Data's; a None batch would fail later, unnamed)
            raise ValueError("take_batch: the dataset is empty (no rows to make a batch of)")
        return to_batch(table, check_batch_format(batch_format))

    def show(self, limit: int = 20) -> None:
        """Print up to ``limit`` rows, one dict per line.

        >>> import streambatch as sb
        >>> sb.from_items([{"a": 1}, {"a": 2}], override_num_blocks=1).show()
        {'a': 1}
        {'a': 2}
        """
        for row in self.take(limit):
            print(row)

    def take_all(self, limit: int | None = None) -> list[dict]:
        """Every row as a dict, block by block (as ``iter_rows`` gives them): a tensor
        column's value is one n-d numpy array per row (of its own shape when shapes
        vary), and a row of no columns is ``{}``. ``limit``: raise ValueError when the
        dataset has more rows than that (as Ray Data's), before holding them all.

        >>> import streambatch as sb, numpy as np
        >>> sb.from_items([1, 2], override_num_blocks=1).take_all()
        [{'item': 1}, {'item': 2}]
        >>> sorted(r["data"].shape for r in sb.from_numpy([np.zeros((1, 2)), np.ones((1, 3))]).take_all())
        [(2,), (3,)]
        """
        limit = None if limit is None else v.non_negative_int("limit", _integer(limit))
        rows: list[dict] = []
        with closing(self._partitions(ordered=True)) as parts:
            for part in parts:
                rows += block_to_rows(part.get())
                if limit is not None and len(rows) > limit:
                    raise ValueError(f"take_all(limit={limit}): the dataset has more than "
                                     f"{limit} rows; raise the limit or use take({limit})")
        return rows

    def materialize(self) -> MaterializedDataset:
        """Execute now and keep the blocks in memory, in input order (the order ``take``
        and ``take_all`` give; it holds every block anyway); later consumers reuse them.

        >>> import streambatch as sb
        >>> m = sb.range(5).map(lambda r: {"x": r["id"]}).materialize()
        >>> m.count(), m.count(), type(m).__name__
        (5, 5, 'MaterializedDataset')
        """
        from streambatch.connectors.memory import ArrowSource

        with closing(self._partitions(ordered=True)) as parts:
            tables = [p.get() for p in parts]
        return MaterializedDataset(L.Read(ArrowSource(tables, split=False), name="Materialized"),
                                   self._stats, tables)

    def dead_letters(self) -> pa.Table:
        """Rows that failed in ``on_error="skip"`` operators during the last run, with
        the stage, the partition, the error text and the input row (as JSON).

        >>> import streambatch as sb
        >>> ds = sb.range(4).map(lambda r: {"x": 10 // (r["id"] - 2)}, on_error="skip")
        >>> ds.count(), ds.dead_letters().column("row").to_pylist()
        (3, ['{"id": 2}'])
        """
        rows = getattr(self, "_dead", [])
        names = ["stage", "op", "partition", "where", "error", "row"]
        return pa.Table.from_pylist(rows) if rows else pa.table({n: pa.array([], pa.string())
                                                                 for n in names})

    def stats(self) -> DatasetStats | None:
        """Statistics of this dataset's last execution (None before any).

        >>> import streambatch as sb
        >>> ds = sb.range(5)
        >>> _ = ds.count(); ds.stats().stages[0].rows_out
        5
        """
        return self._stats

    def explain(self) -> str:
        """Print (and return) the logical, optimized and physical plans.

        >>> import streambatch as sb
        >>> text = sb.range(5).select_columns("id").limit(2).explain()  # doctest: +ELLIPSIS
        Logical plan:
        ...
        """
        optimized = optimize(self._plan)
        stages = Session.current().stages(self._plan)
        text = (f"Logical plan:\n{L.render(self._plan)}\n\n"
                f"Optimized logical plan:\n{L.render(optimized)}\n\n"
                f"Physical plan:\n{render_stages(stages)}")
        print(text)
        return text


def udf_args(method: str, fn, fn_args, fn_kwargs, fn_constructor_args, fn_constructor_kwargs
             ) -> dict:
    """The user function's extra arguments as the logical op's fields; constructor
    arguments for a function (not a class) are a mistake, as in Ray Data.

    >>> udf_args("map", len, (), None, (1,), None)
    Traceback (most recent call last):
    ...
    ValueError: map: fn_constructor_args and fn_constructor_kwargs are for a callable class; fn is len, which is not a class (pass its arguments with fn_args / fn_kwargs)
    """
    if (fn_constructor_args or fn_constructor_kwargs) and not L.is_callable_class(fn):
        raise ValueError(f"{method}: fn_constructor_args and fn_constructor_kwargs are for a "
                         f"callable class; fn is {getattr(fn, '__name__', type(fn).__name__)}, "
                         "which is not a class (pass its arguments with fn_args / fn_kwargs)")
    return {"fn_args": tuple(fn_args or ()), "fn_kwargs": dict(fn_kwargs or {}),
            "fn_constructor_args": tuple(fn_constructor_args or ()),
            "fn_constructor_kwargs": dict(fn_constructor_kwargs or {})}


def _integer(value):
    """A numpy integer as an int (``batch_size=np.int64(8)``); anything else unchanged.

    >>> import numpy as np
    >>> type(_integer(np.int64(8))).__name__, _integer("x")
    ('int', 'x')
    """
    import numbers

    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    return value


class MaterializedDataset(Dataset):
    """A dataset whose blocks are computed and held in memory (``Dataset.materialize``):
    consumers read the blocks, nothing runs again; ``num_blocks`` and ``size_bytes``
    answer without running anything.

    >>> import streambatch as sb
    >>> m = sb.range(6, override_num_blocks=3).materialize()
    >>> m.num_blocks(), m.size_bytes()
    (3, 48)
    """

    def __init__(self, plan: L.LogicalOp, produced_by: DatasetStats | None,
                 tables: list[pa.Table]) -> None:
        super().__init__(plan, produced_by)
        self._tables = tables

    def num_blocks(self) -> int:
        """The number of blocks held."""
        return len(self._tables)

    def size_bytes(self) -> int:
        """The bytes of the blocks held."""
        return sum(t.nbytes for t in self._tables)


def _evaluated(expr, table: pa.Table) -> pa.ChunkedArray:
    """``expr`` evaluated on ``table``'s rows."""
    import pyarrow.dataset as pads

    return pads.dataset(table).to_table(columns={"__sb_value": expr})["__sb_value"]
