"""A real-clock staleness oracle for the server tests: a writer logs (key,
version, time taken before the write commits) and every served value is checked."""

from __future__ import annotations

import random
import threading
import time


class History:
    """Versions per key with a lower bound of their commit time."""

    def __init__(self) -> None:
        self.times: dict = {}
        self.lock = threading.Lock()

    def add(self, key, version: int, t: float) -> None:
        with self.lock:
            self.times.setdefault(key, {})[version] = t

    def staleness(self, key, version: int, t: float) -> float:
        """0 while ``version`` is current at ``t``, else ``t`` minus the (earliest
        possible) commit of the next version: an upper bound on the true staleness."""
        with self.lock:
            nxt = self.times.get(key, {}).get(version + 1)
        return 0.0 if nxt is None or nxt >= t else t - nxt


def writer_thread(write, keys: list, history: History, stop: threading.Event,
                  seed: int = 0) -> threading.Thread:
    """Update random keys to version+1 until ``stop``; ``write(key, version)`` commits."""
    def loop():
        rng, versions = random.Random(seed), dict.fromkeys(keys, 0)
        while not stop.is_set():
            key = rng.choice(keys)
            versions[key] += 1
            history.add(key, versions[key], time.monotonic())
            write(key, versions[key])
            time.sleep(0.0005)
    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return thread


def read_and_check(cache, keys: list, history: History, seconds: float, seed: int = 1) -> dict:
    """Look up batches of keys for ``seconds``; the worst staleness over every served value."""
    rng, worst, served = random.Random(seed), 0.0, 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        batch = [rng.choice(keys) for _ in range(8)]
        found = cache.get_many(batch)
        now = time.monotonic()
        for key in batch:
            worst = max(worst, history.staleness(key, int(found[key]["version"]), now))
            served += 1
    return {"worst": worst, "served": served}

