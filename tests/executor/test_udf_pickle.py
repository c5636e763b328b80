"""UDFs shipped to workers with cloudpickle: what pickles, and the error naming what does not."""

from __future__ import annotations

import functools
import io
import multiprocessing
import os
import pickle
import queue
import re
import socket
import threading

import cloudpickle
import pytest
from streambatch.executor.backends.udf_pickle import (
    MAX_DEPTH,
    UnpicklableUDFError,
    dumps_udf,
    find_unpicklable,
)

_LOCK = threading.Lock()
_REL = os.path.relpath(__file__)
HERE = __file__ if _REL.startswith("..") else _REL  # relative to the cwd when under it
ADVICE = ("Create it inside the function, or at module level in an importable module (each "
          "worker then makes its own), or run the stage on threads in the driver with "
          "releases_gil=True.")


def _line_of(text: str) -> int:
    with open(__file__) as f:
        return next(i for i, line in enumerate(f, 1) if line.strip() == text)


def uses_module_lock(row: int) -> int:
    """Importable module-level function: cloudpickle sends it by reference."""
    with _LOCK:
        return row + 1


class Conn:
    def __init__(self) -> None:
        self.lock = threading.Lock()


class Inner:
    def __init__(self) -> None:
        self.conn = Conn()


class Model:
    def __init__(self) -> None:
        self.model = Inner()

    def __call__(self, batch: int) -> int:
        return batch


class Scale:
    def __init__(self, factor: int) -> None:
        self.factor = factor

    def __call__(self, batch: int) -> int:
        return batch * self.factor


def make_parse():
    lock = threading.Lock()

    def parse(row: int) -> int:
        with lock:
            return row
    return parse


# --- the error ---------------------------------------------------------------------------

def test_message_names_stage_udf_location_variable_type_and_cause():
    parse = make_parse()
    with pytest.raises(UnpicklableUDFError) as info:
        dumps_udf(parse, "Map(parse)")
    err = info.value
    line = _line_of("def parse(row: int) -> int:")
    assert str(err) == (
        f"stage 'Map(parse)': the UDF make_parse.<locals>.parse ({HERE}:{line}) cannot be sent "
        "to a worker process: its closure variable 'lock' (a _thread.lock) cannot be pickled "
        f"(TypeError: cannot pickle '_thread.lock' object). {ADVICE}")
    assert (err.stage, err.path, err.type_name) == (
        "Map(parse)", "its closure variable 'lock'", "_thread.lock")
    assert err.cause == "TypeError: cannot pickle '_thread.lock' object"
    assert isinstance(err.__cause__, TypeError)


def test_error_survives_pickling_with_the_same_message():
    with pytest.raises(UnpicklableUDFError) as info:
        dumps_udf(make_parse(), "Map(parse)")
    err = info.value
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is UnpicklableUDFError
    assert str(back) == str(err)
    assert (back.stage, back.udf_name, back.path, back.type_name, back.cause) == (
        err.stage, err.udf_name, err.path, err.type_name, err.cause)


def test_callable_class_instance_is_named_by_its_class_and_class_location():
    with pytest.raises(UnpicklableUDFError) as info:
        dumps_udf(Model(), "MapBatches(Model)")
    err = info.value
    assert err.udf_name == f"Model ({HERE}:{_line_of('class Model:')})"
    assert err.path == "its attribute 'model' -> its attribute 'conn' -> its attribute 'lock'"
    assert "(a _thread.lock)" in str(err)


def test_partial_is_located_at_its_function():
    with pytest.raises(UnpicklableUDFError) as info:
        dumps_udf(functools.partial(make_parse(), _LOCK), "Map(p)")
    line = _line_of("def parse(row: int) -> int:")
    assert info.value.udf_name == f"partial ({HERE}:{line})"
    # the wrapped closure is searched before the arguments
    assert info.value.path == "its wrapped function -> its closure variable 'lock'"


