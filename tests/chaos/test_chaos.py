"""Workers and actors killed with SIGKILL mid-job: the output is exactly the fault-free one."""

from __future__ import annotations

import pytest

import streambatch as sb
from tests.chaos.chaos import run


@pytest.fixture(autouse=True)
def resources():
    sb.init(num_cpus=2, actor_idle_timeout_s=0.5)
    yield
    sb.init(num_cpus=2)


@pytest.fixture(scope="module")
def fault_free():
    sb.init(num_cpus=2)
    table, _, _, _ = run(rows=600, blocks=40, seed=None)
    return table


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_output_survives_random_worker_kills(fault_free, seed):
    table, _, killed, _ = run(rows=600, blocks=40, seed=seed, kills=2, window_s=(0.1, 0.5))
    assert killed, "the killer found no worker to kill"
    assert table.num_rows == 600
    assert table.equals(fault_free)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(20))
def test_output_survives_random_worker_kills_long(fault_free, seed):
    table, _, _, _ = run(rows=600, blocks=40, seed=100 + seed, kills=3, window_s=(0.05, 0.6))
    assert table.equals(fault_free)
