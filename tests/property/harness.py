"""Run one case: driver subprocess(es), the fault, then every check.

Checks (each failure is ``(kind, message)``):
- ``rows``: the output row multiset equals the oracle's (diagnosed by row id);
- ``dead_letters``: the dead letters, as a multiset of (op, input row id), equal
  the oracle's (for a write: ``ds.dead_letters()`` and the committed ``_errors``);
- ``error``: a job whose poison must fail it failed naming the op, and no other
  job failed (``unexpected_error``);
- ``files``: a write's data files are exactly those ``_SUCCESS`` lists, rows
  counted right; a failed write leaves no data file and no ``_SUCCESS``;
- ``batches``: iter_batches gave exactly ``batch_size`` rows per batch but the last;
- ``sigint``: Ctrl-C while iterating ends the driver by KeyboardInterrupt within
  SIGINT_LIMIT_S, and what it had received is part of the expected output;
- ``process_leak``: every process the driver started is gone after it ends (or is
  killed), within PROCESS_GRACE_S;
- ``shm_leak``: no shared-memory store of a driver of the case is left at the end
  (a store of a SIGKILLed driver must be gone once the resumed run has started);
- ``hang``: a run that does not end within its time limit.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

import psutil
import pyarrow.parquet as pq

from tests.property import gen, oracle
from tests.property.canon import row_key, table_rows
from tests.property.judge import (
    check_dead,
    check_rows,
    dead_counter,
    error_line,
    observed_by_op,
    unexpected_dead,
)

REPO = Path(__file__).resolve().parents[2]
SHM = "/dev/shm" if os.path.isdir("/dev/shm") else None
STORE = re.compile(r"streambatch-(\d+)-")
HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"
SIGINT_LIMIT_S = float(os.environ.get("SBPROP_SIGINT_LIMIT_S", "5"))
PROCESS_GRACE_S = 10.0
RUN_TIMEOUT_S = float(os.environ.get("SBPROP_RUN_TIMEOUT_S", "90"))


@dataclass
class Outcome:
    seed: int
    fault: str
    injected: bool = True
    failures: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    sigint_s: float | None = None
    signatures: list[str] = field(default_factory=list)  # one per failure, for grouping

    def fail(self, kind: str, message: str, signature: str | None = None) -> None:
        self.failures.append((kind, message))
        if signature is None:
            text = re.sub(r"\d+(\.\d+)?", "N", message)
            text = re.sub(r"'[^']*'", "'…'", text)
            signature = f"{kind}: {text[:140]}"
        self.signatures.append(signature)

    def summary(self) -> str:
        head = f"seed={self.seed} fault={self.fault} injected={self.injected} {self.seconds:.1f}s"
        if self.sigint_s is not None:
            head += f" ctrl-c->exit {self.sigint_s:.2f}s"
        return "\n".join([head] + [f"  [{k}] {m}" for k, m in self.failures]
                         + [f"  note: {n[:300]}" for n in self.notes if not n.startswith("traceback")])


# ------------------------------------------------------------------ processes


class Run:
    """One driver subprocess, whose descendants are recorded while it runs."""

    def __init__(self, case_dir: Path, mode: str) -> None:
        self.case_dir, self.mode = case_dir, mode
        self.stdout_path = case_dir / f"driver-{mode}.out"
        self.stderr_path = case_dir / f"driver-{mode}.err"
        env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        env.pop("SBPROP_DRIVER_PID", None)
        with open(self.stdout_path, "w") as out, open(self.stderr_path, "w") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "tests.property.driver",
                                          str(case_dir), mode], cwd=REPO, stdout=out,
                                         stderr=err, env=env)
        self.pid = self.proc.pid
        self.seen: dict[int, tuple[float, str]] = {}  # pid -> (create time, name)
        self.started = time.monotonic()
        self.ended: float | None = None
        self.hung = False  # killed by the harness after its time limit

    def record(self) -> None:
        try:
            for child in psutil.Process(self.pid).children(recursive=True):
                try:
                    self.seen.setdefault(child.pid, (child.create_time(), child.name()))
                except psutil.Error:
                    pass
        except psutil.Error:
            pass

    def poll(self) -> int | None:
        code = self.proc.poll()
        if code is not None and self.ended is None:
            self.ended = time.monotonic()
        return code

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr_tail(self, n: int = 1500) -> str:
        return self.stderr_path.read_text(errors="replace")[-n:]

    def wait_until(self, cond, timeout: float) -> bool:
        """Record descendants until ``cond()`` or the driver ends; True if cond held."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.record()
            if cond():
                return True
            if self.poll() is not None:
                return bool(cond())
            time.sleep(0.03)
        return False

    def wait(self, timeout: float) -> bool:
        """Wait for the driver to end; False (and the driver killed) on timeout."""
        ended = self.wait_until(lambda: self.poll() is not None, timeout)
        if not ended:
            self.kill_all()
        return ended

    def kill(self) -> None:
        self.record()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.poll()

    def kill_all(self) -> None:
        """Stop the driver and what it started (a hung run): these are our processes."""
        self.hung = True
        self.kill()
        for pid in self.alive():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

    def alive(self) -> list[int]:
        out = []
        for pid, (created, _) in self.seen.items():
            try:
                proc = psutil.Process(pid)
                if proc.create_time() == created and proc.status() != psutil.STATUS_ZOMBIE:
                    out.append(pid)
            except psutil.Error:
                pass
        return out

    def leftovers(self, grace: float = PROCESS_GRACE_S) -> list[str]:
        deadline = time.monotonic() + grace
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        return [f"{pid} {self.seen[pid][1]}" for pid in self.alive()]

    def result(self) -> dict | None:
        path = self.case_dir / f"result-{self.mode}.json"
        return json.loads(path.read_text()) if path.exists() else None