def test_a_lock_from_multiprocessing_raises_runtime_error_and_is_still_reported():
    mp_lock = multiprocessing.Lock()
    with pytest.raises(UnpicklableUDFError) as info:
        dumps_udf(lambda row: mp_lock, "Map(f)")
    assert info.value.path == "its closure variable 'mp_lock'"  # not its SemLock
    assert info.value.type_name == "multiprocessing.synchronize.Lock"
    assert info.value.cause.startswith("RuntimeError: Lock objects should only be shared")


def test_dumps_udf_returns_bytes_that_load_into_a_working_udf():
    factor = 3
    blob = dumps_udf(lambda row: row * factor, "Map(f)")
    assert isinstance(blob, bytes)
    assert cloudpickle.loads(blob)(5) == 15
    assert cloudpickle.loads(dumps_udf(Scale(4), "MapBatches(Scale)"))(2) == 8


# --- picklable UDFs ----------------------------------------------------------------------

@pytest.mark.parametrize("udf", [
    lambda row: row + 1,
    (lambda k: (lambda row: row * k))(7),
    Scale(2),
    Scale,
    functools.partial(divmod, 7),
    functools.partial(sorted, key=len),
    Scale(3).__call__,
    uses_module_lock,  # by reference: each worker imports the module and makes its own lock
    {"threshold": 0.5, "names": ["a", "b"]},
], ids=["lambda", "closure", "instance", "class", "partial", "partial-kw", "bound-method",
        "importable-fn-with-global-lock", "dict"])
def test_picklable_udfs_give_none(udf):
    assert find_unpicklable(udf) is None


def test_a_text_file_open_for_reading_pickles_as_a_snapshot_of_its_contents(tmp_path):
    path = tmp_path / "rows.txt"
    path.write_text("a\nb\n")
    with open(path) as f:
        assert find_unpicklable(lambda: f.read()) is None
        fn = cloudpickle.loads(cloudpickle.dumps(lambda: f))
    copy = fn()
    assert isinstance(copy, io.StringIO)
    assert copy.read() == "a\nb\n"


# --- unpicklable UDFs: the smallest failing piece ----------------------------------------

def test_closure_over_a_lock():
    lock = threading.Lock()
    path, culprit, exc = find_unpicklable(lambda row: lock.locked())
    assert (path, culprit) == ("its closure variable 'lock'", lock)
    assert str(exc) == "cannot pickle '_thread.lock' object"


def test_a_generator_object_itself_and_in_a_closure():
    rows = (i for i in range(3))
    path, culprit, exc = find_unpicklable(rows)
    assert (path, culprit, str(exc)) == ("the UDF itself", rows, "cannot pickle 'generator' object")
    path, culprit, _ = find_unpicklable(lambda: next(rows))
    assert (path, culprit) == ("its closure variable 'rows'", rows)


def test_an_open_socket():
    sock = socket.socket()
    try:
        with pytest.raises(UnpicklableUDFError) as info:
            dumps_udf(lambda row: sock.send(row), "Map(send)")
        assert info.value.path == "its closure variable 'sock'"
        assert info.value.type_name == "socket.socket"
        assert info.value.cause == "TypeError: cannot pickle 'socket' object"
    finally:
        sock.close()


def test_file_handles_open_for_writing_or_in_binary(tmp_path):
    with open(tmp_path / "out.txt", "w") as out, open(tmp_path / "out.txt", "rb") as raw:
        path, culprit, exc = find_unpicklable(lambda row: out.write(row))
        assert (path, culprit) == ("its closure variable 'out'", out)
        assert isinstance(exc, pickle.PicklingError)
        assert str(exc) == "Cannot pickle files that are not opened for reading: w"
        path, culprit, exc = find_unpicklable(lambda: raw.read())
        assert (path, culprit) == ("its closure variable 'raw'", raw)
        assert re.match(r"cannot pickle '(_io\.)?BufferedReader' (object|instances)$", str(exc))


