"""Run one case's pipeline: ``python -m tests.property.driver CASE_DIR MODE``.

MODE: ``first`` (the spec's ``run`` settings), ``resume`` (a write resumed with the
spec's ``resume`` settings) or ``again`` (a second resume, with ``run``'s settings).

Reads ``CASE_DIR/spec.json``, builds the dataset, runs the consumer and writes
``CASE_DIR/result-<mode>.json``: status (ok / error), the error, the output rows in
canonical form (not for writes: the harness reads the files), the batch sizes, the
dead letters (op label and row JSON) and, while iterating, each batch's rows as a
line of ``partial.jsonl`` plus ``BATCH n`` on stdout (the harness's Ctrl-C cue).
On KeyboardInterrupt it prints ``KEYBOARDINTERRUPT`` and exits 130.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback


def build_dataset(spec: dict, case_dir: str):
    import streambatch as sb
    from tests.property import gen
    from tests.property.udfs import BatchFn, RowFn, actor_class

    data = spec["data"]
    source, blocks = data["source"], data["blocks"]
    if source == "range":
        ds = sb.range(data["n"], override_num_blocks=blocks)
    elif source == "items":
        ds = sb.from_items(gen.build_rows(data), override_num_blocks=blocks)
    elif source == "arrow":
        tables = gen.build_tables(data)
        ds = sb.from_arrow(tables) if tables else sb.from_items([])
    elif source == "parquet":
        files = sorted(os.listdir(os.path.join(case_dir, "input")))
        ds = (sb.read_parquet(os.path.join(case_dir, "input")) if files else sb.from_items([]))
    elif source == "numpy":
        arrays = gen.build_numpy(data)
        ds = sb.from_numpy(arrays) if arrays else sb.from_items([])
    else:
        raise ValueError(source)
    for op in spec["ops"]:
        for fault in ("kill", "hang"):
            if op.get(fault):
                op[fault]["flag"] = os.path.join(case_dir, f"flag-{fault}-{op['name']}")
        kind, on_error = op["op"], op["on_error"]
        size = {} if op.get("batch_size") == "default" else {"batch_size": op.get("batch_size")}
        if kind == "map":
            ds = ds.map(RowFn(op), on_error=on_error)
        elif kind == "flat_map":
            ds = ds.flat_map(RowFn(op), on_error=on_error)
        elif kind == "filter":
            ds = ds.filter(RowFn(op), on_error=on_error)
        elif kind == "map_batches":
            # a fault that kills or hangs its worker needs one: threads are the driver
            where = {"releases_gil": False} if op.get("kill") or op.get("hang") else {}
            ds = ds.map_batches(BatchFn(op), batch_format=op["batch_format"], on_error=on_error,
                                **size, **where)
        elif kind == "actor":
            conc = op["concurrency"]
            ds = ds.map_batches(actor_class(op["j"]), fn_constructor_args=(op, op["k"]),
                                concurrency=tuple(conc) if isinstance(conc, list) else conc,
                                batch_format=op["batch_format"], on_error=on_error, **size)
        else:
            raise ValueError(kind)
    return ds


def dead_letters(ds) -> list[dict]:
    table = ds.dead_letters()
    return [{"op": r.get("op"), "row": r.get("row"), "error": r.get("error")}
            for r in table.to_pylist()]


class _UserStop(Exception):
    """Raised by the consumer's own loop body (not by the engine)."""


def leftovers(grace: float = 3.0) -> dict:
    """What the finished (or failed) job left running in this process: child processes
    and shared-memory stores named after this pid (given ``grace`` seconds to go).

    The garbage collector is kept out of it: a job that returned or raised must have
    stopped its workers itself, not leave them to whenever a cycle is collected (a
    collection in a later job's forked worker would then run this job's shutdown
    there)."""
    import gc

    import psutil
    from streambatch.executor.backends.zygote import zygote_pid

    from tests.property.harness import stores_of

    gc.disable()  # (main() disabled it already; a caller of this alone needs it too)
    deadline = time.monotonic() + grace
    while True:
        children = [f"{c.pid} {c.name()}" for c in psutil.Process().children(recursive=True)
                    if c.status() != psutil.STATUS_ZOMBIE and c.pid != zygote_pid()]
        stores = [os.path.basename(p) for p in stores_of({os.getpid()})]
        if not children and not stores or time.monotonic() > deadline:
            return {"children": children, "stores": stores}
        time.sleep(0.05)


