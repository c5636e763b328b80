"""Recovery conformance: behaviour every backend must show when workers die (subclassed
per backend, as ``ExecutorConformance`` in conformance.py). Deaths are real (SIGKILL,
``os._exit``) on a task's first attempt only, agreed through marker files."""

from __future__ import annotations

import collections
import os
import signal
import time

import pyarrow as pa
import pyarrow.compute as pc
import pytest

import streambatch as sb


def _first_to_claim(marker) -> bool:
    """True for exactly one caller, in whatever process: the one that creates ``marker``."""
    try:
        os.close(os.open(str(marker), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def _note(path, *values) -> None:
    """Append one line (one short write in append mode: lines never interleave)."""
    with open(str(path), "a") as f:
        f.write(" ".join(str(v) for v in values) + "\n")


def _noted(path) -> list[str]:
    """The lines ``_note`` wrote to ``path`` (none if it never ran)."""
    return open(str(path)).read().splitlines() if os.path.exists(str(path)) else []


def _noted_ids(path) -> list[int]:
    return sorted(int(v) for line in _noted(path) for v in line.split())


def _die(how: str, driver_pid: int, code: int = 3) -> None:
    """End this worker process mid-task, as the OOM killer ("sigkill") or a library
    calling exit ("exit") does. Never the test process (a UDF run on a driver thread)."""
    if os.getpid() == driver_pid:
        raise RuntimeError("the UDF runs in the test process: refusing to kill it")
    if how == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    os._exit(code)


def _wait_for(path, what: str, timeout_s: float = 60.0) -> None:
    """Block until another process creates ``path``: ordering by a condition, not by
    timing (the timeout only turns a hang into a failure that says what was missing)."""
    deadline = time.monotonic() + timeout_s
    while not os.path.exists(str(path)):
        if time.monotonic() > deadline:
            raise RuntimeError(f"gave up waiting: {what}")
        time.sleep(0.01)


def _plus_one_dying_after_first_output(batch: pa.Table, files: dict) -> pa.Table:
    """Batches of 10 rows, so a task's first output block (its first batch) is passed
    on at once. On the first attempt at partition 1 (rows 50-99) the worker dies in
    its second batch, once the next stage holds rows 50-59."""
    first = batch["id"][0].as_py()
    _note(files["calls"], first)
    if first == 60 and _first_to_claim(files["died"]):
        _wait_for(f"{files['held']}-50", "the next stage never got partition 1's first "
                  "output block (rows 50-59)")
        _die("exit", files["driver"])
    return batch.append_column("v", pc.add(batch["id"], 1))


class PlusOneDyingAfterFirstOutput:
    """:func:`_plus_one_dying_after_first_output` as an actor."""

    def __init__(self, files: dict) -> None:
        self.files = files

    def __call__(self, batch: pa.Table) -> pa.Table:
        return _plus_one_dying_after_first_output(batch, self.files)


class DiesOnce:
    """An actor that dies (``how``) on its first call that holds row ``at``; later calls
    (on its replacement) compute. Notes the ids it returns in ``seen``."""

    def __init__(self, marker: str, at: int, how: str, seen: str, driver_pid: int) -> None:
        self.marker, self.at, self.how, self.seen = marker, at, how, seen
        self.driver_pid = driver_pid

    def __call__(self, batch: pa.Table) -> pa.Table:
        ids = batch["id"].to_pylist()
        if self.at in ids and _first_to_claim(self.marker):
            _die(self.how, self.driver_pid)
        _note(self.seen, *ids)
        return batch.append_column("out", pc.add(pc.multiply(batch["sq"], 3), 1))


class AlwaysDiesOn:
    """An actor that exits with code 7 on every call that holds row ``at``."""

    def __init__(self, at: int, attempts: str, driver_pid: int) -> None:
        self.at, self.attempts, self.driver_pid = at, attempts, driver_pid

    def __call__(self, batch: pa.Table) -> pa.Table:
        if self.at in batch["id"].to_pylist():
            _note(self.attempts, os.getpid())
            _die("exit", self.driver_pid, code=7)
        return batch


class NotesRows:
    """An actor that notes every id it gets in ``seen`` and marks each as held."""

    def __init__(self, seen: str, held: str) -> None:
        self.seen, self.held = seen, held

    def __call__(self, batch: pa.Table) -> pa.Table:
        ids = batch["id"].to_pylist()
        _note(self.seen, *ids)
        for i in ids:  # these rows are downstream now (a producer may wait for that)
            open(f"{self.held}-{i}", "w").close()
        return batch.append_column("out", pc.subtract(batch["v"], 1))


class RaisesOn:
    """An actor whose call raises a user exception on the batch that holds row ``at``
    (and with ``held``, marks each batch it gets as held, by its first id)."""

    def __init__(self, at: int, calls: str, held: str | None = None) -> None:
        self.at, self.calls, self.held = at, calls, held

    def __call__(self, batch: pa.Table) -> pa.Table:
        if self.held is not None:
            open(f"{self.held}-{batch['id'][0].as_py()}", "w").close()
        if self.at in batch["id"].to_pylist():
            _note(self.calls, "called")
            raise KeyError(f"no label for id {self.at}")
        return batch


class RecoveryConformance:
    """Recovery as DESIGN.md promises it on every backend: a task whose worker dies is
    run again from its recorded inputs (they are kept: upstream tasks do not run
    again), a retry never passes on an output twice, retries of deaths are bounded by
    ``max_task_retries`` (the error then names the stage and the partition), and a
    user exception is not a death: it is not retried, and it names its row."""

    backend: str = "local"
    num_cpus: int = 2

    @pytest.fixture(autouse=True)
    def configure(self):
        sb.init(backend=self.backend, num_cpus=self.num_cpus)
        yield
        sb.init(backend=self.backend, num_cpus=self.num_cpus)

    def options(self) -> sb.ExecutionOptions:
        return sb.DataContext.get_current().execution_options

    # ---- a death is retried; the output is exact ----------------------------------
    def test_task_whose_worker_is_killed_is_retried_with_exact_output(self, tmp_path):
        marker, calls, driver = tmp_path / "died", tmp_path / "calls", os.getpid()

        def square(batch):
            first = batch["id"][0].as_py()
            _note(calls, first)
            if first == 150 and _first_to_claim(marker):
                _die("sigkill", driver)
            return batch.append_column("sq", pc.multiply(batch["id"], batch["id"]))

        ds = sb.range(400, override_num_blocks=8).map_batches(square, batch_size=None, batch_format="pyarrow", releases_gil=False)
        rows = sorted(ds.take_all(), key=lambda r: r["id"])
        assert rows == [{"id": i, "sq": i * i} for i in range(400)]
        runs = collections.Counter(int(line) for line in _noted(calls))
        assert runs == {p * 50: 2 if p == 3 else 1 for p in range(8)}, runs  # one retry
        assert ds.stats().stages[-1].retries == 1, str(ds.stats())

    @pytest.mark.parametrize("how", ["sigkill", "exit"])
    def test_actor_that_dies_is_replaced_and_its_inputs_are_reused(self, tmp_path, how):
        """The dead actor's tasks run again on its replacement with the same inputs,
        outputs of an upstream task stage that does not run again."""
        self.options().preserve_order = True
        calls, seen = tmp_path / "upstream", tmp_path / "seen"

        def square(batch):
            _note(calls, batch["id"][0].as_py())
            return batch.append_column("sq", pc.multiply(batch["id"], batch["id"]))

        model = (str(tmp_path / "died"), 175, how, str(seen), os.getpid())
        ds = (sb.range(400, override_num_blocks=8).map_batches(square, batch_size=None, batch_format="pyarrow", releases_gil=False)
              .map_batches(DiesOnce, fn_constructor_args=model, batch_size=None,
                           concurrency=1, batch_format="pyarrow", releases_gil=False))
        assert ds.take_all() == [{"id": i, "sq": i * i, "out": 3 * i * i + 1}
                                 for i in range(400)]
        assert _noted_ids(calls) == [p * 50 for p in range(8)]  # each upstream task once
        assert _noted_ids(seen) == list(range(400))  # the model returned each row once
        upstream, actors = ds.stats().stages
        assert (upstream.retries, upstream.recomputed) == (0, 0), str(ds.stats())
        assert actors.actor_restarts == 1 and actors.retries >= 1, str(ds.stats())

    @pytest.mark.parametrize("stage", ["task", "actor"])
    def test_death_after_an_output_was_passed_on_adds_no_duplicate(self, tmp_path, stage):
        """A task dies after the next stage took its first output block; its retry
        makes that block again and drops it: the next stage gets each row once."""
        self.options().preserve_order = True
        files = {"died": str(tmp_path / "died"), "calls": str(tmp_path / "calls"),
                 "held": str(tmp_path / "held"), "driver": os.getpid()}
        seen = str(tmp_path / "seen")
        ds = sb.range(200, override_num_blocks=4)
        if stage == "task":
            def plus_one(batch):
                return _plus_one_dying_after_first_output(batch, files)

            ds = ds.map_batches(plus_one, batch_size=10, batch_format="pyarrow", releases_gil=False)
        else:
            sb.init(backend=self.backend, num_cpus=3, preserve_order=True)  # 2 actors + reads
            ds = ds.map_batches(PlusOneDyingAfterFirstOutput, fn_constructor_args=(files,),
                                batch_size=10, concurrency=1, batch_format="pyarrow", releases_gil=False)
        ds = ds.map_batches(NotesRows, fn_constructor_args=(seen, files["held"]),
                            batch_size=None, concurrency=1, batch_format="pyarrow", releases_gil=False)
        assert ds.take_all() == [{"id": i, "v": i + 1, "out": i} for i in range(200)]
        assert _noted_ids(seen) == list(range(200))  # no row reached the next stage twice
        runs = collections.Counter(int(line) for line in _noted(files["calls"]))
        # the retry re-runs the batch it died in, and the batches of its task before it
        # (rows 50-59 when the task held partition 1 whole; the executor may also have
        # cut partition 1 into one block per batch for the actor pool)
        twice = {b for b, n in runs.items() if n == 2}
        assert twice in ({60}, {50, 60}) and set(runs.values()) <= {1, 2}, runs
        assert sorted(runs) == list(range(0, 200, 10)), runs
        assert ds.stats().stages[-2].retries >= 1, str(ds.stats())

    # ---- bounded retries ----------------------------------------------------------
    @pytest.mark.parametrize("stage", ["task", "actor"])
    def test_death_past_the_retry_limit_names_stage_and_partition(self, tmp_path, stage):
        sb.init(backend=self.backend, num_cpus=self.num_cpus, max_task_retries=2,
                preserve_order=True)  # (the actor stage numbers its partitions in order)
        attempts, driver = tmp_path / "attempts", os.getpid()

        def always_dies(batch):
            if batch["id"][0].as_py() == 100:
                _note(attempts, os.getpid())
                _die("exit", driver, code=7)
            return batch

        ds = sb.range(200, override_num_blocks=4)
        if stage == "task":
            ds, name = ds.map_batches(always_dies, batch_size=None, batch_format="pyarrow", releases_gil=False), "MapBatches(always_dies)"
        else:
            ds = ds.map_batches(AlwaysDiesOn, fn_constructor_args=(100, str(attempts), driver),
                                batch_size=None, concurrency=1, batch_format="pyarrow", releases_gil=False)
            name = "MapBatches(AlwaysDiesOn)"
        with pytest.raises(sb.WorkerDiedError) as info:
            ds.take_all()
        text = str(info.value)
        assert name in text and "on partition 2" in text, text
        assert "exit code 7" in text, text
        assert len(_noted(attempts)) == 3  # the first run and max_task_retries=2 retries

    def test_worker_killed_by_a_signal_is_reported_as_killed(self, tmp_path):
        """SIGKILL is what the kernel's OOM killer sends: the error must not blame the
        UDF for exiting, and it points at memory."""
        sb.init(backend=self.backend, num_cpus=self.num_cpus, max_task_retries=0)
        driver = os.getpid()

        def killed(batch):
            if batch["id"][0].as_py() == 100:
                _die("sigkill", driver)
            return batch

        with pytest.raises(sb.WorkerDiedError) as info:
            sb.range(200, override_num_blocks=4).map_batches(killed, batch_size=None, batch_format="pyarrow", releases_gil=False).count()
        text = str(info.value)
        assert "MapBatches(killed)" in text and "on partition 2" in text, text
        assert "killed by signal 9" in text and "memory" in text, text
        assert "exit code" not in text, text

    # ---- a user exception is not a death ------------------------------------------
    def test_user_exception_in_a_task_is_not_retried_and_names_the_row(self, tmp_path):
        calls = tmp_path / "calls"

        def label(row):
            if row["id"] == 137:
                _note(calls, "called")
                raise KeyError(f"no label for id {row['id']}")
            return row

        with pytest.raises(sb.UserCodeError) as info:
            sb.range(200, override_num_blocks=4).map(label).take_all()
        text = str(info.value)
        assert "Map(label)" in text and "partition 2" in text, text
        assert "row 37: {'id': 137}" in text, text
        assert "KeyError: 'no label for id 137'" in text, text
        assert _noted(calls) == ["called"]  # one attempt (max_task_retries=3 is for deaths)

    def test_user_exception_in_an_actor_is_not_retried_and_names_the_batch(self, tmp_path):
        self.options().preserve_order = True  # (the actor stage numbers partitions in order)
        calls = tmp_path / "calls"
        ds = (sb.range(200, override_num_blocks=4).map(lambda r: {"id": r["id"]})
              .map_batches(RaisesOn, fn_constructor_args=(137, str(calls)), batch_size=10,
                           concurrency=1, batch_format="pyarrow", releases_gil=False))
        with pytest.raises(sb.UserCodeError) as info:
            ds.take_all()
        text = str(info.value)
        assert "MapBatches(RaisesOn)" in text and "partition 2" in text, text
        assert "batch of rows 30-39" in text, text
        assert "KeyError: 'no label for id 137'" in text, text
        assert _noted(calls) == ["called"]

    def test_error_after_the_read_stage_names_the_partition_it_reads(self, tmp_path):
        """Partition 2 reaches the actor stage last (it waits for the others to be there),
        so it is the actor stage's fourth task: the error still names partition 2."""
        sb.init(backend=self.backend, num_cpus=3)  # an actor and two read tasks at once
        held = str(tmp_path / "held")

        def last_in(row):
            if row["id"] == 100:
                for first in (0, 50, 150):  # the other partitions' first batches
                    _wait_for(f"{held}-{first}", f"the actor never got rows {first}-")
            return row

        ds = (sb.range(200, override_num_blocks=4).map(last_in)
              .map_batches(RaisesOn, fn_constructor_args=(137, str(tmp_path / "calls"), held),
                           batch_size=10, concurrency=1, batch_format="pyarrow", releases_gil=False))
        with pytest.raises(sb.UserCodeError) as info:  # partitions as they finish: the
            list(ds.iter_batches(batch_size=None, batch_format="pyarrow"))  # ordered take_all would wait for 2
        text = str(info.value)
        assert "MapBatches(RaisesOn)" in text and "batch of rows 30-39" in text, text
        assert "failed on partition 2" in text, text
