"""streaming_split's socket directory is removed when the driver ends, SIGTERM included.

The driver's main thread waits in short sleeps: CPython runs a Python signal handler
(KeyboardInterrupt, or the engine's SIGTERM cleanup) only between bytecodes, and a
sleep checks for one only when its system call is interrupted. A signal that arrives
after the last check and before ``time.sleep(600)`` enters its system call is handled
when the sleep ends: two fresh-clone runs failed that way (the stacks showed the main
thread still in its sleep 60 s after SIGINT, and after SIGTERM, the split's threads
idle), while 360 runs of the driver alone passed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

DRIVER = textwrap.dedent("""
    import faulthandler, signal, threading, time, streambatch as sb
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # the test's view of a hang
    sb.init(num_cpus=2, progress=False)
    its = sb.range(100000).map_batches(lambda b: (time.sleep(0.05), b)[1],
                                       batch_size=100).streaming_split(2)
    started = threading.Barrier(3)
    def run(i):
        for n, _ in enumerate(its[i].iter_batches(batch_size=10)):
            if n == 0:
                started.wait()
    for i in range(2):
        threading.Thread(target=run, args=(i,), daemon=True).start()
    started.wait()
    print("reading", flush=True)
    while True:  # short sleeps (see the module's docstring)
        time.sleep(0.05)
""")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_driver_leaves_no_split_socket_directory(tmp_path, sig):
    """SIGTERM left /tmp/streambatch-split-* (with split.sock) behind; Ctrl-C did not."""
    env = dict(os.environ, TMPDIR=str(tmp_path))
    driver = subprocess.Popen([sys.executable, "-c", DRIVER], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert driver.stdout.readline().strip() == "reading", driver.stderr.read()
        assert [p for p in os.listdir(tmp_path) if p.startswith("streambatch-split-")]
        driver.send_signal(sig)
        _wait_or_show_stacks(driver, timeout=60)
    finally:
        driver.kill()
        driver.wait()
    assert driver.returncode == -sig or driver.returncode == 1
    assert [p for p in os.listdir(tmp_path) if p.startswith("streambatch-split-")] == []


def _wait_or_show_stacks(driver: subprocess.Popen, timeout: float) -> None:
    """Wait for the driver to end; if it does not, fail with every thread's stack."""
    try:
        driver.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        driver.send_signal(signal.SIGUSR1)
        try:
            driver.wait(timeout=5)
        except subprocess.TimeoutExpired:
            driver.kill()
        pytest.fail(f"the driver did not end within {timeout:.0f} s of the signal; its "
                    f"threads:\n{driver.communicate()[1]}")
