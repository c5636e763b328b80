"""Scheduler sweep (issue 20): the unchanged executor and admission policy on generated
pipelines, on a simulated backend (virtual clock), against each pipeline's lower
bounds; and a sample of the same pipelines on the real local backend.

    .venv/bin/python benchmarks/scheduler_sweep.py                    # 1000 simulated
    .venv/bin/python benchmarks/scheduler_sweep.py --pipelines 200 --worst 10
    .venv/bin/python benchmarks/scheduler_sweep.py --seed 37          # one, with its stats
    .venv/bin/python benchmarks/scheduler_sweep.py --real 20 --ray 5  # also the real sample

Efficiency is the pipeline's optimum within its budget (executor/sim_workloads.py:
a lower bound of any schedule's time) over the run's time; 100% cannot be beaten.
Prints the median, 10th percentile and worst efficiency, and peak buffered memory
against the budget.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

TARGET_MEDIAN, TARGET_P10 = 0.90, 0.80


def run_one(seed: int, shape: str = "machine", node_memory: bool = True) -> dict:
    """Simulate the pipeline of ``seed``; its bounds, time and memory (on a cluster
    shape also each node's peak against its share of the budget)."""
    from _sweep_shapes import spec_for
    from streambatch.executor.sim_workloads import bounds
    from streambatch.executor.simulation import simulate

    spec = spec_for(seed, shape)
    b = bounds(spec)
    start = time.perf_counter()
    result = simulate(spec, node_memory=node_memory)
    node_share = max(result.node_peaks, default=0) / result.node_budget \
        if result.node_peaks and spec.budget_bytes else 0.0
    return {"seed": seed, "shape": shape, "stages": len(spec.stages) + 1,
            "cpus": spec.num_cpus, "gpus": spec.num_gpus, "rows": spec.source.rows,
            "budget": spec.budget_bytes, "optimum": b.optimum, "within": b.within_budget,
            "seconds": result.seconds, "efficiency": b.within_budget / result.seconds,
            "peak": result.peak_buffered_bytes, "over": result.over_budget,
            "node_peak_share": node_share, "node_over": node_share > 1.0,
            "wall": time.perf_counter() - start}


def summarize(label: str, records: list[dict]) -> dict:
    """Median, 10th percentile and worst efficiency; runs over budget."""
    effs = sorted(r["efficiency"] for r in records)
    p10 = effs[int(0.1 * (len(effs) - 1))]
    budgeted = [r for r in records if r["budget"]]
    peak_share = max((r["peak"] / r["budget"] for r in budgeted), default=0.0)
    summary = {"label": label, "pipelines": len(records), "median": statistics.median(effs),
               "p10": p10, "worst": effs[0], "over_budget": sum(r["over"] for r in records),
               "max_peak_over_budget": peak_share}
    summary["nodes_over"] = sum(r.get("node_over", False) for r in records)
    summary["max_node_peak_share"] = max(r.get("node_peak_share", 0.0) for r in records)
    met = summary["median"] >= TARGET_MEDIAN and p10 >= TARGET_P10 and \
        not summary["over_budget"] and not summary["nodes_over"]
    print(f"{label}: {len(records)} pipelines: efficiency median {summary['median']:.1%}, "
          f"10th percentile {p10:.1%}, worst {effs[0]:.1%}; peak buffered / budget: "
          f"max {peak_share:.0%}, {summary['over_budget']} over budget  "
          f"[{'MET' if met else 'NOT MET'}: median >= 90%, p10 >= 80%, never over budget]")
    if summary["max_node_peak_share"]:
        print(f"  per node: peak / the node's share of the budget: max "
              f"{summary['max_node_peak_share']:.0%}; {summary['nodes_over']} pipeline(s) "
              f"with a node over its share")
    return summary


def sweep(seeds: list[int], shape: str, jobs: int, node_memory: bool = True) -> list[dict]:
    """Simulate every seed (in ``jobs`` processes)."""
    n = len(seeds)
    with ProcessPoolExecutor(jobs) as pool:
        return list(pool.map(run_one, seeds, [shape] * n, [node_memory] * n,
                             chunksize=8))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipelines", type=int, default=1000)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--shape", default="machine", help="machine or cluster")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--worst", type=int, default=0, help="list the N worst pipelines")
    parser.add_argument("--seed", type=int, help="simulate one pipeline and print its stats")
    parser.add_argument("--real", type=int, default=0, help="also run N on the local backend")
    parser.add_argument("--ray", type=int, default=0, help="... and N of those on Ray Data")
    parser.add_argument("--no-node-memory", action="store_true",
                        help="cluster shape: place tasks by resources and locality only, not "
                             "by each node's share of the budget (for comparison)")
    parser.add_argument("--json", help="write the records here")
    args = parser.parse_args()
    if args.seed is not None:
        return show(args.seed, args.shape)
    seeds = list(range(args.first_seed, args.first_seed + args.pipelines))
    start = time.perf_counter()
    node_memory = not args.no_node_memory
    records = sweep(seeds, args.shape, args.jobs, node_memory) if seeds else []
    print(f"simulated {len(records)} pipelines in {time.perf_counter() - start:.0f} s")
    label = f"simulated ({args.shape}{', nodes placed without their memory shares' if not node_memory else ''})"
    out = {"simulated": summarize(label, records) if records else None, "records": records}
    for r in sorted(records, key=lambda r: r["efficiency"])[:args.worst]:
        print(f"  seed {r['seed']}: {r['efficiency']:.1%} ({r['seconds']:.1f} s vs "
              f"{r['within']:.1f} s), {r['stages']} stages, {r['cpus']} CPUs, {r['gpus']} GPUs")
    if args.real:
        from _sweep_real import real_sample

        out["real"] = real_sample(args.real, args.ray)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


def show(seed: int, shape: str) -> None:
    """One pipeline: its spec, bounds and the executor's stats."""
    from _sweep_shapes import spec_for
    from streambatch.executor.sim_workloads import bounds
    from streambatch.executor.simulation import simulate

    spec = spec_for(seed, shape)
    print(spec)
    print(bounds(spec))
    result = simulate(spec)
    print(result.stats)
    print(f"efficiency {bounds(spec).within_budget / result.seconds:.1%}")


if __name__ == "__main__":
    main()
