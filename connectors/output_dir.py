"""A sink's output directory: which files are there, which are the sink's own.

A sink owns what its manifest records and the files its runs name
``part-<job>-…`` (or list in a ``.part-<job>-….written`` record, for sinks that
take file names from the data). Everything else in the directory is foreign:
never deleted, never overwritten.
"""

from __future__ import annotations

import posixpath


class OutputDir:
    """Files under ``path`` on ``fs``, by path relative to it.

    >>> import tempfile, fsspec, os
    >>> d = tempfile.mkdtemp(); os.makedirs(f"{d}/k=1"); os.makedirs(f"{d}/_errors")
    >>> for name in ("k=1/part-j1-a.parquet", "_errors/x", "notes.txt", ".part-j1-b.tmp"):
    ...     open(f"{d}/{name}", "w").close()
    >>> out = OutputDir(fsspec.filesystem("file"), d)
    >>> sorted(out.data_files()), sorted(out.job_files(["j1"]))
    (['k=1/part-j1-a.parquet', 'notes.txt'], ['.part-j1-b.tmp', 'k=1/part-j1-a.parquet'])
    >>> out.remove(["k=1/part-j1-a.parquet"]); os.path.exists(f"{d}/k=1")
    False
    """

    def __init__(self, fs, path: str) -> None:
        self.fs, self.path = fs, path.rstrip("/")

    def full(self, rel: str) -> str:
        """The path of ``rel`` on the filesystem."""
        return f"{self.path}/{rel}"

    def rel(self, path: str) -> str:
        """``path`` relative to the directory.

        >>> OutputDir(None, "/out").rel("/out/k=1/a.parquet")
        'k=1/a.parquet'
        """
        path = path.rstrip("/")
        prefix = self.path + "/"
        return path[len(prefix):] if path.startswith(prefix) else path

    def files(self) -> list[str]:
        """Every file below the directory, relative, sorted ([] when it does not exist)."""
        if not self.fs.exists(self.path):
            return []
        return sorted(self.rel(p) for p in self.fs.find(self.path))

    def data_files(self) -> list[str]:
        """Files that readers take as data: none of their path parts start with ``.`` or ``_``."""
        return [f for f in self.files() if not is_hidden(f)]

    def job_files(self, jobs) -> list[str]:
        """Files of these runs: named ``part-<job>-`` / ``.part-<job>-``, or listed in
        such a run's ``.written`` record (file names taken from the data)."""
        prefixes = tuple(p for j in jobs for p in (f"part-{j}-", f".part-{j}-"))
        found = set()
        for rel in self.files():
            name = posixpath.basename(rel)
            if not name.startswith(prefixes):
                continue
            found.add(rel)
            if name.startswith(".") and name.endswith(".written"):
                found.update(self._listed(rel))
        return sorted(found)

    def _listed(self, record: str) -> list[str]:
        with self.fs.open(self.full(record), "r") as handle:
            return [line for line in handle.read().splitlines()
                    if line and self.fs.exists(self.full(line))]

    def remove(self, rels) -> None:
        """Delete these files (those still there), then the directories they leave empty."""
        parents = set()
        for rel in rels:
            if self.fs.exists(self.full(rel)):
                self.fs.rm(self.full(rel))
            parents.add(posixpath.dirname(rel))
        for parent in sorted(parents, key=len, reverse=True):
            self._prune(parent)

    def _prune(self, rel: str) -> None:
        while rel:
            path = self.full(rel)
            try:
                if not self.fs.exists(path) or self.fs.ls(path, detail=False):
                    return
                self.fs.rmdir(path)
            except OSError:
                return
            rel = posixpath.dirname(rel)


def is_hidden(rel: str) -> bool:
    """True when some part of the relative path starts with ``.`` or ``_``.

    >>> is_hidden("_errors/x.parquet"), is_hidden("k=1/.a.tmp"), is_hidden("k=1/a.parquet")
    (True, True, False)
    """
    return any(part.startswith((".", "_")) for part in rel.split("/"))


def safe_relative(name: str, who: str) -> str:
    """A file name from the data as a path inside the output: ``sub/a.png`` stays,
    ``..``, absolute paths and empty parts are refused.

    >>> safe_relative("sub/a.png", "write_images")
    'sub/a.png'
    >>> safe_relative("../a.png", "write_images")
    Traceback (most recent call last):
    ...
    ValueError: write_images: file name '../a.png' leaves the output directory; use names without '..' or a leading '/'
    """
    parts = name.replace("\\", "/").split("/")
    if name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"{who}: file name {name!r} leaves the output directory; use "
                         "names without '..' or a leading '/'")
    return "/".join(parts)
