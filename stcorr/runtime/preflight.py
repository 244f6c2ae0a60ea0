"""Fail fast before any stage starts: does every service the config names answer?

A cluster run needs up to four services: the Ray cluster (``compute.ray_address``), the Prefect API
(``compute.prefect_api_url``), the MLflow tracking server (an http(s) ``tracking.uri``) and the S3
bucket behind an ``s3://`` ``storage.root``. Left to themselves, botocore, MLflow and Ray retry with
back-off for minutes before a stage fails deep inside a task; here each service gets one try with a
short timeout, all four at once, and a dead one is reported in one line that names the config key,
the service, the address tried and how to start it. The embedded local profile names no service,
so there is nothing to check and nothing is imported.

Only the standard library (sockets, urllib) and boto3 are used; no secret is ever printed (S3
errors are reported by their code, never by a message that could echo a key).
"""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from stcorr.config import PipelineConfig, StorageConfig
from stcorr.runtime.storage import StorageError, is_s3, split_s3

TIMEOUT_S = 3.0  # one try per service: a live service on the same network answers in milliseconds
START_LOCAL = "infra/local/up.sh"
RAY_DEFAULT_PORT = 6379

_BAD_CREDENTIALS = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
                    "AuthorizationHeaderMalformed", "InvalidClientTokenId", "403"}
_NO_BUCKET = {"NoSuchBucket", "404"}


class ServiceUnreachableError(RuntimeError):
    """A service the config names did not answer (or refused our credentials).

    The message is one line: the config key, the service, the address tried and how to fix it.
    ``problems`` holds one such line per failing service, first one first.
    """

    def __init__(self, problems: list[Problem]) -> None:
        first, *others = problems
        also = f" (also failing: {', '.join(p.key for p in others)})" if others else ""
        super().__init__(first.message + also)
        self.problems = problems


class Problem(NamedTuple):
    """One service that did not answer: the config key to fix and the one-line message."""

    key: str  # the config key to fix, e.g. "tracking.uri"
    message: str  # one line, starting with the key


def check_services(cfg: PipelineConfig, timeout: float = TIMEOUT_S) -> None:
    """Check every service ``cfg`` names, concurrently; return quietly when all answer.

    Args:
        cfg: the resolved pipeline config; only its addresses are read.
        timeout: seconds each service gets to answer (one try, no retries).

    Raises:
        ServiceUnreachableError: one or more services did not answer; one line for the first.
    """
    problems = find_problems(cfg, timeout)
    if problems:
        raise ServiceUnreachableError(problems)


def find_problems(cfg: PipelineConfig, timeout: float = TIMEOUT_S) -> list[Problem]:
    """One :class:`Problem` per service that did not answer, in the order Ray, Prefect, MLflow, S3.

    Services the config does not name (a local Ray, an ephemeral Prefect, a SQLite store, a local
    folder) are not checked; ``compute.ray_address: auto`` is resolved by Ray on a cluster node.
    """
    checks: list[Callable[[], Problem | None]] = []
    compute, tracking = cfg.compute, cfg.tracking
    if compute.ray_address and compute.ray_address not in ("auto", "local"):
        checks.append(lambda: check_ray(compute.ray_address or "", timeout))
    if compute.prefect_api_url:
        checks.append(lambda: check_prefect(compute.prefect_api_url or "", timeout))
    if tracking.uri and tracking.uri.startswith(("http://", "https://")):
        checks.append(lambda: check_mlflow(tracking.uri or "", timeout))
    if is_s3(cfg.storage.root):
        checks.append(lambda: check_s3(cfg.storage, timeout))
    if not checks:
        return []
    with ThreadPoolExecutor(max_workers=len(checks)) as pool:
        results = list(pool.map(lambda check: check(), checks))
    return [p for p in results if p is not None]


def check_ray(address: str, timeout: float = TIMEOUT_S) -> Problem | None:
    """TCP connect to the Ray GCS (``host:port``) or Ray Client server (``ray://host:port``)."""
    host, port = _host_port(address, RAY_DEFAULT_PORT)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as exc:
        reason = _socket_reason(exc, timeout)
    return Problem("compute.ray_address", (
        f"compute.ray_address: Ray cluster {address} did not answer ({reason}); start it with "
        f"{START_LOCAL} or `ray start --head --port {port}`, or set compute.ray_address"))


def check_prefect(api_url: str, timeout: float = TIMEOUT_S) -> Problem | None:
    """GET ``<api_url>/health`` of the Prefect server."""
    reason = _http_problem(api_url.rstrip("/") + "/health", timeout)
    if reason is None:
        return None
    return Problem("compute.prefect_api_url", (
        f"compute.prefect_api_url: Prefect API {api_url} {reason}; start it with {START_LOCAL} or "
        "`prefect server start`, or set compute.prefect_api_url (null = an ephemeral Prefect)"))


