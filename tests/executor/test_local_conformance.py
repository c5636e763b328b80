"""The executor conformance suite on the embedded local backend, plus local-only checks."""

from __future__ import annotations

import glob
import os

import streambatch as sb
from tests.executor.conformance import (
    ExecutorConformance,
    HeterogeneousConformance,
)
from tests.executor.recovery_conformance import RecoveryConformance


class TestLocalBackend(ExecutorConformance):
    backend = "local"

    def test_worker_processes_start_once_and_are_reused(self):
        ds = sb.range(40, override_num_blocks=20).map(lambda r: {"pid": os.getpid()})
        pids = {r["pid"] for r in ds.take_all()}
        assert 1 <= len(pids) <= self.num_cpus
        assert os.getpid() not in pids

    def test_gil_releasing_udfs_run_on_threads_in_the_driver(self):
        ds = sb.range(10).map_batches(lambda b: {"pid": [os.getpid()] * len(b["id"])},
                                      releases_gil=True)
        assert {r["pid"] for r in ds.take_all()} == {os.getpid()}

    def test_shared_memory_is_cleaned_after_success_and_failure(self):
        pattern = f"/dev/shm/streambatch-{os.getpid()}-*"
        sb.range(1000).map(lambda r: r).count()
        try:
            sb.range(10).map(lambda r: 1 / 0).count()
        except sb.UserCodeError:
            pass
        assert glob.glob(pattern) == []


class TestLocalHeterogeneous(HeterogeneousConformance):
    backend = "local"


class TestLocalRecovery(RecoveryConformance):
    backend = "local"
