"""The local backend's shared-memory store is private to the user and never outlives its
driver: 0700/0600 whatever the umask, removed on normal exit, SIGINT and SIGTERM, and a
store left by a driver killed with SIGKILL is removed when the next store is made."""

from __future__ import annotations

import glob
import os
import signal
import time

import pyarrow as pa
import pytest
from streambatch.executor.backends.shared_store import SharedStore

import streambatch as sb
from tests.executor.drivers import (
    driver,
    session_processes,
    stores_of,
    wait_for_udf_start,
    wait_until,
)


@pytest.fixture(autouse=True)
def two_cpus():
    sb.init(num_cpus=2)
    yield
    sb.init(num_cpus=2)


@pytest.fixture
def open_umask():
    """umask 0: a mode left to the umask would give the world read access."""
    previous = os.umask(0)
    yield
    os.umask(previous)


def _mode(path: str) -> int:
    return os.stat(path).st_mode & 0o777


def test_store_directory_and_files_are_private_whatever_the_umask(open_umask):
    store = SharedStore.create()
    try:
        ref = store.put(pa.table({"x": [1, 2]}))
        assert (_mode(store.root), _mode(ref.path)) == (0o700, 0o600)
    finally:
        store.destroy()


def _modes_in_the_store_of(driver: int):
    """A UDF run in a worker process: the modes of the driver's store and of the block
    files in it (written by the upstream stage's workers)."""
    return lambda batch: _modes_in_store(driver, batch)


def _modes_in_store(driver: int, batch: pa.Table) -> dict:
    stores = glob.glob(f"/dev/shm/streambatch-{driver}-*")
    files = [f for s in stores for f in glob.glob(os.path.join(s, "*.arrow"))]
    store_modes = [_mode_if_there(p) for p in stores]
    file_modes = [m for m in map(_mode_if_there, files) if m is not None]
    modes = sorted({oct(m) for m in store_modes + file_modes if m is not None})
    n = batch.num_rows
    return {"modes": [",".join(modes)] * n, "files": [len(file_modes)] * n}


def _mode_if_there(path: str) -> int | None:
    """The mode of ``path``; None when it went between the listing and now (a block
    consumed and released by another task meanwhile)."""
    try:
        return _mode(path)
    except FileNotFoundError:
        return None


def test_blocks_written_by_worker_processes_are_private_too(open_umask):
    # two process stages (a resource change keeps them apart): the second one's inputs
    # are block files the first one's workers wrote
    ds = sb.range(40, override_num_blocks=4).map(lambda r: r) \
        .map_batches(_modes_in_the_store_of(os.getpid()), num_cpus=0.5, batch_format="pyarrow", releases_gil=False)
    rows = ds.take_all()
    assert all(r["files"] >= 1 for r in rows)  # the check saw worker-written blocks
    assert {r["modes"] for r in rows} == {"0o600,0o700"}


def test_a_store_whose_owner_is_gone_is_removed_and_no_other(tmp_path):
    from streambatch.executor.store_owners import new_store_name, remove_orphan_stores

    base = str(tmp_path)
    me = new_store_name()
    pid, start, ns, _ = me[len("streambatch-"):].split("-")
    kept = {
        me: "this live process",
        f"streambatch-{pid}-{start}-{int(ns) + 1}-0123abcd": "another pid namespace",
        "streambatch-split-x": "not a store's name",
        "streambatch-999999998-0123abcd": "old-style name, changed lately (maybe in use)",
    }
    removed = {
        f"streambatch-{pid}-{int(start) + 1}-{ns}-0123abcd": "pid reused by a later process",
        f"streambatch-999999999-{start}-{ns}-0123abcd": "no such process",
        "streambatch-999999999-0123abcd": "old-style name, no such process, idle",
    }
    for name in [*kept, *removed]:
        os.mkdir(os.path.join(base, name))
    long_ago = time.time() - 3600
    os.utime(os.path.join(base, "streambatch-999999999-0123abcd"), (long_ago, long_ago))
    assert sorted(os.path.basename(p) for p in remove_orphan_stores(base)) == sorted(removed)
    assert sorted(os.listdir(base)) == sorted(kept)


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to make another user's directory")
def test_another_users_store_and_a_planted_link_are_left_alone(tmp_path):
    from streambatch.executor.store_owners import new_store_name, remove_orphan_stores

    base = tmp_path / "shm"
    base.mkdir()
    theirs = base / "streambatch-999999999-1-1-0123abcd"
    theirs.mkdir()
    os.chown(theirs, 65534, 65534)
    target = tmp_path / "victim"
    target.mkdir()
    (base / "streambatch-999999998-0123abcd").symlink_to(target)
    ns = new_store_name().split("-")[3]
    os.rename(theirs, base / f"streambatch-999999999-1-{ns}-0123abcd")
    assert remove_orphan_stores(str(base)) == []
    assert target.is_dir() and len(os.listdir(base)) == 2


def test_a_store_left_by_a_sigkilled_driver_is_removed_when_the_next_job_starts(tmp_path):
    code = """
        import streambatch as sb
        sb.init(num_cpus=2)
        for _ in sb.range(8, override_num_blocks=2).map_batches(hang, releases_gil=False).iter_batches():
            pass
    """
    with driver(code, tmp_path) as proc:
        wait_for_udf_start(proc)
        left = stores_of(proc.pid)
        assert left, "the driver's workers run, so its store exists"
        proc.kill()
        proc.wait(10)
        assert sb.range(4).map(lambda r: r).count() == 4  # the next job, here
        assert [p for p in left if os.path.exists(p)] == []


@pytest.mark.parametrize("consumer", ["iter_batches", "take_all"])
def test_sigterm_mid_job_removes_the_store_and_the_driver_dies_by_sigterm(tmp_path, consumer):
    code = f"""
        import streambatch as sb
        sb.init(num_cpus=2)
        ds = sb.range(8, override_num_blocks=2).map_batches(hang, releases_gil=False)
        if "{consumer}" == "take_all":
            ds.take_all()
        else:
            for _ in ds.iter_batches():
                pass
    """
    with driver(code, tmp_path) as proc:
        wait_for_udf_start(proc)
        assert stores_of(proc.pid)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == -signal.SIGTERM
        assert stores_of(proc.pid) == []
        wait_until(lambda: not session_processes(proc.pid), 5, "the driver's workers to exit")


def test_a_programs_own_sigterm_handler_is_kept():
    def mine(signum, frame):
        pass

    previous = signal.signal(signal.SIGTERM, mine)
    try:
        assert sb.range(20, override_num_blocks=2).map(lambda r: r).count() == 20
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_normal_exit_with_a_job_still_running_removes_the_store(tmp_path):
    code = """
        import streambatch as sb
        sb.init(num_cpus=2)
        it = iter(sb.range(8, override_num_blocks=2).map_batches(hang_after_first, batch_size=4, releases_gil=False)
                  .iter_batches(batch_size=4))
        next(it)
        import os, time
        while not os.listdir(os.environ["MARK_DIR"]):
            time.sleep(0.01)
        print("exiting", flush=True)  # with the iterator still open: the exit hook cleans
    """
    with driver(code, tmp_path) as proc:
        out, err = proc.communicate(timeout=60)
        assert (proc.returncode, out) == (0, "exiting\n"), err
        assert stores_of(proc.pid) == []
        wait_until(lambda: not session_processes(proc.pid), 5, "the driver's workers to exit")
