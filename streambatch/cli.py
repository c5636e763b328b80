"""The streambatch command: batch inference from the shell, or a job from a TOML file.

Exit codes: 0 done, 1 the job failed (the message names stage, partition, row),
2 bad arguments or job file (the message names the field and what it expects),
130 interrupted (the output is left resumable with ``--resume``). Every error is one
line on stderr; ``STREAMBATCH_TRACEBACK=1`` prints the full report or traceback.
An ``--output`` (``sink.path``) that already holds files is refused unless
``--mode`` (``sink.mode``) says otherwise, unlike the library's ``write_*``, which
append by default, as Ray Data does.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import NoReturn

from streambatch.jobspec import JobSpec, JobSpecError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # exit 2 with our prefix, as argparse does
        raise JobSpecError(f"{message}; see '{self.prog} --help'")


def parser() -> argparse.ArgumentParser:
    """The argument parser (``streambatch --help``)."""
    top = _Parser(prog="streambatch", description=__doc__.splitlines()[0])
    sub = top.add_subparsers(dest="command", required=True, parser_class=_Parser)
    infer = sub.add_parser("infer", help="run a model over files and write predictions")
    infer.add_argument("--input", required=True, help="file, directory, glob or URL")
    infer.add_argument("--input-format", default="parquet")
    infer.add_argument("--model", required=True, help="package.module:Class (or file.py:Class)")
    infer.add_argument("--preprocess", help="package.module:fn run on CPU before the model")
    infer.add_argument("--output", required=True)
    infer.add_argument("--columns", help="comma-separated input columns to read")
    infer.add_argument("--batch-size", type=int, default=None)
    infer.add_argument("--num-gpus", type=float, default=0.0)
    infer.add_argument("--concurrency", default=None, help="N or MIN,MAX model actors")
    infer.add_argument("--format", default="parquet", help="parquet, json or csv")
    infer.add_argument("--memory-budget", default=None, help="e.g. 2GB")
    infer.add_argument("--num-cpus", type=int, default=None)
    infer.add_argument("--backend", default="local", choices=["local", "ray"])
    infer.add_argument("--address", default=None)
    infer.add_argument("--mode", default=None,
                       choices=["error", "overwrite", "append", "ignore"],
                       help="when --output already holds files: refuse (the default), "
                            "replace them, add to them or skip the job")
    infer.add_argument("--resume", action="store_true",
                       help="finish an interrupted job, keeping its committed output")
    infer.add_argument("--on-error", default="raise", choices=["raise", "skip"])
    infer.add_argument("--trace", default=None, help="write a Chrome trace of every task")
    infer.add_argument("--no-progress", action="store_true")
    for name, text in (("run", "run a job file"), ("explain", "print a job file's plans")):
        command = sub.add_parser(name, help=text)
        command.add_argument("job", help="job.toml")
    return top


def spec_from_infer(args: argparse.Namespace) -> JobSpec:
    """The job the ``infer`` flags describe; its errors name the flags.

    >>> args = parser().parse_args(["infer", "--input", "in", "--model", "m:M",
    ...                             "--output", "out", "--num-gpus", "-1"])
    >>> spec_from_infer(args)
    Traceback (most recent call last):
    ...
    streambatch.jobspec.JobSpecError: --num-gpus = -1.0 is not valid: expected a number >= 0
    """
    stages = []
    flags = dict(INFER_FLAGS)
    if args.preprocess:
        stages.append({"fn": args.preprocess, "batch_format": "numpy", "on_error": args.on_error})
        flags["stages[0].fn"] = "--preprocess"
    at = f"stages[{len(stages)}]."
    flags.update({at + "fn": "--model", at + "num_gpus": "--num-gpus",
                  at + "concurrency": "--concurrency", at + "batch_size": "--batch-size"})
    model = {"fn": args.model, "num_gpus": args.num_gpus, "on_error": args.on_error,
             "batch_format": "numpy", "concurrency": args.concurrency or "1,1"}
    if args.batch_size is not None:
        model["batch_size"] = args.batch_size
    stages.append(model)
    execution = {"backend": args.backend, "progress": not args.no_progress}
    for key in ("num_cpus", "trace", "address", "memory_budget"):
        if getattr(args, key) is not None:
            execution[key] = getattr(args, key)
    source = {"path": args.input, "format": args.input_format}
    if args.columns is not None:
        source["columns"] = [c.strip() for c in args.columns.split(",") if c.strip()]
    sink = {"path": args.output, "format": args.format, "resume": args.resume}
    if args.mode:
        sink["mode"] = args.mode
    return JobSpec.from_dict({"source": source, "stages": stages, "sink": sink,
                              "execution": execution}, flags=flags)


# job fields -> the infer flags that set them (error messages name the flag)
INFER_FLAGS = {"source.path": "--input", "source.format": "--input-format",
               "source.columns": "--columns", "sink.path": "--output", "sink.format": "--format",
               "sink.mode": "--mode", "sink.resume": "--resume", "execution.trace": "--trace",
               "execution.memory_budget": "--memory-budget", "execution.num_cpus": "--num-cpus",
               "execution.backend": "--backend", "execution.address": "--address"}


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (0 done, 1 job failed, 2 bad argument, 130
    interrupted). Every error is one line on stderr; set ``STREAMBATCH_TRACEBACK=1`` to
    see the traceback of an unexpected one.

    >>> main(["infer", "--input", "in", "--output", "o"])
    2
    """
    from streambatch.executor.contract import StreamBatchError

    try:
        args = parser().parse_args(argv)
        spec = spec_from_infer(args) if args.command == "infer" else JobSpec.from_toml(args.job)
        if args.command == "explain":
            return _explain(spec)
        return _run(spec)
    except JobSpecError as exc:
        print(f"streambatch: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("streambatch: interrupted; committed output is kept: rerun with --resume "
              "(or sink.resume = true) to finish", file=sys.stderr)
        return 130
    except StreamBatchError as exc:
        print(f"streambatch: job failed: {exc}" if os.environ.get("STREAMBATCH_TRACEBACK")
              else failure_line(exc), file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - one line, not a traceback, for any failure
        if os.environ.get("STREAMBATCH_TRACEBACK"):
            raise
        detail = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        text = " ".join(str(detail).split()) or "(no message)"
        print(f"streambatch: job failed: {type(exc).__name__}: {text} "
              "(set STREAMBATCH_TRACEBACK=1 for the traceback)", file=sys.stderr)
        return 1


def failure_line(exc: BaseException) -> str:
    """A failed job in one line: the error's first line, where the user's code raised
    (the worker traceback's last frame outside streambatch and installed packages), and
    how to see the whole traceback.

    >>> from streambatch.executor.errors import UserCodeError
    >>> tb = 'Traceback...\\n  File "/m/model.py", line 7, in predict\\n    x = 1 / 0\\n'
    >>> failure_line(UserCodeError("Map(f)", "partition 2", None, "ZeroDivisionError: boom", tb))
    "streambatch: job failed: stage 'Map(f)' failed on partition 2: ZeroDivisionError: boom (raised at /m/model.py:7 in predict); fix the function or its input and run again (STREAMBATCH_TRACEBACK=1 prints the worker's traceback)"
    """
    text = str(exc)
    first = text.splitlines()[0] if text else type(exc).__name__
    if "\n" not in text:
        return f"streambatch: job failed: {first}"
    from streambatch.executor.errors import UserCodeError

    if not isinstance(exc, UserCodeError):  # (also an instance of the user's error type)
        return f"streambatch: job failed: {first} (STREAMBATCH_TRACEBACK=1 prints the whole report)"
    ours = {str(Path(str(m.__file__)).parent) for name, m in list(sys.modules.items())
            if name.split(".")[0] == "streambatch" and getattr(m, "__file__", None)}
    frames = [(path, line, fn) for path, line, fn
              in re.findall(r'File "([^"]+)", line (\d+), in (\S+)', text)
              if str(Path(path).parent) not in ours and "site-packages" not in path
              and path.endswith(".py")]
    where = f" (raised at {frames[-1][0]}:{frames[-1][1]} in {frames[-1][2]})" if frames else ""
    return (f"streambatch: job failed: {first}{where}; fix the function or its input and run "
            "again (STREAMBATCH_TRACEBACK=1 prints the worker's traceback)")


def _explain(spec: JobSpec) -> int:
    from streambatch.job import build, configure

    configure(spec)
    build(spec).explain()
    return 0


def _run(spec: JobSpec) -> int:
    from streambatch.job import run, summary_lines

    summary = run(spec)
    print("\n".join(summary_lines(summary)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
