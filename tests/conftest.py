"""Suite-wide settings: long runs (``slow``) are skipped unless STREAMBATCH_SLOW=1.
A test that hangs sometimes is a bug to fix, not a test to skip: there is no marker
for that. Each test starts with no thread/process choice kept from an earlier test's
jobs (the driver keeps them for its later jobs: backends/worker_choice.recall). A
pytest started in the background by a shell without job control (``pytest &``) has
SIGINT ignored, and every driver a test starts inherits that (Ctrl-C tests timed out):
the suite restores Python's Ctrl-C handler, which exec resets to the default."""

from __future__ import annotations

import os
import signal

import pytest


def pytest_configure(config):
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_collection_modifyitems(config, items):
    if os.environ.get("STREAMBATCH_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="long run: set STREAMBATCH_SLOW=1 to include it")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _no_choice_kept_from_earlier_tests():
    from streambatch.executor.backends.worker_choice import forget

    forget()
