"""The file round-trip suite on fsspec's in-memory filesystem (``memory://``).

memory:// lives in one process: the stages here run on thread workers (reads,
writes and ``releases_gil`` batch functions), which share it.
"""

from __future__ import annotations

import uuid

import fsspec
import pytest

from tests.connectors.files.roundtrip_suite import FileRoundTrip


class TestMemoryFiles(FileRoundTrip):
    @pytest.fixture
    def fs(self):
        return fsspec.filesystem("memory")

    @pytest.fixture
    def root(self, fs):
        root = f"memory://sbtest-{uuid.uuid4().hex[:8]}"
        yield root
        if fs.exists(root):
            fs.rm(root, recursive=True)
