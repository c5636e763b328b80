"""A Ray worker node removed in the middle of a W1-shaped job (read -> CPU
preprocess tasks -> a GPU model actor): the job completes with the output of a
fault-free run. Its own module: it needs a multi-node ``ray.cluster_utils.Cluster``
(a head and two worker raylets on this machine), not the conformance session.

It used to hang in about 1 run of 8: a preprocess task on the removed node had sent
its ("out", ...) record but not the block, Ray handed out the generator's error ref
in place of the block, and the task never ended. tests/executor/test_ray_task_stream.py
reproduces that moment deterministically.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

import streambatch as sb

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

ROWS, BLOCKS, WIDTH = 480, 24, 1024


def preprocess(batch: pa.Table) -> pa.Table:
    """~160 KB per block (kept in the object store of the node that made it)."""
    import time

    time.sleep(0.05)
    ids = batch["id"].to_numpy()
    pixels = np.repeat(ids[:, None].astype(np.float64), WIDTH, axis=1) / 7.0
    return pa.table({"id": ids, "pixels": pa.FixedSizeListArray.from_arrays(pixels.ravel(), WIDTH)})


class Model:
    """Stands in for a GPU model; reports the node it runs on."""

    def __init__(self) -> None:
        self.node = ray.get_runtime_context().get_node_id()
        self.weights = np.linspace(0.5, 1.5, WIDTH)

    def __call__(self, batch: pa.Table) -> pa.Table:
        import time

        time.sleep(0.05)
        pixels = batch["pixels"].combine_chunks().flatten().to_numpy().reshape(-1, WIDTH)
        return pa.table({"id": batch["id"], "score": pixels @ self.weights,
                         "node": [self.node] * batch.num_rows})


def expected_scores() -> dict:
    weights = np.linspace(0.5, 1.5, WIDTH)
    return {i: float(np.repeat(np.float64(i), WIDTH) / 7.0 @ weights) for i in range(ROWS)}


@pytest.fixture(scope="module")
def cluster():
    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "num_gpus": 0, "include_dashboard": False})
    workers = [cluster.add_node(num_cpus=2, num_gpus=1) for _ in range(2)]
    ray.init(address=cluster.address, log_to_driver=False)
    cluster.wait_for_nodes()
    yield cluster, workers
    ray.shutdown()
    cluster.shutdown()
    sb.init()


def test_job_survives_removing_a_worker_node(cluster):
    cluster, workers = cluster
    # Ray itself retries nothing (ray_max_retries=0): the executor recomputes. A hang
    # would be a bug: it fails as StageStuckError long before pytest's timeout.
    sb.init(backend="ray", address=cluster.address, target_partition_bytes=256 * 1024,
            no_progress_timeout_s=90)
    ds = (sb.range(ROWS, override_num_blocks=BLOCKS)
          .map_batches(preprocess, batch_size=None, batch_format="pyarrow")
          .map_batches(Model, batch_size=None, num_gpus=1, num_cpus=0, concurrency=1, batch_format="pyarrow"))
    rows, removed = [], None
    for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        rows += batch.to_pylist()
        if removed is None:  # the node running the model (and its tasks and blocks)
            removed = rows[0]["node"]
            cluster.remove_node(next(w for w in workers if w.node_id == removed))
    assert sorted(r["id"] for r in rows) == list(range(ROWS))
    want = expected_scores()
    assert all(r["score"] == pytest.approx(want[r["id"]]) for r in rows)
    assert {r["node"] for r in rows[-5:]} != {removed}, "the model never moved off the node"
    model = ds.stats().stages[-1]
    assert model.actor_restarts >= 1 and model.retries >= 1, str(ds.stats())


def test_resources_follow_nodes_joining_and_leaving(cluster):
    """The backend reads the cluster's resources each time the executor asks (every
    few seconds), so a node that joins is used by the next partitions."""
    import time

    from streambatch.executor.backends.ray import RayBackend

    cluster, _ = cluster
    backend = RayBackend(address=cluster.address)
    cpus, gpus, _ = backend.total_resources()
    node = cluster.add_node(num_cpus=3, num_gpus=1)
    cluster.wait_for_nodes()
    assert backend.total_resources()[:2] == (cpus + 3, gpus + 1)
    assert RayBackend(address=cluster.address, num_cpus=cpus + 1).total_resources()[0] == cpus + 1
    cluster.remove_node(node)
    deadline = time.monotonic() + 60
    while backend.total_resources()[0] != cpus and time.monotonic() < deadline:
        time.sleep(0.2)  # Ray notices a removed node within seconds
    assert backend.total_resources()[:2] == (cpus, gpus)
