"""The datasink contract: ``start`` -> ``write`` (once per partition, in workers) ->
``finalize`` (or ``abort`` on failure, which removes this job's files)."""

from __future__ import annotations

import json
import uuid
from itertools import chain

import pyarrow as pa
from fsspec.core import url_to_fs
from streambatch.connectors.paths import arrow_filesystem

MODES = ("error", "overwrite", "append")


class Datasink:
    """A directory of files written one per partition, committed by rename.

    Subclasses implement :meth:`write_file`. Files are first written under a
    hidden temporary name and renamed when complete, so a reader never sees a
    half-written file; ``finalize`` writes the ``_SUCCESS`` manifest last.
    """

    name = "Datasink"
    suffix = ""

    def __init__(self, path: str, filesystem=None, mode: str = "error") -> None:
        if mode not in MODES:
            raise ValueError(f"mode={mode!r} is not supported; expected one of: {', '.join(MODES)}")
        self.fs, self.path = (filesystem, path) if filesystem is not None else url_to_fs(path)
        self.path = self.path.rstrip("/")
        self.mode = mode
        self.job = uuid.uuid4().hex[:8]
        self.arrow_fs = arrow_filesystem(self.fs)

    def start(self) -> None:
        """Check the output directory (per ``mode``) and create it."""
        existing = self._data_files() if self.fs.exists(self.path) else []
        if existing and self.mode == "error":
            raise FileExistsError(
                f"write_{self.name.lower()}: {self.path!r} already holds {len(existing)} data "
                f"file(s), e.g. {existing[0]!r}; pass mode='overwrite' to replace them or "
                "mode='append' to add to them")
        if self.mode == "overwrite":
            for path in existing + [f"{self.path}/_SUCCESS"]:
                if self.fs.exists(path):
                    self.fs.rm(path)
        self.fs.makedirs(self.path, exist_ok=True)

    def _data_files(self) -> list[str]:
        return sorted(p for p in self.fs.ls(self.path, detail=False)
                      if not p.rstrip("/").rsplit("/", 1)[-1].startswith((".", "_")))

    def write(self, blocks, ctx) -> pa.Table:
        """Write one partition's blocks to one file; return a one-row result table.

        ``ctx`` is the task context (its ``task_index`` names the file).
        """
        blocks = iter(blocks)
        first = next((b for b in blocks if b.num_rows), None)
        if first is None:
            return pa.table({"path": pa.array([], pa.string()), "rows": pa.array([], pa.int64()),
                             "bytes": pa.array([], pa.int64())})
        name = f"part-{self.job}-{ctx.task_index:06d}{self.suffix}"
        final, temp = f"{self.path}/{name}", f"{self.path}/.{name}.tmp"
        rows, size = self.write_file(chain([first], (b for b in blocks if b.num_rows)), temp)
        self.fs.mv(temp, final)
        return pa.table({"path": [final], "rows": [rows], "bytes": [size]})

    def write_file(self, tables, path: str) -> tuple[int, int]:
        """Write ``tables`` to ``path``; return (rows, bytes)."""
        raise NotImplementedError

    def finalize(self, results: list[pa.Table]) -> list[dict]:
        """Write the ``_SUCCESS`` manifest; return the committed files."""
        files = [row for table in results for row in table.to_pylist()]
        write_manifest(self.fs, self.path, files)
        return files

    def abort(self) -> None:
        """Remove every file this job wrote (complete or temporary)."""
        if not self.fs.exists(self.path):
            return
        for path in self.fs.ls(self.path, detail=False):
            name = path.rstrip("/").rsplit("/", 1)[-1]
            if name.startswith((f"part-{self.job}-", f".part-{self.job}-")):
                self.fs.rm(path)


def write_manifest(fs, directory: str, files: list[dict]) -> None:
    """Write ``_SUCCESS`` listing every committed file with its rows."""
    with fs.open(f"{directory}/_SUCCESS", "w") as handle:
        json.dump({"files": files, "rows": sum(f["rows"] for f in files)}, handle, indent=1)
