"""The W1/W2 data set: seeded synthetic 256x256 JPEGs in parquet files (id, image).

Generated once per (images, files, seed) into a cache folder and reused.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import time

from _util import MiB

DATA_VERSION = 1
IMAGE_SIZE = 256


def _gen_image(seed, i):
    import io

    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng([seed, i])
    base = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    im = Image.fromarray(base).resize((IMAGE_SIZE, IMAGE_SIZE), Image.BICUBIC)
    d = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(3, 9))):
        x0, y0 = (int(v) for v in rng.integers(0, IMAGE_SIZE - 56, 2))
        w, h = (int(v) for v in rng.integers(16, 120, 2))
        col = tuple(int(c) for c in rng.integers(0, 256, 3))
        (d.ellipse if rng.random() < 0.5 else d.rectangle)([x0, y0, x0 + w, y0 + h], fill=col)
    a = np.asarray(im, dtype=np.int16) + rng.normal(0, 6, (IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.int16)
    buf = io.BytesIO()
    Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _gen_file(args):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path, seed, ids = args
    imgs = [_gen_image(seed, i) for i in ids]
    t = pa.table({"id": pa.array(ids, pa.int64()), "image": pa.array(imgs, pa.binary())})
    pq.write_table(t, path, row_group_size=len(ids))
    return len(ids), sum(len(b) for b in imgs)


def ensure_data(data_dir, n_images, n_files, seed):
    """Generate the JPEG parquet files once; return (dir, manifest)."""
    from concurrent.futures import ProcessPoolExecutor

    d = os.path.join(data_dir, f"w1_jpeg{IMAGE_SIZE}_{n_images}img_{n_files}f_s{seed}_v{DATA_VERSION}")
    man_p = os.path.join(d, "_manifest.json")
    if os.path.exists(man_p):
        with open(man_p) as f:
            man = json.load(f)
        if man.get("version") == DATA_VERSION and man.get("images") == n_images:
            return d, man
    t0 = time.perf_counter()
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    bounds = [round(k * n_images / n_files) for k in range(n_files + 1)]
    jobs = [(os.path.join(d, f"images-{k:03d}.parquet"), seed, list(range(bounds[k], bounds[k + 1])))
            for k in range(n_files)]
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as ex:
        res = list(ex.map(_gen_file, jobs))
    man = {"version": DATA_VERSION, "seed": seed, "images": sum(r[0] for r in res), "files": n_files,
           "jpeg_bytes": sum(r[1] for r in res),
           "disk_bytes": sum(os.path.getsize(j[0]) for j in jobs)}
    with open(man_p, "w") as f:
        json.dump(man, f, indent=2)
    print(f"generated {d} in {time.perf_counter() - t0:.1f} s", flush=True)
    return d, man


def warm_page_cache(d):
    for p in sorted(glob.glob(os.path.join(d, "*.parquet"))):
        with open(p, "rb") as f:
            while f.read(16 * MiB):
                pass


# --------------------------------------------------------------------------- jobs
