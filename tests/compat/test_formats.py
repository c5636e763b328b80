"""Formats users ask for, as Ray Data documents them: ``read_webdataset`` /
``write_webdataset`` (tar shards, members grouped into samples by the part of their name
before the first dot, ``__key__``, the default decoder/encoder by extension) and
``read_sql`` / ``write_sql`` (DB-API 2 connections from a factory, a parameterised
INSERT in the driver's parameter style), against SQLite always and a real PostgreSQL
(the lookup tests' server) where it is installed. Every test writes generated data,
reads it back and compares values."""

from __future__ import annotations

import functools
import io
import random
import sqlite3
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from streambatch.connectors.manifest import SUCCESS
from streambatch.connectors.sql import SQLError, SQLSink
from streambatch.connectors.webdataset import WebDatasetSink

import streambatch as sb
from tests.connectors.lookup.conftest import postgres_dsn  # noqa: F401 - the fixture


@pytest.fixture(autouse=True)
def _two_cpus():
    sb.init(num_cpus=2)
    yield
    sb.init()


def make_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def shards(out: Path) -> list[Path]:
    return sorted(p for p in out.glob("*.tar") if not p.name.startswith("."))


# ---- webdataset ------------------------------------------------------------------------

def samples(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        rows.append({
            "__key__": f"sample{i:05d}",
            "txt": None if i % 7 == 3 else f"caption {i} é",
            "cls": i % 10,
            "json": {"id": i, "tags": ["a", "b"][: i % 3]},
            "bin": bytes(rng.randrange(256) for _ in range(rng.randrange(0, 40))),
            "npy": np.arange(6, dtype=np.float32).reshape(2, 3) * i,
        })
    return rows


def test_webdataset_round_trip_several_shards_nulls_and_binary(tmp_path):
    rows = samples(120)
    written = sb.from_items(rows, override_num_blocks=4).write_webdataset(str(tmp_path))
    assert sum(f["rows"] for f in written) == 120
    assert len(shards(tmp_path)) == 4 and (tmp_path / SUCCESS).exists()
    back = {r["__key__"]: r for r in sb.read_webdataset(str(tmp_path)).take_all()}
    assert sorted(back) == [r["__key__"] for r in rows]
    for row in rows:
        got = back[row["__key__"]]
        assert got["txt"] == row["txt"]  # a null column writes no member: null again
        assert got["cls"] == row["cls"] and got["bin"] == row["bin"]
        assert got["json"]["id"] == row["json"]["id"]
        assert got["json"]["tags"] == row["json"]["tags"]
        np.testing.assert_array_equal(got["npy"], row["npy"])
        assert got["__url__"].endswith(".tar")


def test_webdataset_num_rows_per_file_and_generated_keys(tmp_path):
    rows = [{"bin": bytes([i % 256]) * (i % 5), "cls": i} for i in range(25)]
    sb.from_items(rows, override_num_blocks=2).write_webdataset(str(tmp_path),
                                                                 num_rows_per_file=4)
    files = shards(tmp_path)
    assert sorted(len(tarfile.open(f).getnames()) // 2 for f in files) == [1, 4, 4, 4, 4, 4, 4]
    back = sb.read_webdataset(str(tmp_path)).take_all()
    assert sorted((r["cls"], r["bin"]) for r in back) == sorted((r["cls"], r["bin"]) for r in rows)
    keys = [r["__key__"] for r in back]
    assert len(set(keys)) == 25 and all("." not in k for k in keys)


def test_webdataset_png_images_decode_to_arrays_and_back(tmp_path):
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 255, (4, 5, 3), dtype=np.uint8) for _ in range(3)]
    ds = sb.from_items([{"__key__": f"im{i}", "png": im} for i, im in enumerate(images)])
    ds.write_webdataset(str(tmp_path))
    back = {r["__key__"]: r["png"] for r in sb.read_webdataset(str(tmp_path)).take_all()}
    for i, im in enumerate(images):
        np.testing.assert_array_equal(back[f"im{i}"], im)


