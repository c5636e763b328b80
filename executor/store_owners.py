"""Who owns a shared-memory store, and removing the stores whose owner is gone.

A store is named ``streambatch-<pid>-<start>-<ns>-<random>``: the driver's pid,
its start time (clock ticks since boot, from ``/proc/<pid>/stat``) and its pid
namespace. A pid can be reused by a later process, a pid plus its start time
cannot, so a store is an orphan when no process with that pid and start time
exists. Stores made in another pid namespace (a container sharing /dev/shm) are
never judged: their pids mean nothing here. Only directories owned by this user
are touched. Names from older versions (``streambatch-<pid>-<random>``) carry
neither start time nor namespace: they are orphans when their pid no longer exists
and nothing in them changed for ``OLD_NAME_IDLE_S`` (a live store changes with
every block), so a live one from another namespace is not taken for one.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
import time
import uuid
from dataclasses import dataclass

PREFIX = "streambatch-"
_NAME = re.compile(r"streambatch-(\d+)-(\d+)-(\d+)-[0-9a-f]{8}")
_OLD_NAME = re.compile(r"streambatch-(\d+)-[0-9a-f]{8}")
OLD_NAME_IDLE_S = 600.0


@dataclass(frozen=True)
class Owner:
    """The process a store belongs to (``start``/``ns`` are None for old names)."""

    pid: int
    start: int | None = None
    ns: int | None = None


def store_base() -> str:
    """Where stores live: tmpfs (/dev/shm) when the machine has it, else the temp dir."""
    return "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()


def new_store_name() -> str:
    """A fresh store name for this process.

    >>> parse_store_name(new_store_name()).pid == os.getpid()
    True
    """
    me = _this_process()
    return f"{PREFIX}{me.pid}-{me.start}-{me.ns}-{uuid.uuid4().hex[:8]}"


def parse_store_name(name: str) -> Owner | None:
    """The owner encoded in a store's name, or None when it is not a store's name.

    >>> parse_store_name("streambatch-12-345-4026531836-0123abcd")
    Owner(pid=12, start=345, ns=4026531836)
    >>> parse_store_name("streambatch-12-0123abcd"), parse_store_name("streambatch-split-x")
    (Owner(pid=12, start=None, ns=None), None)
    """
    match = _NAME.fullmatch(name)
    if match:
        return Owner(*(int(g) for g in match.groups()))
    match = _OLD_NAME.fullmatch(name)
    return Owner(int(match.group(1))) if match else None


def owner_alive(owner: Owner) -> bool:
    """False only when the owner is certainly gone (a store made in another pid
    namespace counts as alive: its pid cannot be checked from here).

    >>> owner_alive(parse_store_name(new_store_name()))
    True
    """
    if owner.ns is not None and owner.ns != _this_process().ns:
        return True
    now = _process_start(owner.pid)
    if now is None:  # no /proc entry: gone, or a system without /proc
        return _pid_exists(owner.pid) if not os.path.isdir("/proc") else False
    if now == -1:  # a zombie: it will never use its store again
        return False
    return owner.start in (None, 0) or owner.start == now


def remove_orphan_stores(base: str | None = None) -> list[str]:
    """Delete this user's stores in ``base`` whose owning process is gone; returns their
    paths. Called whenever a store is created, so a driver killed by SIGKILL leaves its
    store only until the next streambatch job starts on the machine.

    >>> base = tempfile.mkdtemp()
    >>> mine = new_store_name()
    >>> gone = mine.replace(f"-{os.getpid()}-", "-999999999-", 1)  # no such process
    >>> for name in (mine, gone): os.mkdir(os.path.join(base, name))
    >>> [os.path.basename(p) for p in remove_orphan_stores(base)] == [gone]
    True
    >>> os.listdir(base) == [mine]
    True
    >>> shutil.rmtree(base)
    """
    base = base or store_base()
    try:
        names = [n for n in os.listdir(base) if n.startswith(PREFIX)]
    except OSError:
        return []
    removed = []
    for name in names:
        owner = parse_store_name(name)
        path = os.path.join(base, name)
        if owner is not None and not owner_alive(owner) and _ours(path, owner):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _ours(path: str, owner: Owner) -> bool:
    """A real directory (not a link someone planted) owned by this user (and, for an
    old name, idle long enough)."""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    if owner.start is None and time.time() - info.st_mtime < OLD_NAME_IDLE_S:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid()


_ME: tuple[int, Owner] | None = None


def _this_process() -> Owner:
    global _ME
    if _ME is None or _ME[0] != os.getpid():
        pid = os.getpid()
        _ME = (pid, Owner(pid, max(_process_start(pid) or 0, 0), _pid_namespace()))
    return _ME[1]


def _process_start(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks since boot; None when there is no such
    process (or no /proc), -1 for a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read().decode("ascii", "replace")
    except OSError:
        return None
    fields = text[text.rfind(")") + 2:].split()  # the name in (...) may hold spaces
    if fields[0] in ("Z", "X"):
        return -1
    return int(fields[19])  # field 22 of stat(5); fields[0] is field 3


def _pid_namespace() -> int:
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return 0


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


__all__ = ["Owner", "new_store_name", "owner_alive", "parse_store_name",
           "remove_orphan_stores", "store_base"]
