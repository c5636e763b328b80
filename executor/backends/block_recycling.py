"""Reusing released block files of the shared-memory store.

A block file's pages are faulted in as a worker writes it, and given back when the
file is deleted and unmapped everywhere. On a virtual machine faulting fresh memory
in costs ~0.2 ms per 150 KB (W2's 224x224 crops: a third of the JPEG decode that
made them), so the driver keeps a few released files in the store's ``free``
folder (up to a byte limit) and a worker writes its next block over one of them.

A released file may still be mapped: the table handed to the user (a torch tensor
made from it) lives on after the driver released the block. Overwriting it would
change data the user holds, so a file is reused only when the kernel says nobody
has it open or mapped: a write lease (``fcntl(F_SETLEASE, F_WRLCK)``) is granted
only then. Files still mapped stay in the folder for a later try; where leases are
not available the store writes fresh files, as before.
"""

from __future__ import annotations

import errno
import fcntl
import os

FREE_DIR = "free"
TRIES = 3  # files a put looks at before writing a fresh one
_SETLEASE = getattr(fcntl, "F_SETLEASE", None)  # Linux only
_LEASES = {"work": _SETLEASE is not None}  # False once a lease was refused for another reason


def keep_released(root: str, path: str, limit_bytes: int) -> bool:
    """Move the released block ``path`` into ``root``'s free folder if the folder
    holds less than ``limit_bytes``; False: the caller deletes it.

    >>> import tempfile
    >>> root = tempfile.mkdtemp(); path = os.path.join(root, "a.arrow")
    >>> _ = open(path, "wb").write(b"x" * 100)
    >>> keep_released(root, path, 0), keep_released(root, path, 1000)
    (False, True)
    >>> os.listdir(os.path.join(root, FREE_DIR))
    ['a.arrow']
    """
    if limit_bytes <= 0 or not _LEASES["work"]:
        return False
    free = os.path.join(root, FREE_DIR)
    try:
        held = sum(entry.stat().st_size for entry in os.scandir(free))
    except FileNotFoundError:
        os.makedirs(free, mode=0o700, exist_ok=True)
        held = 0
    try:
        if held + os.path.getsize(path) > limit_bytes:
            return False
        os.rename(path, os.path.join(free, os.path.basename(path)))
    except FileNotFoundError:  # released twice: nothing to keep
        return True
    return True


def claim_free(root: str, path: str) -> int | None:
    """Move a free file nobody has open or mapped to ``path`` and return a descriptor
    open for reading and writing at offset 0; None when there is none.

    >>> import tempfile
    >>> root = tempfile.mkdtemp(); path = os.path.join(root, "a.arrow")
    >>> _ = open(path, "wb").write(b"old"); keep_released(root, path, 1000)
    True
    >>> fd = claim_free(root, os.path.join(root, "b.arrow")); os.pread(fd, 3, 0)
    b'old'
    >>> os.close(fd); claim_free(root, os.path.join(root, "c.arrow")) is None
    True
    """
    free = os.path.join(root, FREE_DIR)
    try:
        names = os.listdir(free)[:TRIES]
    except FileNotFoundError:
        return None
    for name in names:
        fd = _take(os.path.join(free, name), path)
        if fd is not None:
            return fd
    return None


def _take(candidate: str, path: str) -> int | None:
    try:
        os.rename(candidate, path)  # atomic: one claimant wins
    except FileNotFoundError:
        return None
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    if _unshared(fd):
        return fd
    os.close(fd)
    if _LEASES["work"]:
        os.rename(path, candidate)  # still mapped somewhere: try again later
    else:
        os.unlink(path)
    return None


def _unshared(fd: int) -> bool:
    """True when no other open file or mapping holds the file behind ``fd``."""
    if _SETLEASE is None:  # pragma: no cover - not Linux
        return False
    try:
        fcntl.fcntl(fd, _SETLEASE, fcntl.F_WRLCK)
    except OSError as exc:
        if exc.errno not in (errno.EAGAIN, errno.EBUSY):
            _LEASES["work"] = False  # leases disabled or unsupported here
        return False
    fcntl.fcntl(fd, _SETLEASE, fcntl.F_UNLCK)
    return True