def test_webdataset_groups_members_by_the_name_before_the_first_dot(tmp_path):
    make_tar(tmp_path / "a.tar", [
        ("train/s1.txt", b"one"), ("train/s1.seg.png.bin", b"\x00\x01"), ("train/s1.cls", b"7"),
        ("README", b"no dot: skipped"),
        ("train/s2.txt", b"two"), ("v1.0/s3.json", b'{"k": [1, 2]}'),
    ])
    rows = sb.read_webdataset(str(tmp_path)).take_all()
    assert [r["__key__"] for r in rows] == ["train/s1", "train/s2", "v1.0/s3"]
    assert rows[0]["txt"] == "one" and rows[0]["cls"] == 7
    assert rows[0]["seg.png.bin"] == b"\x00\x01"  # column: everything after the first dot
    assert rows[1]["txt"] == "two" and rows[1]["cls"] is None
    assert rows[2]["json"] == {"k": [1, 2]}
    raw = sb.read_webdataset(str(tmp_path), decoder=None).take_all()
    assert raw[0]["txt"] == b"one" and raw[0]["cls"] == b"7"
    # decoded rows written again (re-sharded) and read back are the same samples
    out = tmp_path / "again"
    sb.read_webdataset(str(tmp_path)).write_webdataset(str(out), num_rows_per_file=2)
    assert len(shards(out)) == 2
    again = sb.read_webdataset(str(out)).take_all()
    def members(row):  # a shard's blocks have the columns its samples have
        return {k: v for k, v in row.items() if k != "__url__" and v is not None}
    assert sorted((members(r) for r in again), key=lambda r: r["__key__"]) == \
        [members(r) for r in rows]


def test_webdataset_fileselect_filerename_suffixes_and_custom_decoder(tmp_path):
    make_tar(tmp_path / "a.tar", [("s1.txt", b"a"), ("s1.cls", b"1"), ("s1.tmp", b"x"),
                                  ("s2.txt", b"b"), ("s2.cls", b"2")])
    only_txt = sb.read_webdataset(str(tmp_path), fileselect=["*.txt"]).take_all()
    assert [(r["__key__"], r["txt"]) for r in only_txt] == [("s1", "a"), ("s2", "b")]
    assert "cls" not in only_txt[0]
    kept = sb.read_webdataset(str(tmp_path), suffixes=["cls"]).take_all()
    assert [r["cls"] for r in kept] == [1, 2] and "txt" not in kept[0]
    renamed = sb.read_webdataset(str(tmp_path), fileselect=["*.text"],  # after renaming
                                 filerename=lambda n: n.replace(".txt", ".text")).take_all()
    assert [r["text"] for r in renamed] == ["a", "b"]

    def upper(sample):
        return {k: v.upper() if k == "txt" else v for k, v in sample.items()}
    decoded = sb.read_webdataset(str(tmp_path), fileselect=["*.txt"],
                                 decoder=[True, upper]).take_all()
    assert [r["txt"] for r in decoded] == ["A", "B"]


def test_webdataset_bad_input_errors_name_the_shard_and_member(tmp_path):
    make_tar(tmp_path / "dup.tar", [("s1.txt", b"a"), ("s1.txt", b"b")])
    with pytest.raises(Exception, match=r"dup\.tar.*member 's1\.txt' repeats column 'txt'"):
        sb.read_webdataset(str(tmp_path / "dup.tar")).take_all()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "broken.tar").write_bytes(b"not a tar file at all" * 40)
    with pytest.raises(Exception, match=r"read_webdataset: cannot read .*broken\.tar"):
        sb.read_webdataset(str(tmp_path / "bad")).take_all()
    make_tar(tmp_path / "bad" / "good.tar", [("k.txt", b"fine")])
    ds = sb.read_webdataset(str(tmp_path / "bad"), on_error="skip")
    assert [r["txt"] for r in ds.take_all()] == ["fine"]
    dead = ds.dead_letters().to_pylist()
    assert len(dead) == 1 and dead[0]["where"].endswith("broken.tar")
    assert "cannot read" in dead[0]["error"]
    make_tar(tmp_path / "cls.tar", [("s1.cls", b"seven")])
    with pytest.raises(Exception, match=r"cls\.tar.*decoding sample 's1'.*decoder=None"):
        sb.read_webdataset(str(tmp_path / "cls.tar")).take_all()


