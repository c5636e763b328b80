"""Executor conformance suite: behaviour every backend must show.

Subclass :class:`ExecutorConformance` and set ``backend`` (see
``test_local_conformance.py``). Tests only use the public API, so a new
backend passes them unchanged or is not done.
"""

from __future__ import annotations

import os
import time

import pyarrow as pa
import pyarrow.compute as pc
import pytest

import streambatch as sb

MiB = 2**20


def busy(n: int) -> int:
    """Burn CPU proportional to ``n`` (to make tasks finish out of order)."""
    total = 0
    for i in range(n):
        total += i % 7
    return total


def slow_for_early_ids(batch: pa.Table) -> pa.Table:
    """Early partitions take longer, so without ordering they would finish last."""
    first = batch["id"][0].as_py()
    busy(max(0, 400_000 - first * 200))
    return batch


def fail_on_537(row: dict) -> dict:
    if row["id"] == 537:
        raise ValueError(f"cannot handle id {row['id']}")
    return row


def hang_after_first(batch: pa.Table) -> pa.Table:
    """The first batch passes; any later one hangs (for 60 s: a hung user function)."""

    if batch["id"][0].as_py() > 0:
        time.sleep(60)
    return batch


def megabyte_rows(batch: pa.Table) -> pa.Table:
    """Each input row becomes a ~1 MiB string row."""
    return pa.table({"id": batch["id"], "blob": pa.array(["x" * MiB] * batch.num_rows)})


