"""Chaos benchmark: the W1-shaped pipeline with SIGKILLed workers/actors, 20 seeded runs.

Checks that every run's output equals the fault-free run exactly and reports the
time overhead of one kill per run against fault-free runs (median of each).

    .venv/bin/python benchmarks/chaos.py --runs 20 --kills 1
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import streambatch as sb  # noqa: E402
from tests.chaos.chaos import run  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--kills", type=int, default=1)
    parser.add_argument("--rows", type=int, default=1200)
    parser.add_argument("--blocks", type=int, default=60)
    args = parser.parse_args()
    sb.init(num_cpus=2, actor_idle_timeout_s=0.5)
    baseline, clean_times = None, []
    for _ in range(5):
        table, seconds, _, _ = run(args.rows, args.blocks, seed=None)
        baseline = baseline or table
        assert table.equals(baseline), "fault-free runs disagree"
        clean_times.append(seconds)
    chaos_times, kills, recovered = [], 0, 0
    for seed in range(args.runs):
        table, seconds, killed, stats = run(args.rows, args.blocks, seed=1000 + seed,
                                            kills=args.kills, window_s=(0.2, 1.5))
        if not table.equals(baseline):
            sys.exit(f"FAILED: seed {seed}: output differs from the fault-free run")
        chaos_times.append(seconds)
        kills += len(killed)
        recovered += sum(s.retries + s.actor_restarts for s in stats.stages)
    clean, chaos = statistics.median(clean_times), statistics.median(chaos_times)
    print(f"fault-free: median {clean:.2f}s over {len(clean_times)} runs")
    print(f"with kills: median {chaos:.2f}s over {args.runs} runs ({kills} processes killed, "
          f"{recovered} task retries + actor restarts), every output identical")
    print(f"overhead: {chaos / clean:.2f}x (target <= 1.3x with one kill per run): "
          f"{'met' if chaos / clean <= 1.3 else 'NOT met'}")


if __name__ == "__main__":
    main()
