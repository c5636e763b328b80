"""``sb.init(memory_budget=)`` takes the sizes the CLI takes ("1GB", "512MiB", bytes),
through the one parser, and refuses a bad one at the call, naming it."""

from __future__ import annotations

import pytest

import streambatch as sb
from streambatch.context import DataContext
from streambatch.jobspec import parse_bytes


@pytest.fixture(autouse=True)
def restore_context():
    ctx = DataContext.get_current()
    backend, options = ctx.backend, ctx.execution_options
    yield
    ctx.backend, ctx.execution_options = backend, options


@pytest.mark.parametrize("given, expected", [
    ("1GB", 10**9), ("512MiB", 512 * 2**20), ("1.5 GiB", 3 * 2**29), ("2gb", 2 * 10**9),
    (10**9, 10**9), ("1000", 1000),
])
def test_init_takes_the_clis_sizes(given, expected):
    ctx = sb.init(num_cpus=1, memory_budget=given)
    assert ctx.execution_options.memory_budget == expected
    assert ctx.execution_options.resolved_memory_budget() == expected
    assert parse_bytes(given, "--memory-budget") == expected  # the CLI's parse: the same


def test_a_job_runs_under_a_string_budget():
    sb.init(num_cpus=1, memory_budget="256MiB")
    assert sb.range(100).map(lambda row: {"id": row["id"] * 2}).count() == 100


@pytest.mark.parametrize("bad", ["1 gigabyte", "lots", "0", "-1GB", "", "2G", True, 0, -5])
def test_a_bad_budget_is_refused_at_the_call(bad):
    with pytest.raises(ValueError) as info:
        sb.init(memory_budget=bad)
    assert str(info.value) == (f"init(memory_budget={bad!r}) is not a size; expected e.g. "
                               "2GB, 512MiB or a positive number of bytes")
