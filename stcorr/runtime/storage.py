"""Local folders and ``s3://`` URLs behind one small interface.

Every write is atomic, so a crash never leaves a half-written shard, checkpoint or manifest that a
later run would trust (docs/design.md, "Resume and lineage"): local files are written to
``<name>.tmp-<uuid>`` and renamed with ``os.replace``; an S3 object appears only when its single PUT
or its multipart upload completes. S3 goes through boto3 (any S3 API: AWS, MinIO, moto) with
botocore's "standard" retries and short connect timeouts, so an unreachable endpoint fails within
seconds with one line instead of hanging. Credentials come only from the environment or the
standard AWS files, never from the pipeline config.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, cast

from stcorr.config import StorageConfig

TMP_MARK = ".tmp-"  # in-progress local writes carry this in their name and are never listed

_UNREACHABLE = ("EndpointConnectionError", "ConnectTimeoutError", "ConnectionClosedError",
                "ReadTimeoutError", "ProxyConnectionError")
_BAD_CREDENTIALS = ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403",
                    "ExpiredToken", "InvalidToken", "AuthorizationHeaderMalformed")
_MISSING = ("NoSuchKey", "404", "NotFound")


class StorageError(RuntimeError):
    """A storage operation failed; the one-line message names the URL, what failed and what to
    check."""


class StorageNotFoundError(StorageError, FileNotFoundError):
    """The URL names no object or file (also a ``FileNotFoundError``, for local and S3 alike)."""


def is_s3(url: str) -> bool:
    """Whether ``url`` is an ``s3://bucket/key`` URL (everything else is a local path)."""
    return url.startswith("s3://")


