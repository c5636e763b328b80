"""The machine shapes of the scheduler sweep: one machine (4-64 CPUs, 0-16 GPUs, drawn
per pipeline) or a cluster of 64 nodes x (16 CPUs, 8 GPUs), each with its share of the budget."""

from __future__ import annotations

from streambatch.executor.sim_workloads import generate
from streambatch.executor.simulation import PipelineSpec

CLUSTER = {"num_cpus": 64 * 16, "num_gpus": 64 * 8, "nodes": 64}


def spec_for(seed: int, shape: str) -> PipelineSpec:
    """The pipeline of ``seed`` on ``shape`` ("machine" or "cluster")."""
    if shape == "machine":
        return generate(seed)
    if shape == "cluster":
        return generate(seed, **CLUSTER)
    raise ValueError(f"shape={shape!r}; expected 'machine' or 'cluster'")
