"""The planner (operators/planner.py): which physical stages an optimized plan becomes
(kinds, links, fusion, ``out_batch_rows``), where each runs per ``worker_mode``, the
read tasks its sources get (pushdowns, parallelism, resumed pieces), and
``render_stages``."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from streambatch.connectors.datasource import Piece, PieceSet
from streambatch.connectors.lookup import DictTable, FreshCache
from streambatch.executor.contract import (
    LimitStage,
    RepartitionStage,
    Resources,
    TaskStage,
    UnionStage,
)
from streambatch.operators import logical as L
from streambatch.operators.optimizer import optimize
from streambatch.operators.planner import (
    PlanSettings,
    default_parallelism,
    plan_stages,
    render_stages,
)

import streambatch as sb

from .plan_helpers import PlainRange, names, rows, stages


def ident(row):
    return row


def batch_ident(batch):
    return batch


class Model:
    def __call__(self, batch):
        return batch


TABLE = pa.table({"a": list(range(10)), "b": [i % 2 for i in range(10)]})


# ---- stage kinds and links ------------------------------------------------------------

def test_driver_stages_and_their_links():
    ds = sb.range(10).union(sb.range(5).map(ident)).limit(3).repartition(2)
    got = stages(ds)
    assert [type(s) for s in got] == [TaskStage, TaskStage, UnionStage, LimitStage,
                                      RepartitionStage]
    assert [s.upstream for s in got] == [(), (), (0, 1), (2,), (3,)]
    assert (got[3].limit, got[4].num_partitions) == (3, 2)
    assert render_stages(got) == "\n".join([
        "Stage 0: Read[Range] (tasks on thread workers; cpu=1)",
        "Stage 1: Read[Range]->Map(ident) (tasks on process workers; cpu=1)",
        "Stage 2: Union[2] (in the driver; input from stage 0, 1)",
        "Stage 3: Limit[3] (in the driver; input from stage 2)",
        "Stage 4: Repartition[2] (in the driver; input from stage 3)"])


def test_render_stages_names_resources():
    ds = sb.range(10).map_batches(batch_ident, num_gpus=0.5, num_cpus=2, batch_size=None)
    assert render_stages(stages(ds)).splitlines()[1] == (
        "Stage 1: MapBatches(batch_ident) (tasks on thread workers, process workers if its "
        "first tasks hold the GIL; cpu=2, gpu=0.5; input from stage 0)")


def test_a_stage_after_a_driver_stage_is_a_new_task_stage():
    got = stages(sb.range(10).limit(5).map(ident).map(ident))
    assert names(got) == ["Read[Range; limit=5]", "Limit[5]", "Map(ident)->Map(ident)"]
    assert [s.upstream for s in got] == [(), (0,), (1,)]
    assert got[0].is_source and not got[2].is_source


def test_an_operator_without_a_builder_is_refused_by_name():
    class Sample(L.LogicalOp):
        pass

    with pytest.raises(TypeError, match="no physical stage for Sample"):
        plan_stages(Sample(), PlanSettings())


# ---- fusion and alignment, as planned -------------------------------------------------

@pytest.mark.parametrize("build, want", [
    pytest.param(lambda: sb.range(100).map(ident).filter(ident).select_columns(["id"]),
                 [("Read[Range]->Map(ident)->Filter(ident)->Select['id']", None)],
                 id="row-ops-fuse-into-the-read"),
    pytest.param(lambda: sb.range(100).map(ident).map(ident, num_cpus=2).map(ident, num_cpus=2),
                 [("Read[Range]->Map(ident)", None), ("Map(ident)->Map(ident)", None)],
                 id="resource-change"),
    pytest.param(lambda: sb.range(100).map_batches(Model, batch_size=None, concurrency=2).map(ident),
                 [("Read[Range]", None), ("MapBatches(Model)", None), ("Map(ident)", None)],
                 id="actor-pool-with-concurrency"),
    pytest.param(lambda: sb.range(100).map_batches(Model, batch_size=None).map(ident),
                 [("Read[Range]->MapBatches(Model)", None), ("Map(ident)", None)],
                 id="actor-downstream-only"),
    pytest.param(lambda: sb.range(1000, override_num_blocks=2).filter(ident).map_batches(
        batch_ident, batch_size=100),
                 [("Read[Range]->Filter(ident)", 100), ("MapBatches(batch_ident)", None)],
                 id="filter-then-fixed-batch"),
    pytest.param(lambda: sb.range(1000, override_num_blocks=2).map(ident).map_batches(
        batch_ident, batch_size=100),
                 [("Read[Range]->Map(ident)->MapBatches(batch_ident)", None)],
                 id="big-reads-fuse-into-fixed-batch"),
    pytest.param(lambda: sb.range(1000, override_num_blocks=20).map_batches(
        batch_ident, batch_size=100).map(ident),
                 [("Read[Range]", 100), ("MapBatches(batch_ident)->Map(ident)", None)],
                 id="small-reads-are-bundled"),
    pytest.param(lambda: sb.range(1000, override_num_blocks=20).map_batches(
        batch_ident, batch_size=100).map_batches(batch_ident, batch_size=10),
                 [("Read[Range]", 100), ("MapBatches(batch_ident)", 10),
                  ("MapBatches(batch_ident)", None)],
                 id="batch-op-after-a-batch-op"),
    pytest.param(lambda: sb.range(100).map_batches(batch_ident, num_gpus=1, batch_size=8),
                 [("Read[Range]", 8), ("MapBatches(batch_ident)", None)],
                 id="gpu-stage"),
    pytest.param(lambda: sb.range(100, override_num_blocks=50).map_batches(
        batch_ident, batch_size=8).union(sb.range(3)),
                 [("Read[Range]", 8), ("MapBatches(batch_ident)", None), ("Read[Range]", None),
                  ("Union[2]", None)],
                 id="union-consumer-aligns-nothing"),
])
def test_planned_stages_and_their_out_batch_rows(build, want):
    got = stages(build())
    assert [(s.name, getattr(s, "out_batch_rows", None)) for s in got] == want


def test_stage_properties_of_a_planned_plan():
    ds = sb.range(100).map_batches(Model, batch_size=16, num_gpus=1, concurrency=1).map(ident)
    read, model, after = stages(ds)
    assert read.is_source and read.batch_rows is None and not read.uses_actors
    assert not model.is_source and model.batch_rows == 16 and model.uses_actors
    assert model.resources == Resources(num_gpus=1) and model.concurrency == (1, 1)
    assert after.resources == Resources() and not after.uses_actors and after.batch_rows is None


def test_a_gpu_function_stage_uses_actors_and_keeps_its_batch():
    _, gpu = stages(sb.range(100).map_batches(batch_ident, num_gpus=1, batch_size=8))
    assert gpu.uses_actors and gpu.batch_rows == 8 and gpu.resources.num_gpus == 1


# ---- workers per worker_mode ----------------------------------------------------------

USERS = DictTable({1: {"name": "a"}}, key="id")

OPS = [  # (id, transform, worker in "auto" mode)
    ("map", lambda ds: ds.map(ident), "process"),
    ("map-releases-gil", lambda ds: ds.map(ident, releases_gil=True), "thread"),
    ("filter", lambda ds: ds.filter(ident), "process"),
    ("filter-releases-gil", lambda ds: ds.filter(ident, releases_gil=True), "thread"),
    ("filter-expr", lambda ds: ds.filter(expr=pc.field("id") > 1), "thread"),
    ("flat_map", lambda ds: ds.flat_map(lambda r: [r]), "process"),
    ("map_batches", lambda ds: ds.map_batches(batch_ident, batch_size=None), "auto"),
    ("map_batches-holds-gil",
     lambda ds: ds.map_batches(batch_ident, batch_size=None, releases_gil=False), "process"),
    ("map_batches-releases-gil",
     lambda ds: ds.map_batches(batch_ident, batch_size=None, releases_gil=True), "thread"),
    ("select", lambda ds: ds.select_columns(["id"]), "thread"),
    ("drop", lambda ds: ds.drop_columns(["id"]), "thread"),
    ("rename", lambda ds: ds.rename_columns({"id": "k"}), "thread"),
    ("add_column", lambda ds: ds.add_column("x", len), "process"),
    ("lookup", lambda ds: ds.lookup(USERS, on="id"), "thread"),
]


def _case(mode):
    for name, transform, auto in OPS:
        want = {"auto": auto, "threads": "thread", "processes": "process"}[mode]
        if name == "lookup":  # stays_in_driver: on threads in the driver in every mode
            want = "thread"
        yield pytest.param(mode, transform, want, id=f"{mode}-{name}")


@pytest.mark.parametrize("mode, transform, want",
                         [c for mode in ("auto", "threads", "processes") for c in _case(mode)])
def test_where_each_op_runs_per_worker_mode(mode, transform, want):
    # a source that takes no pushdown keeps each op an op, fused into the (thread) read
    plan = transform(sb.Dataset(L.Read(PlainRange(10), "Plain")))._plan
    got = plan_stages(optimize(plan), PlanSettings(num_cpus=2, worker_mode=mode))
    assert [s.worker for s in got if isinstance(s, TaskStage)] == [want], render_stages(got)


@pytest.mark.parametrize("mode", ["auto", "threads", "processes"])
def test_a_read_alone_runs_on_threads_in_every_mode(mode):
    assert [s.worker for s in stages(sb.range(10), worker_mode=mode)] == ["thread"]


def test_a_fused_stage_runs_in_processes_when_any_op_needs_them():
    ds = sb.range(10).map(ident, releases_gil=True).map(ident).select_columns(["id"])
    assert [(s.name, s.worker) for s in stages(ds)] == [
        ("Read[Range]->Map(ident)->Map(ident)->Select['id']", "process")]
    assert [s.worker for s in stages(ds, worker_mode="threads")] == ["thread"]


def test_a_lookup_after_a_process_stage_stays_on_threads_in_auto_mode():
    ds = sb.range(10).map(ident).lookup(USERS, on="id")
    assert [(s.name, s.worker) for s in stages(ds)] == [
        ("Read[Range]->Map(ident)", "process"),
        ("Lookup[DictTable(key=id) on id, left]", "thread")]


@pytest.mark.parametrize("mode", ["auto", "threads", "processes"])
def test_an_op_that_stays_in_the_driver_runs_on_threads_whatever_the_mode(mode):
    settings = PlanSettings(worker_mode=mode)
    for holds_gil in (True, False):
        assert settings.worker_for(holds_gil, stays_in_driver=True) == "thread"
    assert settings.worker_for(True) == ("thread" if mode == "threads" else "process")


def test_a_lookup_in_processes_mode_runs_in_the_driver_and_counts_in_the_users_cache():
    ctx = sb.DataContext.get_current()
    saved = (ctx.backend, ctx.execution_options)
    sb.init(num_cpus=2, worker_mode="processes", preserve_order=True)
    try:
        users = DictTable({i: {"name": f"u{i}"} for i in range(0, 100, 2)}, key="id")
        cache = FreshCache()
        ds = sb.range(100, override_num_blocks=2).map(ident).lookup(users, on="id", cache=cache)
        assert [(s.name, s.worker) for s in stages(ds, worker_mode="processes")] == [
            ("Read[Range]->Map(ident)", "process"),
            ("Lookup[DictTable(key=id) on id, left]", "thread")]
        got = ds.take_all()
    finally:
        ctx.backend, ctx.execution_options = saved
    assert got == [{"id": i, "name": None if i % 2 else f"u{i}"} for i in range(100)]
    stats = cache.stats()
    assert stats["hits"] + stats["cold_misses"] + stats["stale_misses"] == 100, stats


# ---- read tasks -----------------------------------------------------------------------

@pytest.mark.parametrize("num_cpus, blocks, want", [(1, None, 2), (3, None, 6), (3, 5, 5)])
def test_read_tasks_are_two_per_cpu_unless_the_user_set_the_blocks(num_cpus, blocks, want):
    (read,) = stages(sb.range(1000, override_num_blocks=blocks), num_cpus=num_cpus)
    assert len(read.read_tasks) == want == len(read.read_tasks_fn())
    assert sum(t.estimated_rows for t in read.read_tasks) == 1000
    assert default_parallelism(num_cpus, 0, 1) == 2 * num_cpus


def test_the_read_tasks_apply_the_pushed_columns_filter_and_limit():
    ds = sb.from_arrow(TABLE, override_num_blocks=2).filter(expr=pc.field("b") == 1).select_columns(
        ["a"]).limit(2)
    read, limit = stages(ds)
    assert isinstance(limit, LimitStage) and limit.limit == 2
    assert read.name == "Read[Arrow; columns=['a'], filter=(b == 1), limit=2]"
    per_task = [[r for t in task() for r in t.to_pylist()] for task in read.read_tasks]
    assert per_task == [[{"a": 1}, {"a": 3}], [{"a": 5}, {"a": 7}]]


def test_a_resumed_plan_leaves_out_the_pieces_done():
    plan = optimize(sb.range(10, override_num_blocks=2)._plan)
    done = {0: PieceSet([Piece("range", 0, 5)])}
    (read,) = plan_stages(plan, PlanSettings(num_cpus=1), done)
    assert [t.pieces for t in read.read_tasks] == [(Piece("range", 5, 8),), (Piece("range", 8, 10),)]
    assert [r["id"] for task in read.read_tasks for t in task() for r in t.to_pylist()] == [
        5, 6, 7, 8, 9]


def test_each_source_gets_its_own_ordinal_for_resumed_pieces():
    plan = optimize(sb.range(4, override_num_blocks=1).union(sb.range(6, override_num_blocks=1))._plan)
    done = {1: PieceSet([Piece("range", 0, 6)])}
    first, second, _ = plan_stages(plan, PlanSettings(num_cpus=1), done)
    assert len(first.read_tasks) == 1 and second.read_tasks == []


# ---- planned plans run as their un-planned semantics ----------------------------------

@pytest.mark.usefixtures("engine")
def test_a_plan_of_every_stage_kind_gives_the_python_rows():
    left = sb.range(12, override_num_blocks=3).map(lambda r: {"id": r["id"], "sq": r["id"] ** 2})
    right = sb.range(4).map(lambda r: {"id": 100 + r["id"], "sq": 0})
    ds = left.filter(lambda r: r["id"] % 2 == 0).union(right).repartition(3).map_batches(
        lambda b: b, batch_size=3).limit(8)
    want = [{"id": i, "sq": i * i} for i in range(0, 12, 2)] + [{"id": 100, "sq": 0},
                                                                {"id": 101, "sq": 0}]
    assert rows(ds) == rows(ds, optimized=False) == want


def test_a_read_fused_with_a_user_function_reads_one_file_per_task(tmp_path):
    import pyarrow.parquet as pq

    for i in range(8):
        pq.write_table(pa.table({"a": list(range(i * 10, i * 10 + 10)), "b": ["x"] * 10}),
                       tmp_path / f"f{i}.parquet")
    read = sb.read_parquet(str(tmp_path), columns=["a"])
    settings = PlanSettings(num_cpus=2)
    alone = plan_stages(optimize(read._plan), settings)
    # reading is all the task does: small pieces are one pyarrow scan per CPU
    assert len(alone[0].read_tasks) == 2
    fused = plan_stages(optimize(read.map_batches(batch_ident, batch_size=None)._plan), settings)
    assert len(fused) == 1 and len(fused[0].read_tasks) == 8  # one file each
    out = read.map_batches(lambda b: {"a": b["a"] * 2}, batch_size=None).take_all()
    assert [r["a"] for r in out] == [2 * i for i in range(80)]