def main(case_dir: str, mode: str) -> int:
    import signal

    # A harness started in the background by a shell (``cmd &``) has SIGINT ignored,
    # and so would this driver: the harness's Ctrl-C would then not reach the job.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.environ["SBPROP_DRIVER_PID"] = str(os.getpid())
    with open(os.path.join(case_dir, "spec.json")) as handle:
        spec = json.load(handle)
    if spec["fault"].startswith("sigint"):
        # pyarrow imports pandas lazily the first time a conversion needs it, and a
        # KeyboardInterrupt landing in that import is swallowed by pyarrow's shim:
        # import it now, so that the harness's Ctrl-C tests the engine, not pyarrow.
        import pandas  # noqa: F401
    import streambatch as sb
    from tests.property.canon import row_key, table_rows

    run = spec["run"] if mode in ("first", "again") else spec["resume"]
    sb.init(num_cpus=run["num_cpus"], memory_budget=run["memory_budget"])
    consumer = spec["consumer"]
    result: dict = {"status": "ok", "pid": os.getpid(), "mode": mode}
    ds = None
    import gc

    gc.disable()  # see leftovers(): cleanup must not wait for a cycle collection
    try:
        ds = build_dataset(spec, case_dir)
        kind = consumer["kind"]
        if kind == "take_all":
            result["rows"] = [row_key(r) for r in ds.take_all()]
        elif kind == "iter_rows":
            result["rows"] = [row_key(r) for r in ds.iter_rows()]
        elif kind == "iter_batches":
            rows, sizes = [], []
            with open(os.path.join(case_dir, "partial.jsonl"), "a") as partial:
                for n, batch in enumerate(ds.iter_batches(batch_size=consumer["batch_size"],
                                                          batch_format="pyarrow")):
                    keys = [row_key(r) for r in table_rows(batch)]
                    rows += keys
                    sizes.append(batch.num_rows)
                    partial.write(json.dumps(keys) + "\n")
                    partial.flush()
                    print(f"BATCH {n}", flush=True)
            result["rows"], result["batch_sizes"] = rows, sizes
        elif kind == "iter_stop":  # the loop is left early: the job must stop and clean up
            rows = []
            try:
                for n, batch in enumerate(ds.iter_batches(batch_size=consumer["batch_size"],
                                                          batch_format="pyarrow")):
                    rows += [row_key(r) for r in table_rows(batch)]
                    if n + 1 >= consumer["after"]:
                        if consumer["how"] == "break":
                            break
                        raise _UserStop
            except _UserStop:
                pass
            result["rows"] = rows
        elif kind == "write":
            files = ds.write_parquet(os.path.join(case_dir, "out"), resume=mode != "first",
                                     partition_cols=consumer.get("partition_cols"))
            result["files"] = files
        else:
            raise ValueError(kind)
    except KeyboardInterrupt:
        print("KEYBOARDINTERRUPT", flush=True)
        return 130
    except Exception as exc:  # the harness judges whether an error was expected
        result["status"] = "error"
        result["error"] = "".join(traceback.format_exception(exc))[-6000:]
        result["error_type"] = type(exc).__name__
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a late Ctrl-C must not cut the checks short
    result["left_after_job"] = leftovers()
    if ds is not None:
        try:
            result["dead"] = dead_letters(ds)
        except Exception as exc:
            result["dead_error"] = f"{type(exc).__name__}: {exc}"
    path = os.path.join(case_dir, f"result-{mode}.json")
    with open(path + ".tmp", "w") as handle:
        json.dump(result, handle, default=str)
    os.replace(path + ".tmp", path)
    print("DONE", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
