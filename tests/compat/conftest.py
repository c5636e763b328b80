"""Fixtures shared by the Ray Data compatibility tests."""

from __future__ import annotations

import pytest

import streambatch as sb


@pytest.fixture
def ordered():
    """preserve_order on for one test (Ray's tests expect input order from reads)."""
    opts = sb.DataContext.get_current().execution_options
    before, opts.preserve_order = opts.preserve_order, True
    yield
    opts.preserve_order = before
