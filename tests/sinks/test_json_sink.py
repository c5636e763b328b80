"""write_json writes a map column as JSON objects, which read_json reads back (as a
struct); it wrote them as arrays of [key, value] pairs, committed, and read_json could
not read the output ("changed from string to number")."""

from __future__ import annotations

import json
import os

import pyarrow as pa
import pytest

import streambatch as sb

MAP = pa.map_(pa.string(), pa.int64())


def written_lines(out: str) -> list[dict]:
    """The objects of the JSON files under ``out``, by id."""
    rows = [json.loads(line) for name in os.listdir(out) if name.endswith(".json")
            for line in open(os.path.join(out, name))]
    return sorted(rows, key=lambda r: r["id"])


def test_a_map_column_is_written_as_objects_and_read_back_as_a_struct(tmp_path):
    table = pa.table({"id": [0, 1, 2],
                      "m": pa.array([[("a", 1), ("b", 2)], [], None], MAP)})
    sb.from_arrow(table).write_json(str(tmp_path / "o"))
    assert [r["m"] for r in written_lines(str(tmp_path / "o"))] == [{"a": 1, "b": 2}, {}, None]
    back = sorted(sb.read_json(str(tmp_path / "o")).take_all(), key=lambda r: r["id"])
    assert [r["m"] for r in back] == [{"a": 1, "b": 2}, {"a": None, "b": None}, None]


def test_maps_inside_lists_and_structs_are_objects_too(tmp_path):
    kind = pa.struct([("tags", pa.list_(MAP)), ("n", pa.int64())])
    value = {"tags": [[("x", 5)], [("y", 6), ("z", 7)]], "n": 1}
    sb.from_arrow(pa.table({"id": [0], "s": pa.array([value], kind)})).write_json(str(tmp_path / "o"))
    want = {"tags": [{"x": 5}, {"y": 6, "z": 7}], "n": 1}
    assert written_lines(str(tmp_path / "o"))[0]["s"] == want
    back = sb.read_json(str(tmp_path / "o")).take_all()[0]["s"]
    assert back["n"] == 1
    assert [{k: v for k, v in tag.items() if v is not None} for tag in back["tags"]] == want["tags"]


def test_a_map_with_keys_not_strings_is_refused_by_name_and_nothing_committed(tmp_path):
    table = pa.table({"id": [0], "m": pa.array([[(1, "a")]], pa.map_(pa.int64(), pa.string()))})
    with pytest.raises(Exception, match=r"write_json: column 'm' has type map<int64, string>, "
                                        r"whose keys \(int64\) a JSON object cannot hold"):
        sb.from_arrow(table).write_json(str(tmp_path / "o"))
    assert not os.path.exists(tmp_path / "o" / "_SUCCESS")


def test_a_map_holding_a_key_twice_is_refused_by_name(tmp_path):
    table = pa.table({"id": [0], "m": pa.array([[("a", 1), ("a", 2)]], MAP)})
    with pytest.raises(Exception, match=r"column 'm' holds a map with the key 'a' twice"):
        sb.from_arrow(table).write_json(str(tmp_path / "o"))
    assert not os.path.exists(tmp_path / "o" / "_SUCCESS")


def test_write_csv_sends_maps_only_where_they_can_be_written(tmp_path):
    table = pa.table({"m": pa.array([[(1, "a")]], pa.map_(pa.int64(), pa.string()))})
    with pytest.raises(Exception, match=r"CSV cannot hold; write it with write_parquet, or "):
        sb.from_arrow(table).write_csv(str(tmp_path / "c"))
    table = pa.table({"m": pa.array([[("a", 1)]], MAP)})
    with pytest.raises(Exception, match=r"write it with write_parquet or write_json, or "):
        sb.from_arrow(table).write_csv(str(tmp_path / "d"))


def test_nan_and_infinities_are_written_as_null_so_strict_readers_read_the_file(tmp_path):
    """``NaN``/``Infinity`` tokens are not JSON (a strict reader refuses the file); Ray
    Data and pandas write null."""
    import numpy as np

    rows = [{"a": 1, "f": float("nan"), "t": np.array([1.5, np.inf])},
            {"a": 2, "f": float("-inf"), "t": np.array([2.0, 3.0])}, {"a": 3, "f": 0.5,
                                                                   "t": np.array([np.nan, 1.0])}]
    out = str(tmp_path / "out")
    sb.from_items(rows, override_num_blocks=2).write_json(out)

    def refuse(token):
        raise ValueError(f"non-standard token {token}")

    lines = [json.loads(line, parse_constant=refuse) for name in sorted(os.listdir(out))
             if name.endswith(".json") for line in open(os.path.join(out, name)) if line.strip()]
    assert sorted(lines, key=lambda r: r["a"]) == [
        {"a": 1, "f": None, "t": [1.5, None]}, {"a": 2, "f": None, "t": [2.0, 3.0]},
        {"a": 3, "f": 0.5, "t": [None, 1.0]}]