def stores_of(pids: set[int]) -> list[str]:
    if SHM is None:
        return []
    out = []
    for name in os.listdir(SHM):
        match = STORE.match(name)
        if match and int(match.group(1)) in pids:
            out.append(os.path.join(SHM, name))
    return out


# ------------------------------------------------------------------ output


def settled_pieces(out: Path) -> int:
    manifest = out / "_manifest.jsonl"
    if not manifest.exists():
        return 0
    count = 0
    for line in manifest.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        count += len(entry.get("settled", []))
    return count


def data_files(out: Path) -> set[str]:
    if not out.exists():
        return set()
    return {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()
            and not any(part.startswith(("_", ".")) for part in p.relative_to(out).parts)}


def hidden_files(out: Path) -> set[str]:
    if not out.exists():
        return set()
    return {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()
            and any(part.startswith(".") for part in p.relative_to(out).parts)}


def read_written(out: Path, files: list[str], partition_cols: list[str]) -> list[str]:
    keys = []
    for rel in files:
        parts = dict(seg.split("=", 1) for seg in Path(rel).parent.parts if "=" in seg)
        values = {k: None if v == HIVE_NULL else unquote(v) for k, v in parts.items()}
        for row in table_rows(pq.ParquetFile(out / rel).read()):
            row.update({c: values.get(c) for c in partition_cols})
            keys.append(row_key(row, tuple(partition_cols)))
    return keys


def read_errors_dir(out: Path) -> list[dict]:
    errors = out / "_errors"
    if not errors.exists():
        return []
    rows = []
    for path in sorted(errors.rglob("*.parquet")):
        rows += pq.read_table(path).to_pylist()
    return rows