def test_write_webdataset_refuses_keys_and_values_it_cannot_write(tmp_path):
    with pytest.raises(Exception, match=r"row 0 .*__key__ 'a\.b'.*first dot"):
        sb.from_items([{"__key__": "a.b", "txt": "x"}]).write_webdataset(str(tmp_path / "o1"))
    with pytest.raises(Exception, match=r"row 0 \(key 'k0'\), column 'value' holds a int"):
        sb.from_items([{"__key__": f"k{i}", "value": i} for i in range(2)],
                      override_num_blocks=1).write_webdataset(str(tmp_path / "o2"))
    assert not shards(tmp_path / "o2")  # the failed write left no shard


def test_write_webdataset_is_exactly_once_per_task_and_respects_mode(tmp_path):
    sink = WebDatasetSink(str(tmp_path))
    sink.start()

    class Ctx:
        task_index, key = 0, "task0"
    table = pa.table({"__key__": ["a", "b"], "bin": [b"\x01", None]})
    first = sink.write([table], Ctx())["path"].to_pylist()
    again = sink.write([table], Ctx())["path"].to_pylist()  # a retried attempt
    assert first == again and len(shards(tmp_path)) == 1
    with tarfile.open(first[0]) as tar:
        assert [(m.name, m.size) for m in tar] == [("a.bin", 1)]
    out = tmp_path / "out"
    sb.from_items([{"__key__": "x", "txt": "1"}]).write_webdataset(str(out))
    with pytest.raises(ValueError, match="mode='error'"):
        sb.from_items([{"__key__": "y", "txt": "2"}]).write_webdataset(str(out), mode="error")
    sb.from_items([{"__key__": "y", "txt": "2"}]).write_webdataset(str(out))  # append
    assert sorted(r["txt"] for r in sb.read_webdataset(str(out)).take_all()) == ["1", "2"]


# ---- SQL ---------------------------------------------------------------------------------

def sql_rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return [{"id": i,
             "name": None if i % 5 == 0 else f"name-{i}-ü",
             "score": None if i % 7 == 0 else rng.random() * 100,
             "payload": None if i % 11 == 0 else bytes(rng.randrange(256) for _ in range(i % 9))}
            for i in range(n)]


def sqlite_db(tmp_path: Path) -> functools.partial:
    db = str(tmp_path / "test.db")
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE items (id INTEGER NOT NULL, name TEXT, score REAL, "
                     "payload BLOB)")
    return functools.partial(sqlite3.connect, db)


def test_sql_sqlite_round_trip_several_tasks_nulls_and_blobs(tmp_path):
    factory = sqlite_db(tmp_path)
    rows = sql_rows(1000)
    sb.from_items(rows, override_num_blocks=4).write_sql(
        "INSERT INTO items VALUES (?, ?, ?, ?)", factory)
    back = sb.read_sql("SELECT * FROM items", factory).take_all()
    assert sorted(back, key=lambda r: r["id"]) == rows
    some = sb.read_sql("SELECT id, name FROM items WHERE id < 3 ORDER BY id", factory)
    assert some.take_all() == [{"id": 0, "name": None}, {"id": 1, "name": "name-1-ü"},
                               {"id": 2, "name": "name-2-ü"}]
    # shard_keys: SQLite has no MD5, so one task reads it all (no row lost or repeated)
    sharded = sb.read_sql("SELECT id FROM items", factory, shard_keys=["id"],
                          override_num_blocks=4)
    assert sorted(r["id"] for r in sharded.take_all()) == list(range(1000))
    assert sb.read_sql("SELECT * FROM items WHERE id < 0", factory).count() == 0