def check_mlflow(uri: str, timeout: float = TIMEOUT_S) -> Problem | None:
    """GET ``<uri>/health`` of the MLflow tracking server."""
    reason = _http_problem(uri.rstrip("/") + "/health", timeout)
    if reason is None:
        return None
    return Problem("tracking.uri", (
        f"tracking.uri: MLflow tracking server {uri} {reason}; start it with {START_LOCAL} or "
        "`mlflow server`, or set tracking.uri"))


def check_s3(storage: StorageConfig, timeout: float = TIMEOUT_S) -> Problem | None:
    """List at most one key under ``storage.root`` with the configured endpoint and credentials.

    One ListObjectsV2 rather than HeadBucket: a HEAD answer has no body, so a refused key would
    only say "403"; the listing names the error (InvalidAccessKeyId, NoSuchBucket, ...) and also
    proves the permission the pipeline needs.
    """
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    try:
        bucket, prefix = split_s3(storage.root)
    except StorageError as err:
        return Problem("storage.root", f"storage.root: {err}")
    endpoint = storage.s3_endpoint_url or "(the AWS default endpoint)"
    config = Config(connect_timeout=timeout, read_timeout=timeout,
                    retries={"total_max_attempts": 1, "mode": "standard"})
    try:
        client = boto3.session.Session().client(
            "s3", endpoint_url=storage.s3_endpoint_url, region_name=storage.s3_region, config=config)
        client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
        return None
    except NoCredentialsError:
        return _s3_credentials(bucket, "no credentials found", endpoint)
    except ClientError as err:
        return _s3_client_error(bucket, str(err.response.get("Error", {}).get("Code", "")), endpoint)
    except (BotoCoreError, ValueError) as err:
        reason = _boto_reason(err, timeout)
    return Problem("storage.s3_endpoint_url", (
        f"storage.s3_endpoint_url: S3 endpoint {endpoint} did not answer ({reason}) for "
        f"{storage.root}; start it with {START_LOCAL}, or set storage.s3_endpoint_url"))


def _s3_client_error(bucket: str, code: str, endpoint: str) -> Problem:
    if code in _BAD_CREDENTIALS:
        return _s3_credentials(bucket, code, endpoint)
    if code in _NO_BUCKET:
        return Problem("storage.root", (
            f"storage.root: bucket {bucket} does not exist at S3 endpoint {endpoint} ({code}); "
            f"create it ({START_LOCAL} creates s3://stcorr) or fix storage.root"))
    if code == "AccessDenied":
        return Problem("storage.root", (
            f"storage.root: S3 denied these credentials access to s3://{bucket} (AccessDenied); "
            "grant them s3:ListBucket/GetObject/PutObject or use other credentials"))
    return Problem("storage.root", (
        f"storage.root: S3 endpoint {endpoint} answered {code or 'an error'} for s3://{bucket}; "
        "check storage.root and storage.s3_endpoint_url"))


def _s3_credentials(bucket: str, why: str, endpoint: str) -> Problem:
    return Problem("storage.root", (
        f"storage.root: S3 rejected the credentials for s3://{bucket} ({why}); set "
        f"AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (or ~/.aws/credentials) for {endpoint}"))


def _http_problem(url: str, timeout: float) -> str | None:
    """None when ``url`` answers 2xx (or 401/403: alive, and the client brings its own auth)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return None
    except urllib.error.HTTPError as err:
        if err.code in (401, 403):
            return None
        return f"answered HTTP {err.code} at {urlsplit(url).path} (is it the right service?)"
    except urllib.error.URLError as err:
        reason: Any = err.reason
        return f"did not answer ({_socket_reason(reason, timeout)})"
    except OSError as err:  # a timeout while reading, a reset connection
        return f"did not answer ({_socket_reason(err, timeout)})"


def _socket_reason(exc: Any, timeout: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"timed out after {timeout:g} s"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return "host name not found"
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _boto_reason(err: Exception, timeout: float) -> str:
    name = type(err).__name__
    if "Timeout" in name:
        return f"timed out after {timeout:g} s"
    cause = getattr(err, "kwargs", {}).get("error")  # botocore keeps urllib3's error here
    if cause is not None and isinstance(cause.__cause__, OSError):
        return _socket_reason(cause.__cause__, timeout)
    return "cannot connect" if name == "EndpointConnectionError" else name


def _host_port(address: str, default_port: int) -> tuple[str, int]:
    """``"ray://h:1"``, ``"h:1"``, ``"[::1]:1"`` or ``"h"`` -> ``(host, port)``."""
    parts = urlsplit(address if "://" in address else f"//{address}")
    try:
        port = parts.port or default_port
    except ValueError:
        port = default_port
    return parts.hostname or address, port
