"""Worker processes never inherit the driver's threads, locks or CUDA state: by default
they are forked from a clean zygote and get the job by cloudpickle. Drivers that hold
threads (Polars' pool, torch's OpenMP pool, a user thread holding a lock) run process
UDFs and actors; lambdas, closures and classes travel to workers; an unpicklable UDF
or one workers cannot import fails at once, naming what and what to do."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading

import psutil
import pyarrow as pa
import pytest
from streambatch.executor.backends.zygote import zygote_pid

import streambatch as sb
from tests.executor.drivers import session_processes, stores_of

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Forking a driver that runs threads warns on Python 3.12+; these tests fork on purpose.
FORKS_ON_PURPOSE = pytest.mark.filterwarnings("ignore:This process:DeprecationWarning")
METHODS = ["forkserver", "spawn", pytest.param("fork", marks=FORKS_ON_PURPOSE)]


@pytest.fixture(autouse=True)
def two_cpus():
    sb.init(num_cpus=2)
    yield
    sb.init(num_cpus=2)


def run_driver(tmp_path, code: str, timeout: float = 90.0, files: dict | None = None) -> str:
    """Run ``code`` as a fresh driver (its own session); a hang kills it and fails."""
    for name, text in (files or {}).items():
        (tmp_path / name).write_text(textwrap.dedent(text))
    (tmp_path / "driver.py").write_text(textwrap.dedent(code))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), REPO]))
    proc = subprocess.Popen([sys.executable, str(tmp_path / "driver.py")], env=env,
                            cwd=tmp_path, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        for pid in [proc.pid, *session_processes(proc.pid)]:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        proc.communicate()
        raise AssertionError(f"the driver hung (killed after {timeout:.0f} s)") from None
    assert proc.returncode == 0, err[-3000:]
    return out


def test_a_polars_process_udf_after_the_driver_used_polars_finishes(tmp_path):
    pytest.importorskip("polars")
    pytest.importorskip("pandas")
    out = run_driver(tmp_path, """
        import numpy as np, pandas as pd, polars as pl
        import streambatch as sb
        # the driver's Polars thread pool runs (and holds its locks) before the job
        pl.DataFrame({"a": np.random.rand(1_000_000)}).sort("a") \\
            .group_by((pl.col("a") * 10).cast(pl.Int64)).len()
        ds = sb.from_pandas(pd.DataFrame({"a": range(100_000)}))
        print(ds.map_batches(lambda b: b.sort("a"), batch_format="polars", releases_gil=False).count())
    """)
    assert out.split()[-1] == "100000"


def test_a_lock_a_driver_thread_holds_during_the_job_does_not_block_the_udf(tmp_path):
    out = run_driver(tmp_path, """
        import threading
        import streambatch as sb
        import shared

        held, release = threading.Event(), threading.Event()

        def hold():  # a background thread of the user's, holding its module's lock
            with shared.LOCK:
                held.set()
                release.wait(60)

        threading.Thread(target=hold, daemon=True).start()
        held.wait()
        rows = sb.range(100, override_num_blocks=4).map(shared.add_one).take_all()
        print(sorted(r["id"] for r in rows) == list(range(1, 101)))
        release.set()
    """, timeout=60, files={"shared.py": """
        import threading
        LOCK = threading.Lock()

        def add_one(row):
            with LOCK:  # the worker's own lock: never the driver's, held by its thread
                return {"id": row["id"] + 1}
    """})
    assert out.split()[-1] == "True"


def test_a_driver_running_torch_threads_runs_process_udfs_and_actors(tmp_path):
    pytest.importorskip("torch")
    out = run_driver(tmp_path, """
        import threading
        import numpy as np, torch
        import streambatch as sb

        torch.set_num_threads(2)
        x = torch.randn(512, 512)
        (x @ x).sum()  # the driver's OpenMP pool is running now
        stop = threading.Event()

        def train():  # a training loop on a thread of the driver while the job runs
            while not stop.is_set():
                (x @ x).sum()

        trainer = threading.Thread(target=train, daemon=True)
        trainer.start()

        def total(batch):
            t = torch.tensor(np.asarray(batch["id"], dtype=np.float32)).reshape(-1, 1)
            return {"y": (t @ torch.ones(1, 64)).sum(dim=1).numpy()}

        class Model:
            def __init__(self):
                torch.manual_seed(0)
                self.layer = torch.nn.Linear(1, 1)
                with torch.no_grad():
                    self.layer.weight.fill_(2.0)
                    self.layer.bias.fill_(1.0)

            def __call__(self, batch):
                t = torch.tensor(np.asarray(batch["y"], dtype=np.float32)).reshape(-1, 1)
                with torch.no_grad():
                    return {"z": self.layer(t).reshape(-1).numpy()}

        ds = sb.range(1000, override_num_blocks=4).map_batches(total, batch_format="numpy", releases_gil=False)
        ds = ds.map_batches(Model, concurrency=1, batch_format="numpy")
        got = sorted(round(float(r["z"])) for r in ds.take_all())
        print(got == sorted(2 * 64 * i + 1 for i in range(1000)))
        stop.set()
        trainer.join()
    """)
    assert out.split()[-1] == "True"


def _scale(k):
    return lambda row: {"id": row["id"] * k}


class _AddN:
    def __init__(self, n):
        self.n = n

    def __call__(self, batch: pa.Table) -> dict:
        return {"id": [v + self.n for v in batch["id"].to_pylist()]}


def _is_even(row) -> bool:
    return row["id"] % 2 == 0


@pytest.mark.parametrize("method", METHODS)
def test_lambdas_closures_and_classes_run_in_workers(method):
    sb.init(num_cpus=2, worker_start_method=method)
    offset = 1000
    ds = (sb.range(20, override_num_blocks=4)
          .map(_scale(3))                                        # a closure
          .filter(lambda r: r["id"] % 2 == 0)                     # a lambda
          .flat_map(lambda r: [r, {"id": r["id"] + offset}])      # a lambda over a local
          .map_batches(_AddN, fn_constructor_args=(1,), concurrency=1, batch_format="pyarrow", releases_gil=False)  # a class
          .filter(_is_even))                                     # a module-level function
    expected = sorted(v + 1 for i in range(20) for v in (3 * i, 3 * i + offset)
                      if (3 * i) % 2 == 0 and (v + 1) % 2 == 0)
    assert sorted(r["id"] for r in ds.take_all()) == expected


def _where_am_i(batch: pa.Table) -> dict:
    me = psutil.Process()
    return {"parent": [me.ppid()] * batch.num_rows,
            "marker": ["tests.executor.driver_marker" in sys.modules] * batch.num_rows}


class _WhereAmI:
    def __call__(self, batch: pa.Table) -> dict:
        return _where_am_i(batch)


@pytest.mark.parametrize("stage", ["task", "actor", "gpu_actor"])
def test_workers_and_actors_start_from_the_zygote_not_the_driver(stage):
    """Their parent is the zygote, and a module the driver imported is not in them."""
    sys.modules["tests.executor.driver_marker"] = sys.modules[__name__]  # driver-only state
    try:
        sb.init(num_cpus=2, num_gpus=1)
        ds = sb.range(8, override_num_blocks=2)
        if stage == "task":
            ds = ds.map_batches(_where_am_i, batch_format="pyarrow", releases_gil=False)
        else:
            ds = ds.map_batches(_WhereAmI, concurrency=1,
                                num_gpus=1 if stage == "gpu_actor" else 0, batch_format="pyarrow", releases_gil=False)
        rows = ds.take_all()
    finally:
        del sys.modules["tests.executor.driver_marker"]
    assert zygote_pid() is not None
    assert {r["parent"] for r in rows} == {zygote_pid()}
    assert {r["marker"] for r in rows} == {False}


def test_an_unpicklable_udf_fails_before_running_naming_the_variable():
    lock = threading.Lock()
    before = {c.pid for c in psutil.Process().children(recursive=True)}
    stores = set(stores_of(os.getpid()))
    ds = sb.range(4).map(lambda r: {"id": r["id"], "locked": lock.locked()})
    with pytest.raises(sb.UnpicklableUDFError) as info:
        ds.take_all()
    message = str(info.value)
    assert "closure variable 'lock'" in message and "_thread.lock" in message
    assert "releases_gil=True" in message
    assert {c.pid for c in psutil.Process().children(recursive=True)} - before <= {zygote_pid()}
    assert set(stores_of(os.getpid())) == stores
    threaded = sb.range(4).map(lambda r: {"id": r["id"], "locked": lock.locked()},
                               releases_gil=True)
    assert sorted(r["id"] for r in threaded.take_all()) == [0, 1, 2, 3]


def test_a_udf_from_a_module_workers_cannot_import_fails_naming_it():
    import types

    module = types.ModuleType("only_in_the_driver")
    exec("def double(row):\n    return {'id': row['id'] * 2}\n", module.__dict__)
    sys.modules["only_in_the_driver"] = module
    try:
        with pytest.raises(sb.WorkerSetupError, match="No module named 'only_in_the_driver'"):
            sb.range(4).map(module.double).take_all()
    finally:
        del sys.modules["only_in_the_driver"]


@pytest.mark.skipif(sys.version_info < (3, 12), reason="fork-with-threads warns from 3.12")
def test_no_fork_deprecation_warning_in_a_threaded_driver(tmp_path):
    out = run_driver(tmp_path, """
        import warnings
        warnings.simplefilter("error", DeprecationWarning)
        import streambatch as sb
        print(sb.range(100, override_num_blocks=4).map(lambda r: r).count())
        print(sb.range(100, override_num_blocks=4).map(lambda r: r).count())
    """)
    assert out.split() == ["100", "100"]


def test_a_bad_start_method_is_refused_naming_the_choices():
    with pytest.raises(ValueError, match="'forkserver', 'spawn', 'fork'"):
        sb.init(worker_start_method="threads")


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


@pytest.mark.skipif(not _cuda_available(), reason="needs torch with a CUDA device")
def test_a_driver_holding_a_cuda_tensor_runs_a_gpu_actor_stage(tmp_path):
    """A CUDA context cannot be used in a child forked from its process; actors are
    forked from the zygote, which never touched CUDA."""
    out = run_driver(tmp_path, """
        import numpy as np, torch
        import streambatch as sb

        held = torch.ones(1024, device="cuda")  # the driver's CUDA context is live

        class OnGPU:
            def __call__(self, batch):
                x = torch.as_tensor(np.asarray(batch["id"], dtype=np.float32), device="cuda")
                return {"y": (x * 2).cpu().numpy(), "dev": [torch.cuda.current_device()] * len(x)}

        sb.init(num_cpus=2, num_gpus=1)
        rows = sb.range(64, override_num_blocks=2).map_batches(
            OnGPU, num_gpus=1, concurrency=1, batch_format="numpy").take_all()
        print(sorted(float(r["y"]) for r in rows) == [2.0 * i for i in range(64)],
              float(held.sum()))
    """, timeout=180)
    assert out.split()[-2:] == ["True", "1024.0"]


def _slow_identity(batch: pa.Table) -> pa.Table:
    import time

    time.sleep(0.05)
    return batch


def test_a_killed_zygote_is_replaced_and_the_job_still_writes_every_row():
    from tests.executor.drivers import wait_until

    sb.range(4).map(lambda r: r).take_all()  # the zygote runs now
    first = zygote_pid()
    ds = sb.range(400, override_num_blocks=20).map_batches(_slow_identity, batch_size=20, batch_format="pyarrow", releases_gil=False)
    it = iter(ds.iter_batches(batch_size=20, batch_format="pyarrow"))
    got = next(it)["id"].to_pylist()
    os.kill(first, 9)  # its workers die with it (they are its children)
    got += [v for batch in it for v in batch["id"].to_pylist()]
    assert sorted(got) == list(range(400))
    wait_until(lambda: zygote_pid() not in (None, first), 5, "a new zygote")


def test_a_driver_killed_mid_job_leaves_no_zygote_and_no_worker(tmp_path):
    from tests.executor.drivers import driver, wait_for_udf_start, wait_until

    with driver("""
        import streambatch as sb
        sb.init(num_cpus=2)
        sb.range(8, override_num_blocks=2).map_batches(hang, releases_gil=False).take_all()
    """, tmp_path) as proc:
        wait_for_udf_start(proc)
        left = session_processes(proc.pid)
        assert len(left) >= 2  # the zygote and the workers
        os.kill(proc.pid, 9)
        proc.wait()
        wait_until(lambda: not session_processes(proc.pid), 5, "the zygote and workers to exit")


def test_the_zygote_started_at_import_stops_when_init_chooses_not_to_use_it(tmp_path):
    out = run_driver(tmp_path, """
        import psutil
        import streambatch as sb
        from streambatch.executor.backends.zygote import zygote_pid

        started = zygote_pid()
        sb.init(worker_start_method="fork")
        print(started is not None, psutil.pid_exists(started), zygote_pid())
        print(sb.range(10, override_num_blocks=2).map(lambda r: r).count())
    """)
    assert out.split() == ["True", "False", "None", "10"]


def _uses_pil(batch: pa.Table) -> dict:
    import PIL.Image  # noqa: F401 - the zygote imported it already: no cost here

    return {"n": [batch.num_rows]}


def test_installed_modules_the_udfs_use_are_imported_once_in_the_zygote():
    """PIL (like torch, ~1 s to import) is loaded in the zygote before it forks: every
    worker and actor has it for free."""
    pytest.importorskip("PIL.Image")
    import PIL.Image

    def resize(batch: pa.Table) -> dict:  # by value: references the PIL.Image module
        return {"w": [PIL.Image.new("RGB", (4, 2)).size[0]] * batch.num_rows}

    assert [r["w"] for r in sb.range(4, override_num_blocks=1).map_batches(resize, batch_format="pyarrow", releases_gil=False)
            .take_all()] == [4] * 4
    with open(f"/proc/{zygote_pid()}/maps") as maps:
        assert "PIL/_imaging" in maps.read()


def test_a_module_whose_import_starts_a_thread_is_left_to_the_workers(tmp_path):
    site = tmp_path / "site-packages"  # looks installed: the zygote would preload it
    site.mkdir()
    (site / "starts_a_thread.py").write_text(
        "import threading, time\n"
        "threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n"
        "def double(row):\n    return {'id': row['id'] * 2}\n")
    sys.path.insert(0, str(site))
    try:
        import starts_a_thread

        sb.range(2).map(lambda r: r).count()  # the zygote runs
        before = zygote_pid()
        ds = sb.range(6, override_num_blocks=2).map(lambda r: starts_a_thread.double(r))
        assert sorted(r["id"] for r in ds.take_all()) == [0, 2, 4, 6, 8, 10]
        assert zygote_pid() != before  # it exited instead of forking with a thread
        from streambatch.executor.backends.zygote import _THREADED_IMPORTS
        assert "starts_a_thread" in _THREADED_IMPORTS
    finally:
        sys.path.remove(str(site))
        sys.modules.pop("starts_a_thread", None)


@pytest.mark.parametrize("method", ["forkserver", pytest.param(  # (the same reseed runs in
    "fork", marks=[FORKS_ON_PURPOSE, pytest.mark.slow])])  # every worker: fork is the slow run's)
def test_numpys_and_torchs_global_generators_differ_between_workers_and_jobs(tmp_path, method):
    """A UDF drawing from np.random or torch.rand in worker processes: forked with them
    imported (the driver used pandas and torch), each worker drew the same numbers, in
    every job (random augmentations repeated across partitions and epochs; Ray Data's
    fresh workers draw distinct ones)."""
    out = run_driver(tmp_path, f"""
        import numpy as np, pandas as pd, torch
        import streambatch as sb
        sb.init(num_cpus=2, progress=False, worker_start_method={method!r})
        def noisy(row):
            return {{"id": row["id"], "x": float(np.random.normal()),
                     "t": float(torch.rand(1))}}
        ds = sb.range(200, override_num_blocks=4).map(noisy, releases_gil=False)
        runs = [ds.take_all() for _ in range(2)]
        for key in ("x", "t"):
            print(len({{r[key] for r in runs[0]}}), len({{r[key] for run in runs for r in run}}))
    """)
    assert out.split() == ["200", "400", "200", "400"], out
