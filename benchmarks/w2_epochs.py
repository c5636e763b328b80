"""W2 over several epochs in one process (issue 19): the training loop a user runs for
more than one epoch, against the DataLoader a competent user writes for it.

The data, UDF, training step and checks are W2's (``w2_loader.py``, ``_w2_engines.py``).
Each run is a fresh process that trains ``--epochs`` [3] epochs; the clock of each epoch
starts as its loop asks for the first batch. Engines (rounds interleaved):

  iterable-persistent  DataLoader(IterableDataset, batch_size=64, num_workers=2,
                       persistent_workers=True): the main W2 baseline, its workers kept
                       between epochs
  iterable             the same without persistent_workers (workers forked each epoch)
  streambatch          the plain code, one dataset iterated each epoch:
                       ``ds = read_parquet(...).map_batches(decode_crop, batch_size=64,
                       batch_format="numpy")``; ``for epoch: ds.iter_torch_batches(64)``
  streambatch-measure  the same, with the thread/process choice forgotten before each
                       epoch (``worker_choice.forget()``: how every epoch ran before the
                       driver kept the choice of its first job)

Prints each epoch's median rows/s and the ratios to iterable-persistent.

    python benchmarks/w2_epochs.py [--runs 3] [--epochs 3] [--engines a,b]
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _w2_engines as E  # noqa: E402
from _util import machine_summary, median, print_table  # noqa: E402
from w1_inference import SEED  # noqa: E402

ENGINES = ("iterable-persistent", "iterable", "streambatch", "streambatch-measure")
BASELINE = "iterable-persistent"

EPOCHS_SRC = '''
def epochs(make_batches):
    """EPOCHS epochs, each checked: every id once, labels right."""
    out = []
    for epoch in range(EPOCHS):
        res = train(make_batches(epoch), time.perf_counter())
        if sorted(res["order"]) != list(range(N)) or res["bad_labels"]:
            raise SystemExit("FAILED: epoch %d: ids or labels wrong" % epoch)
        out.append({"rows_s": res["rows"] / res["total_s"], "first_s": res["first_s"]})
    return {"epochs": out}
'''

BODIES = {
    "iterable-persistent": E.ITERABLE_SRC + '''
def main():
    from torch.utils.data import DataLoader
    loader = DataLoader(RowGroups(IN), batch_size=BATCH, num_workers=CORES, persistent_workers=True)
    res = epochs(lambda epoch: loader)
''',
    "iterable": E.ITERABLE_SRC + '''
def main():
    from torch.utils.data import DataLoader
    loader = DataLoader(RowGroups(IN), batch_size=BATCH, num_workers=CORES)
    res = epochs(lambda epoch: loader)
''',
    "streambatch": f'''
def main():
    import streambatch as sb
    import torch
    sb.init(num_cpus=CORES)
    ds = {E.SB_PIPE.format(shuffle="")}
    res = epochs(lambda epoch: ds.iter_torch_batches(batch_size=BATCH))
''',
    "streambatch-measure": f'''
def main():
    import streambatch as sb
    import torch
    from streambatch.executor.backends.worker_choice import forget
    sb.init(num_cpus=CORES)
    ds = {E.SB_PIPE.format(shuffle="")}
    def measured(epoch):
        forget()
        return ds.iter_torch_batches(batch_size=BATCH)
    res = epochs(measured)
''',
}


def job(engine: str, in_dir: str, n: int, n_epochs: int) -> str:
    """The script of one run: W2's head and loop, the epochs loop, the engine's body."""
    key = f"epochs:{engine}"  # (W2's own engines keep their one-epoch bodies)
    E.BODIES[key] = BODIES[engine]
    code = E.job_code(key, in_dir, n)
    return code.replace("\ndef main():", f"\nEPOCHS = {n_epochs}\n{EPOCHS_SRC}\ndef main():", 1)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--images", type=int, default=4000)
    ap.add_argument("--files", type=int, default=20)
    ap.add_argument("--data-dir", default="bench-data")
    ap.add_argument("--engines", default=",".join(ENGINES))
    args = ap.parse_args(argv)
    engines = [e for e in args.engines.split(",") if e]
    if any(e not in ENGINES for e in engines):
        ap.error(f"--engines: choose from {','.join(ENGINES)}")
    in_dir, man = E.ensure_w2_data(args.data_dir, args.images, args.files, SEED)
    n = man["images"]
    print(f"W2 over {args.epochs} epochs in one process: {n} JPEGs, {args.runs} round(s) of "
          f"{', '.join(engines)}; {machine_summary()}", flush=True)
    runs: dict[str, list[list[float]]] = {e: [] for e in engines}
    for k in range(args.runs):
        for engine in engines:
            res = E.run_result(engine, job(engine, in_dir, n, args.epochs))
            per_epoch = [x["rows_s"] for x in res["epochs"]]
            runs[engine].append(per_epoch)
            print(f"  round {k + 1} {engine:<20} " + "  ".join(f"{r:,.0f}" for r in per_epoch)
                  + " rows/s", flush=True)
    table(runs, args.epochs)


def table(runs: dict[str, list[list[float]]], n_epochs: int) -> None:
    """Median rows/s per epoch, and the ratio to the baseline's same epoch."""
    med = {e: [median([r[i] for r in rs]) for i in range(n_epochs)] for e, rs in runs.items()}
    base = med.get(BASELINE)
    rows = []
    for engine, per_epoch in med.items():
        cells = []
        for i, x in enumerate(per_epoch):
            ratio = f" ({x / base[i]:.2f}x)" if base and engine != BASELINE else ""
            cells.append(f"{x:,.0f}{ratio}")
        rows.append([engine, *cells])
    print()
    print_table(["engine", *(f"epoch {i + 1} rows/s" for i in range(n_epochs))], rows)


if __name__ == "__main__":
    main()