def run_case(spec: dict, case_dir: Path) -> Outcome:
    start = time.monotonic()
    outcome = Outcome(spec["seed"], spec["fault"])
    if case_dir.exists():
        shutil.rmtree(case_dir)
    case_dir.mkdir(parents=True)
    (case_dir / "spec.json").write_text(json.dumps(spec, indent=1))
    if spec["data"]["source"] == "parquet":
        (case_dir / "input").mkdir()
        for i, table in enumerate(gen.build_tables(spec["data"])):
            pq.write_table(table, case_dir / "input" / f"part-{i:03d}.parquet",
                           row_group_size=spec["data"]["row_group_size"])
    runs: list[Run] = []
    try:
        _drive(spec, case_dir, outcome, runs)
    except Exception as exc:  # the output could not even be judged (e.g. a torn file)
        outcome.fail("unjudgeable", f"{type(exc).__name__}: {str(exc)[:300]}",
                     f"unjudgeable: {type(exc).__name__}")
    finally:
        for run in runs:
            if run.poll() is None:
                run.kill_all()
                outcome.fail("hang", f"{run.mode} run still running at the end")
        leaked = stores_of({r.pid for r in runs if not r.hung})
        for path in stores_of({r.pid for r in runs if r.hung}):  # SIGKILLed by us: expected
            shutil.rmtree(path, ignore_errors=True)
        if leaked:
            outcome.fail("shm_leak", f"stores left: {[os.path.basename(p) for p in leaked]}")
            for path in leaked:  # our drivers' stores: clean up after recording
                shutil.rmtree(path, ignore_errors=True)
        outcome.seconds = time.monotonic() - start
    return outcome


def _drive(spec: dict, case_dir: Path, outcome: Outcome, runs: list[Run]) -> None:
    fault, consumer = spec["fault"], spec["consumer"]
    out = case_dir / "out"
    first = Run(case_dir, "first")
    runs.append(first)
    final: Run = first
    if fault == "driver_kill":
        killed = first.wait_until(lambda: settled_pieces(out) >= 1 and first.poll() is None,
                                  RUN_TIMEOUT_S)
        if killed and first.poll() is None:
            first.kill()
            leftovers = first.leftovers()
            if leftovers:
                outcome.fail("process_leak", f"after the driver's SIGKILL: {leftovers}")
        else:
            outcome.injected = False
            if not first.wait(RUN_TIMEOUT_S):
                outcome.fail("hang", f"first run did not end in {RUN_TIMEOUT_S:.0f}s")
                return
            outcome.notes.append("the job ended before the driver could be killed; resuming a "
                                 "finished job instead")
        final = Run(case_dir, "resume")
        runs.append(final)
        if spec.get("driver_kills", 1) == 2 and outcome.injected:
            before = settled_pieces(out)
            if final.wait_until(lambda: settled_pieces(out) > before and final.poll() is None,
                                RUN_TIMEOUT_S) and final.poll() is None:
                final.kill()
                leftovers = final.leftovers()
                if leftovers:
                    outcome.fail("process_leak", f"after the resume's SIGKILL: {leftovers}")
                outcome.notes.append("the resume was killed too")
                final = Run(case_dir, "again")
                runs.append(final)
    elif fault in ("sigint", "sigint_hung"):
        _sigint(spec, case_dir, outcome, first)
        return
    if not final.wait(RUN_TIMEOUT_S):
        outcome.fail("hang", f"{final.mode} run did not end in {RUN_TIMEOUT_S:.0f}s; "
                     f"stderr: {final.stderr_tail(600)}")
        return
    for run in runs[-1:]:
        leftovers = run.leftovers()
        if leftovers:
            outcome.fail("process_leak", f"after the {run.mode} run ended: {leftovers}")
    if fault in ("worker_kill", "actor_kill"):
        outcome.injected = any(p.name.startswith("flag-kill-") for p in case_dir.iterdir())
    result = final.result()
    if result is None:
        outcome.fail("crash", f"{final.mode} run wrote no result (rc={final.proc.returncode}); "
                     f"stderr: {final.stderr_tail()}")
        return
    left = result.get("left_after_job") or {}
    if left.get("children"):
        outcome.fail("process_leak", f"the job {'failed' if result['status'] != 'ok' else 'ended'}"
                     f" but its processes still run: {left['children']}")
    if left.get("stores"):
        outcome.fail("shm_leak", f"the job {'failed' if result['status'] != 'ok' else 'ended'}"
                     f" but its store is still there: {left['stores']}")
    dead = result.get("dead", [])
    if result.get("dead_error"):
        outcome.fail("dead_letters", f"ds.dead_letters() raised {result['dead_error']}")
    if consumer["kind"] == "iter_stop":
        _check_stopped(outcome, spec, result)
        return
    exp = oracle.evaluate(spec, observed_by_op(dead_counter(dead)[0]))
    cpus = spec["resume" if final.mode == "resume" else "run"]["num_cpus"]
    if gen.actors_needed(spec["ops"]) > cpus:
        _expect_unplaceable(outcome, result, consumer, out)
        return
    if exp.error_op is not None:
        _expect_error(outcome, exp, result, consumer, out)
        return
    if result["status"] != "ok":
        message = error_line(result.get("error", ""))
        outcome.fail("unexpected_error", f"{result.get('error_type')}: {message[:400]}",
                     f"unexpected_error: {result.get('error_type')}: "
                     f"{re.sub(r'[0-9]+', 'N', message)[:150]}")
        outcome.notes.append("traceback:\n" + result.get("error", "")[-2500:])
        return
    for problem in exp.problems:
        outcome.fail("dead_letters", problem)
    parts = tuple(consumer.get("partition_cols") or ())
    expected = [row_key(r, parts) for r in exp.rows]
    if consumer["kind"] == "write":
        _check_write(outcome, spec, exp, expected, out, parts, result)
    else:
        check_rows(outcome, spec, expected, result["rows"], consumer["kind"])
        if consumer["kind"] == "iter_batches" and consumer["batch_size"]:
            sizes, size = result["batch_sizes"], consumer["batch_size"]
            if any(s != size for s in sizes[:-1]) or (sizes and not 0 < sizes[-1] <= size):
                outcome.fail("batches", f"batch_size={size} gave sizes {Counter(sizes)}")
    check_dead(outcome, exp.dead, dead, "ds.dead_letters()")


