"""streaming_split across processes: the driver serves each rank's batches over a local socket.

Data-parallel ranks usually run in their own processes (``torch.multiprocessing``,
``multiprocessing`` with spawn or fork). A split handle pickled into such a
process (or inherited by a fork) cannot reach the driver's coordinator
directly, so the driver runs a :class:`SplitServer`: a Unix-socket listener
(``multiprocessing.connection``, with a random auth key) whose connection
threads pull one rank's batches from the same coordinator the in-process ranks
use and hand them over in shared memory (``split_shm``: each batch written once into
one of the rank's files, which the rank maps; a file is reused once the rank has
dropped the batch it carried). A rank asks for one batch at a time,
so a slow rank backpressures the pipeline exactly as a thread would, and the
coordinator's stuck-rank timeout and equal batch counts hold unchanged. An
error in the driver (a stuck rank, a failing UDF) is re-raised in the rank.

No client can hold up another: the accept loop only accepts, and each
connection authenticates on its own thread under a deadline
(``handshake_timeout``), so a client that connects and says nothing (or dies
half-way) is dropped without delaying any rank. A rank that closes its
iterator says so (``("close", seen)``: the batches it fetched beyond the
``seen`` ones go back to the other ranks); a connection that drops mid-epoch
without it is a lost rank, which fails the epoch for the others with a
``RankLostError`` naming it (see ``streambatch.loader.split``) instead of silently dropping its
share.

Nothing here knows about plans or torch: the server is given ``open_rank(rank,
epoch, options) -> iterator of pyarrow.Table`` by the loader.
"""

from __future__ import annotations

import collections
import functools
import os
import pickle
import secrets
import socket
import struct
import tempfile
import threading
from collections.abc import Callable, Iterator
from multiprocessing.connection import Client, Connection, answer_challenge, deliver_challenge

import pyarrow as pa

from streambatch.executor.backends.fast_start import defer_pandas_probe
from streambatch.executor.backends.shared_store import SharedRef, SharedStore
from streambatch.executor.contract import StreamBatchError
from streambatch.executor.exit_cleanup import at_exit
from streambatch.loader.split_shm import BatchFiles, read_batch

OpenRank = Callable[[int, int, dict], Iterator[pa.Table]]


class SplitConnectionError(StreamBatchError):
    """A rank process lost its connection to the driver that runs the pipeline.

    >>> import pickle
    >>> str(pickle.loads(pickle.dumps(SplitConnectionError("rank 1: gone"))))
    'rank 1: gone'
    """

    def __init__(self, message: str) -> None:
        self._init_args = (message,)
        super().__init__(message)


