"""Storage on local folders and on a real S3 API server (moto_server) started by the tests."""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
from s3server import free_port, start_moto, stop

from stcorr.config import StorageConfig
from stcorr.runtime import Storage, StorageError, StorageNotFoundError, storage_from_config


def test_local_round_trip_is_atomic(tmp_path: Path) -> None:
    store = Storage()
    url = store.join(str(tmp_path), "a", "b", "x.bin")
    assert not store.exists(url)
    store.write_bytes(url, b"first")
    store.write_bytes(url, b"second")
    assert store.read_bytes(url) == b"second" and store.size(url) == 6
    (tmp_path / "a" / "b" / "y.bin.tmp-0123").write_bytes(b"in progress")  # a crashed writer
    source = tmp_path / "src.bin"
    source.write_bytes(os.urandom(1000))
    store.write_file(store.join(str(tmp_path), "c.bin"), source)
    with store.open_read(store.join(str(tmp_path), "c.bin")) as stream:
        assert stream.read() == source.read_bytes()
    assert store.list(str(tmp_path / "a")) == [url]  # temporaries are not listed
    assert not [p for p in tmp_path.rglob("*.tmp-*") if "0123" not in p.name]
    store.delete(url)
    store.delete(url)  # idempotent
    assert not store.exists(url)
    with pytest.raises(FileNotFoundError):  # StorageNotFoundError is also a FileNotFoundError
        store.read_bytes(url)


@pytest.mark.slow
def test_s3_round_trip(s3: str) -> None:
    store = storage_from_config(StorageConfig(s3_endpoint_url=s3, retries=2))
    assert store.join("s3://bucket/pre/", "/x/", "y.tar") == "s3://bucket/pre/x/y.tar"
    store.write_bytes("s3://bucket/pre/x/a.json", b"{}")
    big = Path(os.environ.get("TMPDIR", "/tmp")) / f"stcorr-big-{os.getpid()}.bin"
    big.write_bytes(os.urandom(9 << 20))  # over boto3's 8 MiB threshold: a multipart upload
    try:
        store.write_file("s3://bucket/pre/big.bin", big)
        expected = hashlib.sha256(big.read_bytes()).hexdigest()
    finally:
        big.unlink()
    client = boto3.client("s3", endpoint_url=s3)
    listed = client.list_objects_v2(Bucket="bucket", Prefix="pre/")["Contents"]
    assert sorted(o["Key"] for o in listed) == ["pre/big.bin", "pre/x/a.json"]
    assert store.list("s3://bucket/pre") == ["s3://bucket/pre/big.bin", "s3://bucket/pre/x/a.json"]
    assert store.list("s3://bucket/pr") == []  # a folder, not a string prefix
    with store.open_read("s3://bucket/pre/big.bin") as stream:
        assert hashlib.sha256(stream.read()).hexdigest() == expected
    assert store.size("s3://bucket/pre/big.bin") == 9 << 20
    assert store.read_bytes("s3://bucket/pre/x/a.json") == b"{}"
    assert store.exists("s3://bucket/pre/x/a.json")
    store.delete("s3://bucket/pre/x/a.json")
    assert not store.exists("s3://bucket/pre/x/a.json")
    with pytest.raises(StorageNotFoundError, match=r"^s3://bucket/pre/x/a.json: no such object$"):
        store.read_bytes("s3://bucket/pre/x/a.json")


@pytest.mark.slow
def test_s3_missing_bucket_is_one_line(s3: str) -> None:
    store = Storage(endpoint_url=s3, retries=2)
    with pytest.raises(StorageError) as err:
        store.write_bytes("s3://no-such-bucket/x", b"1")
    assert str(err.value) == ("s3://no-such-bucket/x: cannot write: the bucket does not exist; "
                              "create it or check storage.root")


@pytest.mark.slow
def test_unreachable_endpoint_fails_fast_after_retries() -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    store = Storage(endpoint_url=endpoint, retries=4)
    start = time.monotonic()
    with pytest.raises(StorageError) as err:
        store.read_bytes("s3://bucket/x")
    assert time.monotonic() - start < 15
    assert str(err.value) == (f"s3://bucket/x: cannot reach S3 endpoint {endpoint} "
                              "(EndpointConnectionError) after 4 attempts; check "
                              "storage.s3_endpoint_url")


@pytest.mark.slow
def test_wrong_and_missing_credentials_are_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG1")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    # moto checks credentials (against its own IAM) only when asked to.
    server, url = start_moto({"INITIAL_NO_AUTH_ACTION_COUNT": "0"})
    try:
        with pytest.raises(StorageError) as wrong:
            Storage(endpoint_url=url, retries=2).write_bytes("s3://bucket/x", b"1")
        assert str(wrong.value) == (
            "s3://bucket/x: cannot write: S3 refused the credentials (InvalidAccessKeyId); "
            "check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (or ~/.aws) and the bucket's "
            "permissions")
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                    "AWS_PROFILE"):
            monkeypatch.delenv(key, raising=False)
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
        monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
        monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        with pytest.raises(StorageError) as missing:
            Storage(endpoint_url=url, retries=2).read_bytes("s3://bucket/x")
        assert str(missing.value) == (
            "s3://bucket/x: cannot read: no AWS credentials found; set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY or configure ~/.aws/credentials")
    finally:
        stop(server)


@pytest.mark.parametrize("where", ["local", "s3"])
def test_create_exclusive_lets_exactly_one_writer_win(where: str, tmp_path: Path, request: Any) -> None:
    """Eight threads race to create one object (the stage lease): exactly one succeeds."""
    from concurrent.futures import ThreadPoolExecutor

    if where == "s3":
        store = storage_from_config(StorageConfig(s3_endpoint_url=request.getfixturevalue("s3")))
        url = f"s3://bucket/locks/{uuid.uuid4().hex}.json"
    else:
        store, url = Storage(), str(tmp_path / "locks" / "x.json")
    with ThreadPoolExecutor(8) as pool:
        wins = list(pool.map(lambda i: store.create_exclusive(url, str(i).encode()), range(8)))
    assert wins.count(True) == 1
    assert store.read_bytes(url) == str(wins.index(True)).encode()  # the winner's content stays
    store.delete(url)
    assert store.create_exclusive(url, b"again")  # free again once deleted
