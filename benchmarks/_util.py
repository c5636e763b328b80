"""Shared helpers for the benchmark scripts (not part of the streambatch package).

- ``median`` / ``fmt_*``: small statistics and formatting helpers.
- ``TreeSampler``: polls a process *and all its descendants* with psutil and keeps the
  peak of the **sum** over the tree of RSS (every ~10 ms) and, optionally, of PSS and
  USS (/proc/PID/smaps_rollup, read once per process, a little more expensive so
  it is polled less often). It also samples how much of /dev/shm is in use, because
  a shared-memory file that no process currently maps takes RAM but shows up in no
  process's RSS/PSS/USS.
- ``run_python``: runs ``sys.executable -c CODE`` (or a script file) in a fresh
  process, timing the whole subprocess (interpreter start-up and imports included)
  while a ``TreeSampler`` watches it.

Memory metrics, in short:
  RSS  counts every page a process maps, so a page shared by N processes (shared
       libraries, copy-on-write pages after fork, /dev/shm blocks mapped by a writer
       and a reader) is counted N times by the tree sum: an over-estimate.
  PSS  divides each shared page by the number of processes mapping it, so the tree
       sum counts each mapped page once: the closest to "RAM the job uses", except
       for /dev/shm files nobody maps at that instant (see ``shm``).
  USS  counts only pages mapped by exactly one process: a lower bound.
"""

from __future__ import annotations

import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

try:
    import psutil
except ImportError:  # pragma: no cover - psutil is a core dependency of streambatch
    psutil = None

MiB = 2**20
GiB = 2**30
SHM_DIR = "/dev/shm"


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt_s(x, nd=3):
    return "-" if x is None else f"{x:.{nd}f}"


def fmt_mb(x):
    return "-" if x is None else f"{x / MiB:.0f}"


def fmt_ratio(x):
    return "-" if x is None else f"{x:.1f}x"


def print_table(headers, rows):
    """Print a plain-text table (all cells are str)."""
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    line = "  ".join(str(h).ljust(w) for h, w in zip(headers, widths, strict=True))
    print(line)
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)))


_ROLLUP_FIELDS = {"Rss:": "rss", "Pss:": "pss", "Pss_Shmem:": "shmem",
                  "Private_Clean:": "uss", "Private_Dirty:": "uss", "Private_Hugetlb:": "uss"}


def smaps_rollup(pid):
    """RSS, PSS, USS and PSS of shared-memory pages of one process in bytes, from one
    read of /proc/PID/smaps_rollup (what psutil's memory_full_info reads too)."""
    out = {"rss": 0, "pss": 0, "shmem": 0, "uss": 0}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            key = _ROLLUP_FIELDS.get(line.split(":", 1)[0] + ":")
            if key:
                out[key] += int(line.split()[1]) * 1024
    return out


def shm_used_bytes():
    try:
        return shutil.disk_usage(SHM_DIR).used
    except OSError:
        return None


@dataclass
class MemPeaks:
    rss: int | None = None  # peak of sum(RSS) over the tree
    nprocs_at_rss_peak: int = 0  # processes alive in the tree at that sample
    max_nprocs: int = 0
    pss: int | None = None  # peak of sum(PSS)
    uss: int | None = None  # peak of sum(USS)
    nprocs_at_pss_peak: int = 0
    pss_at_peak: list = field(default_factory=list)  # (PSS, USS, name) of each process at the PSS peak
    shm: int | None = None  # peak growth of /dev/shm usage over its value at start
    pss_plus_shm: int | None = None  # peak of sum(PSS) + /dev/shm growth (upper bound)
    # peak of what the tree holds, each page once: sum(PSS - PSS of shared memory)
    # + /dev/shm growth (blocks in /dev/shm count whether or not a process maps them)
    held: int | None = None
    samples: int = 0
    full_samples: int = 0
    source: str = "psutil"