class SplitServer:
    """Serves ranks of one split group to other processes; started on demand.

    ``handshake_timeout``: seconds a new connection has to authenticate and name
    its rank before it is dropped.

    >>> server = SplitServer(lambda rank, epoch, opts: iter([pa.table({"r": [rank]})]))
    >>> [t["r"].to_pylist() for t in fetch_rank(server.address, server.authkey, 1, 0, {})]
    [[1]]
    >>> server.close()
    """

    def __init__(self, open_rank: OpenRank, handshake_timeout: float = 10.0) -> None:
        self.open_rank = open_rank
        self.handshake_timeout = handshake_timeout
        self.authkey = secrets.token_bytes(32)
        self._dir = tempfile.mkdtemp(prefix="streambatch-split-")  # 0700: only this user
        self.address = os.path.join(self._dir, "split.sock")
        self._forget_exit = at_exit(self._remove_socket)  # also on SIGTERM (was left)
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(self.address)
        self._listener.listen(64)
        self._closed = False
        self._owner = os.getpid()
        self._store: SharedStore | None = None  # batches for the ranks (same machine)
        self._store_lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, daemon=True,
                                        name="streambatch-split-server")
        self._thread.start()

    def _accept(self) -> None:
        """Accept connections, nothing else: each one is served on its own thread."""
        while not self._closed:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                if self._closed:
                    return
                continue
            threading.Thread(target=self._serve, args=(sock,), daemon=True,
                             name="streambatch-split-rank").start()

    def _handshake(self, sock: socket.socket) -> tuple[Connection, tuple] | None:
        """Authenticate ``sock`` and read its request ``(rank, epoch, options)``, all
        within ``handshake_timeout``; None (connection closed) for a client that
        fails, stalls or sends something else."""
        conn = Connection(os.dup(sock.fileno()))
        try:
            _io_timeout(sock, self.handshake_timeout)  # each read/write during the handshake
            deliver_challenge(conn, self.authkey)
            answer_challenge(conn, self.authkey)
            request = conn.recv() if conn.poll(self.handshake_timeout) else None
            if not (isinstance(request, tuple) and len(request) == 3):
                raise ValueError(f"expected (rank, epoch, options), got {request!r}")
            _io_timeout(sock, None)  # from here a rank may take its time between batches
            return conn, request
        except Exception:  # noqa: BLE001 - wrong key, silence, garbage, a dead client
            conn.close()
            return None
        finally:
            sock.close()  # conn holds its own descriptor of the same socket

    def _serve(self, sock: socket.socket) -> None:
        shaken = self._handshake(sock)
        if shaken is None:
            return
        conn, (rank, epoch, options) = shaken
        batches, ended = None, False
        try:
            batches = self.open_rank(rank, epoch, options)
            ended = self._stream(conn, batches)
        except (EOFError, OSError):
            pass  # the rank's connection dropped: handled below
        except BaseException as exc:  # noqa: BLE001 - re-raised in the rank
            ended = True
            try:
                conn.send(("error", _picklable(exc)))
            except (EOFError, OSError):
                pass
        finally:
            conn.close()
            if batches is not None:
                _finish(batches, ended, "its connection to the driver closed mid-epoch")

    def _shared(self) -> SharedStore:
        """The store the batches travel through: a rank is on this machine (the
        server's socket is a Unix one), so a batch is written once to shared memory
        and mapped by the rank, instead of copied into a message, the socket and the
        rank's buffer."""
        with self._store_lock:
            if self._store is None:
                self._store = SharedStore.create()
            return self._store

    def _stream(self, conn: Connection, batches: Iterator[pa.Table]) -> bool:
        """Answer the rank's requests; True once its epoch ended or it closed on purpose.

        A request is ``"next"``, or ``("next", slots)`` naming the files of batches the
        rank has dropped since (they carry its next batches), or a close."""
        files = BatchFiles(self._shared().ensure())
        try:
            while True:
                request = conn.recv()
                if request == "close" or isinstance(request, tuple) and request[:1] == ("close",):
                    if len(request) == 2 and hasattr(batches, "seen"):
                        batches.seen = request[1]  # what it fetched beyond these goes back
                    return True
                if isinstance(request, tuple) and len(request) == 2 and request[0] == "next":
                    files.released(request[1])
                    request = "next"
                if request != "next":
                    raise EOFError(f"unexpected request {request!r}")
                try:
                    table = next(batches)
                except StopIteration:
                    files.close()  # before the rank hears of the end: nothing is left behind
                    conn.send(("end", None))
                    return True
                conn.send(self._written(table, files))
        finally:
            files.close()

    def _written(self, table: pa.Table, files: BatchFiles) -> tuple:
        """``table`` in shared memory, as the message that names it to the rank: its
        fixed-width columns written chunk by chunk in one copy into one of the rank's
        files (``split_shm``), or, with none, the whole table as an Arrow IPC file."""
        written = files.write(table)
        if written is not None:
            return ("slot", written)
        if any(c.num_chunks > 1 for c in table.columns):
            table = table.combine_chunks()
        return ("shared", self._shared().put(table).path)

    def close(self) -> None:
        """Stop accepting ranks and remove the socket (only in the process that made it)."""
        if self._closed or os.getpid() != self._owner:
            return
        self._closed = True
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as wake:
                wake.connect(self.address)  # wake accept()
        except OSError:
            pass
        self._listener.close()
        if self._store is not None:
            self._store.destroy()
        self._forget_exit()
        self._remove_socket()

    def _remove_socket(self) -> None:
        """Remove the socket and its directory (the process that made them)."""
        if os.getpid() != self._owner:
            return
        if os.path.exists(self.address):
            os.unlink(self.address)
        os.rmdir(self._dir) if os.path.isdir(self._dir) else None


