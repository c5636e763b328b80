"""The local backend's shared-memory store: blocks as Arrow IPC files in /dev/shm, read
zero-copy by every process of the job (the driver, its workers and actors)."""

from __future__ import annotations

import os
import shutil
import stat
import uuid
from dataclasses import dataclass

import pyarrow as pa
from streambatch.executor.backends.block_recycling import claim_free, keep_released
from streambatch.executor.partition import BlockRef
from streambatch.executor.store_owners import new_store_name, remove_orphan_stores, store_base


@dataclass
class SharedRef:
    """A block written as an Arrow IPC file in shared memory (read zero-copy by mmap)."""

    path: str

    def read(self) -> pa.Table:
        """Map the file and read the table without copying."""
        with pa.memory_map(self.path) as source:
            return pa.ipc.open_file(source).read_all()



class SharedStore:
    """A directory of Arrow IPC files in /dev/shm shared by the driver and its workers.

    Private to this user: the directory is 0700 and every block file 0600, set
    explicitly whatever the umask (workers write through :meth:`put` too). The
    directory's name records the owning process (``store_owners``), and creating
    a store first removes the stores whose owner is gone.

    >>> store = SharedStore.create()
    >>> ref = store.put(pa.table({"a": [1, 2, 3]}))
    >>> ref.read().num_rows
    3
    >>> oct(os.stat(ref.path).st_mode & 0o777), oct(os.stat(store.root).st_mode & 0o777)
    ('0o600', '0o700')
    >>> store.destroy()
    """

    def __init__(self, root: str, reuse_bytes: int = 0) -> None:
        self.root = root
        self.reuse_bytes = reuse_bytes
        self._made = os.path.isdir(root)

    @classmethod
    def create(cls, reuse_bytes: int = 0) -> SharedStore:
        """A fresh store (tmpfs when the machine has one); its directory is made on first
        use, so a job that never leaves the driver's process makes none. Stores left
        by processes that are gone (a driver killed by SIGKILL) are removed first.
        Up to ``reuse_bytes`` of released block files are kept for writers to reuse
        (``block_recycling``)."""
        base = store_base()
        remove_orphan_stores(base)
        return cls(os.path.join(base, new_store_name()), reuse_bytes)

    def ensure(self) -> str:
        """The store's directory, made now if it was not yet (before workers use it)."""
        if not self._made:
            _private_dir(self.root)
            self._made = True
        return self.root

    def put(self, table: pa.Table) -> SharedRef:
        """Write ``table`` as an IPC file (mode 0600) and return its reference."""
        path = os.path.join(self.ensure(), uuid.uuid4().hex + ".arrow")
        fd = claim_free(self.root, path)
        if fd is None:
            _private_file(path)
            with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
                writer.write_table(table)
        else:  # over a released file's pages, then cut to the new length
            with open(fd, "r+b", buffering=0) as sink:
                with pa.ipc.new_file(sink, table.schema) as writer:
                    writer.write_table(table)
                sink.truncate(sink.tell())
        return SharedRef(path)

    def put_array(self, array) -> str:
        """Write a numpy array as a ``.npy`` file (mode 0600); its path. Workers map it
        copy-on-write (``numpy.load(path, mmap_mode="c")``): one copy in memory however
        many workers read it, and a worker that writes to it changes only its own pages,
        as after a fork."""
        import numpy as np

        path = os.path.join(self.ensure(), uuid.uuid4().hex + ".npy")
        _private_file(path)
        with open(path, "wb") as handle:
            np.save(handle, array, allow_pickle=False)
        return path

    def release(self, ref: BlockRef) -> None:
        """Delete a shared block once no task needs it (open maps stay valid), or keep
        its file for reuse."""
        if isinstance(ref, SharedRef) and not keep_released(self.root, ref.path,
                                                             self.reuse_bytes):
            try:
                os.unlink(ref.path)
            except FileNotFoundError:
                pass

    def destroy(self) -> None:
        """Remove the store and every block still in it."""
        if self._made or os.path.isdir(self.root):
            shutil.rmtree(self.root, ignore_errors=True)
            if os.path.isdir(self.root):  # a file created while it was being removed
                shutil.rmtree(self.root, ignore_errors=True)


def _private_dir(path: str) -> None:
    """Make ``path`` with mode 0700 (not left to the umask); refuse one that someone
    else made or that is not a plain directory."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        info = os.lstat(path)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
            raise PermissionError(
                f"shared-memory store {path} exists and is not a directory of this user; "
                f"remove it, or run as the user who owns it") from None
    os.chmod(path, 0o700)


def _private_file(path: str) -> None:
    """Create ``path`` empty with mode 0600 (not left to the umask)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