class ExecutorConformance:
    """Ordering, limits, backpressure bounds and error propagation."""

    backend: str = "local"
    num_cpus: int = 2

    @pytest.fixture(autouse=True)
    def configure(self):
        sb.init(backend=self.backend, num_cpus=self.num_cpus)
        yield
        sb.init(backend=self.backend, num_cpus=self.num_cpus)

    def options(self) -> sb.ExecutionOptions:
        return sb.DataContext.get_current().execution_options

    # ---- ordering ---------------------------------------------------------------
    def test_preserve_order_keeps_input_order_across_stages(self):
        self.options().preserve_order = True
        ds = (sb.range(2000, override_num_blocks=8)
              .map_batches(slow_for_early_ids, batch_size=None, batch_format="pyarrow", releases_gil=False)
              .map(lambda r: {"id": r["id"], "double": r["id"] * 2}))
        rows = ds.take_all()
        assert [r["id"] for r in rows] == list(range(2000))
        assert rows[1999] == {"id": 1999, "double": 3998}

    def test_without_order_every_row_arrives_exactly_once(self):
        ds = sb.range(2000, override_num_blocks=8).map_batches(slow_for_early_ids, batch_size=None, batch_format="pyarrow", releases_gil=False)
        ids = [r["id"] for r in ds.take_all()]
        assert sorted(ids) == list(range(2000))

    def test_union_in_order_mode_yields_inputs_in_sequence(self):
        self.options().preserve_order = True
        ds = sb.range(5, override_num_blocks=2).union(
            sb.range(3, override_num_blocks=2).map(lambda r: {"id": r["id"] + 100}))
        assert [r["id"] for r in ds.take_all()] == [0, 1, 2, 3, 4, 100, 101, 102]

    def test_iter_batches_has_exact_sizes_across_partitions(self):
        sizes = [b.num_rows for b in sb.range(1003, override_num_blocks=7).iter_batches(batch_size=100, batch_format="pyarrow")]
        assert sizes == [100] * 10 + [3]

    # ---- limits -----------------------------------------------------------------
    def test_limit_stops_reading_early(self):
        ds = sb.range(100_000, override_num_blocks=100).map(lambda r: {"id": r["id"] + 1}).limit(10)
        rows = ds.take_all()
        assert len(rows) == 10
        read_tasks = ds.stats().stages[0].tasks
        assert read_tasks <= 4 * self.num_cpus, f"{read_tasks} of 100 read tasks ran for limit(10)"

    def test_limit_after_filter_counts_surviving_rows(self):
        ds = sb.range(1000, override_num_blocks=10).filter(lambda r: r["id"] % 10 == 0).limit(7)
        ids = sorted(r["id"] for r in ds.take_all())
        assert len(ids) == 7 and all(i % 10 == 0 for i in ids)

    def test_limit_zero_and_limit_larger_than_data(self):
        assert sb.range(10).limit(0).count() == 0
        assert sb.range(10).limit(50).count() == 10

    def test_take_in_order_mode_returns_first_rows(self):
        self.options().preserve_order = True
        assert sb.range(10_000, override_num_blocks=20).take(3) == [{"id": 0}, {"id": 1}, {"id": 2}]

    # ---- memory and partition sizes ------------------------------------------------
    def test_buffered_bytes_stay_within_budget(self):
        budget = 16 * MiB
        sb.init(backend=self.backend, num_cpus=self.num_cpus, memory_budget=budget,
                target_partition_bytes=2 * MiB)
        ds = sb.range(64, override_num_blocks=64).map_batches(megabyte_rows, batch_size=None, batch_format="pyarrow", releases_gil=False)
        seen = 0
        for batch in ds.iter_batches(batch_size=1, batch_format="pyarrow"):
            seen += batch.num_rows
        assert seen == 64
        stats = ds.stats()
        assert stats.memory_budget == budget
        assert stats.peak_buffered_bytes <= budget + 2 * MiB, str(stats)

    def test_outputs_are_split_to_target_partition_size(self):
        sb.init(backend=self.backend, num_cpus=self.num_cpus, target_partition_bytes=2 * MiB)
        ds = sb.range(16, override_num_blocks=1).map_batches(megabyte_rows, batch_size=None, batch_format="pyarrow", releases_gil=False)
        sizes = [p.nbytes for p in ds._partitions()]
        assert sum(1 for _ in sizes) >= 8
        assert max(sizes) <= 2 * MiB + 64 * 1024

    def test_stats_count_rows_per_stage(self):
        ds = sb.range(100, override_num_blocks=4).filter(lambda r: r["id"] < 30).repartition(3)
        assert ds.count() == 30
        stages = ds.stats().stages
        assert stages[0].rows_out == 30 and stages[0].tasks == 4
        assert stages[-1].rows_in == 30

    # ---- errors -----------------------------------------------------------------
    def test_udf_error_names_stage_partition_row_and_cause(self):
        ds = sb.range(1000, override_num_blocks=4).map(fail_on_537)
        with pytest.raises(sb.UserCodeError) as info:
            ds.take_all()
        text = str(info.value)
        assert "Map(fail_on_537)" in text
        assert "partition 2" in text
        assert "row 37: {'id': 537}" in text
        assert "ValueError: cannot handle id 537" in text
        assert "in fail_on_537" in text  # the worker's traceback
        assert isinstance(info.value.__cause__, ValueError)

    def test_error_in_batch_udf_on_threads_names_the_batch(self):
        def explode(batch):
            raise RuntimeError("model exploded")

        ds = sb.range(10, override_num_blocks=1).map_batches(explode, batch_size=4, releases_gil=True, batch_format="pyarrow")
        with pytest.raises(sb.UserCodeError) as info:
            ds.count()
        assert "MapBatches(explode)" in str(info.value)
        assert "batch of rows 0-3" in str(info.value)
        assert "RuntimeError: model exploded" in str(info.value)

    def test_wrong_return_type_names_stage_and_types(self):
        ds = sb.range(4).map_batches(lambda b: 42, batch_format="pyarrow", releases_gil=False)
        with pytest.raises(sb.UDFReturnTypeError) as info:
            ds.take_all()
        assert "MapBatches(<lambda>)" in str(info.value)
        assert "returned int" in str(info.value)
        assert "pyarrow.Table" in str(info.value)

    def test_worker_exit_is_reported_with_stage(self):
        def die(row):
            if row["id"] == 3:
                os._exit(7)
            return row

        with pytest.raises(sb.WorkerDiedError) as info:
            sb.range(8, override_num_blocks=2).map(die).take_all()
        assert "Map(die)" in str(info.value)
        assert "exit code 7" in str(info.value)

    def test_stuck_stage_is_named_after_the_timeout(self):
        def hang(batch):
            import threading

            threading.Event().wait(60)
            return batch

        sb.init(backend=self.backend, num_cpus=self.num_cpus, no_progress_timeout_s=1.0)
        with pytest.raises(sb.StageStuckError) as info:
            sb.range(4, override_num_blocks=1).map_batches(hang, batch_format="pyarrow", releases_gil=False).count()
        assert "MapBatches(hang)" in str(info.value)

    def test_engine_still_works_after_a_failed_job(self):
        with pytest.raises(sb.UserCodeError):
            sb.range(1000).map(fail_on_537).count()
        assert sb.range(1000).map(lambda r: r).count() == 1000

    def test_expression_filter_matches_python_filter(self):
        by_expr = sb.range(500).filter(expr=pc.equal(pc.divide(pc.field("id"), 7) * 7, pc.field("id"))).to_arrow()["id"].to_pylist()
        by_fn = sb.range(500).filter(lambda r: r["id"] % 7 == 0).to_arrow()["id"].to_pylist()
        assert sorted(by_expr) == sorted(by_fn) == list(range(0, 500, 7))


