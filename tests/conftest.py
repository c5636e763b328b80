"""Suite-wide settings: long runs (``slow``) and tests with a known intermittent hang
(``hangs_sometimes``, each naming it) are skipped unless STREAMBATCH_SLOW=1."""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config, items):
    if os.environ.get("STREAMBATCH_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="long run: set STREAMBATCH_SLOW=1 to include it")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
        hang = item.get_closest_marker("hangs_sometimes")
        if hang is not None:
            item.add_marker(pytest.mark.skip(
                reason=f"known intermittent hang ({hang.args[0]}): set STREAMBATCH_SLOW=1 to run it"))
