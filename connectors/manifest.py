"""The output manifest of a file sink: which files are committed and which reads settled.

``_manifest.jsonl`` in the output directory is appended by the driver as the job
runs: a header with the plan's fingerprint, one line per committed file (with
the source reads it holds rows of) and one line per settled read (everything it
fed has been written). A restarted job resumes from it.
"""

from __future__ import annotations

import json
import os

MANIFEST = "_manifest.jsonl"


def load(fs, directory: str) -> list[dict]:
    """The manifest's entries ([] when there is none).

    >>> import fsspec
    >>> load(fsspec.filesystem("memory"), "/nothing-here")
    []
    """
    path = f"{directory}/{MANIFEST}"
    if not fs.exists(path):
        return []
    with fs.open(path, "r") as handle:
        return [json.loads(line) for line in handle if line.strip().endswith("}")]


def resumable_reads(entries: list[dict]) -> tuple[set, list[dict]]:
    """Reads a resumed job may skip, and the committed files to keep.

    A read is skippable when it settled and every file holding its rows holds
    only rows of skippable reads (a file mixing in an unsettled read is
    rewritten, so the reads in it must run again).

    >>> entries = [{"file": "a", "origins": [[0, 0]]}, {"file": "b", "origins": [[0, 1], [0, 2]]},
    ...            {"settled": [0, 0]}, {"settled": [0, 1]}]
    >>> skip, keep = resumable_reads(entries)
    >>> sorted(skip), [f["file"] for f in keep]
    ([(0, 0)], ['a'])
    """
    files = [e for e in entries if "file" in e]
    skip = {tuple(e["settled"]) for e in entries if "settled" in e}
    while True:
        mixed = {tuple(o) for f in files for o in f["origins"]
                 if not all(tuple(x) in skip for x in f["origins"])}
        if not mixed & skip:
            break
        skip -= mixed
    keep = [f for f in files if all(tuple(o) in skip for o in f["origins"])]
    return skip, keep


class ManifestWriter:
    """Appends manifest lines durably (flushed and fsynced on local disks)."""

    def __init__(self, fs, directory: str) -> None:
        self.fs, self.path = fs, f"{directory}/{MANIFEST}"

    def rewrite(self, entries: list[dict]) -> None:
        """Replace the manifest with ``entries`` (used when a job starts or resumes)."""
        with self.fs.open(self.path, "w") as handle:
            handle.writelines(json.dumps(e) + "\n" for e in entries)

    def append(self, entry: dict) -> None:
        """Add one entry."""
        with self.fs.open(self.path, "a") as handle:
            handle.write(json.dumps(entry) + "\n")
            handle.flush()
            if hasattr(handle, "fileno"):
                try:
                    os.fsync(handle.fileno())
                except (OSError, ValueError):
                    pass
