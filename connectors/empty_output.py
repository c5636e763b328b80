"""A directory that a streambatch write committed with no rows reads as no rows.

A file sink's ``finalize`` writes ``_SUCCESS`` last, listing every data file of the
output with its rows. A write of no rows whose schema was unknown (no block reached a
write task; a JSON output, whose files carry no schema, of any empty write) commits a
``_SUCCESS`` that lists no file: its readers take such a directory as an empty dataset
instead of failing "holds no files". A directory with no ``_SUCCESS``, or one whose
``_SUCCESS`` lists files (since removed) or is not streambatch's, is still an error.

>>> import tempfile, json
>>> d = tempfile.mkdtemp()
>>> committed_empty([d]) is None
True
>>> _ = open(f"{d}/_SUCCESS", "w").write(json.dumps({"files": [], "rows": 0}))
>>> committed_empty([d]) is not None
True
"""

from __future__ import annotations

import json
from typing import Any

from streambatch.connectors.manifest import SUCCESS


def committed_empty(paths: list[str], filesystem: Any = None) -> Any | None:
    """The fsspec filesystem of ``paths`` when every one is a directory a streambatch
    write committed with no rows and no data file, else None."""
    import fsspec
    from fsspec.core import url_to_fs

    found = None
    for path in paths:
        if fsspec.core.has_magic(str(path)):
            return None
        if filesystem is not None:
            fs, root = filesystem, filesystem._strip_protocol(str(path))
        else:
            fs, root = url_to_fs(str(path))
        if not _says_empty(fs, f"{str(root).rstrip('/')}/{SUCCESS}"):
            return None
        found = fs
    return found


def _says_empty(fs: Any, success: str) -> bool:
    """True when ``success`` is a streambatch ``_SUCCESS`` listing no file and no row.

    >>> import fsspec, tempfile
    >>> path = tempfile.mkdtemp() + "/_SUCCESS"
    >>> _ = open(path, "w")  # another engine's: empty
    >>> _says_empty(fsspec.filesystem("file"), path)
    False
    """
    try:
        with fs.open(success, "r") as handle:
            summary = json.loads(handle.read())
    except (OSError, ValueError):
        return False
    return isinstance(summary, dict) and summary.get("files") == [] and \
        summary.get("rows") == 0
