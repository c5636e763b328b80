"""Training-data loading: torch batches, shuffling, epochs and resumable iteration.
``Dataset`` methods delegate here (``streaming_split`` is in split_ranks.py).

How one epoch runs: the plan is executed once, its control loop on a background
thread of its own; every output partition's rows get ids (their read partition
and their offset among that read partition's output); blocks go through the
(optional) shuffle buffer and are cut into batches on a second background
thread, which also turns them into (pinned) tensors; the trainer's
thread only starts the non-blocking copy to the device and records which rows
it has been handed.

Resumption (``state_dict`` / ``load_state_dict``) is keyed to read partitions
and row offsets. When the whole plan runs inside its read tasks (one fused
stage, the usual loader pipeline), each output partition names its read
partition, so fully delivered read partitions are not read again and partly
delivered ones skip exactly the rows already delivered, in any completion
order. Plans with one read and row-local stages outside the read tasks (map,
filter, flat_map, actor pools) name a row by its output partition's lineage
key and its offset in it: keys are deterministic, so the resumed epoch skips
read partitions that had settled and been fully delivered, and drops the
delivered rows of the others, in any completion order. Otherwise (limit, union,
repartition, or blocks that mixed several reads) the loader falls back to a row
count in the output order, which is only deterministic with
``preserve_order=True`` (or a ``local_shuffle_seed``, which turns it on): the
resumed epoch re-runs the plan and skips the rows already delivered.

Shuffling: with ``local_shuffle_buffer_size`` the read partitions are also read
in a seeded random order that changes every epoch (unless the plan keeps the first
rows of its input: a limit). With ``local_shuffle_seed``
the order of rows is reproducible (the epoch runs with preserve_order=True).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, replace

import numpy as np

from streambatch import validate as v
from streambatch.executor.contract import OutputListener
from streambatch.executor.iteration import prefetched
from streambatch.loader.batches import Chunk, ReadProgress, batches
from streambatch.loader.shuffle import block_order, pack_ids, unpack_ids
from streambatch.operators import logical as L
from streambatch.session import Session


@dataclass(frozen=True)
class LoaderConfig:
    """How an epoch is cut into batches (shared by every rank of a split).

    >>> LoaderConfig(batch_size=32).shuffle
    False
    """

    batch_size: int | None = 256
    drop_last: bool = False
    shuffle_buffer: int | None = None
    seed: int | None = None
    seed_given: bool = True  # False: drawn at random (block order only, no reproducibility)

    @property
    def shuffle(self) -> bool:
        """True when rows go through a shuffle buffer."""
        return bool(self.shuffle_buffer)

    @property
    def reproducible(self) -> bool:
        """True when the user gave a shuffle seed (the epoch's row order is then fixed).

        >>> make_config(8, False, 100, 7).reproducible, make_config(8, False, 100, None).reproducible
        (True, False)
        """
        return self.seed is not None and self.seed_given


def make_config(batch_size, drop_last, buffer, seed) -> LoaderConfig:
    """Validate loader arguments.

    >>> make_config(8, False, None, None).batch_size
    8
    >>> make_config(8, False, 0, None)
    Traceback (most recent call last):
    ...
    ValueError: local_shuffle_buffer_size must be a positive integer or None, got 0
    >>> make_config(None, False, 100, None)
    Traceback (most recent call last):
    ...
    ValueError: local_shuffle_buffer_size needs a batch_size (the shuffle buffer gives out batches of that many rows)
    """
    v.positive_int("batch_size", batch_size, allow_none=True)
    if buffer is not None and (not isinstance(buffer, int) or isinstance(buffer, bool)
                               or buffer < 1):
        raise ValueError(f"local_shuffle_buffer_size must be a positive integer or None, "
                         f"got {buffer!r}")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise ValueError(f"local_shuffle_seed must be an int or None, got {seed!r}")
    if seed is not None and not buffer:
        raise ValueError("local_shuffle_seed needs local_shuffle_buffer_size (a seed only "
                         "orders a shuffle)")
    if buffer and batch_size is None:  # (as Ray Data: it gave batches of one row each)
        raise ValueError("local_shuffle_buffer_size needs a batch_size (the shuffle buffer "
                         "gives out batches of that many rows)")
    if buffer and seed is None:
        drawn = int(np.random.SeedSequence().generate_state(1, dtype=np.uint64)[0] % (2**62))
        return LoaderConfig(batch_size, bool(drop_last), buffer, drawn, seed_given=False)
    return LoaderConfig(batch_size, bool(drop_last), buffer, seed)



class ReadOrderSource:
    """Wraps a datasource: its read tasks in a seeded order, minus those to skip.

    ``order`` (after ``read_tasks``) maps the executor's read index to the
    source's own read-task index.

    >>> from streambatch.connectors.memory import RangeSource
    >>> from streambatch.connectors.datasource import Pushdowns
    >>> src = ReadOrderSource(RangeSource(100), seed=None, epoch=0, skip={1})
    >>> len(src.read_tasks(4, Pushdowns())), src.order, src.num_reads
    (3, [0, 2, 3], 4)
    """

    def __init__(self, source, seed: int | None, epoch: int, skip=frozenset(),
                 drawn: bool = False) -> None:
        self.source, self.seed, self.epoch, self.skip = source, seed, epoch, set(skip)
        self.drawn = drawn  # the seed was drawn, not given (randomize_block_order())
        self.order: list[int] = []
        self.num_reads = 0

    def __getattr__(self, name):
        if name == "source":  # not set yet (unpickling in a worker): no recursion
            raise AttributeError(name)
        return getattr(self.source, name)

    def read_tasks(self, parallelism, pushdowns) -> list:
        """The wrapped source's read tasks, reordered and filtered."""
        tasks = self.source.read_tasks(parallelism, pushdowns)
        self.num_reads = len(tasks)
        seed = random.getrandbits(31) if self.drawn else self.seed  # (no seed given: another
        self.order = [i for i in block_order(len(tasks), seed, self.epoch)  # order each run,
                      if i not in self.skip]  # as Ray Data's)
        return [tasks[i] for i in self.order]


def read_index_of(part) -> int | None:
    """The executor's read index of a partition made directly by a read task, else None.

    Uses ``part.read_index`` when the executor records it, else what it was made from.

    >>> from streambatch.executor.partition import Partition
    >>> import pyarrow as pa
    >>> read_index_of(Partition.from_table(pa.table({"x": [1]}), 0, (("read", "partition 3 (x)"),)))
    3
    """
    index = getattr(part, "read_index", None)
    if index is not None:
        return index
    made_from = part.made_from
    if len(made_from) == 1 and isinstance(made_from[0], tuple) and made_from[0][:1] == ("read",):
        match = re.match(r"partition (\d+)", str(made_from[0][1]))
        return int(match.group(1)) if match else None
    return None


def _wrap_reads(plan: L.LogicalOp, wrap: Callable) -> L.LogicalOp:
    if isinstance(plan, L.Read):
        return replace(plan, source=wrap(plan.source))
    if not plan.inputs:
        return plan
    return plan.with_inputs(*(_wrap_reads(child, wrap) for child in plan.inputs))


def keeps_order(cfg: LoaderConfig) -> bool:
    """Whether an epoch's rows come in a reproducible order: the session's
    ``preserve_order``, or a loader that asked for it (a ``local_shuffle_seed``)."""
    return Session.current().options.preserve_order or cfg.reproducible


def batches_in_order(dataset, cfg: LoaderConfig) -> bool:
    """Whether batches must follow the rows' order: the dataset's (``preserve_order``, a
    sort in its plan) or the loader's (a ``local_shuffle_seed``). Otherwise batches are
    cut to copy the fewest rows (``batches(keep_order=False)``)."""
    return cfg.reproducible or dataset._in_order()


def epoch_chunks(dataset, cfg: LoaderConfig, epoch: int, progress: ReadProgress | None,
                 resume: ReadProgress | None = None) -> Iterator[Chunk]:
    """Run the plan once; yield its output blocks with row ids (skipping delivered rows).

    ``progress`` (when given) learns the epoch's read order, its mode and which
    read partitions have produced all their rows.
    """
    reads = [op for op in L.walk(dataset.logical_plan) if isinstance(op, L.Read)]
    seed = cfg.seed if cfg.shuffle and reads_reorderable(dataset.logical_plan) else None
    skip = resume.skip_reads() if resume is not None and resume.mode == "reads" else set()
    listener = _SettledReads()
    wrappers: list[ReadOrderSource] = []

    def wrap(source):
        salt = len(wrappers)
        wrappers.append(ReadOrderSource(source, None if seed is None else seed + salt, epoch,
                                        skip if len(reads) == 1 else ()))
        return wrappers[-1]

    preserve_order = keeps_order(cfg)
    executor = dataset.executor(plan=_wrap_reads(dataset.logical_plan, wrap), listener=listener,
                                preserve_order=preserve_order)
    mode = plan_mode(dataset.logical_plan, executor.stages)
    if mode == "keys" and resume is not None and resume.mode == "ordered":
        mode = "ordered"  # saved after blocks mixed several reads: resume by row count
    full_order = block_order(wrappers[0].num_reads, seed, epoch) if wrappers else []
    if resume is not None:
        _check_resume(resume, mode, full_order)
    if progress is not None:
        progress.mode, progress.order = mode, full_order
        progress.deterministic = preserve_order
    listener.stable_blocks = mode == "keys"  # rows named by partition key: cut the same
    if mode == "keys":
        done = resume.skip_reads() if resume is not None else set()
        executor.skip_reads = {(0, i) for i, read in enumerate(full_order) if read in done}
    with closing(executor.run()) as parts:  # an error downstream stops the job at once
        if mode == "ordered":
            yield from _ordered(parts)
        elif mode == "keys":
            yield from _by_key(parts, full_order, progress, resume, listener)
        else:
            yield from _by_read(parts, wrappers[0].order, progress, resume,
                               preserve_order)


def reads_reorderable(plan: L.LogicalOp) -> bool:
    """Whether reading the plan's partitions in another order keeps its rows the same:
    not under a limit (it keeps the *first* rows: read in a shuffled order, ``limit(2500)``
    of 3000 rows gave 500 rows past the limit). Such plans are shuffled by the buffer
    alone. (A seeded sample draws by each task's lineage key, not its turn.)

    >>> import streambatch as sb
    >>> reads_reorderable(sb.range(9).map(lambda r: r).logical_plan)
    True
    >>> reads_reorderable(sb.range(9).limit(5).logical_plan)
    False
    """
    return not any(isinstance(op, L.Limit) for op in L.walk(plan))


def plan_mode(plan: L.LogicalOp, stages) -> str:
    """How an epoch's position is recorded: "reads" (the plan runs inside its read tasks),
    "keys" (one read and row-local stages: map/filter/flat_map/project, possibly actor
    pools) or "ordered" (a row count in output order, for limit/union/repartition).

    >>> import streambatch as sb
    >>> from streambatch.session import Session
    >>> def mode(ds):
    ...     return plan_mode(ds.logical_plan, Session.current().stages(ds.logical_plan))
    >>> ds = sb.range(10)
    >>> mode(ds.map(lambda r: r)), mode(ds.map_batches(lambda b: b, num_cpus=0.5))
    ('reads', 'keys')
    >>> mode(ds.limit(3))
    'ordered'
    """
    ops = list(L.walk(plan))
    reads = [op for op in ops if isinstance(op, L.Read)]
    if len(reads) != 1:
        return "ordered"
    if stages[-1].is_source:
        return "reads"
    row_local = all(isinstance(op, L.Read) or (isinstance(op, L.MapLike) and
                                               not isinstance(op, L.Write)) for op in ops)
    return "keys" if row_local else "ordered"


class _SettledReads(OutputListener):
    """Counts final partitions per read and notes reads that will produce no more."""

    def __init__(self) -> None:
        self.made: dict = {}
        self.settled: list = []

    def on_final_output(self, part, origins) -> None:
        for origin in origins:
            self.made[origin] = self.made.get(origin, 0) + 1

    def on_settled(self, origin) -> None:
        self.settled.append(origin)


def _by_key(partitions, order: list[int], progress: ReadProgress | None,
            resume: ReadProgress | None, listener: _SettledReads) -> Iterator[Chunk]:
    """Rows named by (output partition lineage key, offset in that partition).

    Keys are deterministic (the same read, the same chain of tasks and outputs), so a
    resumed epoch drops the rows a saved state lists, whatever order blocks arrive in.
    """
    seen: dict = {}
    reported: set = set()

    def report_settled():
        for origin in listener.settled:
            if origin not in reported and seen.get(origin, 0) >= listener.made.get(origin, 0):
                reported.add(origin)
                if progress is not None:
                    progress.settled(order[origin[1]])

    for part in partitions:
        if not part.key or not part.origins:
            raise RuntimeError(f"internal: output partition {part.pid} has no lineage key; "
                               f"report this with the plan")
        for origin in part.origins:
            seen[origin] = seen.get(origin, 0) + 1
        if len(part.origins) > 1 and progress is not None:
            progress.merged = True
        table = part.get()
        reads = sorted(order[i] for _, i in part.origins)
        unit = progress.unit_for(part.key, reads[0]) if progress is not None else 0
        if progress is not None:
            for read in reads[1:]:
                progress.unit_for(part.key, read)
            progress.produced_all(unit, table.num_rows)
        ids = pack_ids(unit, 0, table.num_rows)
        if resume is not None:
            if resume.key_done(part.key):  # progress, a copy of resume, has it as done
                report_settled()
                continue
            keep = resume.key_mask(part.key, np.arange(table.num_rows))
            if keep is not None and not keep.all():
                table, ids = table.filter(keep), ids[keep]
        if table.num_rows:
            yield table, ids
        report_settled()
    report_settled()


def unrepeatable(plan) -> str | None:
    """The first operator of ``plan`` that draws random numbers without a seed (a shuffle,
    a sample, a block order), as the user wrote it; None when every run repeats.

    >>> import streambatch as sb
    >>> unrepeatable(sb.range(4).random_shuffle()._plan)
    'random_shuffle()'
    >>> unrepeatable(sb.range(4).random_shuffle(seed=1).random_sample(0.5, seed=2)._plan) is None
    True
    """
    from streambatch.operators import logical as L
    from streambatch.operators.all_to_all import Shuffle

    for op in L.walk(plan):
        if isinstance(op, Shuffle) and op.seed is None:
            return "random_shuffle()" if op.permute else "repartition(shuffle=True)"
        if isinstance(op, L.Sample) and op.seed is None:
            return "random_sample()"
        if isinstance(op, L.Read) and getattr(op.source, "drawn", False):
            return "randomize_block_order()"
    return None


def _check_resume(resume: ReadProgress, mode: str, order: list[int]) -> None:
    if resume.mode != mode:
        raise ValueError(f"load_state_dict: the state was saved in {resume.mode!r} mode but this "
                         f"dataset's plan runs in {mode!r} mode; resume with the same dataset")
    if mode == "reads" and len(resume.order) != len(order):
        raise ValueError(f"load_state_dict: the dataset now has {len(order)} read partitions; the "
                         f"state was saved with {len(resume.order)}. Resume with the same "
                         f"dataset, override_num_blocks and num_cpus")


def _ordered(partitions) -> Iterator[Chunk]:
    offset = 0
    for part in partitions:
        table = part.get()
        start = offset
        offset += table.num_rows
        yield table, pack_ids(0, start, table.num_rows)


def _by_read(partitions, order: list[int], progress: ReadProgress | None,
             resume: ReadProgress | None, in_order: bool) -> Iterator[Chunk]:
    produced: dict[int, int] = {}
    last = None
    for part in partitions:
        index = read_index_of(part)
        if index is None:
            raise RuntimeError(f"internal: output partition {part.pid} has no read index "
                               f"(made from {part.made_from!r}); report this with the plan")
        read = order[index]
        if in_order and last is not None and read != last and progress is not None:
            progress.produced_all(last, produced.get(last, 0))
        last = read
        table = part.get()
        start = produced.get(read, 0)
        produced[read] = start + table.num_rows
        ids = pack_ids(read, start, table.num_rows)
        keep = resume.keep_mask(read, unpack_ids(ids)[1]) if resume is not None else None
        if keep is not None and not keep.all():
            table, ids = table.filter(keep), ids[keep]
        if table.num_rows:
            yield table, ids
    if progress is not None:
        for read in order:
            progress.produced_all(read, produced.get(read, 0))


# Output partitions the executor may hand over ahead of batch assembly. The executor runs
# on its own thread, so a finished task is replaced while batches are cut or wait for the
# training step (it used to run inside batch assembly and paused whenever that waited).
_EXECUTOR_AHEAD = 1


class LoaderIterable:
    """Batches of one dataset, epoch after epoch; each ``iter()`` is one epoch.

    ``state_dict()`` is the position in the current epoch (rows handed out so
    far); ``load_state_dict(state)`` makes the next ``iter()`` resume that epoch
    with exactly the rows not yet handed out.

    >>> import streambatch as sb
    >>> it = sb.range(10).iter_torch_batches(batch_size=4, device="cpu")
    >>> first = next(iter(it)); state = it.state_dict()
    >>> rest = [b["id"].tolist() for b in sb.range(10).iter_torch_batches(batch_size=4)
    ...         .load_state_dict(state)]
    >>> sorted(first["id"].tolist() + sum(rest, []))
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    """

    def __init__(self, dataset, cfg: LoaderConfig, host: Callable, to_device: Callable | None = None,
                 prefetch_batches: int = 1) -> None:
        self.dataset, self.cfg, self.host = dataset, cfg, host
        self.to_device = to_device or (lambda value: value)
        self.prefetch = prefetch_batches
        self._next_epoch = 0
        self._resume: ReadProgress | None = None
        self._progress: ReadProgress | None = None

    def __iter__(self) -> Iterator:
        resume, self._resume = self._resume, None
        epoch = resume.epoch if resume is not None else self._next_epoch
        self._next_epoch = epoch + 1
        progress = ReadProgress.from_state(resume.state_dict()) if resume is not None else \
            ReadProgress(epoch, self.cfg.seed, [])
        self._progress = progress
        cfg = self.cfg
        ordered = batches_in_order(self.dataset, cfg)

        def produce():
            with closing(prefetched(lambda: epoch_chunks(self.dataset, cfg, epoch, progress,
                                                         resume), _EXECUTOR_AHEAD)) as chunks:
                stream = batches(chunks, cfg.batch_size, cfg.drop_last, cfg.shuffle_buffer,
                                 cfg.seed, epoch, keep_order=ordered)
                skip = resume.rows if resume is not None and resume.mode == "ordered" else 0
                for table, ids in stream:
                    if skip >= table.num_rows:
                        skip -= table.num_rows
                        continue
                    if skip:
                        table, ids, skip = table.slice(skip), ids[skip:], 0
                    yield self.host(table), ids

        for value, ids in prefetched(produce, self.prefetch):
            progress.mark(ids)
            yield self.to_device(value)

    def state_dict(self) -> dict:
        """The position in the current epoch (JSON-serializable); a ValueError when the
        plan draws random numbers without a seed (a resumed run would read another
        order, and repeat and skip rows)."""
        unseeded = unrepeatable(self.dataset._plan)
        if unseeded is not None:
            raise ValueError(f"state_dict: {unseeded} has no seed, so a resumed run would read "
                             "the rows in another order (some twice, some never); pass seed= "
                             "to it to checkpoint this dataset")
        if self._progress is None:
            return ReadProgress(self._next_epoch, self.cfg.seed, []).state_dict()
        progress = self._progress
        if progress.mode == "ordered" and not progress.deterministic:
            raise ValueError(
                "state_dict: this plan does not run inside its read tasks, so its position is "
                "a row count in output order, which is only reproducible with "
                "preserve_order=True: set DataContext.get_current().execution_options."
                "preserve_order = True (or pass local_shuffle_seed) before iterating")
        if progress.mode == "keys" and progress.merged:
            if not progress.deterministic:
                raise ValueError(
                    "state_dict: blocks of this epoch mixed rows of several read partitions "
                    "(small blocks bundled for a batch_size), so only a row count in output "
                    "order can name the position, and that is only reproducible with "
                    "preserve_order=True: set DataContext.get_current().execution_options."
                    "preserve_order = True (or pass local_shuffle_seed) before iterating")
            return dict(progress.state_dict(), mode="ordered", done=[], partial={},
                        done_keys=[])
        return progress.state_dict()

    def load_state_dict(self, state: dict) -> LoaderIterable:
        """Resume the saved epoch on the next ``iter()`` (returns self)."""
        resume = ReadProgress.from_state(state)
        if self.cfg.shuffle and resume.seed != self.cfg.seed:
            self.cfg = replace(self.cfg, seed=resume.seed)
        if resume.at_start():  # saved before a batch (a step-0 checkpoint): the whole epoch
            self._next_epoch, self._resume = resume.epoch, None
        else:
            self._resume = resume
        return self


def torch_iterable(dataset, *, batch_size=256, dtypes=None, device="auto", collate_fn=None,
                   drop_last=False, prefetch_batches=1, pin_memory=None,
                   local_shuffle_buffer_size=None, local_shuffle_seed=None) -> LoaderIterable:
    """The object behind ``Dataset.iter_torch_batches`` (see there)."""
    from streambatch.loader.torch_batches import TorchConverter

    cfg = make_config(batch_size, drop_last, local_shuffle_buffer_size, local_shuffle_seed)
    v.non_negative_int("prefetch_batches", prefetch_batches)
    conv = TorchConverter(dtypes, device, collate_fn, pin_memory)
    return LoaderIterable(dataset, cfg, conv.host, conv.to_device, prefetch_batches)


def batch_iterable(dataset, batch_format: str, batch_size, drop_last, prefetch_batches,
                   local_shuffle_buffer_size, local_shuffle_seed) -> LoaderIterable:
    """The object behind ``Dataset.iter_batches(local_shuffle_buffer_size=...)``: batches in
    ``batch_format`` drawn from a shuffle buffer.

    >>> import streambatch as sb
    >>> got = sb.range(10).iter_batches(batch_size=5, local_shuffle_buffer_size=4,
    ...                                 local_shuffle_seed=0, batch_format="numpy")
    >>> sorted(int(x) for b in got for x in b["id"])
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    """
    from streambatch.operators.batch_format import to_batch

    cfg = make_config(batch_size, drop_last, local_shuffle_buffer_size, local_shuffle_seed)
    v.non_negative_int("prefetch_batches", prefetch_batches)
    return LoaderIterable(dataset, cfg, lambda table: to_batch(table, batch_format),
                          prefetch_batches=prefetch_batches)
