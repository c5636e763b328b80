"""The data files of a ``write_lance`` job that no version of the dataset holds.

A Lance write task writes its fragments' data files (``data/<name>.lance``, names Lance
picks) before the driver's one commit; a failed write commits none of them, and the
commit holds only one attempt of each task. So each task, once its fragments are
written, lists their files in a record ``_streambatch-<job>/<attempt>.written`` in the
dataset's directory; the driver removes, after the commit, the listed files the commit
does not hold (failed or repeated attempts), and after a failed write every listed file
the dataset's latest version does not hold; then the records. Lance itself removes the
files of a ``write_fragments`` that raises.

All of it is best effort: a cleanup never hides the write's own outcome.

>>> import tempfile, os
>>> uri = tempfile.mkdtemp() + "/t.lance"
>>> os.makedirs(f"{uri}/data"); open(f"{uri}/data/a.lance", "w").close()
>>> record_written(uri, "j1", ["a.lance"]).endswith(".written")
True
>>> os.listdir(f"{uri}/_streambatch-j1")[0].endswith(".written")
True
>>> remove_unreferenced(uri, "j1", set(), None, created=True)
>>> os.path.exists(uri)
False
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from typing import Any


def _fs(uri: str) -> tuple[Any, str]:
    """The fsspec filesystem and root path of a dataset URI (or local path)."""
    from fsspec.core import url_to_fs

    fs, root = url_to_fs(uri)
    return fs, root.rstrip("/")


def data_files(fragments: Iterable[Any]) -> list[str]:
    """The data files of Lance ``FragmentMetadata`` s, relative to ``data/``.

    >>> class File: path = "x.lance"
    >>> class Fragment: files = [File()]
    >>> data_files([Fragment()])
    ['x.lance']
    """
    return [str(f.path) for fragment in fragments for f in fragment.files]


def referenced(dataset: Any) -> set[str]:
    """The data files the dataset's version holds (none for no dataset).

    >>> referenced(None)
    set()
    """
    if dataset is None:
        return set()
    return set(data_files(f.metadata for f in dataset.get_fragments()))


def record_written(uri: str, job: str, paths: list[str]) -> str | None:
    """List ``paths`` (this attempt's data files) in a new record of ``job``; return the
    record's path (None: nothing to list, or it could not be written)."""
    if not paths:
        return None
    try:
        fs, root = _fs(uri)
        folder = f"{root}/{records_dir(job)}"
        fs.makedirs(folder, exist_ok=True)
        record = f"{folder}/{uuid.uuid4().hex}.written"
        with fs.open(record, "w") as handle:
            handle.write(json.dumps(paths))
        return record
    except Exception:  # a record only helps a cleanup: the write goes on without it
        return None


def records_dir(job: str) -> str:
    """Where a job's records are, relative to the dataset's directory.

    >>> records_dir("ab12")
    '_streambatch-ab12'
    """
    return f"_streambatch-{job}"


def remove_written_now(uri: str, paths: list[str], record: str | None = None) -> None:
    """Remove these data files, then ``record`` (an attempt that is not to be committed:
    its job stopped)."""
    try:
        fs, root = _fs(uri)
        for path in paths:
            if fs.exists(f"{root}/data/{path}"):
                fs.rm(f"{root}/data/{path}")
        if record is not None and fs.exists(record):
            fs.rm(record)
    except Exception:  # noqa: S110 - cleanup must never hide the write's own outcome
        pass


def _listed(fs: Any, folder: str) -> set[str]:
    """The data files the records in ``folder`` list (a record a task is still writing,
    or one torn by a kill, lists nothing)."""
    listed: set[str] = set()
    for record in fs.glob(f"{folder}/*.written") if fs.exists(folder) else []:
        try:
            with fs.open(record, "r") as handle:
                listed.update(str(p) for p in json.loads(handle.read()))
        except (OSError, ValueError):
            continue
    return listed


def remove_unreferenced(uri: str, job: str, keep: set[str], dataset: Any,
                        created: bool = False) -> None:
    """Remove the data files ``job``'s records list that are neither in ``keep`` nor in
    ``dataset`` (its latest version, or None), then the records; with ``created`` (the
    write made the directory) also the directories left empty."""
    try:
        fs, root = _fs(uri)
        folder = f"{root}/{records_dir(job)}"
        remove_written_now(uri, sorted(_listed(fs, folder) - keep - referenced(dataset)))
        if fs.exists(folder):
            fs.rm(folder, recursive=True)
        if created and dataset is None:
            _remove_if_empty(fs, [f"{root}/data", root])
    except Exception:  # noqa: S110 - cleanup must never hide the write's own outcome
        pass


def _remove_if_empty(fs: Any, folders: list[str]) -> None:
    """Remove each of ``folders`` (in order) that exists and holds nothing."""
    for folder in folders:
        if fs.exists(folder) and not fs.ls(folder, detail=False):
            fs.rmdir(folder)
