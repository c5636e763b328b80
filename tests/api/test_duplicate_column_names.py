"""Two columns of one name are refused wherever they would arise (as Polars'
DuplicateError): a row holds one value per name, and one column's values were lost,
silently (rename_columns onto a name in use, a map_batches table with two 'a' columns,
from_arrow of one)."""

from __future__ import annotations

import pickle

import pyarrow as pa
import pytest
from streambatch.operators.columns import DuplicateColumnError

import streambatch as sb


@pytest.fixture(autouse=True)
def _context():
    sb.init(num_cpus=2, progress=False)
    yield
    sb.init()


def _two_a() -> pa.Table:
    return pa.table([pa.array([1]), pa.array([2])], names=["a", "a"])


def test_renaming_onto_a_column_in_use_is_refused_naming_it():
    ds = sb.from_items([{"x": 1, "y": "a"}, {"x": 2, "y": "b"}]).rename_columns({"x": "y"})
    with pytest.raises(ValueError, match=r"two columns named 'y' \(renaming 'x' to 'y'.*"
                                         r"drop_columns\(\['y'\]\)"):
        ds.columns()
    with pytest.raises(DuplicateColumnError, match="stage 'Read.*Rename"):
        ds.take_all()
    fixed = sb.from_items([{"x": 1, "y": "a"}]).drop_columns(["y"]).rename_columns({"x": "y"})
    assert fixed.take_all() == [{"y": 1}]


def test_renaming_two_columns_onto_one_name_is_refused_at_the_call():
    with pytest.raises(ValueError, match="two columns named 'z' \\(renaming 'a' and 'b' to it"):
        sb.from_items([{"a": 1, "b": 2}]).rename_columns({"a": "z", "b": "z"})


def test_swaps_and_chains_of_names_still_rename():
    ds = sb.from_items([{"a": 1, "b": 2, "c": 3}])
    assert ds.rename_columns({"a": "b", "b": "a"}).take_all() == [{"b": 1, "a": 2, "c": 3}]
    assert ds.rename_columns({"a": "d", "c": "a"}).columns() == ["d", "b", "a"]


@pytest.mark.parametrize("kind", ["table", "record_batch", "pandas"])
def test_a_batch_with_two_columns_of_one_name_is_refused_naming_it(kind):
    out = {"table": _two_a(), "record_batch": _two_a().to_batches()[0],
           "pandas": _two_a().to_pandas()}[kind]
    ds = sb.from_items([{"z": 0}]).map_batches(lambda b: out, batch_format="pyarrow")
    with pytest.raises(ValueError, match="two columns named 'a' \\(columns \\['a', 'a'\\]\\)"):
        ds.take_all()


def test_on_error_skip_sends_such_a_batch_to_the_dead_letters():
    ds = sb.from_items([{"z": 0}, {"z": 1}], override_num_blocks=2).map_batches(
        lambda b: _two_a() if b["z"][0].as_py() == 0 else b, batch_format="pyarrow",
        on_error="skip")
    assert ds.take_all() == [{"z": 1}]


def test_from_arrow_of_a_table_with_two_columns_of_one_name_is_refused():
    with pytest.raises(ValueError, match=r"from_arrow: tables\[1\]: two columns named 'a'"):
        sb.from_arrow([pa.table({"a": [0]}), _two_a()])


def test_the_error_crosses_processes():
    err = pickle.loads(pickle.dumps(DuplicateColumnError("w", "a", "", "fix")))
    assert isinstance(err, ValueError) and err.column == "a" and str(err).startswith("w: two")


def test_select_columns_naming_a_column_twice_is_refused():
    """It made two output columns 'a' (no value lost, but two columns of one name)."""
    with pytest.raises(ValueError, match=r"select_columns names \['a'\] more than once"):
        sb.from_items([{"a": 1, "b": 2}]).select_columns(["a", "b", "a"])


def test_a_rename_that_maps_a_column_to_itself_is_not_a_clash_at_the_call():
    """{'a': 'b', 'b': 'b'} was refused at the call as renaming 'a' onto 'b', "a column the
    input has", which the call cannot know. The input decides: with 'b' present its
    rename is refused when it runs; without, 'b' is a missing column."""
    ds = sb.from_items([{"a": 1, "b": 2}])
    with pytest.raises(ValueError, match=r"two columns named 'b'"):
        ds.rename_columns({"a": "b", "b": "b"}).take_all()
    only_a = sb.from_items([{"a": 1}]).rename_columns({"a": "b", "b": "b"})  # no error here
    with pytest.raises(Exception, match=r"\['b'\] not found"):
        only_a.take_all()
