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

# Each field and the type it must have: a check that returns the (normalized) value
# or raises JobSpecError naming the field, the value and the expected type.
SOURCE_FIELDS = {"format", "path", "columns"}
STAGE_FIELDS = {"fn", "kind", "batch_size", "batch_format", "num_cpus", "num_gpus",
                "concurrency", "on_error", "constructor_args", "constructor_kwargs",
                "releases_gil", "max_retries"}
SINK_FIELDS = {"format", "path", "resume", "mode"}
EXECUTION_FIELDS = {"backend", "address", "num_cpus", "num_gpus", "memory_budget",
                    "preserve_order", "trace", "progress"}
TOP_FIELDS = {"source", "stages", "sink", "execution"}
STAGE_KINDS = ("map_batches", "map", "filter", "flat_map")
FORMATS = ("parquet", "csv", "json", "text", "images", "binary_files")
SINK_FORMATS = ("parquet", "csv", "json")
SINK_MODES = ("error", "overwrite", "append", "ignore")
BACKENDS = ("local", "ray")
ON_ERROR = ("raise", "skip")

class JobSpecError(ValueError):
    """A job file or CLI flag is wrong; the message names the field and what it expects."""


_TOML_TYPES = {str: "a string", bool: "a boolean", int: "an integer", float: "a float",
               list: "an array", dict: "a table"}


def _type_name(value) -> str:
    return next((name for kind, name in _TOML_TYPES.items() if type(value) is kind),
                type(value).__name__)


def _wrong(name: str, value, expected: str) -> JobSpecError:
    got = _type_name(value)
    numeric = got in ("an integer", "a float") and "number" in expected
    same = expected.startswith(got + " ") or expected == got or numeric
    return JobSpecError(f"{name} = {value!r} is not valid: expected {expected}"
                        + ("" if same else f", got {got}"))


def _string(name: str, value) -> str:
    if not isinstance(value, str) or not value:
        raise _wrong(name, value, "a non-empty string")
    return value


