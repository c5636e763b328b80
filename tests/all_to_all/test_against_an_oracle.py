"""All-to-all operators against a plain-Python oracle, on random data: keys with nulls,
string and integer keys, many keys, one hot key, all rows one key, empty blocks;
values with nulls. Layouts vary (blocks, CPUs, buckets)."""

from __future__ import annotations

import math
import random
import statistics

import pytest

import streambatch as sb


def _data(seed: int, rows: int, key_kind: str) -> list[dict]:
    rng = random.Random(seed)
    def key():
        if rng.random() < 0.1:
            return None
        if key_kind == "hot" and rng.random() < 0.3:
            return 7
        if key_kind == "one":
            return 1
        k = rng.randrange(0, 40 if key_kind != "many" else rows)
        return f"k{k}" if key_kind == "str" else k
    return [{"k": key(), "v": None if rng.random() < 0.15 else rng.uniform(-100, 100),
             "i": rng.randrange(-5, 5)} for _ in range(rows)]


def _oracle_groups(rows: list[dict]) -> dict:
    groups: dict = {}
    for r in rows:
        groups.setdefault(r["k"], []).append(r)
    return groups


def _close(a, b) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def _sorted_keys(keys):
    return sorted(keys, key=lambda k: (k is None, k if k is not None else 0))


CASES = [(seed, kind, blocks, cpus) for seed, (kind, blocks, cpus) in enumerate([
    ("int", 1, 1), ("int", 7, 2), ("str", 5, 2), ("hot", 9, 2), ("one", 3, 1),
    ("many", 4, 2)])]


