"""The file round-trip suite on the local filesystem."""

from __future__ import annotations

import fsspec
import pytest

from tests.connectors.files.roundtrip_suite import FileRoundTrip


class TestLocalFiles(FileRoundTrip):
    @pytest.fixture
    def fs(self):
        return fsspec.filesystem("file")

    @pytest.fixture
    def root(self, tmp_path):
        return str(tmp_path)