def _boolean(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise _wrong(name, value, "a boolean (true or false)")
    return value


def _count(low: int):
    def check(name: str, value) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise _wrong(name, value, f"an integer >= {low}")
        return value
    return check


def _amount(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise _wrong(name, value, "a number >= 0")
    return value


def _strings(name: str, value) -> list:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v
                                                           for v in value):
        raise _wrong(name, value, "an array of strings")
    return value


def _paths(name: str, value):
    return value if isinstance(value, str) and value else _strings(name, value)


def _array(name: str, value) -> list:
    if not isinstance(value, list):
        raise _wrong(name, value, "an array")
    return value


def _mapping(name: str, value) -> dict:
    if not isinstance(value, dict):
        raise _wrong(name, value, "a table")
    return value


def _one_of(allowed: tuple):
    def check(name: str, value) -> str:
        _choice(name, value, allowed)
        return value
    return check


def _batch_format(name: str, value) -> str:
    from streambatch.operators.batch_format import check_batch_format

    try:
        return check_batch_format(_string(name, value))
    except ValueError as exc:
        raise JobSpecError(f"{name} = {value!r} is not supported; "
                           f"{str(exc).split('; ', 1)[-1]}") from None


def _size(name: str, value) -> int:
    return parse_bytes(value, name)


def _concurrency(name: str, value) -> tuple[int, int]:
    return parse_concurrency(value, name)


FIELD_TYPES = {
    "source": {"format": _one_of(FORMATS), "path": _paths, "columns": _strings},
    "stage": {"fn": _string, "kind": _one_of(STAGE_KINDS), "batch_size": _count(1),
              "batch_format": _batch_format, "num_cpus": _amount, "num_gpus": _amount,
              "concurrency": _concurrency, "on_error": _one_of(ON_ERROR),
              "constructor_args": _array, "constructor_kwargs": _mapping,
              "releases_gil": _boolean, "max_retries": _count(0)},
    "sink": {"format": _one_of(SINK_FORMATS), "path": _string, "resume": _boolean,
             "mode": _one_of(SINK_MODES)},
    "execution": {"backend": _one_of(BACKENDS), "address": _string, "num_cpus": _count(1),
                  "num_gpus": _amount, "memory_budget": _size, "preserve_order": _boolean,
                  "trace": _string, "progress": _boolean},
}


def _typed(prefix: str, table: dict, kind: str, flags: dict[str, str]) -> dict:
    """``table`` with every field checked against FIELD_TYPES[kind] (and normalized)."""
    checks = FIELD_TYPES[kind]
    return {key: checks[key](flags.get(f"{prefix}{key}", f"{prefix}{key}"), value)
            for key, value in table.items()}


@dataclass
class JobSpec:
    """A validated job.

    Every field is type-checked; an error names the field (or, for a job the CLI flags
    describe, the flag: ``flags`` maps field names such as ``"sink.path"`` to
    ``"--output"``), the value and what was expected.

    >>> spec = JobSpec.from_dict({"source": {"path": "in"}, "stages": [{"fn": "math:sqrt"}],
    ...                           "sink": {"path": "out"}})
    >>> spec.source["format"], spec.stages[0]["kind"], spec.stages[0]["batch_format"]
    ('parquet', 'map_batches', 'numpy')
    >>> JobSpec.from_dict({"source": {"path": "in", "colums": ["a"]}, "sink": {"path": "o"}})
    Traceback (most recent call last):
    ...
    streambatch.jobspec.JobSpecError: unknown field 'source.colums' (did you mean 'columns'?); expected one of: columns, format, path
    >>> JobSpec.from_dict({"source": {"path": "in"}, "sink": {"path": "o"},
    ...                    "stages": [{"fn": "m:f", "num_gpus": "one"}]})
    Traceback (most recent call last):
    ...
    streambatch.jobspec.JobSpecError: stages[0].num_gpus = 'one' is not valid: expected a number >= 0, got a string
    """

    source: dict
    stages: list[dict] = field(default_factory=list)
    sink: dict = field(default_factory=dict)
    execution: dict = field(default_factory=dict)
    flags: dict[str, str] = field(default_factory=dict)

    def label(self, name: str) -> str:
        """How errors name field ``name``: its CLI flag, or the field itself.

        >>> JobSpec({}, flags={"sink.path": "--output"}).label("sink.path")
        '--output'
        """
        return self.flags.get(name, name)

    @classmethod
    def from_dict(cls, data: dict, flags: dict[str, str] | None = None) -> JobSpec:
        """Check every field's name and type, and fill defaults."""
        flags = dict(flags or {})
        _known("", data, TOP_FIELDS)
        source = _typed("source.", _table(data, "source", SOURCE_FIELDS, required=("path",)),
                        "source", flags)
        source.setdefault("format", "parquet")
        stages = data.get("stages", [])
        if not isinstance(stages, list):
            raise _wrong("stages", stages, "an array of tables ([[stages]])")
        stages = [_stage(i, s, flags) for i, s in enumerate(stages)]
        sink = _typed("sink.", _table(data, "sink", SINK_FIELDS, required=("path",)), "sink",
                      flags)
        sink.setdefault("format", "parquet")
        if sink.get("resume") and sink["format"] != "parquet":
            raise JobSpecError(f"{flags.get('sink.resume', 'sink.resume')} needs the parquet "
                               f"format (the output's format is {sink['format']!r})")
        execution = _typed("execution.", _table(data, "execution", EXECUTION_FIELDS,
                                                required=(), optional=True), "execution", flags)
        if "address" in execution and execution.get("backend", "local") != "ray":
            backend = flags.get("execution.backend", "execution.backend")
            raise JobSpecError(f"{flags.get('execution.address', 'execution.address')} = "
                               f"{execution['address']!r} needs {backend} = 'ray' (it names a "
                               "Ray cluster); set it or drop the address")
        return cls(source, stages, sink, execution, flags)

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
    _known(f"{name}.", data[name], allowed)
    table = dict(data[name])
    for key in required:
        if key not in table:
            raise JobSpecError(f"missing field '{name}.{key}'")
    return table


def _stage(index: int, stage: dict, flags: dict[str, str]) -> dict:
    prefix = f"stages[{index}]."
    _known(prefix, stage, STAGE_FIELDS)
    if "fn" not in stage:
        raise JobSpecError(f"missing field 'stages[{index}].fn' (a 'package.module:name')")
    stage = _typed(prefix, stage, "stage", flags)
    stage.setdefault("kind", "map_batches")
    if stage["kind"] == "map_batches":  # as `streambatch infer` hands the model its batches
        stage.setdefault("batch_format", "numpy")
    only_batches = sorted(k for k in stage if k in ("batch_size", "batch_format", "concurrency",
                                                    "num_cpus", "num_gpus", "max_retries",
                                                    "constructor_args", "constructor_kwargs"))
    if stage["kind"] != "map_batches" and only_batches:
        raise JobSpecError(f"{prefix}{only_batches[0]} is only for kind = \"map_batches\" "
                           f"(stages[{index}].kind = {stage['kind']!r}); remove it or change "
                           "the kind")
    return stage


def _choice(name: str, value, allowed: tuple) -> None:
    if value not in allowed:
        raise JobSpecError(f"{name} = {value!r} is not supported; expected one of: "
                           f"{', '.join(allowed)}")


def parse_bytes(value, name: str) -> int:
    """``"2GB"``, ``"512MiB"``, ``1000`` -> bytes (the parser ``sb.init`` uses too).

    >>> parse_bytes("2GB", "x"), parse_bytes("512MiB", "x"), parse_bytes(10, "x")
    (2000000000, 536870912, 10)
    >>> parse_bytes("lots", "--memory-budget")
    Traceback (most recent call last):
    ...
    streambatch.jobspec.JobSpecError: --memory-budget = 'lots' is not a size; expected e.g. 2GB, 512MiB or a positive number of bytes
    """
    from streambatch.validate import byte_size

    try:
        return byte_size(value, f"{name} = {value!r}")
    except ValueError as exc:
        raise JobSpecError(str(exc)) from None


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
