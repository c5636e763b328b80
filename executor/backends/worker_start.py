"""How the local backend starts a worker process: from the zygote (the default), in a
fresh interpreter ("spawn"), or forked from the driver ("fork", opt-in).

"forkserver" and "spawn" workers never share the driver's threads, locks or CUDA
state; they get the job's stages by cloudpickle (closures and lambdas included,
as Ray ships them), with Arrow tables and numpy arrays of 1 MiB or more put once in the job's
shared-memory store instead of copied into every worker. "fork" inherits the
plan for free and is safe only while the driver holds no threads (a driver that
used Polars, torch or CUDA does).

>>> import streambatch as sb
>>> sb.init(num_cpus=1, worker_start_method="spawn").execution_options.local.worker_start_method
'spawn'
>>> sb.range(4).map(lambda r: {"y": r["id"] * 2}).take_all()
[{'y': 0}, {'y': 2}, {'y': 4}, {'y': 6}]
>>> _ = sb.init()
"""

from __future__ import annotations

import io
import multiprocessing
import os
import sys
import types
from dataclasses import dataclass, replace

import pyarrow as pa
from streambatch.executor.backends.heap import HEAP_BYTES
from streambatch.executor.contract import TaskStage

SHARED_TABLE_BYTES = 1 << 20  # a table or array this big travels through the store


@dataclass(frozen=True)
class Shipped:
    """A job's stages as workers get them (one pickle per stage; None for a stage that
    runs in the driver), and per stage the installed modules its UDFs use: the zygote
    imports them once before it forks, so that each worker need not (torch: ~1 s)."""

    blobs: tuple
    modules: tuple

    def served(self, actor_stage: int | None, stages: list) -> list[int]:
        """The stages a worker runs: an actor its own, a task worker every task stage
        that runs in processes (it never loads an actor stage's model code)."""
        if actor_stage is not None:
            return [actor_stage]
        return [i for i, s in enumerate(stages) if may_use_processes(s) and not s.uses_actors
                and self.blobs[i] is not None]

    def preload(self, served: list[int]) -> tuple[str, ...]:
        """The installed modules to import in the zygote before forking such a worker."""
        return tuple(sorted({m for i in served for m in self.modules[i]}))

    def blobs_for(self, served: list[int]) -> tuple:
        """The stage pickles such a worker gets (None for the others)."""
        return tuple(b if i in served else None for i, b in enumerate(self.blobs))


def ship_stages(stages: list, store) -> Shipped:
    """The stages cloudpickled for workers; big Arrow tables and numpy arrays go to
    ``store`` by reference; read tasks travel with their tasks; a stage that runs in
    the driver is not shipped (it may hold what cannot travel: a lookup reporting to
    the user's cache).

    A UDF that cannot be pickled raises ``UnpicklableUDFError`` naming the stage,
    the UDF and the unpicklable object in it; in a stage that may also run on threads
    (worker "auto") it is not shipped (None), and the stage stays on threads.
    """
    blobs: list[bytes | None] = []
    modules: list[tuple[str, ...]] = []
    for stage in stages:
        if not may_use_processes(stage):
            blobs.append(None)
            modules.append(())
            continue
        try:
            blob, used = _ship_one(_without_reads(stage), store)
        except Exception as exc:  # noqa: BLE001 - explained per UDF below
            if not runs_in_processes(stage):
                blobs.append(None)
                modules.append(())
                continue
            _raise_unpicklable(stages, exc)
        blobs.append(blob)
        modules.append(installed_modules(used))
    return Shipped(tuple(blobs), tuple(modules))


def _ship_one(stage, store) -> tuple[bytes, set[str]]:
    import cloudpickle
    import numpy as np

    used: set[str] = set()

    class Shipper(cloudpickle.Pickler):
        def reducer_override(self, obj):
            if isinstance(obj, types.ModuleType):
                used.add(obj.__name__)
            elif isinstance(obj, (types.FunctionType, type)):
                used.add(getattr(obj, "__module__", None) or "")
            if type(obj) is pa.Table and obj.nbytes >= SHARED_TABLE_BYTES:
                return _shared_table, (store.put(obj).path,)
            if type(obj) is np.ndarray and obj.nbytes >= SHARED_TABLE_BYTES \
                    and not obj.dtype.hasobject:
                return _shared_array, (store.put_array(obj),)
            if type(obj) is types.CodeType:
                return _code_with_its_file(obj)
            return super().reducer_override(obj)

    buffer = io.BytesIO()
    Shipper(buffer, protocol=5).dump(stage)
    return buffer.getvalue(), used


def installed_modules(names) -> tuple[str, ...]:
    """Of the modules ``names``, those loaded here from an installed package (not
    streambatch, not ``__main__``, not the user's own files, whose import may depend on
    state set later): what the zygote may import on the workers' behalf.

    >>> installed_modules(["numpy", "__main__", "streambatch.dataset", "no_such_module"])
    ('numpy',)
    """
    roots = tuple(p for p in sys.path if p and ("site-packages" in p or "dist-packages" in p))
    keep = []
    for name in sorted(set(names)):
        module = sys.modules.get(name)
        path = getattr(module, "__file__", None) or ""
        if name.split(".")[0] in ("streambatch", "__main__", "builtins") or not path:
            continue
        if path.startswith(roots):
            keep.append(name)
    return tuple(keep)


