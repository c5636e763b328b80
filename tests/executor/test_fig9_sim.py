"""The paper's Fig. 9 pipeline in the simulator (benchmarks/fig9_sim.py, issue 20): its
spec gives the paper's optimum, and the unchanged executor delivers every frame once,
never sooner than the optimum and never over the budget."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from streambatch.executor.sim_workloads import bounds

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "fig9_sim.py"
_SPEC = importlib.util.spec_from_file_location("fig9_sim", _PATH)
fig9 = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(fig9)
GiB = 2**30


def test_the_spec_gives_the_papers_optimum():
    spec = fig9.fig9_spec(8 * GiB)
    assert spec.source.rows == 800  # 160 videos x 5 frames
    # (160 x 5 s + 800 x 0.5 s x 0.99 CPU) / 8 CPUs; the paper rounds it to 150 s
    assert bounds(spec).optimum == pytest.approx(149.5)
    assert abs(bounds(spec).optimum - fig9.PAPER_OPTIMUM_S) < 1
    gpu_seconds = 800 * spec.stages[2].seconds_per_row / spec.num_gpus
    assert gpu_seconds == 100  # the GPUs do not bound it: the CPUs do


# Below 4 GiB the first wave overshoots: Produce makes 500 MiB from 40 bytes of ids, and
# until a task of it has finished the executor reserves 6x its input for its output, so
# 8 tasks start together and buffer 3.9 GiB whatever the budget (not Fig. 9's range).
_OVERSHOOT = pytest.mark.xfail(reason="first wave of an unmeasured 13,000,000x stage",
                               strict=True)


@pytest.mark.parametrize(("videos", "limit_gib", "cpus"),
                         [(16, 4, 8), (16, 6, 6), (160, 8, 8),
                          pytest.param(16, 1, 8, marks=_OVERSHOOT)])
def test_every_frame_once_no_sooner_than_the_optimum_within_budget(videos, limit_gib, cpus):
    spec = fig9.fig9_spec(limit_gib * GiB, num_cpus=cpus, videos=videos)
    result = fig9.run(spec)  # raises SimulationError on a lost or repeated frame
    assert result.rows == videos * 5
    assert result.seconds >= bounds(spec).within_budget * 0.999
    assert not result.over_budget, (result.peak_buffered_bytes, result.budget_bytes)


def test_cpu_stages_are_not_held_while_the_cpus_bound_the_job():
    # The GPU actors' queue fills (2 tasks per actor), but the CPUs, not the GPUs, bound
    # the job: holding the CPU stages left the CPUs idle (64 videos: 81% of the optimum).
    spec = fig9.fig9_spec(8 * GiB, num_cpus=8, videos=64)
    result = fig9.run(spec)
    assert bounds(spec).within_budget / result.seconds >= 0.9
    assert not result.over_budget
