"""Real Redis and PostgreSQL servers for the lookup tests: started on loopback,
on free ports, in temporary directories, once per test session. A test is
skipped (with the reason) only when the server binary is not installed; `make
test` installs both (Debian packages redis-server, postgresql)."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time

import pytest


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(ok, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ok():
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not come up within {timeout:.0f} s")


@pytest.fixture(scope="session")
def redis_url():
    """A redis-server on 127.0.0.1 (no persistence), as a URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install -y redis-server; `make test` does it)")
    redis = pytest.importorskip("redis")
    port, workdir = free_port(), tempfile.mkdtemp(prefix="sb-redis-")
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", workdir],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port)

    def up() -> bool:
        try:
            return bool(client.ping())
        except redis.exceptions.ConnectionError:
            return False
    try:
        _wait(up, f"redis-server on port {port}")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


@pytest.fixture(scope="session")
def postgres_dsn():
    """A PostgreSQL server on 127.0.0.1 in a temporary cluster, as a libpq DSN.
    As root, the cluster runs as the ``postgres`` system user (initdb refuses root)."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.skip("PostgreSQL is not installed (apt-get install -y postgresql; `make test` does it)")
    psycopg = pytest.importorskip("psycopg")
    port, workdir = free_port(), tempfile.mkdtemp(prefix="sb-pg-")
    data, sockets = os.path.join(workdir, "data"), os.path.join(workdir, "run")
    os.makedirs(sockets)
    prefix: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(workdir, "postgres")
        shutil.chown(sockets, "postgres")
        os.chmod(workdir, 0o755)
        prefix = ["runuser", "-u", "postgres", "--"]
    subprocess.run(prefix + [initdb, "-D", data, "-U", "sb", "--auth=trust", "-E", "UTF8"],
                   check=True, capture_output=True)
    options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(prefix + [pg_ctl, "-D", data, "-o", options, "-l",
                             os.path.join(workdir, "log"), "-w", "start"], check=True,
                   capture_output=True)
    dsn = f"host=127.0.0.1 port={port} user=sb dbname=postgres"
    try:
        _wait(lambda: _pg_ready(psycopg, dsn), f"postgres on port {port}")
        yield dsn
    finally:
        subprocess.run(prefix + [pg_ctl, "-D", data, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(workdir, ignore_errors=True)


def _pg_ready(psycopg, dsn: str) -> bool:
    try:
        psycopg.connect(dsn).close()
        return True
    except psycopg.OperationalError:
        return False
