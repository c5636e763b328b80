"""Type conflicts between parquet files: every one is a SchemaMismatchError naming
the column, both files, both types and what to do (schema=), whether planning
finds it (footers read up front) or a read task does (footers read lazily);
types unify only where no value can change, which a round trip checks."""

from __future__ import annotations

import datetime
import decimal
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from streambatch.connectors import parquet as pqmod
from streambatch.connectors.parquet_schema import SchemaMismatchError, unify_types

import streambatch as sb

BIG = 2**53 + 1  # the first integer a float64 cannot hold


def _write(directory, name: str, column: pa.Array) -> str:
    path = str(directory / name)
    pq.write_table(pa.table({"x": column}), path)
    return path


def _mismatch(tmp_path, lazy: bool, monkeypatch, **kwargs) -> SchemaMismatchError:
    """The SchemaMismatchError that reading ``tmp_path`` raises (wherever it is raised)."""
    if lazy:
        monkeypatch.setattr(pqmod, "EAGER_FOOTERS", 1)  # only the first footer before the tasks
    with pytest.raises(Exception) as info:  # noqa: PT011 - the type is checked below
        sb.read_parquet(str(tmp_path), **kwargs).take_all()
    error = info.value
    while error is not None and not isinstance(error, SchemaMismatchError):
        error = error.__cause__ or error.__context__
    assert error is not None, f"not a SchemaMismatchError: {info.value!r}"
    return error


CONFLICTS = [  # (first file's column, second file's column, the two types as named)
    pytest.param(pa.array([BIG, 3], pa.int64()), pa.array([1.5, 2.5]), ("int64", "double"),
                 id="int64-above-2**53-vs-float64"),
    pytest.param(pa.array([1.5]), pa.array([BIG], pa.int64()), ("double", "int64"),
                 id="float64-vs-int64"),
    pytest.param(pa.array([1, 2]), pa.array(["a"]), ("int64", "string"), id="int-vs-string"),
    pytest.param(pa.array([1], pa.timestamp("ms")), pa.array([1], pa.timestamp("ns")),
                 ("timestamp[ms]", "timestamp[ns]"), id="timestamp-units"),
    pytest.param(pa.array([1], pa.timestamp("us", "UTC")), pa.array([1], pa.timestamp("us")),
                 ("timestamp[us, tz=UTC]", "timestamp[us]"), id="timestamp-time-zones"),
    pytest.param(pa.array([[1]], pa.list_(pa.int64())), pa.array([["a"]]),
                 ("list<element: int64>", "list<element: string>"), id="list-items"),
    pytest.param(pa.array([{"a": 1}]), pa.array([{"a": "s"}]),
                 ("struct<a: int64>", "struct<a: string>"), id="struct-fields"),
    pytest.param(pa.array([1], pa.uint64()), pa.array([-1], pa.int64()), ("uint64", "int64"),
                 id="uint64-vs-int64"),
]


@pytest.mark.parametrize("lazy", [False, True], ids=["planning", "read-task"])
@pytest.mark.parametrize(("first", "second", "types"), CONFLICTS)
def test_every_conflict_names_column_files_types_and_schema(tmp_path, monkeypatch, lazy,
                                                            first, second, types):
    a, b = _write(tmp_path, "a.parquet", first), _write(tmp_path, "b.parquet", second)
    error = _mismatch(tmp_path, lazy, monkeypatch)
    text = str(error)
    assert error.column == "x" and "column 'x'" in text
    assert a in text and b in text and a in error.files[0] and b in error.files[1]
    assert error.types == types and all(t in text for t in types)
    assert "pass schema=" in text


def test_int64_beyond_2_53_with_float64_says_why_and_what_to_pass(tmp_path, monkeypatch):
    _write(tmp_path, "a.parquet", pa.array([BIG], pa.int64()))
    _write(tmp_path, "b.parquet", pa.array([0.5]))
    text = str(_mismatch(tmp_path, False, monkeypatch))
    assert "2**53" in text and "float64" in text and "string" in text


def test_nested_conflict_names_where_inside_the_column(tmp_path, monkeypatch):
    _write(tmp_path, "a.parquet", pa.array([[{"a": 1}]]))
    _write(tmp_path, "b.parquet", pa.array([[{"a": "s"}]]))
    assert "(at x[].a: int64 vs string)" in str(_mismatch(tmp_path, False, monkeypatch))