def test_a_global_lock_used_by_a_function_sent_by_value():
    def guarded(row):  # local, so cloudpickle sends it by value with the globals it uses
        with _LOCK:
            return [threading.get_ident() for _ in range(row)]
    path, culprit, _ = find_unpicklable(guarded)
    assert (path, culprit) == ("the global '_LOCK' it uses", _LOCK)
    with pytest.raises(UnpicklableUDFError) as info:
        dumps_udf(guarded, "Map(guarded)")
    assert "the global '_LOCK' it uses (a _thread.lock)" in str(info.value)


def test_a_lock_nested_two_attributes_down_in_a_callable_instance():
    model = Model()
    path, culprit, _ = find_unpicklable(model)
    assert path == "its attribute 'model' -> its attribute 'conn' -> its attribute 'lock'"
    assert culprit is model.model.conn.lock


def test_a_partial_with_a_lock_in_its_args_and_keywords():
    path, culprit, _ = find_unpicklable(functools.partial(divmod, 3, _LOCK))
    assert (path, culprit) == ("its argument [1]", _LOCK)
    path, culprit, _ = find_unpicklable(functools.partial(sorted, key=_LOCK))
    assert (path, culprit) == ("its keyword argument 'key'", _LOCK)


def test_dict_values_and_container_items():
    lock = threading.Lock()
    assert find_unpicklable({"a": 1, "b": lock})[:2] == ("key 'b'", lock)
    cfg = {"retries": 3, "locks": [None, 1, lock]}
    path, culprit, _ = find_unpicklable(lambda row: cfg["retries"])
    assert (path, culprit) == ("its closure variable 'cfg' -> key 'locks' -> item [2]", lock)


def test_bound_method_and_default_argument():
    conn = Conn()
    path, culprit, _ = find_unpicklable(Model().__call__)
    assert path == ("its bound instance -> its attribute 'model' -> its attribute 'conn' "
                    "-> its attribute 'lock'")

    def with_default(row, lock=conn.lock):
        return row
    assert find_unpicklable(with_default)[:2] == ("its default for 'lock'", conn.lock)


def test_a_class_sent_by_value_with_a_lock_class_attribute():
    class Local:
        lock = _LOCK

        def __call__(self, row):
            return row
    path, culprit, _ = find_unpicklable(Local())
    assert (path, culprit) == ("its class Local -> its class attribute 'lock'", _LOCK)


def test_cycles_end_and_depth_is_limited():
    conn = Conn()
    conn.me = conn
    assert find_unpicklable(conn)[:2] == ("its attribute 'lock'", conn.lock)
    deep: list = [_LOCK]
    for _ in range(MAX_DEPTH + 3):
        deep = [deep]
    path, culprit, _ = find_unpicklable(deep)
    assert path == " -> ".join(["item [0]"] * MAX_DEPTH)
    assert isinstance(culprit, list)


def test_the_dumps_argument_is_used():
    # plain pickle cannot send a local lambda at all: nothing smaller fails
    fn = lambda row: row  # noqa: E731
    path, culprit, exc = find_unpicklable(fn, dumps=pickle.dumps)
    assert (path, culprit) == ("the UDF itself", fn)
    assert "local object" in str(exc)


def test_an_empty_closure_cell_is_skipped():
    def make():
        def f():
            return lock, later
        lock = threading.Lock()
        return f, lock
        later = 1  # never runs: `later` stays an empty cell

    fn, lock = make()
    assert find_unpicklable(fn)[:2] == ("its closure variable 'lock'", lock)


def test_a_queue_is_reported_down_to_its_mutex():
    q = queue.Queue()
    path, culprit, _ = find_unpicklable(lambda: q.get())
    assert (path, culprit) == ("its closure variable 'q' -> its attribute 'mutex'", q.mutex)


def test_a_static_method_of_a_class_sent_by_value_using_a_global_lock():
    class Local:
        @staticmethod
        def helper():
            return _LOCK.locked()

    path, culprit, _ = find_unpicklable(Local)
    assert path == "its method 'helper' -> its function -> the global '_LOCK' it uses"
    assert culprit is _LOCK
