"""read_images(dir, size=(224, 224)) over large JPEGs: decode time per image.

Input: --images [24] seeded synthetic photos (smooth gradients plus noise) of 2400x1800
pixels, JPEG quality 90, generated once under --data-dir [bench-data]. Each run is a
fresh process: `sb.init(num_cpus=2)`, then `sb.read_images(dir, size=(224, 224)).count()`
timed from the call to the count. The same script runs on two trees (before and after
a change) to compare them; medians of --runs [3].

    python benchmarks/read_images_draft.py [--images 24] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap

JOB = textwrap.dedent('''
    import json, sys, time
    import streambatch as sb
    sb.init(num_cpus=2)
    t0 = time.perf_counter()
    n = sb.read_images(sys.argv[1], size=(224, 224)).count()
    print(json.dumps({"images": n, "s": time.perf_counter() - t0}))
''')


def ensure_images(directory: str, count: int) -> str:
    """``count`` seeded 2400x1800 JPEGs in ``directory`` (made once)."""
    import numpy as np
    from PIL import Image

    folder = os.path.join(directory, f"jpeg2400_{count}img_v1")
    if os.path.isdir(folder) and len(os.listdir(folder)) == count:
        return folder
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(11)
    y, x = np.mgrid[0:1800, 0:2400]
    for i in range(count):
        base = np.stack([(x / (3 + i)) % 256, (y / (4 + i)) % 256, ((x + y) / 9) % 256], -1)
        noisy = base + rng.normal(0, 12, base.shape)
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(
            os.path.join(folder, f"img{i:03d}.jpg"), quality=90)
    return folder


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--data-dir", default="bench-data")
    args = parser.parse_args(argv)
    folder = ensure_images(os.path.abspath(args.data_dir), args.images)
    runs = []
    for _ in range(args.runs):
        out = subprocess.run([sys.executable, "-c", JOB, folder], capture_output=True,
                             text=True, check=True, cwd=os.path.dirname(os.path.abspath(__file__)))
        res = json.loads(out.stdout.strip().splitlines()[-1])
        assert res["images"] == args.images, res
        runs.append(res["s"])
    median = sorted(runs)[len(runs) // 2]
    print(f"{args.images} images 2400x1800 -> 224x224: median {median:.2f} s "
          f"({median / args.images * 1000:.0f} ms per image; runs {', '.join(f'{r:.2f}' for r in runs)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
