"""Fixtures for the file connector tests: the engine, and an S3-compatible server
(moto's ``ThreadedMotoServer``) on loopback with s3fs pointed at it."""

from __future__ import annotations

import os
import uuid

import pytest

import streambatch as sb

MiB = 2**20
BUCKET = "streambatch-tests"


@pytest.fixture(autouse=True, scope="module")
def _engine():
    """Two CPU slots and a 256 MiB memory budget."""
    sb.init(num_cpus=2, memory_budget=256 * MiB)
    yield


@pytest.fixture(scope="session")
def s3_server():
    """A moto S3 server on 127.0.0.1 (a free port); ``s3://`` URLs reach it through
    the standard AWS environment variables, which botocore and s3fs read."""
    pytest.importorskip("s3fs")
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import boto3

    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=BUCKET)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    yield endpoint
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    s3fs.S3FileSystem.clear_instance_cache()
    server.stop()


@pytest.fixture
def s3_root(s3_server):
    """A fresh ``s3://`` prefix for one test."""
    return f"s3://{BUCKET}/{uuid.uuid4().hex[:8]}"
