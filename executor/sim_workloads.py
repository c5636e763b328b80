"""Random pipelines for the scheduler sweep, and the best any schedule could do on them.

:func:`generate` draws a linear pipeline of 2-5 stages (a read, then CPU tasks, CPU
actor pools and GPU actor pools) with per-row times from 1 ms to 1 s, output/input
size ratios from 0.05x to 20x, batch sizes, partition counts, logical resources and
a budget from tight to unlimited: the same seed, the same pipeline.

:func:`bounds` gives two lower bounds of the run time, both printed by the sweep:

- ``optimum``: no schedule finishes sooner, whatever the memory. Each pool of slots
  must do its work (CPU seconds over CPUs; a GPU stage's seconds over its actors or
  GPUs), the reads come in waves of at most one per CPU, and a stage that runs on
  its own pool (an actor pool) cannot start before one batch of rows has passed the
  stages before it, nor end less than one batch's time before the pipeline does.
- ``within_budget``: also no schedule that never goes over the budget finishes
  sooner. A task holds its input while it runs, and the output it is going to make
  (a running task cannot be paused, so a schedule that is never over budget,
  whatever the timing of a task's output, holds room for it from the task's start);
  the smallest tasks are one batch (a read task as the source gives it), so a run
  holds ``sum over tasks (input + output bytes) * task time`` byte-seconds at least,
  and a budget ``B`` needs that over ``B`` seconds (Little's law). A backend that
  could pause a running task's output (Ray's generator backpressure) could go below
  this bound; ours cannot.

>>> spec = generate(7)
>>> spec == generate(7), 2 <= len(spec.stages) + 1 <= 5
(True, True)
>>> b = bounds(spec)
>>> 0 < b.optimum <= b.within_budget
True
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace

from streambatch.executor.simulation import PipelineSpec, SourceSpec, StageSpec

MiB = 2**20
MAX_BYTES = 4096 * MiB  # the most data a stage makes (blocks of >= 1 MiB: 4096 of them)


@dataclass(frozen=True)
class Bounds:
    """Lower bounds of a pipeline's run time: unlimited memory, and within its budget."""

    optimum: float
    within_budget: float
    memory_for_optimum: float  # bytes held on average by a run at the optimum's rate


def _log_uniform(rng: random.Random, low: float, high: float) -> float:
    return math.exp(rng.uniform(math.log(low), math.log(high)))


def _stage(rng: random.Random, index: int, num_gpus: float) -> StageSpec:
    kind = rng.choices(("cpu", "cpu-actors", "gpu"), (0.5, 0.15, 0.35 if num_gpus else 0))[0]
    batch = rng.choice((None, 1, 8, 32, 64, 256)) if kind == "cpu" else \
        rng.choice((8, 16, 32, 64, 128, 256))
    per_row = _log_uniform(rng, 0.001, 1.0)
    ratio = _log_uniform(rng, 0.05, 20.0)
    if kind == "gpu":
        high = max(1, int(num_gpus))
        return StageSpec(f"Gpu{index}", per_row, ratio, batch, num_cpus=0, num_gpus=1,
                         actors=(1, high), startup_s=rng.choice((0.0, 1.0, 5.0)))
    if kind == "cpu-actors":
        return StageSpec(f"Actors{index}", per_row, ratio, batch, actors=(1, rng.randint(1, 8)),
                         startup_s=rng.choice((0.0, 1.0)))
    return StageSpec(f"Map{index}", per_row, ratio, batch)


