"""The real sample of the scheduler sweep (issue 20): generated pipelines run on the real
local backend (sleep-based stages, logical CPU=8, GPU=4), each beside the simulator's
time for the same spec, and the first few on Ray Data 2.60 too.

``real_sample(count, ray_count)`` (called by ``scheduler_sweep.py --real N --ray M``):

1. **Calibrates the per-task cost.** Two jobs of tiny tasks (sleep 0, 1 KiB rows: a read
   of T one-row tasks, then a ``batch_size=1`` map) at T = 50 and 400 give the real
   marginal cost of one more pair of tasks; the simulator's ``seconds_per_task`` is set
   so that the simulated job grows by the same seconds (it charges the cost inside each
   task, on its slot: 8 in parallel; the real cost is mostly the driver's, one task
   after another, so the two are reported).
2. **Draws the pipelines**: ``generate(seed, num_cpus=8, num_gpus=4, seconds=(3, 8))``
   from seed 0 on, then, with ``dataclasses.replace``: every stage's bytes scaled down
   (with the budget, so the within-budget bound is unchanged) until no stage makes more
   than ``STAGE_BYTES_CAP``; read tasks cut (not below 8) when the optimum within the
   budget is over ``MAX_OPTIMUM_S`` (a pipeline of one row per read task cannot be made
   shorter otherwise), and skipped if still over; ``seconds_per_task`` = the calibrated
   cost. Sim and real run that same spec.
3. **Runs each** on the local backend in a fresh process (``_sweep_real_job.py``): the
   job's time, rows each delivered once, peak buffered bytes against the budget;
   efficiency = ``bounds(spec).within_budget / real time``; the simulator's time for
   the spec; real/sim.
4. **Ray Data** on the first ``ray_count``: same code (Datasource + map_batches with
   the same resources; ``ray.init(num_cpus=8, num_gpus=4)``, the budget as Ray Data's
   object store limit), fresh process each; streambatch time / Ray time.

"sim own-target s" is the simulator's time when every task's output is cut at the
backend's own target, as the local backend does today (it ignores ``Task.target_bytes``):
where it differs from "sim s", that is a known cause of a real/sim gap.

With ``SWEEP_REAL_TRACES=DIR`` each streambatch job's Chrome trace is kept there.

Prints the table and a summary line (median, 10th-percentile and worst efficiency,
share within 10% of the simulator, max peak buffered / budget) and returns them.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _sweep_real_job import stage_rows  # noqa: E402
from _util import MiB, print_table, run_python  # noqa: E402

NUM_CPUS, NUM_GPUS = 8, 4
SECONDS = (3.0, 8.0)  # generate()'s target optimum
MAX_OPTIMUM_S = 8.0  # a longer pipeline gets fewer read tasks (or is skipped)
MIN_READS = 8
STAGE_BYTES_CAP = 128 * MiB  # the most bytes one stage makes
MIN_ROW_BYTES = 16  # 8 bytes of row number + at least 8 of data
WITHIN = 0.10  # real within +-10% of the simulator
CALIBRATION_TASKS = (50, 400)
CALIBRATION_RUNS = 3  # the median of these
JOB = HERE / "_sweep_real_job.py"


# ---- specs ---------------------------------------------------------------------------

def sample_specs(count: int, seconds_per_task: float, first_seed: int = 0,
                 tries: int = 400) -> list[tuple[int, object, str]]:
    """``count`` pipelines: (seed, spec, what was changed), see the module docstring."""
    from streambatch.executor.sim_workloads import bounds, generate

    out = []
    for seed in range(first_seed, first_seed + tries):
        if len(out) == count:
            break
        spec = replace(generate(seed, num_cpus=NUM_CPUS, num_gpus=NUM_GPUS, seconds=SECONDS),
                       seconds_per_task=seconds_per_task)
        notes = []
        spec, note = _cap_bytes(spec)
        notes += [note] if note else []
        within = bounds(spec).within_budget
        if within > MAX_OPTIMUM_S and spec.source.read_tasks > MIN_READS:
            reads = max(MIN_READS, int(spec.source.read_tasks * 0.8 * MAX_OPTIMUM_S / within))
            notes.append(f"reads {spec.source.read_tasks}->{reads}")
            spec = replace(spec, source=replace(spec.source, read_tasks=reads))
            within = bounds(spec).within_budget
        if within > MAX_OPTIMUM_S:
            continue
        out.append((seed, spec, ", ".join(notes)))
    return out


def _cap_bytes(spec):
    """The spec with every stage's bytes scaled by one factor (and the budget with them)
    so that no stage makes more than STAGE_BYTES_CAP, nor a row under MIN_ROW_BYTES."""
    per_row = spec.bytes_per_row()
    most = max(per_row) * spec.source.rows
    if most <= STAGE_BYTES_CAP:
        return spec, ""
    factor = max(STAGE_BYTES_CAP / most, MIN_ROW_BYTES / min(per_row))
    if factor >= 1:
        return spec, ""
    source = replace(spec.source, bytes_per_row=spec.source.bytes_per_row * factor)
    budget = int(spec.budget_bytes * factor) if spec.budget_bytes else None
    return replace(spec, source=source, budget_bytes=budget), f"bytes x{factor:.3g}"


def job_params(spec, engine: str) -> dict:
    """What ``_sweep_real_job.py`` builds for ``spec`` (bytes per row as whole bytes)."""
    per_row = spec.bytes_per_row()
    src = spec.source
    stages = []
    for s, nbytes in zip(spec.stages, per_row[1:], strict=True):
        stages.append({"name": s.name, "seconds_per_row": s.seconds_per_row,
                       "bytes_per_row": max(MIN_ROW_BYTES, round(nbytes)),
                       "batch_rows": s.batch_rows, "num_cpus": s.num_cpus,
                       "num_gpus": s.num_gpus, "uses_actors": s.uses_actors,
                       "actors": list(s.actors) if s.actors else None,
                       "startup_s": s.startup_s})
    return {"engine": engine, "num_cpus": spec.num_cpus, "num_gpus": spec.num_gpus,
            "budget": int(spec.budget_bytes) if spec.budget_bytes else None,
            "source": {"read_tasks": src.read_tasks, "rows_per_task": src.rows_per_task,
                       "seconds_per_row": src.seconds_per_row,
                       "bytes_per_row": max(MIN_ROW_BYTES, round(src.bytes_per_row))},
            "stages": stages}


# ---- running -------------------------------------------------------------------------

def run_job(spec, engine: str, timeout: float = 300, trace: str | None = None) -> dict:
    """Run ``spec`` on ``engine`` in a fresh process; its result (``job_s``, rows, ...).
    Raises SystemExit if a row was lost or delivered twice. ``trace``: streambatch's
    Chrome trace of every task goes there."""
    with tempfile.TemporaryDirectory(prefix="sb-sweep-real-") as td:
        params, result = os.path.join(td, "params.json"), os.path.join(td, "result.json")
        Path(params).write_text(json.dumps(job_params(spec, engine) | {"trace": trace}))
        code = (f"import runpy, sys\nsys.argv = ['job', {params!r}, {result!r}]\n"
                f"runpy.run_path({str(JOB)!r}, run_name='__main__')\n")
        r = run_python(code, timeout=timeout, interval=0.05, scan_interval=0.5)
        if r.rc != 0 or not os.path.exists(result):
            raise SystemExit(f"FAILED: {engine} job exited with {r.rc}\n{r.stderr[-4000:]}")
        out = json.loads(Path(result).read_text())
    out["process_s"] = r.wall_s
    if out["missing"] or out["twice"]:
        raise SystemExit(f"FAILED: {engine}: {out['missing']} rows missing, {out['twice']} "
                         f"delivered twice, in {spec}")
    return out


def calibration_spec(tasks: int, seconds_per_task: float = 0.0):
    """The calibration job: ``tasks`` one-row read tasks, then a batch_size=1 map, no
    sleeping, 1 KiB rows."""
    from streambatch.executor.simulation import PipelineSpec, SourceSpec, StageSpec

    return PipelineSpec(SourceSpec(tasks, 1, 0.0, 1024), (StageSpec("Map1", 0.0, 1.0, 1),),
                        num_cpus=NUM_CPUS, num_gpus=NUM_GPUS, seconds_per_task=seconds_per_task)


def calibrate() -> dict:
    """The real per-task cost, and the simulator's ``seconds_per_task`` that reproduces
    it (see the module docstring)."""
    from streambatch.executor.simulation import simulate

    small, large = CALIBRATION_TASKS
    real = {n: statistics.median(run_job(calibration_spec(n), "streambatch")["job_s"]
                                 for _ in range(CALIBRATION_RUNS)) for n in (small, large)}
    slope = real[large] - real[small]  # seconds for (large - small) more reads and maps

    def sim_slope(o: float) -> float:
        return simulate(calibration_spec(large, o)).seconds - \
            simulate(calibration_spec(small, o)).seconds

    low, high = 0.0, 1.0
    for _ in range(30):
        mid = (low + high) / 2
        low, high = (mid, high) if sim_slope(mid) < slope else (low, mid)
    per_task = (low + high) / 2
    serial = slope / (2 * (large - small))
    print(f"calibration: {small} / {large} one-row read tasks + as many batch_size=1 map "
          f"tasks (sleep 0) took {real[small]:.2f} / {real[large]:.2f} s: {serial * 1e3:.1f} "
          f"ms per task one after another (the driver's); the simulator charges "
          f"seconds_per_task inside each task, {NUM_CPUS} at once: "
          f"{per_task * 1e3:.1f} ms reproduces the same growth; fixed cost of a job "
          f"~{real[small] - 2 * small * serial:.2f} s", flush=True)
    return {"seconds_per_task": per_task, "serial_seconds_per_task": serial,
            "job_s": {str(k): v for k, v in real.items()}}


def simulate_own_target(spec) -> float:
    """The simulator's time for ``spec`` when every task's output is cut at the backend's
    own target, as executor/backends/local.py does today (it does not read
    ``Task.target_bytes``, the per-task size the executor asks for)."""
    from streambatch.executor import clock
    from streambatch.executor.backends.simulated import SimulatedBackend
    from streambatch.executor.options import ExecutionOptions
    from streambatch.executor.simulation import UNLIMITED, costs_of, physical_stages
    from streambatch.executor.streaming import StreamingExecutor

    class OwnTarget(SimulatedBackend):
        def submit(self, task) -> None:
            super().submit(replace(task, target_bytes=None))

    options = ExecutionOptions(num_cpus=max(1, int(spec.num_cpus)), num_gpus=spec.num_gpus,
                               memory_budget=spec.budget_bytes or UNLIMITED,
                               scheduler=spec.scheduler)
    backend = OwnTarget(costs_of(spec), spec.num_cpus, spec.num_gpus)
    with clock.use(backend.clock):
        for _ in StreamingExecutor(physical_stages(spec), backend, options).run():
            pass
    return backend.clock()


def _one(seed: int, spec, note: str, with_ray: bool) -> dict:
    from streambatch.executor.sim_workloads import bounds
    from streambatch.executor.simulation import simulate

    b = bounds(spec)
    sim = simulate(spec)
    traces = os.environ.get("SWEEP_REAL_TRACES")  # a folder: keep each job's trace there
    if traces:
        os.makedirs(traces, exist_ok=True)
    real = run_job(spec, "streambatch",
                   trace=os.path.join(traces, f"seed{seed}.json") if traces else None)
    budget = real["budget"]
    rec = {"seed": seed, "stages": len(spec.stages) + 1, "note": note,
           "kinds": "-".join(("G" if s.num_gpus else "A" if s.uses_actors else "C")
                             for s in spec.stages),
           "rows": spec.source.rows, "read_tasks": spec.source.read_tasks,
           "budget": spec.budget_bytes, "optimum": b.optimum, "within": b.within_budget,
           "sim_s": sim.seconds, "sim_own_target_s": simulate_own_target(spec), "real_s": real["job_s"], "process_s": real["process_s"],
           "real_over_sim": real["job_s"] / sim.seconds,
           "efficiency": b.within_budget / real["job_s"],
           "sim_efficiency": b.within_budget / sim.seconds,
           "peak": real["peak_buffered_bytes"], "engine_budget": budget,
           "peak_over_budget": real["peak_buffered_bytes"] / budget,
           "sim_peak_over_budget": sim.peak_buffered_bytes / sim.budget_bytes,
           "over": real["peak_buffered_bytes"] > budget, "stats": real["stats"],
           "real_stages": real["stages"], "sim_stages": stage_rows(sim.stats),
           "ray_s": None, "sb_over_ray": None}
    if with_ray:
        ray = run_job(spec, "ray", timeout=600)
        rec["ray_s"], rec["sb_over_ray"] = ray["job_s"], real["job_s"] / ray["job_s"]
    return rec


def compare(rec: dict) -> str:
    """Stage by stage, real vs simulated: tasks, task seconds, first start and last end
    (seconds after the job's first task started)."""
    parts = []
    for i, (real, sim) in enumerate(zip(rec["real_stages"], rec["sim_stages"], strict=True)):
        parts.append(f"s{i} tasks {real[0]}/{sim[0]} task-s {real[1]:.1f}/{sim[1]:.1f} "
                     f"start {real[2]:.2f}/{sim[2]:.2f} end {real[3]:.2f}/{sim[3]:.2f}")
    outside = rec["real_s"] - max(real[3] for real in rec["real_stages"])
    return "; ".join(parts) + f" (real/sim); real job outside its tasks {outside:.2f} s"


def summarize(records: list[dict], calibration: dict) -> dict:
    """Median, 10th percentile and worst efficiency; share within 10% of the simulator;
    peak buffered / budget."""
    effs = sorted(r["efficiency"] for r in records)
    ratios = [r["real_over_sim"] for r in records]
    within = sum(abs(x - 1) <= WITHIN for x in ratios) / len(ratios)
    ray = [r["sb_over_ray"] for r in records if r["sb_over_ray"] is not None]
    return {"pipelines": len(records), "median": statistics.median(effs),
            "p10": effs[int(0.1 * (len(effs) - 1))], "worst": effs[0],
            "sim_median": statistics.median(r["sim_efficiency"] for r in records),
            "share_within_10pct_of_sim": within,
            "median_real_over_sim": statistics.median(ratios),
            "max_peak_over_budget": max(r["peak_over_budget"] for r in records),
            "over_budget": sum(r["over"] for r in records),
            "ray_runs": len(ray), "median_sb_over_ray": statistics.median(ray) if ray else None,
            "seconds_per_task": calibration["seconds_per_task"]}


def real_sample(count: int, ray_count: int) -> dict:
    """Run ``count`` generated pipelines on the local backend (and the first
    ``ray_count`` on Ray Data); print the table and summary; return them."""
    start = time.perf_counter()
    calibration = calibrate()
    specs = sample_specs(count, calibration["seconds_per_task"])
    records = []
    for i, (seed, spec, note) in enumerate(specs):
        rec = _one(seed, spec, note, i < ray_count)
        records.append(rec)
        ray = f", Ray {rec['ray_s']:.2f} s" if rec["ray_s"] is not None else ""
        print(f"  seed {seed}: {rec['kinds']}, real {rec['real_s']:.2f} s, sim "
              f"{rec['sim_s']:.2f} s, bound {rec['within']:.2f} s{ray}", flush=True)
    for r in records:
        if abs(r["real_over_sim"] - 1) > WITHIN:
            print(f"  seed {r['seed']} real/sim {r['real_over_sim']:.2f}: " + compare(r))
    print_table(["seed", "stages", "kinds", "opt in budget s", "sim s", "sim own-target s",
                 "real s", "real/sim", "efficiency", "peak/budget", "Ray s", "sb/Ray", "changed"],
                [[r["seed"], r["stages"], r["kinds"], f"{r['within']:.2f}", f"{r['sim_s']:.2f}",
                  f"{r['sim_own_target_s']:.2f}", f"{r['real_s']:.2f}", f"{r['real_over_sim']:.2f}", f"{r['efficiency']:.0%}",
                  f"{r['peak_over_budget']:.0%}" + ("" if r["budget"] else " (dflt)"),
                  "-" if r["ray_s"] is None else f"{r['ray_s']:.2f}",
                  "-" if r["sb_over_ray"] is None else f"{r['sb_over_ray']:.2f}", r["note"]]
                 for r in records])
    s = summarize(records, calibration)
    ray = f"; streambatch/Ray median {s['median_sb_over_ray']:.2f} over {s['ray_runs']}" \
        if s["ray_runs"] else ""
    print(f"real (local backend, {s['pipelines']} pipelines, seconds_per_task "
          f"{s['seconds_per_task'] * 1e3:.1f} ms): efficiency median {s['median']:.1%}, 10th "
          f"percentile {s['p10']:.1%}, worst {s['worst']:.1%} (simulated median "
          f"{s['sim_median']:.1%}); real within +-10% of the simulator: "
          f"{s['share_within_10pct_of_sim']:.0%} (median real/sim "
          f"{s['median_real_over_sim']:.2f}); peak buffered / budget max "
          f"{s['max_peak_over_budget']:.0%}, {s['over_budget']} over budget{ray} "
          f"[{time.perf_counter() - start:.0f} s]")
    return {"summary": s, "calibration": calibration, "records": records}


if __name__ == "__main__":
    real_sample(int(sys.argv[1]) if len(sys.argv) > 1 else 3,
                int(sys.argv[2]) if len(sys.argv) > 2 else 0)
