"""Run the property harness (tests/property) over many seeded cases and print the counts.

    .venv/bin/python benchmarks/property_run.py --cases 200 --first-seed 1000 \
        [--fault driver_kill] [--json results/property.json] [--keep DIR]

Each case: random data and pipeline (tests/property/gen.py), one fault (none,
worker or actor SIGKILL, driver SIGKILL + resume with other num_cpus and memory
budget, Ctrl-C while iterating, Ctrl-C while a UDF hangs), judged against the
plain-Python oracle plus the leak checks (tests/property/harness.py). Prints one
line per case, then the counts by fault kind, failures by kind and by signature.
Exit status 1 when any case failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.property import gen, harness  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=200)
    parser.add_argument("--first-seed", type=int, default=1000)
    parser.add_argument("--fault", choices=gen.FAULTS, action="append",
                        help="only these fault kinds (cycled); default: random per case")
    parser.add_argument("--json", help="also write the counts and failures here")
    parser.add_argument("--keep", help="case directories go here (failed ones are kept)")
    args = parser.parse_args()
    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="sbprop-"))
    base.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    seeds = range(args.first_seed, args.first_seed + args.cases)
    report = harness.run_many(seeds, base, args.fault, log=lambda s: print(s, flush=True))
    print(f"\n{report.text()}\nwall time {time.monotonic() - started:.0f}s; failed cases kept "
          f"under {base}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(
            {**report.counts(), "first_seed": args.first_seed,
             "failures": [{"seed": o.seed, "fault": o.fault, "failures": o.failures}
                          for o in report.failed]}, indent=1, default=str))
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