def test_a_later_file_wider_than_the_dataset_schema_is_refused_by_the_read_task(tmp_path,
                                                                               monkeypatch):
    _write(tmp_path, "a.parquet", pa.array([1], pa.int32()))
    _write(tmp_path, "b.parquet", pa.array([2**40], pa.int64()))
    error = _mismatch(tmp_path, True, monkeypatch)
    assert error.types == ("int32", "int64") and "(the dataset schema)" in error.files[0]
    # schema= decides, and then both files read exactly
    ok = sb.read_parquet(str(tmp_path), schema=pa.schema([("x", pa.int64())]))
    assert sorted(r["x"] for r in ok.take_all()) == [1, 2**40]


def test_schema_given_reads_the_conflict_and_refuses_a_value_that_does_not_fit(tmp_path,
                                                                              monkeypatch):
    a = _write(tmp_path, "a.parquet", pa.array([3, 2**52], pa.int64()))
    _write(tmp_path, "b.parquet", pa.array([0.5]))
    floats = pa.schema([("x", pa.float64())])
    assert sorted(r["x"] for r in sb.read_parquet(str(tmp_path), schema=floats).take_all()) \
        == [0.5, 3.0, 2.0**52]
    a = _write(tmp_path, "a.parquet", pa.array([3, BIG], pa.int64()))
    error = _mismatch(tmp_path, False, monkeypatch, schema=floats)
    assert error.column == "x" and a in str(error) and str(BIG) in str(error)
    assert error.types == ("int64", "double") and "schema=" in str(error)
    strings = sb.read_parquet(str(tmp_path), schema=pa.schema([("x", pa.string())]))
    assert sorted(r["x"] for r in strings.take_all()) == sorted(["3", str(BIG), "0.5"])


LOSSLESS = [  # (first, second, the unified type, the rows read)
    (pa.array([1], pa.int32()), pa.array([0.5]), pa.float64(), [0.5, 1.0]),
    (pa.array([1], pa.uint32()), pa.array([-1], pa.int32()), pa.int64(), [-1, 1]),
    (pa.array(["a"]).dictionary_encode(), pa.array(["b"]), pa.string(), ["a", "b"]),
    (pa.array([[1]], pa.list_(pa.int32())), pa.array([[2**40]]), pa.list_(pa.int64()), [[1], [2**40]]),
    (pa.array([{"a": 1}]), pa.array([{"b": "s"}]),
     pa.struct([("a", pa.int64()), ("b", pa.string())]),
     [{"a": 1, "b": None}, {"a": None, "b": "s"}]),
    (pa.array([decimal.Decimal("1.5")], pa.decimal128(3, 1)),
     pa.array([decimal.Decimal("123.25")], pa.decimal128(5, 2)), pa.decimal128(5, 2),
     [decimal.Decimal("1.50"), decimal.Decimal("123.25")]),
]


@pytest.mark.parametrize(("first", "second", "unified", "rows"), LOSSLESS,
                         ids=["int32+float64", "uint32+int32", "dictionary+string", "lists",
                              "struct-union", "decimals"])
def test_types_that_hold_both_exactly_unify(tmp_path, first, second, unified, rows):
    _write(tmp_path, "a.parquet", first)
    _write(tmp_path, "b.parquet", second)
    ds = sb.read_parquet(str(tmp_path))
    assert ds.schema().field("x").type == unified
    got = [r["x"] for r in ds.take_all()]
    assert sorted(got, key=repr) == sorted(rows, key=repr)


_POOL = [pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(), pa.uint16(), pa.uint32(),
         pa.uint64(), pa.float16(), pa.float32(), pa.float64(), pa.string(), pa.large_string(),
         pa.timestamp("ms"), pa.timestamp("ns"), pa.decimal128(5, 2), pa.decimal128(12, 0),
         pa.list_(pa.int32()), pa.large_list(pa.int64()), pa.struct([("a", pa.int32())]),
         pa.struct([("a", pa.float64()), ("b", pa.string())])]


