"""Binary files: one row per file with its ``bytes`` (and ``path``).

>>> import tempfile
>>> from streambatch.connectors.datasource import Pushdowns
>>> d = tempfile.mkdtemp(); _ = open(f"{d}/a.bin", "wb").write(b"\\x00\\x01")
>>> [t["bytes"].to_pylist() for task in BinarySource(d).read_tasks(1, Pushdowns()) for t in task()]
[[b'\\x00\\x01']]
"""

from __future__ import annotations

import pyarrow as pa
from streambatch.connectors.file_based import FileSource


class BinarySource(FileSource):
    """Any files, read whole: column ``bytes`` (binary) and, by default, ``path``."""

    name = "BinaryFiles"
    who = "read_binary_files"
    suffixes = None

    def __init__(self, paths, *, include_paths: bool = True, **kwargs) -> None:
        super().__init__(paths, include_paths=include_paths, **kwargs)

    def estimate(self, entry):
        """One row per file, its size in bytes."""
        return 1, entry.size

    def read_file(self, fs, entry, pushdowns):
        """One row holding the file's bytes."""
        with fs.open(entry.path, "rb") as handle:
            data = handle.read()
        yield pa.table({"bytes": pa.array([data], pa.binary())})