def test_write_sql_failed_task_commits_nothing_and_its_retry_inserts_once(tmp_path):
    factory = sqlite_db(tmp_path)
    rows = sql_rows(300)
    rows[250]["id"] = None  # violates NOT NULL in the middle of the task
    with pytest.raises(Exception, match=r"write_sql: SQL 'INSERT INTO items.*rows 128-255"):
        sb.from_items(rows, override_num_blocks=1).write_sql(
            "INSERT INTO items VALUES (?, ?, ?, ?)", factory)
    assert factory().execute("SELECT COUNT(*) FROM items").fetchone() == (0,)

    sink = SQLSink("INSERT INTO items VALUES (?, ?, ?, ?)", factory)
    good = pa.Table.from_pylist(sql_rows(200))

    def dies_midway():
        yield good.slice(0, 150)
        raise RuntimeError("worker lost")
    with pytest.raises(RuntimeError, match="worker lost"):
        sink.write(dies_midway(), None)
    assert factory().execute("SELECT COUNT(*) FROM items").fetchone() == (0,)
    assert sink.write([good], None) == 200  # the retry
    ids = [r[0] for r in factory().execute("SELECT id FROM items ORDER BY id")]
    assert ids == list(range(200))


def test_write_sql_ledger_makes_a_retry_of_a_committed_task_insert_nothing(tmp_path):
    factory = sqlite_db(tmp_path)
    sink = SQLSink("INSERT INTO items VALUES (?, ?, ?, ?)", factory, ledger_table="sb_ledger")
    sink.on_write_start()

    class Ctx:
        task_index, key = 0, "task-0"
    block = pa.Table.from_pylist(sql_rows(150))
    assert sink.write([block], Ctx()) == 150  # committed, then (say) the worker died
    assert sink.write([block], Ctx()) == 150  # the retry finds its task in the ledger
    assert factory().execute("SELECT COUNT(*), SUM(id) FROM items").fetchone() == (150, 11175)
    sink.on_write_complete(None)
    assert factory().execute("SELECT COUNT(*) FROM sb_ledger").fetchone() == (0,)
    sb.from_items(sql_rows(40), override_num_blocks=3).write_sql(
        "INSERT INTO items VALUES (?, ?, ?, ?)", factory, ledger_table="sb_ledger")
    assert factory().execute("SELECT COUNT(*) FROM items").fetchone() == (190,)
    assert factory().execute("SELECT COUNT(*) FROM sb_ledger").fetchone() == (0,)
    with pytest.raises(ValueError, match="ledger_table='x; DROP TABLE items'"):
        sb.range(1).write_sql("INSERT INTO items (id) VALUES (?)", factory,
                              ledger_table="x; DROP TABLE items")


def test_read_sql_errors_name_the_sql_and_the_row(tmp_path):
    factory = sqlite_db(tmp_path)
    with pytest.raises(SQLError, match=r"read_sql: SQL 'SELECT nope FROM items'.*failed"):
        sb.read_sql("SELECT nope FROM items", factory).take_all()
    with factory() as conn:  # a column without a declared type keeps each value's type
        conn.execute("CREATE TABLE mixed (id INTEGER, v)")
        conn.executemany("INSERT INTO mixed VALUES (?, ?)", [(1, "a"), (2, "b"), (3, 42)])
    with pytest.raises(Exception, match=r"column 'v' of row 2 holds 42 \(int\).*CAST"):
        sb.read_sql("SELECT id, v FROM mixed ORDER BY id", factory).take_all()
    assert sb.read_sql("SELECT id, CAST(v AS TEXT) AS v FROM mixed ORDER BY id",
                       factory).take_all()[2] == {"id": 3, "v": "42"}
    with pytest.raises(ValueError, match=r"has no 'cursor', which DB-API 2 requires"):
        sb.read_sql("SELECT 1", lambda: object()).take_all()
    with pytest.raises(TypeError, match="connection_factory must be a function"):
        sb.read_sql("SELECT 1", "sqlite:///x.db")