def split_s3(url: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> ``("bucket", "a/b")``.

    Raises:
        StorageError: the URL has no bucket.
    """
    bucket, _, key = url[len("s3://"):].partition("/")
    if not bucket:
        raise StorageError(f"{url}: no bucket in the URL; expected s3://bucket/prefix")
    return bucket, key


class Storage:
    """Read, write, list and delete by URL: a local path or ``s3://bucket/key``.

    Args:
        endpoint_url: S3 API endpoint (MinIO, moto, ...); None = AWS.
        region: S3 region; None lets boto3 decide.
        retries: attempts per S3 call (botocore "standard" mode, exponential back-off).
        connect_timeout: seconds to wait for a TCP connection per attempt.
        read_timeout: seconds to wait for data on an open connection.
    """

    def __init__(self, *, endpoint_url: str | None = None, region: str | None = None,
                 retries: int = 4, connect_timeout: float = 2.0,
                 read_timeout: float = 60.0) -> None:
        self.endpoint_url = endpoint_url
        self.region = region
        self.retries = retries
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._client: Any = None

    def __getstate__(self) -> dict[str, Any]:
        # boto3 clients do not pickle; a copy sent to a Ray task builds its own.
        return {**self.__dict__, "_client": None}

    # -- paths -------------------------------------------------------------------------------

    def join(self, root: str, *parts: str) -> str:
        """Join path parts with ``/`` for S3 and the OS separator for local paths."""
        if is_s3(root):
            pieces = [root.rstrip("/"), *(p.strip("/") for p in parts)]
            return "/".join(p for p in pieces if p)
        return os.path.join(root, *parts)

    # -- reads -------------------------------------------------------------------------------

    def exists(self, url: str) -> bool:
        """Whether a file or object exists at ``url``."""
        if not is_s3(url):
            return os.path.isfile(url)
        try:
            self._s3_call(url, "head", "head_object")
        except StorageNotFoundError:
            return False
        return True

    def read_bytes(self, url: str) -> bytes:
        """The whole content of ``url``.

        Raises:
            StorageNotFoundError: nothing at ``url``.
            StorageError: S3 unreachable or credentials refused.
        """
        if not is_s3(url):
            try:
                return Path(url).read_bytes()
            except FileNotFoundError:
                raise StorageNotFoundError(f"{url}: no such file") from None
        body = self._s3_call(url, "read", "get_object")["Body"]
        with body:
            return cast(bytes, body.read())

    def open_read(self, url: str) -> BinaryIO:
        """A streaming binary reader for ``url``; the caller closes it."""
        if not is_s3(url):
            try:
                return open(url, "rb")  # the caller owns and closes the handle
            except FileNotFoundError:
                raise StorageNotFoundError(f"{url}: no such file") from None
        return cast(BinaryIO, self._s3_call(url, "read", "get_object")["Body"])

    def size(self, url: str) -> int:
        """Size of ``url`` in bytes."""
        if not is_s3(url):
            try:
                return os.path.getsize(url)
            except FileNotFoundError:
                raise StorageNotFoundError(f"{url}: no such file") from None
        return int(self._s3_call(url, "stat", "head_object")["ContentLength"])

    def list(self, prefix_url: str) -> list[str]:
        """Sorted URLs of every file/object under the folder ``prefix_url`` (recursive)."""
        if not is_s3(prefix_url):
            root = Path(prefix_url)
            if not root.is_dir():
                return []
            return sorted(str(p) for p in root.rglob("*")
                          if p.is_file() and TMP_MARK not in p.name)
        bucket, key = split_s3(prefix_url)
        prefix = key.rstrip("/") + "/" if key.strip("/") else ""
        paginator = self._client_for(prefix_url).get_paginator("list_objects_v2")
        pages = self._guard(prefix_url, "list",
                            lambda: list(paginator.paginate(Bucket=bucket, Prefix=prefix)))
        keys = [obj["Key"] for page in pages for obj in page.get("Contents", [])]
        return sorted(f"s3://{bucket}/{k}" for k in keys)

    # -- writes ------------------------------------------------------------------------------

    def write_bytes(self, url: str, data: bytes) -> None:
        """Write ``data`` to ``url`` atomically (readers see the old content or the new one)."""
        if is_s3(url):
            self._s3_call(url, "write", "put_object", Body=data)
            return
        tmp = self._local_tmp(url)
        try:
            tmp.write_bytes(data)
            os.replace(tmp, url)
        finally:
            tmp.unlink(missing_ok=True)

    def write_file(self, url: str, local_path: str | Path) -> None:
        """Copy (upload) the local file ``local_path`` to ``url`` atomically."""
        if is_s3(url):
            bucket, key = split_s3(url)
            client = self._client_for(url)
            # upload_file switches to multipart for big files; the object appears only once
            # CompleteMultipartUpload succeeds, so a crash leaves nothing half-written.
            self._guard(url, "upload", lambda: client.upload_file(str(local_path), bucket, key))
            return
        tmp = self._local_tmp(url)
        try:
            shutil.copyfile(local_path, tmp)
            os.replace(tmp, url)
        finally:
            tmp.unlink(missing_ok=True)

    def create_exclusive(self, url: str, data: bytes) -> bool:
        """Create ``url`` with ``data`` only if nothing is there yet; False if something is.

        Atomic on both backends (O_EXCL locally, ``If-None-Match: *`` on S3), so of two processes
        racing for one lock exactly one wins.
        """
        if is_s3(url):
            bucket, key = split_s3(url)
            client = self._client_for(url)
            try:
                self._guard(url, "create", lambda: _put_if_absent(client, bucket, key, data))
            except _AlreadyExists:
                return False
            return True
        Path(url).parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(url, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        return True

    def delete(self, url: str) -> None:
        """Delete ``url``; deleting something that is not there is not an error."""
        if is_s3(url):
            self._s3_call(url, "delete", "delete_object")
            return
        Path(url).unlink(missing_ok=True)

    # -- internals ---------------------------------------------------------------------------

    @staticmethod
    def _local_tmp(url: str) -> Path:
        target = Path(url)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target.with_name(f"{target.name}{TMP_MARK}{uuid.uuid4().hex}")

    def _client_for(self, url: str) -> Any:
        if self._client is None:
            import boto3
            from botocore.config import Config

            config = Config(retries={"max_attempts": self.retries, "mode": "standard"},
                            connect_timeout=self.connect_timeout,
                            read_timeout=self.read_timeout)
            # A session of our own reads the credentials now; boto3's default session would
            # keep whatever it found first for the life of the process.
            session = boto3.session.Session()
            self._client = session.client("s3", endpoint_url=self.endpoint_url,
                                          region_name=self.region, config=config)
        return self._client

    def _s3_call(self, url: str, what: str, method: str, **kwargs: Any) -> Any:
        bucket, key = split_s3(url)
        call = getattr(self._client_for(url), method)
        return self._guard(url, what, lambda: call(Bucket=bucket, Key=key, **kwargs))

    def _guard(self, url: str, what: str, action: Callable[[], Any]) -> Any:
        """Run ``action()``, turning botocore's exceptions into one-line StorageErrors."""
        from boto3.exceptions import S3UploadFailedError
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        try:
            try:
                return action()
            except S3UploadFailedError as err:  # upload_file wraps the botocore error
                raise err.__context__ or StorageError(f"{url}: cannot {what}: {err}") from None
        except NoCredentialsError:
            raise StorageError(
                f"{url}: cannot {what}: no AWS credentials found; set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY or configure ~/.aws/credentials") from None
        except ClientError as err:
            raise self._client_error(url, what, err) from None
        except BotoCoreError as err:
            raise self._transport_error(url, what, err) from None

    def _client_error(self, url: str, what: str, err: Any) -> StorageError:
        error = err.response.get("Error", {})
        code = str(error.get("Code", ""))
        if code in _MISSING:
            return StorageNotFoundError(f"{url}: no such object")
        if code == "NoSuchBucket":
            return StorageError(f"{url}: cannot {what}: the bucket does not exist; create it or "
                                "check storage.root")
        if code in _BAD_CREDENTIALS:
            return StorageError(
                f"{url}: cannot {what}: S3 refused the credentials ({code}); check "
                "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (or ~/.aws) and the bucket's permissions")
        message = str(error.get("Message", "")).splitlines()[0:1] or [""]
        return StorageError(f"{url}: cannot {what}: S3 error {code} {message[0]}".rstrip())

    def _transport_error(self, url: str, what: str, err: Exception) -> StorageError:
        name = type(err).__name__
        endpoint = self.endpoint_url or "(AWS default)"
        if name in _UNREACHABLE:
            return StorageError(
                f"{url}: cannot reach S3 endpoint {endpoint} ({name}) after {self.retries} "
                f"attempts; check storage.s3_endpoint_url")
        first = str(err).splitlines()[0] if str(err) else name
        return StorageError(f"{url}: cannot {what} via S3 endpoint {endpoint} ({name}: {first})")


class _AlreadyExists(Exception):
    """``If-None-Match: *`` failed: the object exists (not an error for a lock)."""


def _put_if_absent(client: Any, bucket: str, key: str, data: bytes) -> None:
    from botocore.exceptions import ClientError

    try:
        client.put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
    except ClientError as err:
        code = err.response.get("Error", {}).get("Code")
        if code in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
            raise _AlreadyExists from None
        raise


def storage_from_config(cfg: StorageConfig) -> Storage:
    """The ``Storage`` for the ``storage`` config section."""
    return Storage(endpoint_url=cfg.s3_endpoint_url, region=cfg.s3_region, retries=cfg.retries)
