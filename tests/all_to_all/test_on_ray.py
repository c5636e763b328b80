"""The all-to-all suite on the Ray backend (one local Ray instance for the module)."""

from __future__ import annotations

import pytest

import streambatch as sb
from tests.all_to_all.test_against_an_oracle import AllToAllSuite

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module", autouse=True)
def ray_session():
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    sb.init()
    ray.shutdown()


class TestRay(AllToAllSuite):
    backend = "ray"
