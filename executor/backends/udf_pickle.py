"""Ship UDFs to worker processes with cloudpickle; name the culprit when one cannot go.

A UDF (function, lambda, closure, ``functools.partial``, callable class or its
instance) is pickled with cloudpickle at plan time. When that fails, the user gets
an :class:`UnpicklableUDFError` naming the stage, the UDF, where it was defined and
the smallest reachable sub-object that cannot be pickled.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import reprlib
import types
from collections.abc import Callable, Iterator

import cloudpickle
from streambatch.executor.arrow_pickle import register
from streambatch.executor.contract import StreamBatchError

MAX_DEPTH = 6  # how many links find_unpicklable follows below the UDF


class UnpicklableUDFError(StreamBatchError):
    """A stage's UDF cannot be pickled, so it cannot be sent to a worker process.

    ``path`` says where the culprit sits ("its attribute 'model' -> its attribute 'conn'",
    "the UDF itself"), ``type_name`` its type, ``cause`` the error ("TypeError: ...").

    >>> err = UnpicklableUDFError("Map(parse)", "parse (my_job.py:12)",
    ...     "its closure variable 'lock'", "_thread.lock",
    ...     "TypeError: cannot pickle '_thread.lock' object")
    >>> print(err)  # doctest: +NORMALIZE_WHITESPACE
    stage 'Map(parse)': the UDF parse (my_job.py:12) cannot be sent to a worker process:
    its closure variable 'lock' (a _thread.lock) cannot be pickled (TypeError: cannot
    pickle '_thread.lock' object). Create it inside the function, or at module level in
    an importable module (each worker then makes its own), or run the stage on threads
    in the driver with releases_gil=True.
    """

    def __init__(self, stage: str, udf_name: str, path: str, type_name: str,
                 cause: str) -> None:
        self._init_args = (stage, udf_name, path, type_name, cause)
        article = "an" if type_name.lstrip("_")[:1].lower() in tuple("aeiou") else "a"
        super().__init__(
            f"stage '{stage}': the UDF {udf_name} cannot be sent to a worker process: "
            f"{path} ({article} {type_name}) cannot be pickled ({cause}). Create it inside "
            "the function, or at module level in an importable module (each worker then "
            "makes its own), or run the stage on threads in the driver with "
            "releases_gil=True.")
        self.stage, self.udf_name, self.path = stage, udf_name, path
        self.type_name, self.cause = type_name, cause


def _failure(obj: object, dumps: Callable[[object], bytes]) -> Exception | None:
    """The exception ``dumps(obj)`` raises, or ``None``."""
    try:
        dumps(obj)
    except Exception as exc:  # pickling raises TypeError, PicklingError, RuntimeError...
        return exc
    return None


def _code_names(code: types.CodeType) -> Iterator[str]:
    yield from code.co_names
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_names(const)


def _children(obj: object) -> Iterator[tuple[str, object]]:
    """The (label, sub-object) pairs worth pickling on their own."""
    if isinstance(obj, types.FunctionType):
        code = obj.__code__
        for name, cell in zip(code.co_freevars, obj.__closure__ or (), strict=False):
            with contextlib.suppress(ValueError):  # reading an empty cell raises ValueError
                yield f"its closure variable {name!r}", cell.cell_contents
        for name in dict.fromkeys(_code_names(code)):
            if name in obj.__globals__:
                yield f"the global {name!r} it uses", obj.__globals__[name]
        defaults = obj.__defaults__ or ()
        params = code.co_varnames[:code.co_argcount][-len(defaults):] if defaults else ()
        named = [*zip(params, defaults, strict=False), *(obj.__kwdefaults__ or {}).items()]
        yield from ((f"its default for {name!r}", value) for name, value in named)
    elif isinstance(obj, functools.partial):
        yield "its wrapped function", obj.func
        yield from ((f"its argument [{i}]", value) for i, value in enumerate(obj.args))
        yield from ((f"its keyword argument {k!r}", value) for k, value in obj.keywords.items())
    elif isinstance(obj, types.MethodType):
        yield "its bound instance", obj.__self__
        yield "its function", obj.__func__
    elif isinstance(obj, (staticmethod, classmethod)):
        yield "its function", obj.__func__
    elif isinstance(obj, dict):
        yield from ((f"key {reprlib.repr(key)}", value) for key, value in obj.items())
    elif isinstance(obj, (list, tuple, set, frozenset)):
        yield from ((f"item [{i}]", value) for i, value in enumerate(obj))
    elif isinstance(obj, type):
        for name, value in vars(obj).items():
            is_method = isinstance(value, (types.FunctionType, staticmethod, classmethod))
            if is_method or not name.startswith("__"):
                yield f"its {'method' if is_method else 'class attribute'} {name!r}", value
    elif not isinstance(obj, types.ModuleType):
        attrs = getattr(obj, "__dict__", None)
        if isinstance(attrs, dict):
            yield from ((f"its attribute {name!r}", value) for name, value in attrs.items())
            yield f"its class {type(obj).__name__}", type(obj)


def _search(obj: object, exc: Exception, dumps: Callable[[object], bytes], depth: int,
            seen: set[int]) -> tuple[list[str], object, Exception] | None:
    """Below an object that fails with ``exc``: the first child failing the same way, followed.

    A child failing differently is not why the parent fails: the parent's own reducer
    refused (a ``multiprocessing.Lock`` raises RuntimeError before its SemLock is reached).
    """
    if depth >= MAX_DEPTH or id(obj) in seen:
        return None
    seen.add(id(obj))
    try:
        children = list(_children(obj))
    except Exception:  # a __dict__ property or a cell that misbehaves: stop here
        return None
    for label, child in children:
        child_exc = _failure(child, dumps)
        if child_exc is not None and (type(child_exc), str(child_exc)) == (type(exc), str(exc)):
            deeper = _search(child, child_exc, dumps, depth + 1, seen)
            return ([label, *deeper[0]], *deeper[1:]) if deeper else ([label], child, child_exc)
    return None


def find_unpicklable(obj: object, dumps: Callable[[object], bytes] = cloudpickle.dumps,
                     ) -> tuple[str, object, BaseException] | None:
    """``None`` if ``dumps(obj)`` works; else (path, the smallest failing sub-object, its error).

    The search follows closure variables, the globals a function uses, defaults,
    ``functools.partial`` parts, bound methods, instance and class attributes and
    container items, at most ``MAX_DEPTH`` links deep, each object once.

    >>> import threading
    >>> config = {"retries": 3, "lock": threading.Lock()}
    >>> path, culprit, exc = find_unpicklable(lambda row: config["retries"])
    >>> print(path, "|", type(culprit).__name__, "|", exc)
    the global 'config' it uses -> key 'lock' | lock | cannot pickle '_thread.lock' object
    >>> find_unpicklable(lambda x: x + 1) is None
    True
    """
    exc = _failure(obj, dumps)
    if exc is None:
        return None
    found = _search(obj, exc, dumps, 0, set())
    return (" -> ".join(found[0]), found[1], found[2]) if found else ("the UDF itself", obj, exc)


def _type_name(obj: object) -> str:
    cls = type(obj)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def _location(udf: object) -> str | None:
    """``file:line`` where the UDF (or its class) is defined, when Python knows it."""
    while isinstance(udf, (functools.partial, types.MethodType)):
        udf = udf.func if isinstance(udf, functools.partial) else udf.__func__
    code = getattr(udf, "__code__", None) or getattr(udf, "gi_code", None)
    cls = udf if isinstance(udf, type) else type(udf)
    try:
        path = inspect.getsourcefile(code if isinstance(code, types.CodeType) else cls)
        line = code.co_firstlineno if code else inspect.getsourcelines(cls)[1]
    except (OSError, TypeError):  # a builtin, or source Python cannot find
        return None
    rel = path and os.path.relpath(path)
    return rel and f"{path if rel.startswith('..') else rel}:{line}"


def dumps_udf(udf: object, stage: str) -> bytes:
    """``cloudpickle.dumps(udf)``, or an :class:`UnpicklableUDFError` naming the culprit.

    >>> import pickle, threading
    >>> def make_udf():
    ...     lock = threading.Lock()
    ...     return lambda row: lock.locked()
    >>> try:
    ...     dumps_udf(make_udf(), "Map(parse)")
    ... except UnpicklableUDFError as err:
    ...     print(err.path, "|", err.type_name, "|", err.cause)
    its closure variable 'lock' | _thread.lock | TypeError: cannot pickle '_thread.lock' object
    >>> pickle.loads(dumps_udf(abs, "Map(abs)")) is abs
    True
    """
    register()  # (a UDF may hold tables or types of C++-only extension types)
    try:
        return cloudpickle.dumps(udf)
    except Exception as exc:
        path, culprit, cause = find_unpicklable(udf) or ("the UDF itself", udf, exc)
        name = getattr(udf, "__qualname__", type(udf).__name__)
        where = _location(udf)
        raise UnpicklableUDFError(
            stage, f"{name} ({where})" if where else name, path, _type_name(culprit),
            f"{type(cause).__name__}: {cause}") from exc
