"""The datasink contract: ``start`` -> ``write`` (once per partition, in workers) ->
``finalize`` (or ``abort`` on failure, which removes this job's files)."""

from __future__ import annotations

import json
import uuid
from itertools import chain

import pyarrow as pa
from fsspec.core import url_to_fs
from streambatch.connectors.manifest import MANIFEST, ManifestWriter, load, resumable_reads
from streambatch.connectors.paths import arrow_filesystem, usable_fs

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

    def start(self, resume: bool = False, fingerprint: str = "") -> set:
        """Check the output directory (per ``mode``), create it and the manifest.

        With ``resume=True`` an interrupted job's committed files are kept and the
        reads they settled are returned, for the executor to skip.
        """
        self.fingerprint = fingerprint
        self.manifest = ManifestWriter(self.fs, self.path)
        existing = self._data_files() if self.fs.exists(self.path) else []
        if resume:
            return self._resume(existing)
        if existing and self.mode == "error":
            raise FileExistsError(
                f"write_{self.name.lower()}: {self.path!r} already holds {len(existing)} data "
                f"file(s), e.g. {existing[0]!r}; pass mode='overwrite' to replace them, "
                "mode='append' to add to them, or resume=True to finish an interrupted job")
        if self.mode == "overwrite":
            for path in existing + [f"{self.path}/_SUCCESS", f"{self.path}/{MANIFEST}"]:
                if self.fs.exists(path):
                    self.fs.rm(path)
        self.fs.makedirs(self.path, exist_ok=True)
        self.kept: list[dict] = []
        self.manifest.rewrite([{"plan": fingerprint}])
        return set()

    def _resume(self, existing: list[str]) -> set:
        entries = load(self.fs, self.path)
        if existing and not entries:
            raise FileExistsError(f"resume: {self.path!r} holds data files but no {MANIFEST}; "
                                  "it was not written by an interrupted streambatch job")
        plan = next((e["plan"] for e in entries if "plan" in e), self.fingerprint)
        if plan != self.fingerprint:
            raise ValueError(f"resume: the job that wrote {self.path!r} ran a different plan; "
                             "resume needs the same pipeline (or write elsewhere)")
        skip, self.kept = resumable_reads(entries)
        kept_names = {f["file"] for f in self.kept}
        for path in self.fs.ls(self.path, detail=False) if self.fs.exists(self.path) else []:
            name = path.rstrip("/").rsplit("/", 1)[-1]
            if name.startswith(("part-", ".part-")) and name not in kept_names:
                self.fs.rm(path)  # uncommitted, or holding rows of reads that run again
        self.fs.makedirs(self.path, exist_ok=True)
        self.manifest.rewrite([{"plan": self.fingerprint}] + self.kept
                              + [{"settled": list(o)} for o in sorted(skip)])
        return skip

    def on_final_output(self, part, origins) -> None:
        """Record the files a finished write task committed (driver side)."""
        for row in part.get().to_pylist():
            name = row["path"].rstrip("/").rsplit("/", 1)[-1]
            self.manifest.append({"file": name, "rows": row["rows"], "job": self.job,
                                  "origins": sorted(list(o) for o in origins)})

    def on_settled(self, origin) -> None:
        """Record that everything read ``origin`` fed has been written."""
        self.manifest.append({"settled": list(origin)})

    def _data_files(self) -> list[str]:
        return sorted(p for p in self.fs.ls(self.path, detail=False)
                      if not p.rstrip("/").rsplit("/", 1)[-1].startswith((".", "_")))

    def write(self, blocks, ctx) -> pa.Table:
        """Write one partition's blocks to one file; return a one-row result table.

        ``ctx`` is the task context: its lineage ``key`` names the file, so a retried
        task overwrites its own file instead of adding a second one.
        """
        self.use_in_this_process()
        blocks = iter(blocks)
        first = next((b for b in blocks if b.num_rows), None)
        if first is None:
            return pa.table({"path": pa.array([], pa.string()), "rows": pa.array([], pa.int64()),
                             "bytes": pa.array([], pa.int64())})
        name = f"part-{self.job}-{getattr(ctx, 'key', '') or ctx.task_index}{self.suffix}"
        final, temp = f"{self.path}/{name}", f"{self.path}/.{name}.tmp"
        rows, size = self.write_file(chain([first], (b for b in blocks if b.num_rows)), temp)
        self.fs.mv(temp, final)
        return pa.table({"path": [final], "rows": [rows], "bytes": [size]})

    def use_in_this_process(self) -> None:
        """Replace a filesystem created before this worker was forked (s3fs refuses it)."""
        fs = usable_fs(self.fs)
        if fs is not self.fs:
            self.fs, self.arrow_fs = fs, arrow_filesystem(fs)

    def write_file(self, tables, path: str) -> tuple[int, int]:
        """Write ``tables`` to ``path``; return (rows, bytes)."""
        raise NotImplementedError

    def write_dead_letters(self, table: pa.Table) -> str:
        """Write the rows the job skipped to ``<output>/_errors/`` (driver side)."""
        import pyarrow.parquet as pq

        self.fs.makedirs(f"{self.path}/_errors", exist_ok=True)
        path = f"{self.path}/_errors/dead-letters-{self.job}.parquet"
        pq.write_table(table, path, filesystem=self.arrow_fs)
        return path

    def finalize(self, results: list[pa.Table]) -> list[dict]:
        """Write ``_SUCCESS`` (every file of the output with its rows); return them."""
        kept = [{"path": f"{self.path}/{f['file']}", "rows": f["rows"], "bytes": None}
                for f in getattr(self, "kept", [])]
        files = kept + [row for table in results for row in table.to_pylist()]
        write_manifest(self.fs, self.path, files)
        return files

    def abort(self) -> None:
        """Remove every file this job wrote (complete or temporary) and its manifest lines."""
        if not self.fs.exists(self.path):
            return
        entries = [e for e in load(self.fs, self.path) if e.get("job") != self.job
                   and "settled" not in e]
        if any("file" in e for e in entries):
            self.manifest.rewrite(entries)
        elif self.fs.exists(f"{self.path}/{MANIFEST}"):
            self.fs.rm(f"{self.path}/{MANIFEST}")
        for path in self.fs.ls(self.path, detail=False):
            name = path.rstrip("/").rsplit("/", 1)[-1]
            if name.startswith((f"part-{self.job}-", f".part-{self.job}-")):
                self.fs.rm(path)


def write_manifest(fs, directory: str, files: list[dict]) -> None:
    """Write ``_SUCCESS`` listing every committed file with its rows."""
    with fs.open(f"{directory}/_SUCCESS", "w") as handle:
        json.dump({"files": files, "rows": sum(f["rows"] for f in files)}, handle, indent=1)
