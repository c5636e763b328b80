"""Fixtures of the plan-layer tests: an engine that runs plans quickly and in order."""

from __future__ import annotations

import pytest

import streambatch as sb

MiB = 2**20


@pytest.fixture(scope="module")
def engine():
    """Two CPU slots, UDFs on threads (no worker processes to start) and ordered
    output, so a limit's rows are the first ones; the previous context is restored."""
    ctx = sb.DataContext.get_current()
    saved = (ctx.backend, ctx.execution_options)
    sb.init(num_cpus=2, memory_budget=256 * MiB, worker_mode="threads", preserve_order=True)
    yield ctx
    ctx.backend, ctx.execution_options = saved