def _expect_error(outcome: Outcome, exp: oracle.Expected, result: dict, consumer: dict,
                  out: Path) -> None:
    if result["status"] == "ok":
        outcome.fail("error", f"the job should fail on {exp.error_op}'s poisoned rows, but it "
                     f"succeeded{unexpected_dead(result.get('dead', []), exp.dead)}")
        return
    if exp.error_op not in result.get("error", ""):
        last = result.get("error", "").strip().splitlines()[-1:] or [""]
        outcome.fail("error", f"the error does not name {exp.error_op}: {last[0][:300]}")
    if consumer["kind"] == "write":
        left = data_files(out)
        if left or (out / "_SUCCESS").exists():
            outcome.fail("files", f"a failed write left {sorted(left)[:5]} "
                         f"(_SUCCESS: {(out / '_SUCCESS').exists()})")


def _check_stopped(outcome: Outcome, spec: dict, result: dict) -> None:
    """The loop was left early: what came is part of the largest expected output (batch
    dead letters only the poisoned rows), and the job stopped (leak checks, above). An
    error is fine only where the oracle expects one, or actor pools that cannot fit."""
    exp = oracle.evaluate(spec)
    if result["status"] != "ok":
        if exp.error_op is None and gen.actors_needed(spec["ops"]) <= spec["run"]["num_cpus"]:
            message = error_line(result.get("error", ""))
            outcome.fail("unexpected_error", f"{result.get('error_type')}: {message[:400]}")
        return
    if exp.error_op is None:
        surplus = Counter(result["rows"]) - Counter(row_key(r) for r in exp.rows)
        if surplus:
            outcome.fail("rows", f"rows received before the loop stopped that are not in the "
                         f"expected output: {sum(surplus.values())}; e.g. "
                         f"{next(iter(surplus))[:200]}")


def _expect_unplaceable(outcome: Outcome, result: dict, consumer: dict, out: Path) -> None:
    """Actor pools whose minimum sizes need more CPUs than declared: a clear error."""
    if result["status"] == "ok":
        outcome.fail("error", "actor pools need more CPUs than num_cpus, but the job succeeded")
    elif "cannot be placed" not in result.get("error", ""):
        last = result.get("error", "").strip().splitlines()[-1:] or [""]
        outcome.fail("error", f"actor pools that do not fit: unclear error: {last[0][:300]}")
    if consumer["kind"] == "write":
        left = data_files(out)
        if left or (out / "_SUCCESS").exists():
            outcome.fail("files", f"a failed write left {sorted(left)[:5]}")