def _extremes(t: pa.DataType) -> pa.Array:
    """Values at the edges of ``t`` (the ones a lossy cast gets wrong)."""
    if pa.types.is_integer(t):
        info = (1 << (t.bit_width - 1)) if pa.types.is_signed_integer(t) else 0
        top = (1 << (t.bit_width - (1 if pa.types.is_signed_integer(t) else 0))) - 1
        return pa.array([-info, top, 1, 0], t)
    if pa.types.is_floating(t):
        return pa.array([0.1, -1.5, 2.0**10 + 0.25, None], pa.float64()).cast(t, safe=False)
    if pa.types.is_decimal(t):
        digits = "9" * (t.precision - t.scale) + ("." + "9" * t.scale if t.scale else "")
        return pa.array([decimal.Decimal(digits), decimal.Decimal("-" + digits)], t)
    if pa.types.is_timestamp(t):
        return pa.array([datetime.datetime(2000, 1, 1, 0, 0, 0, 123000), None], t)
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return pa.array([[v] for v in _extremes(t.value_type).to_pylist()], t)
    if pa.types.is_struct(t):
        columns = [_extremes(f.type) for f in t]
        size = min(len(c) for c in columns)
        return pa.StructArray.from_arrays([c.slice(0, size) for c in columns], fields=list(t))
    return pa.array(["x", "", None], t)


def test_unified_types_hold_every_value_of_both_exactly():
    rng = random.Random(14)
    pairs = [(a, b) for a in _POOL for b in _POOL]
    checked = 0
    for a, b in rng.sample(pairs, 150) + [(pa.int64(), pa.float64()), (pa.int32(), pa.float32())]:
        unified = unify_types(a, b)
        if unified is None:
            continue
        for t in (a, b):
            values = _extremes(t)
            read = values.cast(unified).to_pylist()
            if pa.types.is_struct(t):  # the union's other fields read as null: compare ours
                read = [{f.name: row[f.name] for f in t} for row in read]
            assert read == values.to_pylist(), (a, b, unified)
        checked += 1
    assert checked > 20
    assert unify_types(pa.int64(), pa.float64()) is None
    assert unify_types(pa.int32(), pa.float32()) == pa.float64()


@pytest.mark.parametrize("nested", [False, True])
def test_files_whose_first_ones_hold_only_nulls_read_with_the_later_type(tmp_path, nested):
    """With more files than EAGER_FOOTERS, footers after the first were read lazily and
    a first file whose column held only nulls (Arrow's null type; streambatch's own
    write_parquet makes one when a block's values are all None) set the dataset's type:
    every later file's real type was refused as wider. Footers are read on until the
    schema has no null type."""
    count = pqmod.EAGER_FOOTERS * 3
    for i in range(count):
        value = None if i < pqmod.EAGER_FOOTERS + 3 else i
        column = pa.array([{"a": value}] if nested else [value])
        pq.write_table(pa.table({"id": [i], "x": column}), str(tmp_path / f"f{i:03d}.parquet"))
    rows = sorted(sb.read_parquet(tmp_path).take_all(), key=lambda r: r["id"])
    values = [r["x"]["a"] if nested else r["x"] for r in rows]
    assert values == [None if i < pqmod.EAGER_FOOTERS + 3 else i for i in range(count)]


@pytest.mark.parametrize("blocks", [2, 4])
def test_tensor_shapes_that_differ_between_files_read_back_as_one_ragged_column(tmp_path, blocks):
    """A batch padded to its own longest row (tokenization with padding="longest") makes
    fixed-shape tensor files of different shapes; read_parquet refused the folder
    (fixed_shape_tensor [8] in one file, [4] in another)."""
    import numpy as np

    def pad(batch):
        width = int(batch["id"].max()) + 1
        return {"id": batch["id"], "tok": np.ones((len(batch["id"]), width), np.int64)}

    out = str(tmp_path / "padded")
    sb.range(8, override_num_blocks=blocks).map_batches(pad, batch_size=8 // blocks) \
        .write_parquet(out)
    back = sb.read_parquet(out)
    assert back.schema().field("tok").type.extension_name == "arrow.variable_shape_tensor"
    rows = sorted((r["id"], r["tok"].tolist()) for r in back.take_all())
    width = {i: (i // (8 // blocks) + 1) * (8 // blocks) for i in range(8)}
    assert rows == [(i, [1] * width[i]) for i in range(8)]
    assert back.count() == 8
