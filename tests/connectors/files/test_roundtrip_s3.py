"""The file round-trip suite on ``s3://`` (s3fs against moto's server on loopback)."""

from __future__ import annotations

import pytest

import streambatch as sb
from tests.connectors.files.roundtrip_suite import FileRoundTrip, mixed_table


class TestS3Files(FileRoundTrip):
    @pytest.fixture
    def fs(self, s3_server):
        import s3fs

        return s3fs.S3FileSystem()

    @pytest.fixture
    def root(self, s3_root):
        return s3_root

    def test_s3_read_in_forked_worker_processes(self, root):
        """A row function fused into the read runs in forked workers, which read s3 too."""
        sb.from_arrow(mixed_table().select(["id"]), override_num_blocks=4).write_parquet(f"{root}/p")
        ds = sb.read_parquet(f"{root}/p").map(lambda r: {"id2": r["id"] * 2})
        assert sorted(r["id2"] for r in ds.take_all()) == [2 * i for i in range(40)]

    def test_explicit_filesystem_argument(self, root, fs):
        sb.range(5).write_csv(f"{root}/c", filesystem=fs)
        assert sorted(r["id"] for r in sb.read_csv(f"{root}/c", filesystem=fs).take_all()) == list(range(5))

    def test_a_read_sees_files_written_after_an_earlier_listing(self, root, fs):
        """s3fs keeps the listings it made; a read must list afresh, or files written
        since (here by worker processes) are missing: the read failed, no such
        directory, or read the directory's old files only."""
        self.put(fs, f"{root}/a/old.jsonl", b'{"id": 0}\n')
        assert [r["id"] for r in sb.read_json(f"{root}/a").take_all()] == [0]
        sb.from_items([{"id": i} for i in range(1, 4)], override_num_blocks=3) \
            .map(lambda r: r, releases_gil=False).write_json(f"{root}/b")
        assert sorted(r["id"] for r in sb.read_json(f"{root}/b").take_all()) == [1, 2, 3]
        import s3fs

        other = s3fs.S3FileSystem(skip_instance_cache=True)  # another writer
        self.put(other, f"{root}/a/new.jsonl", b'{"id": 9}\n')
        assert sorted(r["id"] for r in sb.read_json(f"{root}/a").take_all()) == [0, 9]