def _io_timeout(sock: socket.socket, seconds: float | None) -> None:
    """Bound every blocking read and write on ``sock`` (None: no bound). Set on the
    socket itself, so it holds for the Connection's own descriptor too."""
    whole = int(seconds or 0)
    micros = int(((seconds or 0) - whole) * 1e6)
    if seconds is not None and whole == 0 and micros == 0:
        micros = 1  # 0 would mean "no bound"
    value = struct.pack("ll", whole, micros)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)


def _finish(batches, ended: bool, why: str) -> None:
    """Tell the rank's iterator how the rank left: closed (on purpose) or lost."""
    lost = getattr(batches, "lost", None)
    if not ended and lost is not None:
        lost(why)
    elif hasattr(batches, "close"):
        batches.close()


def _picklable(exc: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - send what can cross the process boundary
        return StreamBatchError(f"{type(exc).__name__}: {exc}")


class fetch_rank:  # noqa: N801 - was a generator function; callers use it as one
    """One rank's batches for ``epoch``, fetched from the driver's :class:`SplitServer`
    (it connects on the first ``next``).

    ``seen``: set by the consumer before ``close()`` to the number of batches it
    actually got; the driver hands the ones fetched beyond those to the ranks
    still reading.

    >>> server = SplitServer(lambda rank, epoch, opts: iter([pa.table({"e": [epoch]})] * 2))
    >>> [t["e"][0].as_py() for t in fetch_rank(server.address, server.authkey, 0, 3, {})]
    [3, 3]
    >>> server.close()
    """

    def __init__(self, address: str, authkey: bytes, rank: int, epoch: int,
                 options: dict) -> None:
        self.address, self.authkey, self.rank, self.epoch = address, authkey, rank, epoch
        self.options = options
        self.seen: int | None = None
        self._conn: Connection | None = None
        self._over = False
        self._freed: collections.deque = collections.deque()  # slots of dropped batches

    def __iter__(self) -> fetch_rank:
        return self

    def __next__(self) -> pa.Table:
        if self._over:
            raise StopIteration
        if self._conn is None:
            self._connect()
        conn = self._conn
        assert conn is not None
        freed = []
        while self._freed:  # pops are atomic: a release in another thread is never lost
            freed.append(self._freed.popleft())
        conn.send(("next", freed) if freed else "next")
        try:
            kind, value = conn.recv()
        except EOFError as exc:
            self._end()
            raise SplitConnectionError(
                f"streaming_split rank {self.rank}: the driver process closed the connection "
                f"in epoch {self.epoch} (did it exit or crash?)") from exc
        if kind == "slot":  # mapped; the driver may reuse the file once this batch is dropped
            path, layout, slot = value
            return read_batch(path, layout, on_release=functools.partial(self._freed.append, slot))
        if kind == "shared":  # mapped, then unlinked: the map stays valid, the file goes
            table = SharedRef(value).read()
            os.unlink(value)
            return table
        self._end()
        if kind == "end":
            raise StopIteration
        raise value

    def _connect(self) -> None:
        try:
            self._conn = Client(self.address, family="AF_UNIX", authkey=self.authkey)
        except OSError as exc:
            self._over = True
            raise SplitConnectionError(
                f"streaming_split rank {self.rank}: cannot reach the driver process at "
                f"{self.address} ({exc}). The process that called streaming_split() runs the "
                f"pipeline and must stay alive while the ranks iterate") from exc
        self._conn.send((self.rank, self.epoch, self.options))
        # a rank process's first batch: pyarrow's first numpy view would import pandas
        # (~0.2 s) to probe for it; pandas still loads when a conversion asks for it
        defer_pandas_probe()

    def _end(self) -> None:
        self._over = True
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def close(self) -> None:
        """The rank stops on purpose: say so (with ``seen``), it is not a lost rank."""
        if self._conn is not None and not self._over:
            try:
                self._conn.send(("close", self.seen))
            except OSError:
                pass
        self._end()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - at interpreter exit
            pass