class TreeSampler(threading.Thread):
    """Polls ``pid`` and its descendants until ``stop()``; see module docstring.

    Processes seen once stay tracked (psutil checks pid reuse), so children that are
    re-parented to init when their parent exits are still counted while they live.
    """

    def __init__(self, pid, interval=0.01, full_interval=None, scan_interval=None):
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.full_interval = full_interval
        # None: look for new descendants (a scan of all of /proc) at every sample. A
        # number: only every scan_interval seconds, sampling the known processes in
        # between - much cheaper with tens of processes (psutil's children() reads
        # /proc/*/stat of every process on the machine each time).
        self.scan_interval = scan_interval
        self.peaks = MemPeaks()
        self.seen: dict[int, object] = {}
        self._stop_evt = threading.Event()
        self._shm0 = shm_used_bytes()

    def stop(self):
        self._stop_evt.set()

    def _procs(self):
        try:
            root = self.seen.get(self.pid) or psutil.Process(self.pid)
            self.seen[self.pid] = root
            for c in root.children(recursive=True):
                if c.pid not in self.seen:
                    self.seen[c.pid] = c
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            pass
        return [p for p in self.seen.values() if _alive(p)]

    def run(self):
        if psutil is None:
            return
        pk = self.peaks
        next_full = 0.0
        procs, next_scan = None, 0.0
        while not self._stop_evt.is_set():
            now = time.monotonic()
            if procs is None or self.scan_interval is None or now >= next_scan:
                procs = self._procs()
                if self.scan_interval is not None:
                    next_scan = now + self.scan_interval
            do_full = self.full_interval is not None and now >= next_full
            rss = pss = uss = private = 0
            n = 0
            per_proc = []
            for p in procs:
                try:
                    if do_full:
                        mi = smaps_rollup(p.pid)
                        pss, uss, rss = pss + mi["pss"], uss + mi["uss"], rss + mi["rss"]
                        private += mi["pss"] - mi["shmem"]
                        per_proc.append((mi["pss"], mi["uss"], p))
                    else:
                        rss += p.memory_info().rss
                    n += 1
                except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied, OSError):
                    continue
            if n:
                pk.samples += 1
                pk.max_nprocs = max(pk.max_nprocs, n)
                if pk.rss is None or rss > pk.rss:
                    pk.rss, pk.nprocs_at_rss_peak = rss, n
                shm = shm_used_bytes()
                shm_d = None if (shm is None or self._shm0 is None) else max(0, shm - self._shm0)
                if shm_d is not None and (pk.shm is None or shm_d > pk.shm):
                    pk.shm = shm_d
                if do_full:
                    pk.full_samples += 1
                    if pk.pss is None or pss > pk.pss:
                        pk.pss, pk.nprocs_at_pss_peak = pss, n
                        pk.pss_at_peak = sorted(((ps, us, _name(q)) for ps, us, q in per_proc),
                                                reverse=True)
                    if pk.uss is None or uss > pk.uss:
                        pk.uss = uss
                    tot = pss + (shm_d or 0)
                    if pk.held is None or private + (shm_d or 0) > pk.held:
                        pk.held = private + (shm_d or 0)
                    if pk.pss_plus_shm is None or tot > pk.pss_plus_shm:
                        pk.pss_plus_shm = tot
            if do_full:
                next_full = now + self.full_interval
            self._stop_evt.wait(self.interval)


def _alive(p):
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return False


@dataclass
class RunResult:
    rc: int
    wall_s: float
    stdout: str
    stderr: str
    mem: MemPeaks
    lingering: list = field(default_factory=list)  # descendants still alive after exit

    def check(self, what):
        if self.rc != 0:
            raise SystemExit(
                f"FAILED: {what}: subprocess exited with {self.rc}\n"
                f"--- stdout (tail) ---\n{self.stdout[-4000:]}\n"
                f"--- stderr (tail) ---\n{self.stderr[-8000:]}"
            )
        return self


def compile_streambatch():
    """Write streambatch's bytecode (``__pycache__``) once per benchmark process, as
    ``pip install`` does for an installed package. This machine's environment sets
    PYTHONDONTWRITEBYTECODE, so without it every measured run compiled the modules it
    imports lazily (read_parquet's connectors: ~25 ms of a W2 epoch) in the driver and
    again in the zygote, which the baselines' installed packages (torch) never do."""
    import compileall
    import importlib.util

    global _COMPILED
    if _COMPILED:
        return
    _COMPILED = True
    spec = importlib.util.find_spec("streambatch")  # (finding it imports nothing)
    if spec is None or not spec.submodule_search_locations:
        return
    root = os.path.dirname(spec.submodule_search_locations[0])
    for folder in PACKAGE_FOLDERS:  # a source checkout maps these into the package
        if os.path.isdir(os.path.join(root, folder)):
            compileall.compile_dir(os.path.join(root, folder), quiet=1)


