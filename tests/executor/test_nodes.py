"""Per-node memory (issue 20): on a backend of several nodes the executor places each
task where its output fits the node's share of the budget, and actors and tasks on
the nodes their resources are free on; checked on the simulated backend, whose
per-node peaks come from the blocks it made and freed (not from the executor's
accounting)."""

from __future__ import annotations

import pytest
from streambatch.executor.backends.base import Node
from streambatch.executor.contract import Resources
from streambatch.executor.errors import UnplaceableError
from streambatch.executor.nodes import NodeLedger
from streambatch.executor.simulation import PipelineSpec, SourceSpec, StageSpec, simulate

MiB = 2**20


def grow_then_slow(budget_mib: int, nodes: int = 4) -> PipelineSpec:
    """One pinned actor makes 10x its input; a slow CPU stage shrinks it again. Without
    per-node placement the actor's node holds every grown block."""
    return PipelineSpec(SourceSpec(32, 10, 0.01, 100_000),
                        (StageSpec("Grow", 0.001, 10.0, actors=(1, 1)),
                         StageSpec("Slow", 0.2, 0.1)),
                        num_cpus=8, budget_bytes=budget_mib * MiB, nodes=nodes)


def test_each_node_stays_within_its_share_where_placement_blind_to_it_does_not():
    spec = grow_then_slow(128)
    aware, blind = simulate(spec), simulate(spec, node_memory=False)
    assert aware.node_budget == 32 * MiB
    assert max(aware.node_peaks) <= aware.node_budget, aware.node_peaks
    assert max(blind.node_peaks) > 1.5 * blind.node_budget, blind.node_peaks
    assert not aware.over_budget and not blind.over_budget  # the global budget holds in both
    assert aware.seconds <= 1.05 * blind.seconds


@pytest.mark.parametrize("nodes", [1, 2, 3, 8])
def test_every_row_once_and_blocks_freed_on_any_number_of_nodes(nodes):
    result = simulate(grow_then_slow(96, nodes))  # checks rows and held bytes itself
    assert result.rows == 320
    assert len(result.node_peaks) == (nodes if nodes > 1 else 0)


def test_gpu_actors_spread_over_nodes_and_their_tasks_run_where_they_are():
    spec = PipelineSpec(SourceSpec(16, 64, 0.001, 10_000),
                        (StageSpec("Model", 0.002, 0.5, batch_rows=64, num_cpus=0, num_gpus=1,
                                   actors=(4, 4)),),
                        num_cpus=8, num_gpus=4, nodes=4, budget_bytes=64 * MiB)
    result = simulate(spec)  # the backend raises if a task is placed off its actor's node
    assert sum(1 for peak in result.node_peaks if peak > 0) == 4


def test_ledger_places_on_one_node_and_names_what_no_node_has():
    ledger = NodeLedger([Node(2, 1), Node(4, 0)])
    assert ledger.num_cpus == 6.0 and ledger.num_gpus == 1.0
    assert ledger.acquire(Resources(num_cpus=3)).node == 1
    assert ledger.acquire(Resources(num_cpus=2)).node == 0
    assert ledger.acquire(Resources(num_cpus=2)) is None  # 1 + 0 free: not on one node
    assert "on each of its 2 nodes" in ledger.fits_ever(Resources(num_cpus=5))
    assert ledger.fits_ever(Resources(num_cpus=1, num_gpus=1)) is None


def test_a_stage_no_node_can_hold_fails_naming_it():
    spec = PipelineSpec(SourceSpec(2, 10, 0.01, 1000), (StageSpec("Big", 0.01, 1.0, num_cpus=5),),
                        num_cpus=8, nodes=2)
    with pytest.raises(UnplaceableError, match="Big.*asks for 5 CPUs.*each of its 2 nodes"):
        simulate(spec)


@pytest.mark.parametrize("seed", range(12))
def test_generated_pipelines_on_nodes_keep_every_row_and_each_nodes_share(seed):
    # random stages, sizes and batch sizes (executor/sim_workloads.py) on 2-8 nodes, each
    # node's share of the budget four of the pipeline's largest tasks
    import random

    from streambatch.executor.sim_workloads import _largest_task_bytes, generate

    nodes = random.Random(seed).choice((2, 4, 8))
    spec = generate(1000 + seed, num_cpus=4 * nodes, num_gpus=nodes, seconds=(5.0, 20.0),
                    nodes=nodes)
    largest = _largest_task_bytes(spec)
    spec = spec.with_budget(int(nodes * 4 * largest))  # the tightest the generator draws
    result = simulate(spec)  # raises on a row lost or repeated, or a block freed wrongly
    assert result.rows == spec.source.rows
    # over a share by no more than one task's output (liveness)
    assert max(result.node_peaks) <= result.node_budget + largest, \
        (result.node_peaks, result.node_budget)
