"""Shared fixtures for the Dataset API tests.

UDFs run in forked worker processes, so every side effect a test observes
goes through files (one marker file per call under a directory), never
through globals.
"""

from __future__ import annotations

import pytest

import streambatch as sb

MiB = 2**20


@pytest.fixture(autouse=True, scope="module")
def _engine():
    """Two CPU slots and a fixed 256 MiB memory budget for every API test module."""
    sb.init(num_cpus=2, memory_budget=256 * MiB)
    yield


@pytest.fixture
def budget() -> int:
    """The memory budget the module fixture configured."""
    return 256 * MiB


@pytest.fixture(autouse=True)
def _restore_preserve_order():
    """Whatever a test does to preserve_order is undone afterwards."""
    opts = sb.DataContext.get_current().execution_options
    before = opts.preserve_order
    yield
    opts.preserve_order = before


@pytest.fixture
def ordered():
    """Turn on preserve_order for one test (restored by the autouse fixture)."""
    sb.DataContext.get_current().execution_options.preserve_order = True
    yield


@pytest.fixture
def calls_dir(tmp_path):
    """An empty directory UDFs record their calls in (one file per call)."""
    d = tmp_path / "calls"
    d.mkdir()
    return d
