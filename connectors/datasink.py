"""The file datasink: one object owns a write from start to end.

:class:`FileDatasink` is a :class:`~streambatch.connectors.sink_contract.Datasink`
(the public, Ray-shaped contract a user connector subclasses) that the executor
drives as it is; a user sink is driven through ``ContractJob``, with the same
``run_job`` / ``write`` / listener interface below.

- Driver side, before and after: :meth:`FileDatasink.run_job` runs the whole write:
  ``start`` (check and claim the output, or pick up a resume), the job, then
  ``finalize`` (dead letters, ``_SUCCESS``) or ``abort`` on failure (which removes
  this job's files).
- Worker side: ``write`` (once per partition, in a task) commits its files.
- Driver side, while the job runs: the sink is the executor's ``OutputListener``
  (``attach``, ``on_final_output``, ``on_dead_letters``, ``on_settled``).

The driver side records, in the output's manifest (connectors/manifest.py), each
committed file with the read pieces it holds, each settled piece and each dead
letter, as the job runs; so a job resumed after a crash, with any layout,
rewrites exactly what was not committed, and a sink deletes only what it owns.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from itertools import chain

import pyarrow as pa
from fsspec.core import url_to_fs
from streambatch.connectors.block_joins import row_groups
from streambatch.connectors.datasource import PieceSet
from streambatch.connectors.manifest import (
    MANIFEST,
    SUCCESS,
    ManifestWriter,
    ResumeMismatchError,
    load,
    resumable,
    write_atomic,
)
from streambatch.connectors.output_dir import OutputDir, is_hidden
from streambatch.connectors.paths import arrow_filesystem, usable_fs
from streambatch.connectors.sink_contract import Datasink

# What a write does to a directory that already holds data files (Ray Data's SaveMode):
# append (Ray's default) adds files; error refuses; ignore skips the write; overwrite
# replaces an earlier streambatch output.
MODES = ("append", "error", "ignore", "overwrite")
ERRORS_DIR = "_errors"


class OutputExistsError(FileExistsError, ValueError):
    """The output directory holds data files this write may not add to (``mode="error"``,
    or an interrupted write that only ``resume=True`` or ``mode="overwrite"`` may touch).
    A ``ValueError`` too, as Ray Data raises.

    >>> issubclass(OutputExistsError, ValueError), issubclass(OutputExistsError, FileExistsError)
    (True, True)
    """


class FileDatasink(Datasink):
    """A directory of files written one per partition, committed by rename.

    Subclasses implement :meth:`write_file`. Files are first written under a
    hidden temporary name and renamed when complete, so a reader never sees a
    half-written file; ``finalize`` writes ``_SUCCESS`` last, listing every file of
    the output (relative paths) with its rows.
    """

    name = "Datasink"
    suffix = ""
    resumable = False  # whether this format's ``write_*`` takes ``resume=True``

    def __init__(self, path: str, filesystem=None, mode: str = "append",
                 num_rows_per_file: int | None = None) -> None:
        mode = str(getattr(mode, "value", mode)).lower()  # Ray's SaveMode enum works too
        if mode not in MODES:
            raise ValueError(f"write_{self.name.lower()}: mode={mode!r} is not supported; "
                             f"expected one of: {', '.join(map(repr, MODES))}")
        if num_rows_per_file is not None and (isinstance(num_rows_per_file, bool) or not
                                              isinstance(num_rows_per_file, int)
                                              or num_rows_per_file < 1):
            raise ValueError(f"write_{self.name.lower()}: num_rows_per_file="
                             f"{num_rows_per_file!r}; expected a positive int, or None for "
                             "one file per partition")
        if filesystem is None:
            filesystem, path = url_to_fs(str(path))
        self.fs, self.path = filesystem, str(path).rstrip("/")
        self.mode = mode
        self.num_rows_per_file = num_rows_per_file
        self.committed: list[dict] = []   # this write's files (kept ones first)
        self.dead: list[dict] = []        # this write's dead-letter entries
        self.job = uuid.uuid4().hex[:8]
        self.arrow_fs = arrow_filesystem(self.fs)

    def __getstate__(self) -> dict:
        """What a worker needs (not the driver's manifest state or the executor's callback)."""
        state = dict(self.__dict__)
        for name in ("_identify", "committed", "dead", "_success_before"):
            state.pop(name, None)
        return state

    def engine_sink(self) -> FileDatasink:
        """A file sink is driven by the executor as it is."""
        return self

    def get_name(self) -> str:
        """The format's name (``Write[Parquet]``)."""
        return self.name

    # ---- driver side: the whole write ----------------------------------------------------
    def run_job(self, execute, fingerprint: str = "", resume: bool = False) -> list[dict]:
        """Start, run the job, then finalize, or abort on failure; return the files.

        ``execute(listener, done)`` runs the write and returns its write tasks' result
        tables; this sink is the ``listener``, and ``done`` (from :meth:`start`) is what
        a resumed write has already.

        >>> import os, tempfile, pyarrow as pa
        >>> from streambatch.connectors.parquet_sink import ParquetSink
        >>> sink = ParquetSink(tempfile.mkdtemp() + "/out")
        >>> class Ctx: task_index = 0; key = "k"
        >>> def fails(listener, done):
        ...     sink.write([pa.table({"x": [1]})], Ctx())  # a task commits a file...
        ...     raise ValueError("a later task failed")
        >>> sink.run_job(fails)
        Traceback (most recent call last):
        ...
        ValueError: a later task failed
        >>> os.listdir(sink.path)  # ...which the abort removed
        []
        """
        if self.mode == "ignore" and not resume and self._complete_output():
            return []  # mode="ignore": the output exists, nothing runs (as Ray)
        done = self.start(resume=resume, fingerprint=fingerprint)
        try:
            results = execute(self, done)
        except Exception:
            self.abort()
            raise
        return self.finalize(results)

    def _complete_output(self) -> bool:
        """mode="ignore": True when ``path`` holds data files of a finished write (or files
        no streambatch write recorded); an interrupted write is refused, never skipped."""
        self.out = OutputDir(self.fs, self.path)
        if not self.out.data_files():
            return False
        self._refuse_interrupted(load(self.fs, self.path))
        return True

    # ---- driver side: start ----------------------------------------------------------
    def start(self, resume: bool = False, fingerprint: str = "") -> dict[int, PieceSet]:
        """Check the output directory (per ``mode``), claim it and write the manifest.

        Returns, per source ordinal, the read pieces whose rows the output already
        holds (``resume=True``); the planner leaves them out of the reads.
        """
        self.fingerprint = fingerprint
        self.out = OutputDir(self.fs, self.path)
        self.manifest = ManifestWriter(self.fs, self.path)
        self._identify: Callable[[tuple[int, int]], list] | None = None
        self.committed, self.dead = [], []
        self._success_before: str | None = None  # an append's earlier _SUCCESS, for abort
        entries = load(self.fs, self.path)
        if resume:
            return self._resume(entries)
        header = {"plan": fingerprint, "jobs": [self.job]}
        carried: list[dict]
        if self.mode in ("error", "ignore"):  # ignore: run_job found no data files
            self._refuse_data()
            carried = []
        elif self.mode == "overwrite":
            self._clear_own(entries)
            carried = []
        else:
            self._refuse_interrupted(entries)
            carried = self._earlier(entries)
            self._success_before = self._read(SUCCESS)
        self._claim([header] + carried)
        return {}

    def _read(self, rel: str) -> str | None:
        """The text of the output's file ``rel`` (None when there is none)."""
        if not self.fs.exists(self.out.full(rel)):
            return None
        with self.fs.open(self.out.full(rel), "r") as handle:
            return handle.read()

    def _interrupted(self, entries: list[dict]) -> bool:
        """True when the output is an interrupted write: no ``_SUCCESS``, and files its
        manifest records, or data files named after its runs that a kill left unrecorded
        (committed by a task just before the driver died)."""
        if self.fs.exists(self.out.full(SUCCESS)):
            return False
        if any("file" in e for e in entries):
            return True
        jobs = [j for e in entries if "plan" in e for j in e.get("jobs", ())]
        return any(not is_hidden(f) for f in self.out.job_files(jobs))

    def _refuse_interrupted(self, entries: list[dict]) -> None:
        """mode="append" and "ignore": an interrupted write's committed files hold part of
        some rows; adding a full run to them would duplicate those rows, skipping the
        write would leave the rest out for good, so only ``resume=True`` (finish it) or
        ``mode="overwrite"`` go on."""
        if not self._interrupted(entries):
            return
        why = ("appending would write its rows twice" if self.mode == "append" else
               f"mode={self.mode!r} skips only a complete output (one with {SUCCESS})")
        finish = "resume=True to finish it, " if self.resumable else ""
        raise OutputExistsError(
            f"write_{self.name.lower()}: {self.path!r} holds the files of an interrupted "
            f"write (no {SUCCESS}); {why}. Pass {finish}mode='overwrite' to replace it, or "
            "write to another path")

    def _refuse_data(self) -> None:
        existing = self.out.data_files()
        if existing:
            raise OutputExistsError(
                f"write_{self.name.lower()}: {self.path!r} already holds {len(existing)} data "
                f"file(s), e.g. {existing[0]!r}, and mode='error' refuses them; pass "
                "mode='append' (the default) to add to them, mode='overwrite' to replace them, "
                "mode='ignore' to skip this write, or resume=True to finish an interrupted job")

    def _clear_own(self, entries: list[dict]) -> None:
        """mode="overwrite": remove the earlier output this sink recorded; refuse when the
        directory holds data files it did not write (its runs' files are its own, recorded
        or not: a kill can come between a task's commit and the driver's manifest line)."""
        jobs = [j for e in entries for j in e.get("jobs", ())]
        own = {name for e in entries if (name := e.get("file") or e.get("earlier"))}
        runs = set(self.out.job_files(jobs))
        foreign = [f for f in self.out.data_files() if f not in own and f not in runs]
        if foreign:
            more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
            raise OutputExistsError(
                f"write_{self.name.lower()}(mode='overwrite'): {self.path!r} holds files that no "
                f"streambatch write recorded: {', '.join(map(repr, foreign[:3]))}{more}; "
                "overwrite replaces only an earlier streambatch output. Move or delete those "
                "files, or write to another path")
        errors = [e["errors"] for e in entries if "errors" in e]
        self.out.remove(sorted(own) + errors + self.out.job_files(jobs) + [SUCCESS])

    def _earlier(self, entries: list[dict]) -> list[dict]:
        """mode="append": the files of earlier writes stay part of the output."""
        kept = [{"earlier": e.get("file") or e["earlier"], "rows": e["rows"],
                 "bytes": e.get("bytes")} for e in entries if "file" in e or "earlier" in e]
        kept = [e for e in kept if self.fs.exists(self.out.full(e["earlier"]))]
        self.committed = [{"file": e["earlier"], "rows": e["rows"], "bytes": e["bytes"]}
                          for e in kept]
        return kept + [e for e in entries if "errors" in e]

    def _resume(self, entries: list[dict]) -> dict[int, PieceSet]:
        header = next((e for e in entries if "plan" in e), None)
        if header is None:
            if self.out.data_files():
                raise FileExistsError(f"resume: {self.path!r} holds data files but no {MANIFEST}; "
                                      "it was not written by an interrupted streambatch job")
            header = {"plan": self.fingerprint, "jobs": []}
        if header["plan"] != self.fingerprint:
            raise ResumeMismatchError(repr(self.path), "the job that wrote it ran a different "
                                      "plan")
        jobs = list(header.get("jobs", ()))
        kept = resumable(entries)
        keep = {e["file"] for e in kept.files}
        drop = [e["file"] for e in entries if "file" in e and e["file"] not in keep]
        drop += [e["errors"] for e in entries if "errors" in e and e.get("job") in jobs]
        drop += [dead_letters_file(j) for j in jobs]  # one torn by a kill, never recorded
        drop += [f for f in self.out.job_files(jobs) if f not in keep]
        self.out.remove(drop + [SUCCESS])
        earlier = [e for e in entries if "earlier" in e
                   or ("errors" in e and e.get("job") not in jobs)]
        settled = [{"settled": sorted(list(p) for p in kept.skip), "job": "resumed"}]
        self.committed = [{"file": e["earlier"], "rows": e["rows"], "bytes": e.get("bytes")}
                          for e in earlier if "earlier" in e] + kept.files
        self.dead = list(kept.dead)
        self._claim([{"plan": self.fingerprint, "jobs": jobs + [self.job]}] + earlier
                    + kept.files + kept.dead + settled)
        return kept.done()

    def _claim(self, entries: list[dict]) -> None:
        self.jobs = list(entries[0]["jobs"])
        self.fs.makedirs(self.path, exist_ok=True)
        self.manifest.rewrite(entries)  # first: a kill before the rm leaves a complete output
        if self.fs.exists(self.out.full(SUCCESS)):
            self.fs.rm(self.out.full(SUCCESS))  # the output is changing: not complete now

    # ---- driver side: while the job runs (the executor's OutputListener) --------------
    def attach(self, identify) -> None:
        """How the executor names an origin by the pieces it read."""
        self._identify = identify

    def _pieces(self, origins) -> list[tuple]:
        if self._identify is None:
            raise RuntimeError(f"{self.name} sink: attach() was not called before the job ran")
        return sorted({tuple(p) for o in origins for p in self._identify(o)},
                      key=lambda p: (p[0], p[1], p[2], -1 if p[3] is None else p[3]))

    def on_final_output(self, part, origins) -> None:
        """Record the files a finished write task committed, with the pieces they hold."""
        pieces = [list(p) for p in self._pieces(origins)]
        for row in part.get().to_pylist():
            entry = {"file": self.out.rel(row["path"]), "rows": row["rows"],
                     "bytes": row["bytes"], "origins": pieces, "job": self.job}
            self.manifest.append(entry)
            self.committed.append(entry)

    def on_dead_letters(self, rows: list[dict], origins) -> None:
        """Record dead letters with the pieces they came from (they survive a resume)."""
        entry = {"dead": rows, "origins": [list(p) for p in self._pieces(origins)],
                 "job": self.job}
        self.manifest.append(entry)
        self.dead.append(entry)

    def on_settled(self, origin) -> None:
        """Record that everything the read ``origin`` fed has been written."""
        self.manifest.append({"settled": [list(p) for p in self._pieces([origin])],
                              "job": self.job})

    # ---- worker side -------------------------------------------------------------------
    def write(self, blocks, ctx) -> pa.Table:
        """Write one partition's blocks to one file; return a one-row result table.

        ``ctx`` is the task context: its lineage ``key`` names the file, so a retried
        task overwrites its own file instead of adding a second one.
        """
        self.use_in_this_process()
        if self.num_rows_per_file:
            files = []
            for i, group in enumerate(row_groups(blocks, self.num_rows_per_file)):
                name = f"{self.file_prefix(ctx)}-{i:04d}{self.suffix}"
                files.append(self._write_one(iter(group), name, ctx))
            return written(files)
        blocks = iter(blocks)
        first = next((b for b in blocks if b.num_rows), None)
        if first is None:
            return written([])
        name = f"{self.file_prefix(ctx)}{self.suffix}"
        return written([self._write_one(chain([first], blocks), name, ctx)])

    def _write_one(self, blocks, name: str, ctx) -> tuple[str, int, int]:
        final, temp = f"{self.path}/{name}", f"{self.path}/.{name}.tmp"
        rows, size = self.write_file((b for b in blocks if b.num_rows), temp)
        self.commit(temp, final, ctx)
        return final, rows, size

    def commit(self, temp: str, final: str, ctx) -> None:
        """Rename a finished temporary file to its final name, unless the job has stopped."""
        self.stop_if_abandoned(temp, ctx)
        self.fs.mv(temp, final)

    def stop_if_abandoned(self, temp: str, ctx) -> None:
        """Remove ``temp`` and raise when the task's job has stopped: a thread task, which
        nothing can kill, must not commit a file after the job's cleanup ran."""
        check = getattr(ctx, "check_running", None)
        try:
            if check is not None:
                check()
        except Exception:
            self.fs.rm(temp)
            raise

    def file_prefix(self, ctx) -> str:
        """``part-<job>-<lineage key>``: unique to this run and this task (not the attempt)."""
        return f"part-{self.job}-{getattr(ctx, 'key', '') or ctx.task_index}"

    def use_in_this_process(self) -> None:
        """Replace a filesystem created before this worker was forked (s3fs refuses it)."""
        fs = usable_fs(self.fs)
        if fs is not self.fs:
            self.fs, self.arrow_fs = fs, arrow_filesystem(fs)

    def write_file(self, tables, path: str) -> tuple[int, int]:
        """Write ``tables`` to ``path``; return (rows, bytes)."""
        raise NotImplementedError

    # ---- driver side: the end ------------------------------------------------------------
    def dead_letter_rows(self) -> list[dict]:
        """Every dead letter of this write (kept from interrupted runs, and this run's)."""
        return [row for entry in self.dead for row in entry["dead"]]

    def finalize(self, results: list[pa.Table]) -> list[dict]:
        """Write the dead letters and ``_SUCCESS`` (every file of the output, relative
        paths); return the files with their full paths."""
        errors = self._write_dead_letters()
        self.out.remove(f for f in self.out.job_files(self.jobs)
                        if f.rsplit("/", 1)[-1].startswith(".") and f.endswith(".written"))
        files = [{"path": e["file"], "rows": e["rows"], "bytes": e.get("bytes")}
                 for e in self.committed]
        summary = {"files": files, "rows": sum(f["rows"] for f in files),
                   "dead_letters": errors}
        write_atomic(self.fs, self.out.full(SUCCESS), json.dumps(summary, indent=1))
        return [{**f, "path": self.out.full(f["path"])} for f in files]

    def _write_dead_letters(self) -> str | None:
        rows = self.dead_letter_rows()
        if not rows:
            return None
        import pyarrow.parquet as pq

        rel = dead_letters_file(self.job)
        temp = f"{ERRORS_DIR}/.part-{self.job}-dead-letters.tmp"  # a resume removes it
        self.fs.makedirs(self.out.full(ERRORS_DIR), exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows), self.out.full(temp), filesystem=self.arrow_fs)
        self.fs.mv(self.out.full(temp), self.out.full(rel))  # never seen torn
        self.manifest.append({"errors": rel, "job": self.job})
        return rel

    def abort(self) -> None:
        """Remove every file this run wrote (complete or temporary) and its manifest lines;
        what earlier runs of an interrupted write committed stays, for a resume. An append
        to a complete output gets that output's ``_SUCCESS`` back: it is complete again."""
        if not self.fs.exists(self.path):
            return
        entries = [e for e in load(self.fs, self.path) if e.get("job") != self.job]
        mine = [e["file"] for e in self.committed if e.get("job") == self.job]
        self.out.remove(mine + self.out.job_files([self.job]))
        if any("file" in e or "earlier" in e for e in entries):
            self.manifest.rewrite(entries)
        elif self.fs.exists(self.out.full(MANIFEST)):
            self.fs.rm(self.out.full(MANIFEST))
        success = getattr(self, "_success_before", None)
        if success is not None:
            write_atomic(self.fs, self.out.full(SUCCESS), success)  # last: the files are back


def dead_letters_file(job: str) -> str:
    """Where a run's dead letters go, relative to the output directory.

    >>> dead_letters_file("1b32")
    '_errors/dead-letters-1b32.parquet'
    """
    return f"{ERRORS_DIR}/dead-letters-{job}.parquet"


def written(files: list[tuple[str, int, int]]) -> pa.Table:
    """The result table of a write task: one row (path, rows, bytes) per committed file.

    >>> written([("/o/a.csv", 2, 16)]).to_pylist()
    [{'path': '/o/a.csv', 'rows': 2, 'bytes': 16}]
    """
    return pa.table({"path": pa.array([f[0] for f in files], pa.string()),
                     "rows": pa.array([f[1] for f in files], pa.int64()),
                     "bytes": pa.array([f[2] for f in files], pa.int64())})
