"""Image classification: parquet of JPEG bytes -> decode/resize -> a small CNN -> parquet.

Generates a seeded dataset of JPEG images (coloured shapes on noise) as parquet,
then streams it through a CPU stage that decodes, resizes and normalizes with
Pillow + numpy (both release the GIL, so it runs on threads), and a small seeded
PyTorch CNN in an actor pool (one GPU per actor when CUDA is available, else
one or two CPU actors), and writes predictions to parquet.

Run it as a program::

    python examples/image_classification.py --images 3000

or generate the data and run the same UDFs through the CLI (what ``make demo`` does)::

    python examples/image_classification.py generate --images 3000 --output /tmp/demo/images
    PYTHONPATH=examples python -m streambatch infer --input /tmp/demo/images \\
        --columns id,image --preprocess image_classification:preprocess \\
        --model image_classification:Classifier --output /tmp/demo/predictions
    python examples/image_classification.py accuracy --output /tmp/demo

From the repository root ``python -m streambatch infer`` also finds them as
``examples.image_classification:preprocess`` / ``:Classifier`` (``examples``
is a namespace package there; the ``streambatch`` script needs ``PYTHONPATH=.``).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import streambatch as sb

IMAGE_SIZE = 64  # generated images are IMAGE_SIZE x IMAGE_SIZE
INPUT_SIZE = 32  # the model's input resolution (preprocess resizes to it)
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


# One class per shape colour: the classifier must find the shape on a noisy background.
PALETTE = np.array([(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
                    (145, 30, 180), (70, 240, 240), (240, 50, 230), (250, 250, 250),
                    (10, 10, 10)], dtype=np.uint8)
CLASSES = len(PALETTE)


def _jpeg(rng: np.random.Generator, size: int) -> tuple[bytes, int]:
    """One JPEG: a filled ellipse or rectangle of a palette colour on noise; and its class."""
    from PIL import Image, ImageDraw

    image = Image.fromarray(rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8))
    x0, y0 = (int(v) for v in rng.integers(0, size // 2, size=2))
    w, h = (int(v) for v in rng.integers(size // 4, size // 2, size=2))
    label = int(rng.integers(0, CLASSES))
    draw = ImageDraw.Draw(image)
    shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
    shape((x0, y0, x0 + w, y0 + h), fill=tuple(int(c) for c in PALETTE[label]))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue(), label


def generate(directory: str, images: int, files: int = 4, size: int = IMAGE_SIZE,
             seed: int = 0) -> str:
    """Write ``images`` seeded JPEGs as ``files`` parquet files: ``id``, ``image``, ``label``.

    ``label`` is the true class (the shape's palette colour). The same arguments
    always give the same bytes.
    """
    if images < 1:
        raise ValueError(f"--images = {images}: need at least one image")
    rng = np.random.default_rng(seed)
    os.makedirs(directory, exist_ok=True)
    files = max(1, min(files, images))
    per_file = images // files
    start = 0
    for i in range(files):
        n = per_file if i < files - 1 else images - per_file * (files - 1)
        blobs, labels = zip(*(_jpeg(rng, size) for _ in range(n)), strict=True)
        table = pa.table({"id": pa.array(np.arange(start, start + n, dtype=np.int64)),
                          "image": pa.array(blobs, type=pa.binary()),
                          "label": pa.array(labels, type=pa.int64())})
        pq.write_table(table, os.path.join(directory, f"images-{i:03d}.parquet"),
                       row_group_size=512)
        start += n
    return directory


def preprocess(batch: dict) -> dict:
    """CPU stage: JPEG bytes -> RGB float32 (N, 3, INPUT_SIZE, INPUT_SIZE), ImageNet-normalized."""
    from PIL import Image

    out = np.empty((len(batch["image"]), 3, INPUT_SIZE, INPUT_SIZE), dtype=np.float32)
    for i, blob in enumerate(batch["image"]):
        with Image.open(io.BytesIO(blob)) as image:
            small = image.convert("RGB").resize((INPUT_SIZE, INPUT_SIZE), Image.BILINEAR)
        pixels = np.asarray(small, dtype=np.float32) / 255.0
        out[i] = ((pixels - MEAN) / STD).transpose(2, 0, 1)
    return {"id": np.asarray(batch["id"]), "pixels": out}


class Classifier:
    """A small seeded CNN, built once per actor (on its GPU when there is one).

    At construction it trains for a second on ``train_images`` seeded JPEGs
    (a different seed from the dataset's), so its predictions mean something;
    with one CPU thread the same seed gives the same weights in every actor.
    The weights are kept as a checkpoint in ``checkpoint_dir`` (default: the
    temp directory), so later actors and runs load them instead of training.
    """

    def __init__(self, seed: int = 7, train_images: int = 256, steps: int = 60,
                 checkpoint_dir: str | None = None) -> None:
        import torch

        torch.manual_seed(seed)
        self.torch = torch
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        if self.device == "cpu":
            torch.set_num_threads(1)
        nn = torch.nn
        self.model = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(32, CLASSES),
        ).to(self.device)
        key = f"{self.model}|{seed}|{train_images}|{steps}|{IMAGE_SIZE}|{INPUT_SIZE}|{self.device}"
        path = os.path.join(checkpoint_dir or tempfile.gettempdir(),
                            f"streambatch-cnn-{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt")
        if os.path.exists(path):
            self.model.load_state_dict(torch.load(path, map_location=self.device))
        else:
            self._train(seed, train_images, steps)
            partial = f"{path}.{os.getpid()}.tmp"
            torch.save(self.model.state_dict(), partial)
            os.replace(partial, path)  # atomic: concurrent actors never read half a file
        self.model.eval()

    def _train(self, seed: int, images: int, steps: int) -> None:
        torch = self.torch
        rng = np.random.default_rng(10_000 + seed)
        blobs, labels = zip(*(_jpeg(rng, IMAGE_SIZE) for _ in range(images)), strict=True)
        x = torch.as_tensor(preprocess({"id": np.arange(images), "image": blobs})["pixels"],
                            device=self.device)
        y = torch.as_tensor(np.array(labels), device=self.device)
        optimizer = torch.optim.Adam(self.model.parameters(), lr=3e-3)
        generator = torch.Generator().manual_seed(seed)
        for _ in range(steps):
            index = torch.randint(0, images, (32,), generator=generator).to(self.device)
            loss = torch.nn.functional.cross_entropy(self.model(x[index]), y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    def __call__(self, batch: dict) -> dict:
        torch = self.torch
        pixels = np.require(batch["pixels"], dtype=np.float32, requirements=["C", "W"])
        with torch.inference_mode():
            probs = torch.softmax(self.model(torch.from_numpy(pixels).to(self.device)), dim=1)
            score, label = probs.max(dim=1)
        return {"id": np.asarray(batch["id"]), "label": label.cpu().numpy().astype(np.int64),
                "score": score.cpu().numpy().astype(np.float32)}


def model_resources() -> dict:
    """``num_gpus=1`` per actor when CUDA is available, else one or two CPU actors."""
    import torch

    if torch.cuda.is_available():
        return {"num_gpus": 1, "concurrency": (1, max(1, torch.cuda.device_count()))}
    return {"concurrency": (1, 2)}


def build(input_dir: str, batch_size: int = 256) -> sb.Dataset:
    """The pipeline: read -> preprocess (threads) -> classify (actor pool)."""
    return (sb.read_parquet(input_dir)
            .map_batches(preprocess, batch_format="numpy", batch_size=batch_size,
                         releases_gil=True)
            .map_batches(Classifier, batch_format="numpy", batch_size=batch_size,
                         **model_resources()))


def accuracy(input_dir: str, predictions_dir: str) -> float:
    """Fraction of predicted labels equal to the true ones (joined on ``id``)."""
    truth = pq.read_table(input_dir, columns=["id", "label"]).sort_by("id")
    predicted = pq.read_table(predictions_dir, columns=["id", "label"]).sort_by("id")
    if truth["id"] != predicted["id"]:
        raise ValueError(f"{predictions_dir}: predictions do not cover the input ids once each")
    return float(np.mean(truth["label"].to_numpy() == predicted["label"].to_numpy()))


def main(images: int = 3000, workdir: str | None = None, quiet: bool = False) -> dict:
    """Generate ``images`` JPEGs, classify them, write predictions; return a summary."""
    workdir = workdir or tempfile.mkdtemp(prefix="streambatch-images-")
    input_dir = generate(os.path.join(workdir, "images"), images)
    out_dir = os.path.join(workdir, "predictions")
    ds = build(input_dir)
    start = time.perf_counter()
    files = ds.write_parquet(out_dir)
    seconds = time.perf_counter() - start
    result = pq.read_table(out_dir)
    counts = np.bincount(result["label"].to_numpy(), minlength=CLASSES).tolist()
    summary = {"rows": result.num_rows, "files": len(files), "seconds": seconds,
               "label_counts": counts, "accuracy": accuracy(input_dir, out_dir),
               "output": out_dir}
    if not quiet:
        print(f"\n{ds.stats()}\n")
        print(f"Classified {summary['rows']:,} images into {summary['files']} files in "
              f"{out_dir} in {seconds:.2f}s ({summary['rows'] / seconds:,.0f} images/s)")
        print(f"Label counts: {counts}; accuracy {summary['accuracy']:.1%}")
    return summary


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", nargs="?", default="run",
                        choices=["run", "generate", "accuracy"],
                        help="run: generate + classify (default); generate: only the data "
                             "(into --output); accuracy: score --output/predictions against "
                             "--output/images")
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--workdir", default=None, help="run: where data and predictions go")
    parser.add_argument("--output", default=None, help="generate / accuracy: the directory")
    args = parser.parse_args()
    if args.command != "run" and not args.output:
        parser.error(f"{args.command} needs --output DIR")
    if args.command == "generate":
        generate(args.output, args.images)
        print(f"Wrote {args.images:,} JPEGs ({IMAGE_SIZE}x{IMAGE_SIZE}) to {args.output}")
    elif args.command == "accuracy":
        score = accuracy(os.path.join(args.output, "images"),
                         os.path.join(args.output, "predictions"))
        print(f"accuracy against the generated labels: {score:.1%}")
    else:
        main(args.images, args.workdir)