class AllToAllSuite:
    """Every all-to-all operator against the oracle; subclassed per backend."""

    backend = "local"

    def init(self, cpus: int = 2) -> None:
        sb.init(num_cpus=cpus, backend=self.backend)

    @pytest.fixture(autouse=True)
    def _context(self):
        self.init()
        yield
        sb.init()


    @pytest.mark.parametrize("seed,kind,blocks,cpus", CASES)
    def test_groupby_aggregates_match_the_oracle(self, seed, kind, blocks, cpus):
        self.init(cpus)
        rows = _data(seed, 400, kind)
        ds = sb.from_items(rows, override_num_blocks=blocks)
        got = ds.groupby("k").aggregate(sb.Count(), sb.Sum("v"), sb.Min("v"), sb.Max("v"),
                                        sb.Mean("v"), sb.Std("v"), sb.Sum("i")).take_all()
        groups = _oracle_groups(rows)
        assert [r["k"] for r in got] == _sorted_keys(groups)  # one row per group, key order
        for row in got:
            members = groups[row["k"]]
            values = [r["v"] for r in members if r["v"] is not None]
            assert row["count()"] == len(members)
            assert _close(row["sum(v)"], sum(values) if values else None)
            assert row["min(v)"] == (min(values) if values else None)
            assert row["max(v)"] == (max(values) if values else None)
            assert _close(row["mean(v)"], statistics.mean(values) if values else None)
            std = statistics.stdev(values) if len(values) > 1 else math.nan if values else None
            assert (row["std(v)"] is None) == (std is None) and (std is None or (
                math.isnan(row["std(v)"]) and math.isnan(std)) or
                math.isclose(row["std(v)"], std, rel_tol=1e-6))
            assert row["sum(i)"] == sum(r["i"] for r in members)


    @pytest.mark.parametrize("seed,kind,blocks,cpus", CASES)
    def test_sort_matches_the_oracle(self, seed, kind, blocks, cpus):
        self.init(cpus)
        rows = _data(seed, 300, kind)
        ds = sb.from_items(rows, override_num_blocks=blocks)
        got = [(r["k"], r["i"]) for r in ds.sort(["k", "i"], descending=[False, True]).take_all()]
        nonnull = sorted((r for r in rows if r["k"] is not None), key=lambda r: (r["k"], -r["i"]))
        nulls = sorted((r for r in rows if r["k"] is None), key=lambda r: -r["i"])
        assert got == [(r["k"], r["i"]) for r in nonnull + nulls]


    @pytest.mark.parametrize("seed,kind,blocks,cpus", CASES)
    def test_unique_and_global_aggregates_match_the_oracle(self, seed, kind, blocks, cpus):
        self.init(cpus)
        rows = _data(seed, 200, kind)
        ds = sb.from_items(rows, override_num_blocks=blocks)
        assert ds.unique("k") == _sorted_keys({r["k"] for r in rows})
        values = [r["v"] for r in rows if r["v"] is not None]
        assert _close(ds.sum("v"), sum(values))
        assert ds.max("i") == max(r["i"] for r in rows)
        assert _close(ds.mean("v"), statistics.mean(values))


    @pytest.mark.parametrize("blocks,cpus", [(1, 1), (6, 2)])
    def test_random_shuffle_keeps_every_row_once_and_a_seed_repeats_it(self, blocks, cpus):
        self.init(cpus)
        ds = sb.range(500, override_num_blocks=blocks)
        first = [r["id"] for r in ds.random_shuffle(seed=3).take_all()]
        again = [r["id"] for r in ds.random_shuffle(seed=3).take_all()]
        other = [r["id"] for r in ds.random_shuffle(seed=4).take_all()]
        assert sorted(first) == list(range(500))
        assert first == again and first != other and first != list(range(500))


    def test_repartition_with_shuffle_makes_n_partitions_of_all_rows(self):
        ds = sb.range(100, override_num_blocks=3).repartition(4, shuffle=True, seed=1)
        assert ds.num_partitions() == 4
        assert sorted(r["id"] for r in ds.take_all()) == list(range(100))


    def test_map_groups_sees_each_group_whole(self):
        rows = _data(11, 300, "int")
        ds = sb.from_items(rows, override_num_blocks=5)
        got = ds.groupby("k").map_groups(  # pyarrow batches: a null key stays None
            lambda b: {"k": b["k"].slice(0, 1), "n": [b.num_rows]}, batch_format="pyarrow").take_all()
        groups = _oracle_groups(rows)
        assert {r["k"]: r["n"] for r in got} == {k: len(g) for k, g in groups.items()}


    def test_an_empty_dataset_aggregates_to_nothing_and_to_empty_values(self):
        ds = sb.range(10).filter(lambda r: False)
        assert ds.groupby("id").count().take_all() == []
        assert ds.aggregate(sb.Count(), sb.Sum("id")) == {"count()": 0, "sum(id)": None}
        assert ds.sort("id").take_all() == []


    def test_a_user_defined_aggregate_merges_across_blocks(self):
        span = sb.AggregateFn(
            init=lambda key: [],
            accumulate_block=lambda acc, batch: acc + batch["id"].to_pylist(),
            merge=lambda a, b: a + b, finalize=lambda acc: max(acc) - min(acc), name="span")
        got = sb.range(100, override_num_blocks=4).map(lambda r: {"g": r["id"] % 2, "id": r["id"]}) \
            .groupby("g").aggregate(span).take_all()
        assert got == [{"g": 0, "span": 98}, {"g": 1, "span": 98}]


    def test_stages_after_a_sort_keep_its_order(self):
        out = [r["x"] for r in sb.range(200, override_num_blocks=5).sort("id", descending=True)
               .map(lambda r: {"x": r["id"] * 2}).take_all()]
        assert out == [2 * i for i in range(199, -1, -1)]


    def test_explain_and_stats_show_the_map_side_the_exchange_and_the_reduce_side(self):
        ds = sb.range(100, override_num_blocks=4).groupby("id").count()
        text = ds.explain()
        assert "Aggregate(id: count()).map" in text and "Aggregate(id: count()).exchange (in the driver" in text
        assert "Aggregate(id: count()).reduce" in text
        assert ds.count() == 100
        names = [s.name for s in ds.stats().stages]
        assert any(n.endswith(".map") for n in names) and any(n.endswith(".reduce") for n in names)


    def test_an_all_to_all_after_a_map_and_before_a_write_keeps_every_row(self, tmp_path):
        out = tmp_path / "o"
        (sb.range(300, override_num_blocks=6).map(lambda r: {"k": r["id"] % 7, "v": r["id"]})
         .groupby("k").sum("v").write_parquet(str(out)))
        import pyarrow.parquet as pq

        table = pq.read_table(str(out))
        got = dict(zip(table["k"].to_pylist(), table["sum(v)"].to_pylist(), strict=True))
        assert got == {k: sum(i for i in range(300) if i % 7 == k) for k in range(7)}


    def test_global_aggregate_names_and_values_match_ray_data(self):
        ds = sb.range(10)
        assert ds.aggregate(sb.Count(), sb.Sum("id"), sb.Mean("id"), sb.Min("id"), sb.Max("id")) \
            == {"count()": 10, "sum(id)": 45, "mean(id)": 4.5, "min(id)": 0, "max(id)": 9}
        assert ds.sum(["id"]) == {"sum(id)": 45}
        assert math.isclose(ds.std("id"), statistics.stdev(range(10)))


class TestLocal(AllToAllSuite):
    backend = "local"