PACKAGE_FOLDERS = ("streambatch", "executor", "connectors", "operators")
_COMPILED = False


def clean_env(extra=None):
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)  # never attach to someone else's cluster
    env.setdefault("PYTHONUNBUFFERED", "1")
    if extra:
        env.update(extra)
    return env


def run_python(
    code,
    *,
    env=None,
    cwd=None,
    timeout=900,
    interval=0.01,
    full_interval=None,
    as_file=False,
    linger_grace_s=10.0,
    scan_interval=None,
):
    """Run ``code`` in a fresh interpreter; time it and sample its process tree.

    The wall time covers Popen -> the direct child's exit (start-up, imports, the
    job and interpreter shutdown). stdout/stderr go to temp files, not pipes, so a
    grandchild that keeps them open cannot stall us. Descendants still alive after
    the child exits get ``linger_grace_s`` to go, then are terminated (by pid; they
    are processes this benchmark started) and reported in ``lingering``.
    """
    env = clean_env() if env is None else env
    compile_streambatch()
    with tempfile.TemporaryDirectory(prefix="sb-bench-") as td:
        out_p, err_p = os.path.join(td, "stdout"), os.path.join(td, "stderr")
        if as_file:
            script = os.path.join(td, "job.py")
            with open(script, "w") as f:
                f.write(code)
            argv = [sys.executable, script]
        else:
            argv = [sys.executable, "-c", code]
        with open(out_p, "wb") as fo, open(err_p, "wb") as fe:
            t0 = time.perf_counter()
            proc = subprocess.Popen(argv, stdout=fo, stderr=fe, env=env, cwd=cwd)
            sampler = None
            if psutil is not None:
                sampler = TreeSampler(proc.pid, interval=interval, full_interval=full_interval,
                                      scan_interval=scan_interval)
                sampler.start()
            try:
                rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = proc.wait()
                rc = rc if rc else -9
            wall = time.perf_counter() - t0
        lingering = []
        if sampler is not None:
            sampler.stop()
            sampler.join()
            mem = sampler.peaks
            left = [p for p in sampler.seen.values() if p.pid != proc.pid and _alive(p)]
            if left:
                lingering = [f"{p.pid}:{_name(p)}" for p in left]
                _, still = psutil.wait_procs(left, timeout=linger_grace_s)
                for p in still:
                    try:
                        p.terminate()
                    except psutil.NoSuchProcess:
                        pass
                _, still = psutil.wait_procs(still, timeout=5)
                for p in still:
                    try:
                        p.kill()
                    except psutil.NoSuchProcess:
                        pass
        else:
            # Fallback: largest single descendant's peak RSS (Linux: KiB), not a tree sum.
            ru = resource.getrusage(resource.RUSAGE_CHILDREN)
            mem = MemPeaks(rss=ru.ru_maxrss * 1024, source="getrusage(max single child)")
        with open(out_p, errors="replace") as f:
            stdout = f.read()
        with open(err_p, errors="replace") as f:
            stderr = f.read()
    return RunResult(rc=rc, wall_s=wall, stdout=stdout, stderr=stderr, mem=mem, lingering=lingering)


def _name(p):
    try:
        return p.name()
    except Exception:
        return "?"


def machine_summary():
    import platform

    parts = [f"python {platform.python_version()}", f"{os.cpu_count()} cpus"]
    if psutil is not None:
        parts.append(f"{psutil.virtual_memory().total / GiB:.0f} GiB RAM")
    return ", ".join(parts)


def cached_input(d, seed, version):
    """The manifest of the input cached in directory ``d`` when it was made with this
    ``seed`` and data ``version``; else None, with ``d`` emptied for a new one."""
    import json

    man_p = os.path.join(d, "_manifest.json")
    if os.path.exists(man_p):
        with open(man_p) as f:
            man = json.load(f)
        if man.get("seed") == seed and man.get("version") == version:
            return man
    if os.path.exists(d):
        shutil.rmtree(d)
    os.makedirs(d)
    return None