def runs_in_processes(stage) -> bool:
    """True when the stage's tasks run in worker processes or actors."""
    return isinstance(stage, TaskStage) and (stage.worker == "process" or stage.uses_actors)


def may_use_processes(stage) -> bool:
    """True when the stage's tasks run, or may move (worker "auto"), to worker processes."""
    return runs_in_processes(stage) or (isinstance(stage, TaskStage) and stage.worker == "auto")


def _without_reads(stage):
    """The stage as a worker needs it: its read tasks (a source's data, for in-memory
    sources) are sent with each task instead (see :func:`ship_read`)."""
    if not stage.is_source:
        return stage
    return replace(stage, read_tasks=None, read_tasks_fn=_read_tasks_travel_with_tasks)


def _read_tasks_travel_with_tasks():  # pragma: no cover - never called in a worker
    raise RuntimeError("a worker gets each read task with its task")


def ship_read(task, stage):
    """``task`` carrying its read task (cloudpickled), for a worker started clean."""
    if task.read_index is None:
        return task
    import cloudpickle
    from streambatch.executor.arrow_pickle import register

    register()  # (a read task may hold tables of C++-only extension types)
    return replace(task, read_payload=cloudpickle.dumps(stage.read_tasks[task.read_index]))


def _code_with_its_file(code: types.CodeType):
    """cloudpickle's reduction of a function's code, keeping its file name (cloudpickle
    writes "<dynamic-code>"): a worker's traceback then names the UDF's file and line."""
    import cloudpickle

    reduce = getattr(cloudpickle.cloudpickle, "_code_reduce", None)
    if reduce is None:  # pragma: no cover - another cloudpickle: its own reduction
        return NotImplemented
    make, args = reduce(code)
    return make, tuple(code.co_filename if a == "<dynamic-code>" else a for a in args)


def _shared_array(path: str):
    """A numpy array the driver put in the store, mapped copy-on-write (writable; writes
    stay in this worker)."""
    import numpy as np

    return np.load(path, mmap_mode="c", allow_pickle=False)


def _shared_table(path: str) -> pa.Table:
    """A table the driver put in the store for the workers (read zero-copy)."""
    with pa.memory_map(path) as source:
        return pa.ipc.open_file(source).read_all()


def _raise_unpicklable(stages: list, exc: Exception) -> None:
    from streambatch.executor.backends.udf_pickle import UnpicklableUDFError, dumps_udf

    for stage in filter(runs_in_processes, stages):
        for op in stage.ops:
            udf = getattr(getattr(op, "op", None), "fn", None)
            if udf is not None:
                dumps_udf(udf, stage.name)  # raises, naming what is wrong, if it is the UDF
    raise UnpicklableUDFError("(plan)", "the plan", "a part of the plan that is not a UDF",
                              type(exc).__name__, f"{type(exc).__name__}: {exc}") from exc


START_ATTEMPTS = 3  # a worker killed before it took its setup is replaced this often


def start_worker(method: str, stages: list, shipped: Shipped | None, store_root: str,
                 target_bytes: int, inherited: list, env: dict | None, actor: tuple | None,
                 heap_bytes: int = HEAP_BYTES):
    """Start one worker; returns (its process handle, the driver's connection to it).
    ``heap_bytes``: the freed memory a task worker keeps for its next task. A worker
    that dies between its fork and its setup (a SIGKILL, the OOM killer) is replaced,
    up to START_ATTEMPTS times, instead of failing the job."""
    if method == "fork":
        return _fork(stages, store_root, target_bytes, inherited, env, actor, heap_bytes)
    from streambatch.executor.backends.zygote import driver_sys_path, fork_worker, spawn

    if shipped is None:
        raise ValueError(f"worker_start_method={method!r} starts workers that get the stages "
                         "shipped: pass ship_stages()'s result")
    served = shipped.served(actor[1] if actor else None, stages)
    setup = (dict(os.environ), os.getcwd(), driver_sys_path(), shipped.blobs_for(served),
             store_root, target_bytes, heap_bytes, env, actor)
    for attempt in range(START_ATTEMPTS):
        child = fork_worker(shipped.preload(served)) if method == "forkserver" else spawn()
        try:
            child.conn.send(setup)
            return child, child.conn
        except OSError:  # it died before taking its setup (killed, out of memory): again
            child.kill()
            child.join(5)
            child.conn.close()
            if attempt + 1 == START_ATTEMPTS:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _fork(stages, store_root, target_bytes, inherited, env, actor, heap_bytes):
    from streambatch.executor.backends.process_worker import worker_main

    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe(duplex=True)
    proc = ctx.Process(target=worker_main, daemon=True, name="streambatch-worker",
                       args=(child, stages, store_root, target_bytes, inherited, env, actor,
                             heap_bytes))
    proc.start()
    child.close()
    return proc, parent