@pytest.fixture
def pg_table(postgres_dsn):  # noqa: F811 - the fixture imported above
    psycopg = pytest.importorskip("psycopg")
    name = f"items_{random.randrange(10**9)}"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {name} (id INTEGER NOT NULL, name TEXT, "
                     f"score DOUBLE PRECISION, payload BYTEA)")
    yield name, functools.partial(psycopg.connect, postgres_dsn)
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f"DROP TABLE {name}")
        conn.execute(f"DROP TABLE IF EXISTS {name}_ledger")


def test_sql_postgres_round_trip_and_failed_task(pg_table):
    name, factory = pg_table
    rows = sql_rows(700, seed=3)
    sb.from_items(rows, override_num_blocks=3).write_sql(
        f"INSERT INTO {name} VALUES (%s, %s, %s, %s)", factory)
    back = sb.read_sql(f"SELECT * FROM {name}", factory).take_all()
    assert sorted(back, key=lambda r: r["id"]) == rows
    assert sb.read_sql(f"SELECT id FROM {name}", factory, shard_keys=["id"],
                       override_num_blocks=3).count() == 700
    bad = sql_rows(50)
    bad[40]["id"] = None
    with pytest.raises(Exception, match=r"write_sql: .*NotNullViolation"):
        sb.from_items(bad, override_num_blocks=1).write_sql(
            f"INSERT INTO {name} VALUES (%s, %s, %s, %s)", factory)
    assert sb.read_sql(f"SELECT id FROM {name}", factory).count() == 700  # none of it
    sink = SQLSink(f"INSERT INTO {name} VALUES (%s, %s, %s, %s)", factory,
                   ledger_table=f"{name}_ledger")
    sink.on_write_start()

    class Ctx:
        task_index, key = 0, "t0"
    extra = pa.Table.from_pylist(sql_rows(30))
    assert sink.write([extra], Ctx()) == 30 and sink.write([extra], Ctx()) == 30  # a retry
    assert sb.read_sql(f"SELECT id FROM {name}", factory).count() == 730
    sink.on_write_complete(None)
    assert sb.read_sql(f"SELECT task FROM {name}_ledger", factory).count() == 0


def test_write_sql_ledger_refuses_a_rerun_of_an_interrupted_job_and_resume_finishes_it(tmp_path):
    """The ledger's rows were those of one run (a random job id): running the same job
    again after it stopped part way inserted the committed tasks' rows twice."""
    db = str(tmp_path / "resume.db")
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (id INTEGER)")
    factory = functools.partial(sqlite3.connect, db, timeout=30)
    state = {"fail": True}

    def step(batch):
        if state["fail"] and (batch["id"] >= 300).any():
            raise ValueError("stop part way")
        return batch

    ds = sb.range(400, override_num_blocks=8).map_batches(step, batch_size=None,
                                                           releases_gil=True)
    with pytest.raises(ValueError, match="stop part way"):
        ds.write_sql("INSERT INTO t VALUES (?)", factory, ledger_table="sb_ledger")
    first = factory().execute("SELECT COUNT(*) FROM t").fetchone()[0]
    assert 0 < first < 400 and first % 50 == 0  # whole tasks only
    state["fail"] = False
    with pytest.raises(ValueError, match="interrupted run of this job.*resume=True"):
        ds.write_sql("INSERT INTO t VALUES (?)", factory, ledger_table="sb_ledger")
    ds.write_sql("INSERT INTO t VALUES (?)", factory, ledger_table="sb_ledger", resume=True)
    assert factory().execute("SELECT COUNT(*), COUNT(DISTINCT id) FROM t").fetchone() == (400, 400)
    assert factory().execute("SELECT COUNT(*) FROM sb_ledger").fetchone() == (0,)
    ds.write_sql("INSERT INTO t VALUES (?)", factory, ledger_table="sb_ledger")  # a new append
    assert factory().execute("SELECT COUNT(*) FROM t").fetchone() == (800,)
    with pytest.raises(ValueError, match="resume=True needs ledger_table"):
        ds.write_sql("INSERT INTO t VALUES (?)", factory, resume=True)