def _check_write(outcome: Outcome, spec: dict, exp: oracle.Expected, expected: list[str],
                 out: Path, parts: tuple, result: dict) -> None:
    success = out / "_SUCCESS"
    if not success.exists():
        outcome.fail("files", "no _SUCCESS after a write that ended without error")
        return
    listed = json.loads(success.read_text())
    paths = [f["path"] for f in listed.get("files", [])]
    on_disk = data_files(out)
    if set(paths) != on_disk or len(paths) != len(set(paths)):
        outcome.fail("files", f"_SUCCESS lists {len(paths)} files, {len(on_disk)} on disk; "
                     f"not listed: {sorted(on_disk - set(paths))[:3]}, "
                     f"listed but absent: {sorted(set(paths) - on_disk)[:3]}")
    if listed.get("rows") != len(expected):
        outcome.fail("files", f"_SUCCESS says {listed.get('rows')} rows, expected {len(expected)}")
    returned = sum(f.get("rows", 0) for f in result.get("files", []))
    if returned != len(expected):
        outcome.fail("files", f"write_parquet returned {returned} rows, expected {len(expected)}")
    hidden = hidden_files(out)
    if hidden:
        outcome.notes.append(f"hidden files left in the output: {sorted(hidden)[:3]}")
    actual = read_written(out, sorted(on_disk), list(parts))
    check_rows(outcome, spec, expected, actual, "written files")
    check_dead(outcome, exp.dead, read_errors_dir(out), "_errors files")


def _sigint(spec: dict, case_dir: Path, outcome: Outcome, run: Run) -> None:
    hung = spec["fault"] == "sigint_hung"
    flags = [case_dir / f"flag-hang-{op['name']}" for op in spec["ops"] if op.get("hang")]

    def ready() -> bool:
        if hung:
            return any(f.exists() for f in flags)
        return "BATCH" in run.stdout()

    reached = run.wait_until(lambda: ready() and run.poll() is None, RUN_TIMEOUT_S)
    if not reached or run.poll() is not None:
        outcome.injected = False
        if not run.wait(RUN_TIMEOUT_S):
            outcome.fail("hang", "the run did not end")
        result = run.result() if run.poll() is not None else None
        if result and result["status"] != "ok":
            message = error_line(result.get("error", ""))
            outcome.fail("unexpected_error", f"{result.get('error_type')}: {message[:400]}",
                         f"unexpected_error: {result.get('error_type')}: "
                         f"{re.sub(r'[0-9]+', 'N', message)[:150]}")
            outcome.notes.append("traceback:\n" + result.get("error", "")[-2500:])
        return
    time.sleep(0.05)
    run.record()
    sent = time.monotonic()
    run.proc.send_signal(signal.SIGINT)
    ended = run.wait(30)
    outcome.sigint_s = (run.ended or time.monotonic()) - sent
    if not ended:
        outcome.fail("sigint", "the driver did not end within 30 s of Ctrl-C (killed)")
    elif outcome.sigint_s > SIGINT_LIMIT_S:
        outcome.fail("sigint", f"the driver took {outcome.sigint_s:.1f}s to end after Ctrl-C "
                     f"(limit {SIGINT_LIMIT_S:.0f}s)")
    if ended and (run.proc.returncode != 130 or "KEYBOARDINTERRUPT" not in run.stdout()):
        if "DONE" in run.stdout():
            outcome.injected = False  # the job finished before the signal landed
        else:
            outcome.fail("sigint", f"not ended by KeyboardInterrupt: rc={run.proc.returncode}; "
                         f"stderr: {run.stderr_tail(800)}")
    leftovers = run.leftovers()
    if leftovers:
        outcome.fail("process_leak", f"after Ctrl-C: {leftovers}")
    partial = case_dir / "partial.jsonl"
    received = []
    if partial.exists():
        for line in partial.read_text().splitlines():
            try:
                received += json.loads(line)
            except ValueError:
                pass
    exp = oracle.evaluate(spec)  # the largest output: batch dead letters only the poisoned rows
    if exp.error_op is None:
        surplus = Counter(received) - Counter(row_key(r) for r in exp.rows)
        if surplus:
            outcome.fail("rows", f"rows received before Ctrl-C that are not in the expected "
                         f"output: {sum(surplus.values())}; e.g. {next(iter(surplus))[:200]}")


