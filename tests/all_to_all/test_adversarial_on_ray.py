"""The adversarial all-to-all checks on the Ray backend: a few random pipelines against
the oracle, a map-side worker death, a map_groups user error. One local Ray instance
for the module (``address="local"``: never a cluster another process left running)."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from streambatch.executor.errors import UserCodeError

import streambatch as sb
from tests.all_to_all.test_adversarial_faults import ROWS, _oracle_sums, _with_key_dying_once
from tests.all_to_all.test_adversarial_properties import (
    _groupby_matches_the_oracle,
    _sort_matches_the_oracle,
    layouts,
    pipelines,
    tables,
)

ray = pytest.importorskip("ray")

ON_RAY = settings(max_examples=5, deadline=None, derandomize=True, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                         HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module", autouse=True)
def ray_session():
    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=3, include_dashboard=False, log_to_driver=False)
    yield
    sb.init()
    ray.shutdown()


@ON_RAY
@given(tables(), layouts, pipelines, st.booleans())
def test_groupby_aggregate_matches_the_oracle_on_ray(data, layout, before, after_filter):
    _groupby_matches_the_oracle(data, layout, before, after_filter, backend="ray")


@ON_RAY
@given(tables(), layouts, pipelines, pipelines, st.lists(st.booleans(), min_size=2, max_size=2))
def test_sort_matches_the_oracle_on_ray(data, layout, before, after, descending):
    _sort_matches_the_oracle(data, layout, before, after, descending, backend="ray")


@pytest.mark.parametrize("what", ["groupby", "sort"])
def test_a_map_side_worker_that_dies_once_leaves_the_output_exact_on_ray(tmp_path, what):
    sb.init(num_cpus=2, backend="ray")
    marker = str(tmp_path / "died")
    ds = sb.range(ROWS, override_num_blocks=6).map_batches(
        _with_key_dying_once(marker, os.getpid(), "exit", at=200), batch_size=None, batch_format="pyarrow", releases_gil=False)
    if what == "groupby":
        got = ds.groupby("k").sum("v").take_all()
        assert got == [{"k": k, "sum(v)": s} for k, s in sorted(_oracle_sums().items())]
    else:
        got = ds.sort(["k", "id"], descending=[True, False]).take_all()
        assert [r["id"] for r in got] == sorted(range(ROWS), key=lambda i: (-(i % 7), i))
    assert os.path.exists(marker)


def test_a_user_exception_in_map_groups_names_the_group_on_ray():
    sb.init(num_cpus=2, backend="ray")

    def fails_on_4(batch):
        if batch["k"][0].as_py() == 4:
            raise KeyError("no such thing")
        return batch

    ds = sb.from_items([{"k": i % 5} for i in range(50)], override_num_blocks=3)
    with pytest.raises(UserCodeError, match="group 4") as info:
        ds.groupby("k").map_groups(fails_on_4, batch_format="pyarrow").take_all()
    assert "no such thing" in str(info.value)


@pytest.mark.parametrize("steps", [[], ["flat_map", "filter"]])
def test_a_seeded_shuffle_on_ray_gives_the_local_order(steps):
    from tests.all_to_all.test_shuffle_reproducible import shuffled

    rows = [{"i": j % 7, "s": str(j)} for j in range(3000)]
    local = shuffled(rows, steps, (5, 2, None, "threads", None), 4)
    assert shuffled(rows, steps, (3, 2, 3, "threads", None), 4, backend="ray") == local
    assert shuffled(rows, steps, (3, 2, 3, "threads", None), 5, backend="ray") != local
