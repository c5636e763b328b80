"""A batch job described as data (a TOML file or CLI flags): source, stages, sink, execution.

Every field is checked against the names it may have; a typo is reported with
the field's place and the names expected, never ignored.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path

SOURCE_FIELDS = {"format", "path", "columns"}
STAGE_FIELDS = {"fn", "kind", "batch_size", "batch_format", "num_cpus", "num_gpus",
                "concurrency", "on_error", "constructor_args", "constructor_kwargs"}
SINK_FIELDS = {"format", "path", "resume", "mode"}
EXECUTION_FIELDS = {"backend", "address", "num_cpus", "num_gpus", "memory_budget",
                    "preserve_order", "trace", "progress"}
TOP_FIELDS = {"source", "stages", "sink", "execution"}
STAGE_KINDS = ("map_batches", "map", "filter", "flat_map")
FORMATS = ("parquet", "csv", "json", "text", "images", "binary_files")
SINK_FORMATS = ("parquet", "csv", "json")


class JobSpecError(ValueError):
    """A job file or CLI flag is wrong; the message names the field and what it expects."""


@dataclass
class JobSpec:
    """A validated job.

    >>> spec = JobSpec.from_dict({"source": {"path": "in"}, "stages": [{"fn": "math:sqrt"}],
    ...                           "sink": {"path": "out"}})
    >>> spec.source["format"], spec.stages[0]["kind"], spec.sink["format"]
    ('parquet', 'map_batches', 'parquet')
    >>> JobSpec.from_dict({"source": {"path": "in", "colums": ["a"]}, "sink": {"path": "o"}})
    Traceback (most recent call last):
    ...
    streambatch.jobspec.JobSpecError: unknown field 'source.colums' (did you mean 'columns'?); expected one of: columns, format, path
    """

    source: dict
    stages: list[dict] = field(default_factory=list)
    sink: dict = field(default_factory=dict)
    execution: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict) -> JobSpec:
        """Check every field and fill defaults."""
        _known("", data, TOP_FIELDS)
        source = _table(data, "source", SOURCE_FIELDS, required=("path",))
        source.setdefault("format", "parquet")
        _choice("source.format", source["format"], FORMATS)
        stages = [_stage(i, s) for i, s in enumerate(data.get("stages", []))]
        sink = _table(data, "sink", SINK_FIELDS, required=("path",))
        sink.setdefault("format", "parquet")
        _choice("sink.format", sink["format"], SINK_FORMATS)
        execution = _table(data, "execution", EXECUTION_FIELDS, required=(), optional=True)
        if "memory_budget" in execution:
            execution["memory_budget"] = parse_bytes(execution["memory_budget"],
                                                     "execution.memory_budget")
        return cls(source, stages, sink, execution)

    @classmethod
    def from_toml(cls, path: str) -> JobSpec:
        """Read and check a TOML job file."""
        tomllib = load_toml_module()
        try:
            with open(path, "rb") as handle:
                data = tomllib.load(handle)
        except FileNotFoundError:
            raise JobSpecError(f"job file {path!r} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise JobSpecError(f"job file {path!r} is not valid TOML: {exc}") from None
        return cls.from_dict(data)


def load_toml_module():
    """The TOML reader: the standard library's ``tomllib`` (Python 3.11+), else ``tomli``.

    Imported here, when a job file is read, so ``import streambatch`` loads neither.
    ``tomli`` is a dependency of streambatch on Python < 3.11 only.

    >>> load_toml_module().loads('a = 1')
    {'a': 1}
    """
    if sys.version_info >= (3, 11):
        import tomllib
    else:
        from streambatch._dependencies import import_optional

        tomllib = import_optional("tomli", pip="pip install 'tomli>=1.1'",
                                  what="reading a TOML job file on Python < 3.11")
    return tomllib


def _known(prefix: str, data: dict, allowed: set) -> None:
    if not isinstance(data, dict):
        raise JobSpecError(f"{prefix.rstrip('.') or 'the job'} must be a table of fields")
    for name in data:
        if name not in allowed:
            close = difflib.get_close_matches(name, sorted(allowed), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise JobSpecError(f"unknown field '{prefix}{name}'{hint}; expected one of: "
                               f"{', '.join(sorted(allowed))}")


def _table(data: dict, name: str, allowed: set, required: tuple, optional: bool = False) -> dict:
    if name not in data:
        if optional:
            return {}
        raise JobSpecError(f"missing [{name}] section (it needs: {', '.join(required)})")
    table = dict(data[name])
    _known(f"{name}.", table, allowed)
    for key in required:
        if key not in table:
            raise JobSpecError(f"missing field '{name}.{key}'")
    return table


def _stage(index: int, stage: dict) -> dict:
    _known(f"stages[{index}].", stage, STAGE_FIELDS)
    if "fn" not in stage:
        raise JobSpecError(f"missing field 'stages[{index}].fn' (a 'package.module:name')")
    stage = dict(stage)
    stage.setdefault("kind", "map_batches")
    _choice(f"stages[{index}].kind", stage["kind"], STAGE_KINDS)
    if "concurrency" in stage:
        stage["concurrency"] = parse_concurrency(stage["concurrency"],
                                                 f"stages[{index}].concurrency")
    return stage


def _choice(name: str, value, allowed: tuple) -> None:
    if value not in allowed:
        raise JobSpecError(f"{name} = {value!r} is not supported; expected one of: "
                           f"{', '.join(allowed)}")


def parse_bytes(value, name: str) -> int:
    """``"2GB"``, ``"512MiB"``, ``1000`` -> bytes.

    >>> parse_bytes("2GB", "x"), parse_bytes("512MiB", "x"), parse_bytes(10, "x")
    (2000000000, 536870912, 10)
    >>> parse_bytes("lots", "--memory-budget")
    Traceback (most recent call last):
    ...
    streambatch.jobspec.JobSpecError: --memory-budget = 'lots' is not a size; expected e.g. 2GB, 512MiB or a number of bytes
    """
    if isinstance(value, int) and value > 0:
        return value
    units = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
             "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
    text = str(value).strip().upper()
    number = text.rstrip("KMGTIB")
    try:
        amount = float(number)
        unit = units[text[len(number):]]
    except (ValueError, KeyError):
        raise JobSpecError(f"{name} = {value!r} is not a size; expected e.g. 2GB, 512MiB or "
                           "a number of bytes") from None
    return int(amount * unit)


def parse_concurrency(value, name: str) -> tuple[int, int]:
    """``"1,4"``, ``[1, 4]`` or ``2`` -> (min, max).

    >>> parse_concurrency("1,4", "x"), parse_concurrency(2, "x")
    ((1, 4), (2, 2))
    >>> parse_concurrency("4,1", "--concurrency")
    Traceback (most recent call last):
    ...
    streambatch.jobspec.JobSpecError: --concurrency = '4,1' is not valid; expected N or MIN,MAX with 1 <= MIN <= MAX
    """
    try:
        if isinstance(value, int):
            low = high = value
        else:
            parts = value.split(",") if isinstance(value, str) else list(value)
            low, high = (int(parts[0]), int(parts[-1])) if len(parts) in (1, 2) else (0, 0)
    except (ValueError, TypeError):
        low = high = 0
    if not 1 <= low <= high:
        raise JobSpecError(f"{name} = {value!r} is not valid; expected N or MIN,MAX with "
                           "1 <= MIN <= MAX")
    return (low, high)


def load_object(ref: str, name: str):
    """Import ``package.module:attr`` (or ``path/to/file.py:attr``).

    >>> load_object("math:sqrt", "--model")(9.0)
    3.0
    >>> load_object("math:nope", "--model")
    Traceback (most recent call last):
    ...
    streambatch.jobspec.JobSpecError: --model = 'math:nope': module 'math' has no attribute 'nope'
    """
    if ":" not in ref:
        raise JobSpecError(f"{name} = {ref!r}: expected 'package.module:name'")
    module_name, attr = ref.rsplit(":", 1)
    try:
        module = _import(module_name)
    except Exception as exc:  # noqa: BLE001 - any import failure is a bad argument
        raise JobSpecError(f"{name} = {ref!r}: cannot import {module_name!r}: {exc}") from None
    if not hasattr(module, attr):
        raise JobSpecError(f"{name} = {ref!r}: module {module_name!r} has no attribute {attr!r}")
    return getattr(module, attr)


def _import(module_name: str):
    if module_name.endswith(".py"):
        path = Path(module_name).resolve()
        spec = importlib.util.spec_from_file_location(path.stem, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {module_name!r} as a Python module")
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module
        spec.loader.exec_module(module)
        return module
    return importlib.import_module(module_name)
