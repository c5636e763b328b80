"""Argument checks for the Dataset facade: each error names the argument and the value."""

from __future__ import annotations

from streambatch.executor.contract import Resources


def positive_int(name: str, value, allow_none: bool = False):
    """Check ``value`` is an int > 0 (or None when allowed).

    >>> positive_int("batch_size", 0)
    Traceback (most recent call last):
    ...
    ValueError: batch_size must be a positive integer, got 0
    """
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def non_negative_int(name: str, value):
    """Check ``value`` is an int >= 0.

    >>> non_negative_int("n", -1)
    Traceback (most recent call last):
    ...
    ValueError: n must be a non-negative integer, got -1
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return value


def releases_gil(value) -> bool | None:
    """``releases_gil``: True (threads in the driver), False (worker processes) or None
    (the default: measured on the stage's first tasks).

    >>> releases_gil(None), releases_gil(1)
    (None, True)
    """
    return None if value is None else bool(value)


def callable_fn(name: str, fn):
    """Check ``fn`` is callable.

    >>> callable_fn("map", 3)
    Traceback (most recent call last):
    ...
    TypeError: map expects a callable, got int
    """
    if not callable(fn):
        raise TypeError(f"{name} expects a callable, got {type(fn).__name__}")
    return fn


def expression(name: str, expr) -> None:
    """Check ``expr`` is a ``pyarrow.compute`` expression (there is no string form: a
    string such as ``"v > 1"`` failed deep in the job, blamed on user code).

    >>> expression("filter", "v > 1")
    Traceback (most recent call last):
    ...
    TypeError: filter expects a pyarrow.compute expression (e.g. pc.field('v') > 1), got str 'v > 1'; strings are not parsed here (Ray Data deprecates them too)
    """
    import pyarrow.compute as pc

    if not isinstance(expr, pc.Expression):
        shown = f" {expr!r}" if isinstance(expr, str) else ""
        raise TypeError(f"{name} expects a pyarrow.compute expression (e.g. pc.field('v') > 1),"
                        f" got {type(expr).__name__}{shown}" +
                        ("; strings are not parsed here (Ray Data deprecates them too)"
                         if isinstance(expr, str) else ""))


def column_list(name: str, columns) -> tuple[str, ...]:
    """Normalize a column name or list of names.

    >>> column_list("select_columns", "a"), column_list("select_columns", ["a", "b"])
    (('a',), ('a', 'b'))
    """
    cols = (columns,) if isinstance(columns, str) else tuple(columns)
    if not cols or not all(isinstance(c, str) for c in cols):
        raise ValueError(f"{name} expects one or more column names, got {columns!r}")
    return cols


def resources(num_cpus=None, num_gpus=None, memory=None, custom=None) -> Resources:
    """Build a Resources request from Ray-style keyword arguments.

    >>> resources(num_gpus=0.5).num_gpus
    0.5
    >>> resources(num_cpus=-1)
    Traceback (most recent call last):
    ...
    ValueError: num_cpus must be >= 0, got -1
    """
    for label, value in (("num_cpus", num_cpus), ("num_gpus", num_gpus), ("memory", memory)):
        if value is not None and value < 0:
            raise ValueError(f"{label} must be >= 0, got {value!r}")
    return Resources(num_cpus=1.0 if num_cpus is None else float(num_cpus),
                     num_gpus=float(num_gpus or 0), memory=int(memory or 0),
                     custom=tuple(sorted((custom or {}).items())))


def concurrency(value) -> tuple[int, int] | None:
    """Normalize ``concurrency=n`` or ``(min, max)``.

    >>> concurrency(4), concurrency((1, 3)), concurrency(None)
    ((4, 4), (1, 3), None)
    """
    if value is None:
        return None
    if isinstance(value, int) and value > 0:
        return (value, value)
    if isinstance(value, tuple) and len(value) == 2 and 0 < value[0] <= value[1]:
        return (int(value[0]), int(value[1]))
    raise ValueError(f"concurrency must be a positive int or a (min, max) tuple, got {value!r}")


def on_error(value: str) -> str:
    """Check an ``on_error`` policy.

    >>> on_error("ignore")
    Traceback (most recent call last):
    ...
    ValueError: on_error='ignore' is not supported; expected 'raise' or 'skip'
    """
    if value not in ("raise", "skip"):
        raise ValueError(f"on_error={value!r} is not supported; expected 'raise' or 'skip'")
    return value


_SIZE_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
               "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def byte_size(value: int | float | str, where: str) -> int:
    """A size in bytes from ``"2GB"``, ``"512MiB"``, ``"1.5 GB"`` or a positive number.

    The one parser behind ``sb.init(memory_budget=)``, ``--memory-budget`` and a job
    file's ``execution.memory_budget``. ``where`` names the argument and value for
    the error (``"init(memory_budget='lots')"``).

    >>> byte_size("2GB", "x"), byte_size("512MiB", "x"), byte_size(10, "x")
    (2000000000, 536870912, 10)
    >>> byte_size("lots", "init(memory_budget='lots')")
    Traceback (most recent call last):
    ...
    ValueError: init(memory_budget='lots') is not a size; expected e.g. 2GB, 512MiB or a positive number of bytes
    """
    amount: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        amount = float(value)
        unit = 1
    elif isinstance(value, str):
        text = value.strip().upper()
        number = text.rstrip("KMGTIB").strip()
        try:
            amount, unit = float(number), _SIZE_UNITS[text[len(number):].strip()]
        except (ValueError, KeyError):
            amount = None
    if amount is None or not amount * unit >= 1 or amount != amount or amount == float("inf"):
        raise ValueError(f"{where} is not a size; expected e.g. 2GB, 512MiB or a positive "
                         "number of bytes")
    return int(amount * unit)
