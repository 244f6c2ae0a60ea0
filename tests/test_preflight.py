"""Preflight against real servers on 127.0.0.1: an S3 API server (moto, with IAM auth enforced),
a tiny HTTP server, listening-but-silent sockets and closed ports."""

from __future__ import annotations

import http.server
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from stcorr.config import ComputeConfig, PipelineConfig, StorageConfig, TrackingConfig
from stcorr.runtime import ServiceUnreachableError, check_services, find_problems

BUCKET = "preflight-bucket"
MOTO = Path(sys.executable).parent / "moto_server"


def free_port() -> int:
    """A port nothing listens on: bound by the kernel's choice, then closed."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.fixture(scope="module")
def s3() -> Iterator[dict[str, str]]:
    """moto_server with one bucket and one IAM user allowed s3:*, then auth enforced for everyone."""
    port = free_port()
    proc = subprocess.Popen([str(MOTO), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/")
        setup = {"endpoint_url": url, "region_name": "us-east-1",
                 "aws_access_key_id": "setup", "aws_secret_access_key": "setup"}
        iam = boto3.client("iam", **setup)
        iam.create_user(UserName="pipeline")
        policy = {"Version": "2012-10-17",
                  "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
        iam.put_user_policy(UserName="pipeline", PolicyName="s3", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName="pipeline")["AccessKey"]
        boto3.client("s3", **setup).create_bucket(Bucket=BUCKET)
        # From now on moto checks every request's signature against the IAM keys it issued.
        request = urllib.request.Request(url + "/moto-api/reset-auth", data=b"0", method="POST",
                                         headers={"Content-Type": "text/plain"})
        urllib.request.urlopen(request, timeout=5).close()
        yield {"url": url, "key": key["AccessKeyId"], "secret": key["SecretAccessKey"]}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No credentials from ~/.aws or instance metadata: only what a test puts in the environment."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return monkeypatch


@pytest.fixture(scope="module")
def http_server() -> Iterator[str]:
    """Answers 200 on /health and /api/health (MLflow's and Prefect's), 404 elsewhere."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ok = self.path in ("/health", "/api/health")
            self.send_response(200 if ok else 404)
            self.end_headers()
            self.wfile.write(b"OK" if ok else b"no")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def s3_config(url: str, root: str = f"s3://{BUCKET}/runs") -> PipelineConfig:
    return PipelineConfig(storage=StorageConfig(root=root, s3_endpoint_url=url, s3_region="us-east-1"))


def problem(cfg: PipelineConfig, timeout: float = 3.0) -> str:
    with pytest.raises(ServiceUnreachableError) as info:
        check_services(cfg, timeout=timeout)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_s3_bucket_reachable_with_issued_key(s3: dict[str, str], aws_env: pytest.MonkeyPatch) -> None:
    aws_env.setenv("AWS_ACCESS_KEY_ID", s3["key"])
    aws_env.setenv("AWS_SECRET_ACCESS_KEY", s3["secret"])
    check_services(s3_config(s3["url"]))


def test_s3_missing_bucket_is_named(s3: dict[str, str], aws_env: pytest.MonkeyPatch) -> None:
    aws_env.setenv("AWS_ACCESS_KEY_ID", s3["key"])
    aws_env.setenv("AWS_SECRET_ACCESS_KEY", s3["secret"])
    message = problem(s3_config(s3["url"], "s3://no-such-bucket/runs"))
    expected = "storage.root: bucket no-such-bucket does not exist at S3 endpoint " + s3["url"]
    assert message.startswith(expected)


@pytest.mark.parametrize("wrong", ["key", "secret"])
def test_s3_wrong_credentials_one_line_without_secret(
    s3: dict[str, str], aws_env: pytest.MonkeyPatch, wrong: str
) -> None:
    key, secret = ("AKIAWRONGWRONGWRONG0", s3["secret"]) if wrong == "key" else (s3["key"], "not-the-secret")
    aws_env.setenv("AWS_ACCESS_KEY_ID", key)
    aws_env.setenv("AWS_SECRET_ACCESS_KEY", secret)
    message = problem(s3_config(s3["url"]))
    code = "InvalidAccessKeyId" if wrong == "key" else "SignatureDoesNotMatch"
    assert message.startswith(f"storage.root: S3 rejected the credentials for s3://{BUCKET} ({code}); set "
                              "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY")
    assert secret not in message and key not in message


