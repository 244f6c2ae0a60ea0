"""Shared test fixtures."""

from __future__ import annotations

import os
from collections.abc import Iterator

import boto3
import pytest
import torch
from s3server import AWS_ENV, start_moto, stop


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Small ops on a shared 2-core machine: one thread avoids OpenMP spin under load."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def s3() -> Iterator[str]:
    """A moto S3 server with a bucket ``bucket`` and credentials in the environment; yields its
    endpoint URL."""
    saved = {k: os.environ.get(k) for k in AWS_ENV}
    os.environ.update(AWS_ENV)
    server, url = start_moto()
    boto3.client("s3", endpoint_url=url).create_bucket(Bucket="bucket")
    yield url
    stop(server)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