# ------------------------------------------------------------------ many cases


@dataclass
class Report:
    outcomes: list[Outcome] = field(default_factory=list)
    rerun: dict = field(default_factory=dict)  # seed -> did the failure show again on a rerun

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.failures]

    def counts(self) -> dict:
        by_fault: dict = {}
        for o in self.outcomes:
            entry = by_fault.setdefault(o.fault, {"cases": 0, "injected": 0, "failed": 0})
            entry["cases"] += 1
            entry["injected"] += o.injected
            entry["failed"] += bool(o.failures)
        kinds = Counter(k for o in self.outcomes for k in {k for k, _ in o.failures})
        signatures = Counter(s for o in self.outcomes for s in set(o.signatures))
        sigint = sorted(o.sigint_s for o in self.outcomes if o.sigint_s is not None)
        return {"cases": len(self.outcomes), "failed_cases": len(self.failed),
                "failed_again_on_rerun": sum(self.rerun.values()),
                "passed_on_rerun": sorted(seed for seed, again in self.rerun.items() if not again),
                "by_fault": by_fault, "failures_by_kind": dict(kinds),
                "signatures": signatures.most_common(),
                "ctrl_c_exit_s": {"n": len(sigint), "max": sigint[-1] if sigint else None,
                                  "median": sigint[len(sigint) // 2] if sigint else None}}

    def text(self) -> str:
        c = self.counts()
        lines = [f"cases: {c['cases']}, failed: {c['failed_cases']} (rerun: failed again "
                 f"{c['failed_again_on_rerun']}, passed {c['passed_on_rerun']})"]
        for fault, e in sorted(c["by_fault"].items()):
            lines.append(f"  {fault:12s} cases {e['cases']:4d}  fault injected {e['injected']:4d}"
                         f"  failed {e['failed']:4d}")
        lines.append(f"failures by kind (cases): {c['failures_by_kind']}")
        lines.append(f"Ctrl-C to exit: {c['ctrl_c_exit_s']}")
        for sig, n in c["signatures"]:
            seeds = [o.seed for o in self.outcomes if sig in o.signatures][:8]
            lines.append(f"  {n:4d}x {sig}  seeds {seeds}")
        return "\n".join(lines)


def run_many(seeds, base: Path, faults=None, log=None, keep: bool = False,
             rerun: bool = True) -> Report:
    """Run ``seeds`` (fault kinds from ``faults``, cycled, when given) under ``base``;
    passing cases' directories are removed unless ``keep``. With ``rerun`` each failed
    case runs once more at the end (the engine's tree may have been mid-edit, or the
    failure may be timing-dependent): the counts say which failed again."""
    report = Report()
    specs = {}
    for n, seed in enumerate(seeds):
        fault = faults[n % len(faults)] if faults else None
        spec = specs[seed] = gen.make_spec(seed, fault)
        case_dir = base / f"case-{seed}"
        outcome = run_case(spec, case_dir)
        report.outcomes.append(outcome)
        if not outcome.failures and not keep:
            shutil.rmtree(case_dir, ignore_errors=True)
        if log is not None:
            log(outcome.summary() if outcome.failures else
                f"seed={seed} fault={outcome.fault} ok{'' if outcome.injected else ' (fault not injected)'}"
                f" {outcome.seconds:.1f}s")
    for outcome in list(report.failed) if rerun else []:
        again = run_case(specs[outcome.seed], base / f"rerun-{outcome.seed}")
        report.rerun[outcome.seed] = bool(again.failures)
        if log is not None:
            log(f"rerun seed={outcome.seed}: " + (again.summary() if again.failures else "passed"))
    return report