def test_s3_no_credentials(s3: dict[str, str], aws_env: pytest.MonkeyPatch) -> None:
    message = problem(s3_config(s3["url"]))
    expected = f"storage.root: S3 rejected the credentials for s3://{BUCKET} (no credentials found)"
    assert message.startswith(expected)


def test_s3_closed_port_fails_fast(aws_env: pytest.MonkeyPatch) -> None:
    aws_env.setenv("AWS_ACCESS_KEY_ID", "testing")
    aws_env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    url = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    message = problem(s3_config(url))
    assert time.monotonic() - start < 3.0  # one attempt, no back-off
    assert message == (f"storage.s3_endpoint_url: S3 endpoint {url} did not answer (connection refused) for "
                       f"s3://{BUCKET}/runs; start it with infra/local/up.sh, or set storage.s3_endpoint_url")


def test_mlflow_closed_port() -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    message = problem(PipelineConfig(tracking=TrackingConfig(uri=uri)))
    assert message == (f"tracking.uri: MLflow tracking server {uri} did not answer (connection refused); "
                       "start it with infra/local/up.sh or `mlflow server`, or set tracking.uri")


def test_prefect_closed_port() -> None:
    url = f"http://127.0.0.1:{free_port()}/api"
    message = problem(PipelineConfig(compute=ComputeConfig(prefect_api_url=url)))
    assert message.startswith(f"compute.prefect_api_url: Prefect API {url} did not answer "
                              "(connection refused); start it with infra/local/up.sh or "
                              "`prefect server start`")


def test_ray_closed_port() -> None:
    port = free_port()
    message = problem(PipelineConfig(compute=ComputeConfig(ray_address=f"127.0.0.1:{port}")))
    assert message == (f"compute.ray_address: Ray cluster 127.0.0.1:{port} did not answer "
                       "(connection refused); start it with infra/local/up.sh or "
                       f"`ray start --head --port {port}`, or set compute.ray_address")


def test_everything_down_is_reported_at_once(aws_env: pytest.MonkeyPatch) -> None:
    aws_env.setenv("AWS_ACCESS_KEY_ID", "testing")
    aws_env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    cfg = PipelineConfig(
        compute=ComputeConfig(ray_address=f"ray://127.0.0.1:{free_port()}",
                              prefect_api_url=f"http://127.0.0.1:{free_port()}/api"),
        tracking=TrackingConfig(uri=f"http://127.0.0.1:{free_port()}"),
        storage=StorageConfig(root="s3://b/p", s3_endpoint_url=f"http://127.0.0.1:{free_port()}"),
    )
    message = problem(cfg)
    assert message.startswith("compute.ray_address: Ray cluster ray://127.0.0.1:")
    assert message.endswith("(also failing: compute.prefect_api_url, tracking.uri, storage.s3_endpoint_url)")


def test_healthy_services_pass(http_server: str) -> None:
    port = int(http_server.rsplit(":", 1)[1])
    cfg = PipelineConfig(
        compute=ComputeConfig(ray_address=f"127.0.0.1:{port}", prefect_api_url=f"{http_server}/api"),
        tracking=TrackingConfig(uri=http_server),
    )
    assert find_problems(cfg) == []


def test_wrong_service_at_the_address(http_server: str) -> None:
    message = problem(PipelineConfig(tracking=TrackingConfig(uri=f"{http_server}/mlflow")))
    assert message.startswith(f"tracking.uri: MLflow tracking server {http_server}/mlflow answered HTTP 404 "
                              "at /mlflow/health")


def test_silent_server_times_out() -> None:
    with socket.socket() as silent:  # accepts connections (backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        uri = f"http://127.0.0.1:{silent.getsockname()[1]}"
        start = time.monotonic()
        message = problem(PipelineConfig(tracking=TrackingConfig(uri=uri)), timeout=0.5)
        assert time.monotonic() - start < 2.0
    assert f"MLflow tracking server {uri} did not answer (timed out after 0.5 s)" in message


def test_nothing_to_check_for_embedded_and_auto() -> None:
    assert find_problems(PipelineConfig()) == []
    # "auto" means "the cluster this node belongs to": Ray resolves it, there is no address to try.
    assert find_problems(PipelineConfig(compute=ComputeConfig(ray_address="auto"))) == []
