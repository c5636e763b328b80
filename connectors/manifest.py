"""The output manifest of a file sink: what the output holds and what it was made of.

``_manifest.jsonl`` in the output directory is appended by the driver as the job
runs (each line flushed and fsynced) and rewritten atomically (write, fsync,
rename) when a job starts or resumes. Its lines:

- ``{"plan": fingerprint, "jobs": [...]}``: the header; ``jobs`` are the runs of
  this write (a first run and its resumes), whose file names start ``part-<job>-``;
- ``{"file": relative path, "rows", "bytes", "origins": [piece, ...], "job"}``: a
  committed file and the read pieces it holds rows of;
- ``{"settled": [piece, ...], "job"}``: pieces everything of which reached the output;
- ``{"dead": [row, ...], "origins": [piece, ...], "job"}``: dead letters (``on_error="skip"``);
- ``{"earlier": relative path, "rows", "bytes"}``: a file of an earlier, finished
  write that this one appends to;
- ``{"errors": relative path, "job"}``: a dead-letter file written when a run finished.

A piece is ``[source ordinal, item, start, stop]`` (see ``Piece``): it names what
was read, so a resume over another layout skips exactly what is committed.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass, field

from streambatch.connectors.datasource import Piece, PieceSet

MANIFEST = "_manifest.jsonl"
SUCCESS = "_SUCCESS"


class ResumeMismatchError(ValueError):
    """A resumed write cannot continue the earlier run exactly (its plan or its reads
    changed); nothing was written.

    >>> print(ResumeMismatchError("Read[Range]", "the plan changed"))
    resume: Read[Range] cannot continue the earlier run exactly: the plan changed; run the same pipeline as before, or write to a new path (or mode='overwrite' without resume)
    """

    def __init__(self, where: str, why: str) -> None:
        super().__init__(f"resume: {where} cannot continue the earlier run exactly: {why}; "
                         "run the same pipeline as before, or write to a new path (or "
                         "mode='overwrite' without resume)")
        self.where, self.why = where, why

    def __reduce__(self):
        return (type(self), (self.where, self.why))


def load(fs, directory: str) -> list[dict]:
    """The manifest's entries ([] when there is none); a torn last line is ignored.

    >>> import fsspec
    >>> load(fsspec.filesystem("memory"), "/nothing-here")
    []
    """
    path = f"{directory}/{MANIFEST}"
    if not fs.exists(path):
        return []
    entries = []
    with fs.open(path, "r") as handle:
        for line in handle:
            try:
                entries.append(json.loads(line))
            except ValueError:
                break  # a line cut short by a crash: nothing after it was acknowledged
    return entries


def _key(piece: list) -> tuple:
    return tuple(piece)


@dataclass
class Resumable:
    """What a resumed write keeps: pieces to skip, and the files and dead letters
    (manifest entries) that hold only rows of skipped pieces."""

    skip: set = field(default_factory=set)
    files: list[dict] = field(default_factory=list)
    dead: list[dict] = field(default_factory=list)

    def done(self) -> dict[int, PieceSet]:
        """The skipped pieces per source ordinal, for the planner.

        >>> Resumable({(0, "range", 0, 5)}).done()[0].covers(Piece("range", 1, 2))
        True
        """
        out: dict[int, list[Piece]] = {}
        for entry in self.skip:
            source, piece = Piece.from_json(list(entry))
            out.setdefault(source, []).append(piece)
        return {source: PieceSet(pieces) for source, pieces in out.items()}


def resumable(entries: list[dict]) -> Resumable:
    """Pieces a resumed job may skip, with the files and dead letters to keep.

    A piece is skippable when it settled and every file (or dead-letter entry)
    holding its rows holds only rows of skippable pieces: one that mixes in an
    unsettled piece is removed, so the pieces in it must run again.

    >>> a, b, c = [0, "r", 0, 1], [0, "r", 1, 2], [0, "r", 2, 3]
    >>> entries = [{"file": "x", "origins": [a]}, {"file": "y", "origins": [b, c]},
    ...            {"settled": [a]}, {"settled": [b]}, {"dead": [{}], "origins": [a]}]
    >>> kept = resumable(entries)
    >>> sorted(kept.skip), [f["file"] for f in kept.files], len(kept.dead)
    ([(0, 'r', 0, 1)], ['x'], 1)
    """
    owners = [e for e in entries if "file" in e or "dead" in e]
    skip = {_key(p) for e in entries if "settled" in e for p in e["settled"]}
    while True:
        mixed = {_key(o) for e in owners for o in e["origins"]
                 if not all(_key(x) in skip for x in e["origins"])}
        if not mixed & skip:
            break
        skip -= mixed
    keep = [e for e in owners if all(_key(o) in skip for o in e["origins"])]
    return Resumable(skip, [e for e in keep if "file" in e], [e for e in keep if "dead" in e])


def is_local(fs) -> bool:
    """True for the local filesystem (where rename is atomic and fsync means something).

    >>> import fsspec
    >>> is_local(fsspec.filesystem("file")), is_local(fsspec.filesystem("memory"))
    (True, False)
    """
    from fsspec.implementations.local import LocalFileSystem  # (import streambatch stays light)

    return isinstance(fs, LocalFileSystem)


def write_atomic(fs, path: str, text: str) -> None:
    """Replace ``path`` with ``text`` all at once: a crash leaves the old or the new
    content, never a torn or empty file (local: temp file, fsync, rename, fsync of
    the directory; object stores replace an object in one put).

    >>> import tempfile, fsspec
    >>> p = tempfile.mkdtemp() + "/m"
    >>> write_atomic(fsspec.filesystem("file"), p, "a\\n"); open(p).read()
    'a\\n'
    """
    if not is_local(fs):
        with fs.open(path, "w") as handle:
            handle.write(text)
        return
    temp = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
    with open(temp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)
    _fsync_dir(os.path.dirname(path))


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class ManifestWriter:
    """Appends manifest lines durably and rewrites the manifest atomically."""

    def __init__(self, fs, directory: str) -> None:
        self.fs, self.path = fs, f"{directory}/{MANIFEST}"

    def rewrite(self, entries: list[dict]) -> None:
        """Replace the manifest with ``entries`` (when a job starts, resumes or aborts)."""
        write_atomic(self.fs, self.path, "".join(json.dumps(e) + "\n" for e in entries))

    def append(self, entry: dict) -> None:
        """Add one entry; it is on disk when this returns (local: fsynced)."""
        line = json.dumps(entry) + "\n"
        if is_local(self.fs):
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line.encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            return
        with self.fs.open(self.path, "a") as handle:
            handle.write(line)
