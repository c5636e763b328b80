"""Resolve user paths (files, directories, globs, lists, any fsspec URL) to files."""

from __future__ import annotations

import fsspec
import pyarrow.fs as pafs
from fsspec.core import url_to_fs


def _hidden(path: str) -> bool:
    name = path.rstrip("/").rsplit("/", 1)[-1]
    return name.startswith((".", "_"))


def expand_paths(paths, suffix: str, filesystem=None, who: str = "read") -> tuple:
    """Return ``(filesystem, sorted file list)``; a missing path names itself.

    Directories are searched recursively for files ending in ``suffix``;
    hidden files (``.x``, ``_SUCCESS``) are skipped.

    >>> expand_paths(["/no/such/file.parquet"], ".parquet", who="read_parquet")
    Traceback (most recent call last):
    ...
    FileNotFoundError: read_parquet: no such file or directory: '/no/such/file.parquet'
    """
    paths = [paths] if isinstance(paths, str) else list(paths)
    if not paths:
        raise ValueError(f"{who}: no paths given")
    fs = filesystem
    files: list[str] = []
    for path in paths:
        fs_here, resolved = (fs, path) if fs is not None else url_to_fs(path)
        fs = fs_here
        files += _expand_one(fs, resolved, path, suffix, who)
    return fs, files


def _expand_one(fs: fsspec.AbstractFileSystem, path: str, original: str, suffix: str,
                who: str) -> list[str]:
    if fsspec.core.has_magic(path):
        found = sorted(p for p in fs.glob(path) if fs.isfile(p) and not _hidden(p))
        if not found:
            raise FileNotFoundError(f"{who}: no files match the pattern {original!r}")
        return found
    if not fs.exists(path):
        raise FileNotFoundError(f"{who}: no such file or directory: {original!r}")
    if fs.isdir(path):
        found = sorted(p for p in fs.find(path) if p.endswith(suffix) and not _hidden(p))
        if not found:
            raise FileNotFoundError(f"{who}: directory {original!r} holds no *{suffix} files")
        return found
    return [path]


def arrow_filesystem(fs):
    """A pyarrow filesystem for an fsspec one (native for local files).

    >>> import fsspec
    >>> type(arrow_filesystem(fsspec.filesystem("file"))).__name__
    'LocalFileSystem'
    """
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    if "file" in protocols or "local" in protocols:
        return pafs.LocalFileSystem()
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs))