def cpu_stage(batch: pa.Table) -> pa.Table:

    time.sleep(0.03)  # gives the task a duration; no assertion depends on it
    return batch.append_column("cpu", pc.multiply(batch["id"], 10))


def slow_cpu_stage(batch: pa.Table) -> pa.Table:

    time.sleep(0.15)  # gives the task a duration; no assertion depends on it
    return batch.append_column("cpu", pc.multiply(batch["id"], 10))


class DeviceModel:
    """An actor that records which device it was given."""

    def __init__(self, offset: int = 0) -> None:
        self.device = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        self.offset = offset

    def __call__(self, batch: pa.Table) -> pa.Table:

        time.sleep(0.03)
        return batch.append_column("device", pa.array([self.device] * batch.num_rows)) \
            .append_column("pred", pc.add(batch["cpu"], self.offset))


class HeterogeneousConformance:
    """Resources, actor pools and the scheduler: behaviour every backend must show."""

    backend: str = "local"

    def init(self, **kwargs):
        sb.init(backend=self.backend, **kwargs)

    @pytest.fixture(autouse=True)
    def reset(self):
        yield
        sb.init(backend=self.backend, num_cpus=2)

    def test_cpu_and_gpu_stages_overlap_in_the_trace(self, tmp_path):
        from streambatch.executor.trace import load_trace, overlap_seconds, task_intervals

        trace = tmp_path / "trace.json"
        self.init(num_cpus=4, num_gpus=1, trace=str(trace))
        # The CPU stage lasts longer than an actor takes to start on any backend.
        ds = (sb.range(80, override_num_blocks=40).map_batches(slow_cpu_stage, batch_size=None,
                                                               num_cpus=1, batch_format="pyarrow", releases_gil=False)
              .map_batches(DeviceModel, batch_size=None, num_gpus=1, num_cpus=0, concurrency=1, batch_format="pyarrow", releases_gil=False))
        rows = ds.take_all()
        assert sorted(r["pred"] for r in rows) == [i * 10 for i in range(80)]
        events = load_trace(str(trace))
        cpu, gpu = task_intervals(events, "slow_cpu_stage"), task_intervals(events, "DeviceModel")
        assert len(cpu) == 40 and len(gpu) == 40
        assert overlap_seconds(cpu, gpu) > 0.1, "CPU and GPU stages never ran at the same time"

    def test_each_gpu_actor_gets_its_own_device(self):
        self.init(num_cpus=4, num_gpus=2)
        ds = (sb.range(40, override_num_blocks=20).map_batches(cpu_stage, batch_size=None, batch_format="pyarrow", releases_gil=False)
              .map_batches(DeviceModel, batch_size=None, num_gpus=1, num_cpus=0, concurrency=2, batch_format="pyarrow", releases_gil=False))
        assert {r["device"] for r in ds.take_all()} == {"0", "1"}

    def test_fractional_gpus_share_one_device(self):
        self.init(num_cpus=4, num_gpus=1)
        ds = (sb.range(40, override_num_blocks=20).map_batches(cpu_stage, batch_size=None, batch_format="pyarrow", releases_gil=False)
              .map_batches(DeviceModel, batch_size=None, num_gpus=0.5, num_cpus=0, concurrency=2, batch_format="pyarrow", releases_gil=False))
        rows = ds.take_all()
        assert {r["device"] for r in rows} == {"0"}
        assert ds.stats().stages[-1].actors_peak == 2

    def test_memory_stays_within_budget_under_a_slow_gpu_stage(self):
        budget = 12 * MiB
        self.init(num_cpus=4, num_gpus=1, memory_budget=budget, target_partition_bytes=MiB)
        ds = (sb.range(48, override_num_blocks=48).map_batches(megabyte_rows, batch_size=None, batch_format="pyarrow", releases_gil=False)
              .map_batches(SlowSink, batch_size=None, num_gpus=1, num_cpus=0, concurrency=1, batch_format="pyarrow", releases_gil=False))
        assert sorted(r["id"] for r in ds.take_all()) == list(range(48))
        assert ds.stats().peak_buffered_bytes <= budget + 2 * MiB, str(ds.stats())

    def test_a_model_gets_whole_batches_when_blocks_are_smaller_than_a_batch(self):
        """Read partitions of 10 rows of 1 MiB cut to ~4 MiB blocks feed batches of
        10: blocks of 4, 4 and 2 rows made batches of 4+4+4 rows, each task ending
        on a short batch of 2; blocks that line up (5 + 5) make every batch whole."""
        self.init(num_cpus=2, target_partition_bytes=4 * MiB)
        ds = (sb.range(80, override_num_blocks=8).map_batches(megabyte_rows, batch_size=None, batch_format="pyarrow", releases_gil=False)
              .map_batches(BatchSizes, batch_size=10, concurrency=1, batch_format="pyarrow", releases_gil=False))
        rows = ds.take_all()
        assert sorted(r["id"] for r in rows) == list(range(80))
        assert {r["batch_rows"] for r in rows} == {10}

    def test_autoscaling_adds_actors_for_a_backlog_and_releases_them(self, tmp_path):
        from streambatch.executor.trace import load_trace

        trace = tmp_path / "trace.json"
        self.init(num_cpus=4, trace=str(trace), actor_idle_timeout_s=0.05)
        inputs = sb.range(60, override_num_blocks=30).map_batches(cpu_stage, batch_size=None, batch_format="pyarrow", releases_gil=False)
        ds = inputs.materialize().map_batches(DeviceModel, batch_size=None, num_cpus=1,
                                              concurrency=(1, 3), batch_format="pyarrow", releases_gil=False)  # 30 partitions queue at once
        assert len(ds.take_all()) == 60
        counts = [e["args"] for e in load_trace(str(trace))
                  if e.get("ph") == "C" and "actors" in e.get("name", "")]
        values = [next(iter(a.values())) for a in counts]
        assert max(values) == 3, values
        assert values[-1] == 0, values

    def test_unplaceable_gpu_request_fails_fast(self):
        self.init(num_cpus=2, num_gpus=0)
        ds = sb.range(10).map_batches(DeviceModel, num_gpus=1, concurrency=1, batch_format="pyarrow", releases_gil=False)
        with pytest.raises(sb.UnplaceableError) as info:
            ds.take_all()
        assert "MapBatches(DeviceModel)" in str(info.value)
        assert "0 GPUs" in str(info.value)

    def test_minimum_actors_that_cannot_fit_fail_fast(self):
        self.init(num_cpus=2)
        ds = sb.range(10).map_batches(DeviceModel, num_cpus=1, concurrency=(3, 3), batch_format="pyarrow", releases_gil=False)
        with pytest.raises(sb.UnplaceableError) as info:
            ds.count()
        assert "needs 3 actor(s)" in str(info.value)

    def test_outputs_match_a_single_process_run(self):
        self.init(num_cpus=3, num_gpus=1)
        ds = (sb.range(500, override_num_blocks=10)
              .map(lambda r: {"id": r["id"], "sq": r["id"] * r["id"]})
              .filter(lambda r: r["id"] % 3 != 0)
              .map_batches(Offset, fn_constructor_args=(7,), num_gpus=0.5, concurrency=(1, 2),
                           batch_format="numpy", releases_gil=False))
        expected = sorted((i, i * i + 7) for i in range(500) if i % 3 != 0)
        assert sorted((r["id"], r["out"]) for r in ds.take_all()) == expected

    def test_closing_the_iterator_stops_a_hung_function_at_once(self):

        ds = sb.range(40, override_num_blocks=4).map_batches(hang_after_first, batch_size=10, batch_format="pyarrow", releases_gil=False)
        batches = iter(ds.iter_batches(batch_size=10, batch_format="pyarrow"))
        assert next(batches).num_rows == 10
        started = time.monotonic()
        batches.close()  # the other tasks hang in the UDF
        assert time.monotonic() - started < 5  # 60 s if it waited for them
        assert sb.range(3).count() == 3  # their CPUs are free again: the next job runs
        assert time.monotonic() - started < 10


class BatchSizes:
    def __call__(self, batch: pa.Table) -> pa.Table:
        return pa.table({"id": batch["id"], "batch_rows": [batch.num_rows] * batch.num_rows})


class SlowSink:
    def __call__(self, batch: pa.Table) -> pa.Table:

        time.sleep(0.02)
        return batch.select(["id"])


class Offset:
    def __init__(self, k: int) -> None:
        self.k = k

    def __call__(self, batch: dict) -> dict:
        return {"id": batch["id"], "out": batch["sq"] + self.k}


# ---- recovery ---------------------------------------------------------------------
# Worker deaths here are real (SIGKILL, os._exit) and come on a task's first attempt
# only. A task's attempts run in other processes, so they agree through files in
# tmp_path: ``_first_to_claim`` creates a marker atomically (one caller wins), and
# ``_note`` appends a line per call (how often the UDF ran, and on what).