def generate(seed: int, num_cpus: float | None = None, num_gpus: float | None = None,
             seconds: tuple[float, float] = (20.0, 200.0), nodes: int = 1) -> PipelineSpec:
    """A random pipeline (the same for the same arguments), sized so that its optimum
    takes about ``seconds`` (virtual), on ``num_cpus``/``num_gpus`` (random when None:
    4-64 CPUs, 1-16 GPUs or none), split into ``nodes`` equal nodes (each node's share
    of the budget then holds at least four of the largest tasks)."""
    rng = random.Random(seed)
    cpus = num_cpus or rng.choice((4, 8, 16, 32, 64))
    gpus = num_gpus if num_gpus is not None else rng.choice((0, 1, 2, 4, 8, 16))
    stages = tuple(_stage(rng, i + 1, gpus) for i in range(rng.randint(1, 4)))
    stages = _gpu_stages_fit(stages, gpus)
    stages = _keep_sizes_in_range(stages)
    reads = int(_log_uniform(rng, 8, 256))
    source = SourceSpec(reads, 1, _log_uniform(rng, 0.001, 1.0),
                        _log_uniform(rng, 1024, 4 * MiB))
    spec = PipelineSpec(source, stages, num_cpus=cpus, num_gpus=gpus,
                        seconds_per_task=rng.choice((0.0, 0.002, 0.01)))
    per_task = bounds(spec).optimum  # with one row per read task
    rows = max(1, round(rng.uniform(*seconds) / per_task))
    largest_row = max(PipelineSpec(source, stages).bytes_per_row())
    most = min(20000, int(MAX_BYTES / largest_row))  # simulation time grows with the blocks
    rows = min(rows, max(1, most // reads))
    spec = PipelineSpec(SourceSpec(reads, rows, source.seconds_per_row, source.bytes_per_row),
                        stages, num_cpus=cpus, num_gpus=gpus,
                        seconds_per_task=spec.seconds_per_task, nodes=nodes)
    need = bounds(spec).memory_for_optimum
    # the tightest budget: four of its largest tasks, and a block (1 MiB, the smallest
    # partition target of the executor) per CPU; on each node
    floor = nodes * max(4 * _largest_task_bytes(spec), cpus / nodes * MiB)
    if rng.random() < 0.2:
        return spec
    budget = int(max(floor, need * _log_uniform(rng, 0.25, 8.0)))
    return spec.with_budget(budget)


def _gpu_stages_fit(stages: tuple[StageSpec, ...], gpus: float) -> tuple[StageSpec, ...]:
    """GPU stages share the GPUs: each may use up to its share (at least one actor each)."""
    count = sum(1 for s in stages if s.num_gpus)
    if not count:
        return stages
    share = gpus / count
    need = 1.0 / math.ceil(count / gpus) if share < 1 else 1.0  # (shares pack whole GPUs)
    high = max(1, int(share / need))
    return tuple(replace(s, num_gpus=need, actors=(1, high)) if s.num_gpus else s
                 for s in stages)


def _keep_sizes_in_range(stages: tuple[StageSpec, ...]) -> tuple[StageSpec, ...]:
    """Ratios whose running product stays within 1/64..64 (a pipeline whose data grows
    20x four times makes blocks the simulation need not count one by one)."""
    out, growth = [], 1.0
    for s in stages:
        ratio = min(max(s.bytes_ratio, 1 / 64 / growth), 64 / growth)
        growth *= ratio
        out.append(StageSpec(s.name, s.seconds_per_row, ratio, s.batch_rows, s.num_cpus,
                             s.num_gpus, s.actors, s.startup_s))
    return tuple(out)


def _largest_task_bytes(spec: PipelineSpec) -> float:
    """Bytes of the largest unit of work: a read's output, or one batch in and out."""
    per_row = spec.bytes_per_row()
    largest = spec.source.rows_per_task * per_row[0]
    for s, b_in, b_out in zip(spec.stages, per_row, per_row[1:], strict=False):
        largest = max(largest, (s.batch_rows or 1) * (b_in + b_out))
    return largest


def bounds(spec: PipelineSpec) -> Bounds:
    """Lower bounds of the run time (see the module's docstring).

    >>> spec = PipelineSpec(SourceSpec(8, 10, 0.1, 100), (StageSpec("M", 0.2, 1.0),),
    ...                     num_cpus=4)
    >>> b = bounds(spec)   # 80 rows x 0.3 s of CPU on 4 CPUs
    >>> round(b.optimum, 3), b.within_budget == b.optimum
    (6.0, True)
    """
    src, o = spec.source, spec.seconds_per_task
    n = src.rows
    cpu_work = src.read_tasks * (src.rows_per_task * src.seconds_per_row + o) * src.num_cpus
    gpu_work, lower = 0.0, 0.0
    units = [1] + [min(s.batch_rows or 1, n) for s in spec.stages]  # rows before a first output
    times = [src.seconds_per_row] + [s.seconds_per_row for s in spec.stages]
    for i, s in enumerate(spec.stages, start=1):
        work = n * s.seconds_per_row
        cpu_work += work * s.num_cpus
        gpu_work += work * s.num_gpus
        if s.uses_actors:
            actors = s.actors[1] if s.actors else max(1, int(spec.num_gpus / s.num_gpus))
            if s.num_gpus:
                actors = min(actors, int(spec.num_gpus / s.num_gpus))
            head = max(s.startup_s, sum(u * t for u, t in zip(units[:i], times[:i], strict=True)))
            tail = sum(u * t for u, t in zip(units[i + 1:], times[i + 1:], strict=True))
            lower = max(lower, head + work / max(1, actors) + tail)
    waves = math.ceil(src.read_tasks / max(1, int(spec.num_cpus / src.num_cpus)))
    tail = sum(u * t for u, t in zip(units[1:], times[1:], strict=True))
    lower = max(lower, waves * (src.rows_per_task * src.seconds_per_row + o) + tail,
                cpu_work / spec.num_cpus, gpu_work / spec.num_gpus if gpu_work else 0.0)
    byte_seconds = _byte_seconds(spec, units)
    within = lower if not spec.budget_bytes else max(lower, byte_seconds / spec.budget_bytes)
    return Bounds(lower, within, byte_seconds / lower)


def _byte_seconds(spec: PipelineSpec, units: list[int]) -> float:
    """Byte-seconds any run holds at least: each task holds its input and the output it
    will make while it runs (a running task cannot be paused, so a schedule that never
    goes over its budget, whatever the tasks' output timing, counts that output from
    the task's start), the smallest tasks possible (one batch; a read task as given)."""
    src, o, per_row = spec.source, spec.seconds_per_task, spec.bytes_per_row()
    read_bytes = src.rows_per_task * per_row[0]
    total = src.read_tasks * read_bytes * (src.rows_per_task * src.seconds_per_row + o)
    for i, s in enumerate(spec.stages, start=1):
        tasks = src.rows / units[i]
        total += tasks * units[i] * (per_row[i - 1] + per_row[i]) * \
            (units[i] * s.seconds_per_row + o)
    return total
