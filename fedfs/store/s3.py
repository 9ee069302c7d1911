"""The object store: the only module that speaks S3 (boto3; lean.py for HEAD, GET, copies
and listings).

Every method is blocking and thread-safe; the daemon calls them from worker
threads (`trio.to_thread.run_sync` under a CapacityLimiter sized from
`store.max_connections`). Every call has connect/read timeouts and bounded
retries with backoff (botocore's "standard" mode for throttling, 5xx and
connection errors), so a dead endpoint becomes `Unavailable` in bounded time.
S3 errors are translated here into the `StoreError` family; errno is chosen
later, at the FUSE boundary. HEAD, ranged GET, CopyObject and ListObjectsV2,
the requests a cold read, an `ls -l` and a directory `mv` send by the thousand
(or, for listings, whose answers are large), go through `lean.py` (signed
requests on urllib3, a fraction of botocore's CPU per request) unless
`[store] lean = false`; everything else (writes, conditional writes, policies,
multipart, copies of 5 GiB or more) stays with boto3. `move_each` runs a directory move's copies and deletes on threads of
its own (`[store] max_copies`).
With `seal` set ([object_acl], fedfs/meta/seal.py) the user metadata of every write
(the lean copies too) is sealed here for the key it is written to.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import logging
import os
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import boto3
import botocore.config
import botocore.exceptions
import botocore.session
import botocore.utils
from boto3.s3.transfer import TransferConfig

from fedfs.config import StoreConfig
from fedfs.errors import (
    AccessDenied,
    NotFound,
    PreconditionFailed,
    StoreError,
    StoreRefused,
    TooLarge,
    Unavailable,
)
from fedfs.store import lean

log = logging.getLogger(__name__)

DIR_CONTENT_TYPE = "application/x-directory"
_NOT_FOUND = {"NoSuchKey", "NoSuchBucket", "NoSuchBucketPolicy", "404", "NotFound"}
_DENIED = {"AccessDenied", "403", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch"}
_PRECONDITION = {"PreconditionFailed", "412"}
# Answers that say the request itself is wrong and will be refused every time (a key
# the store does not take, one over its length limit): permanent, never retried.
_REFUSED = {
    "InvalidArgument",
    "KeyTooLong",
    "KeyTooLongError",
    "InvalidObjectName",
    "InvalidURI",
    "MetadataTooLarge",
    "EntityTooLarge",
    "400",
}
# Errors botocore does not retry itself but that are transient for a data read.
_BODY_ERRORS = (
    botocore.exceptions.ReadTimeoutError,
    botocore.exceptions.IncompleteReadError,
    botocore.exceptions.ResponseStreamingError,
    botocore.exceptions.ConnectionClosedError,
)
# CopyObject handles at most 5 GiB; above that the managed (multipart) copy is used.
_MAX_SINGLE_COPY = 5 * 1024**3


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str
    last_modified: float
    metadata: dict[str, str] | None = None  # None: not fetched (listings carry none)
    content_type: str | None = None


@dataclass(frozen=True)
class Part:
    """One part of a multipart rewrite (`ObjectStore.rewrite`)."""

    number: int  # 1-based, as S3 numbers parts
    start: int
    end: int  # exclusive
    copy: bool  # True: the store copies it from the current version; False: it is sent


@dataclass(frozen=True)
class Probe:
    """What one unconditional request (ListBuckets) got back: for `fedfs doctor`."""

    code: str | None  # the S3 error code; None when the request succeeded
    message: str
    server_time: float | None  # the answer's Date header (Unix time), None if it had none


@dataclass
class ListPage:
    prefixes: list[str] = field(default_factory=list)
    objects: list[ObjectInfo] = field(default_factory=list)
    next_token: str | None = None


def _code(e: botocore.exceptions.ClientError) -> str:
    err = e.response.get("Error", {})
    return str(err.get("Code") or e.response.get("ResponseMetadata", {}).get("HTTPStatusCode"))


def translate(e: Exception, what: str) -> StoreError:
    """One S3/botocore exception -> one fedfs StoreError with a readable message."""
    if isinstance(e, StoreError):
        return e
    if isinstance(e, botocore.exceptions.ClientError):
        code = _code(e)
        msg = e.response.get("Error", {}).get("Message") or code
        if code in _NOT_FOUND:
            return NotFound(f"{what}: not found ({code})")
        if code in _DENIED:
            return AccessDenied(f"{what}: the object store refused access ({code}: {msg})")
        if code in _PRECONDITION:
            return PreconditionFailed(f"{what}: the object changed meanwhile ({code})")
        if code in _REFUSED:
            return StoreRefused(f"{what}: the object store refuses it ({code}: {msg})")
        return Unavailable(f"{what}: the object store failed ({code}: {msg})")
    if isinstance(e, lean.HttpError):
        code = e.code
        msg = e.message or code
        if code in _NOT_FOUND or str(e.status) in _NOT_FOUND:
            return NotFound(f"{what}: not found ({code})")
        if code in _DENIED or str(e.status) in _DENIED:
            return AccessDenied(f"{what}: the object store refused access ({code}: {msg})")
        if code in _PRECONDITION or str(e.status) in _PRECONDITION:
            return PreconditionFailed(f"{what}: the object changed meanwhile ({code})")
        if code in _REFUSED:
            return StoreRefused(f"{what}: the object store refuses it ({code}: {msg})")
        return Unavailable(f"{what}: the object store failed ({code}: {msg})")
    if isinstance(e, lean.TransferError):
        return Unavailable(f"{what}: the object store did not answer ({e})")
    if isinstance(e, botocore.exceptions.NoCredentialsError):
        return AccessDenied(
            f"{what}: no S3 credentials; set [store] access_key/secret_key or AWS_* variables"
        )
    if isinstance(e, botocore.exceptions.BotoCoreError | OSError):
        return Unavailable(f"{what}: the object store did not answer ({e})")
    return StoreError(f"{what}: {e}")


def parse_timestamp(value: str) -> datetime.datetime:
    """A response's timestamp: ISO 8601 (listings) or RFC 1123 (headers), else botocore's way.

    botocore parses every timestamp with dateutil, about 35 us each: a third of a
    second of CPU for the 10,000 LastModified of a large directory's listing.
    """
    try:
        if value[:4].isdigit():
            when = datetime.datetime.fromisoformat(value)
        else:
            when = parsedate_to_datetime(value)
        if when.tzinfo is not None:
            return when
    except (TypeError, ValueError, IndexError):
        pass
    return botocore.utils.parse_timestamp(value)


class Sealer(Protocol):
    """What signs object metadata for the key it is written to (fedfs/meta/seal.py)."""

    @property
    def signing(self) -> bool: ...

    def sign(self, bucket: str, key: str, metadata: dict[str, str]) -> dict[str, str]: ...

    def valid(self, bucket: str, key: str, metadata: dict[str, str]) -> bool: ...


class ObjectStore:
    """Blocking, thread-safe access to one S3 endpoint."""

    def __init__(self, cfg: StoreConfig, object_acl: str | None = None) -> None:
        self.cfg = cfg
        # The canned ACL every object written carries ([object_acl] object_acl), so the
        # bucket's owner can use what the daemon wrote (on RGW, objects belong to their writer).
        self.acl: dict[str, str] = {"ACL": object_acl} if object_acl else {}
        bcfg = botocore.config.Config(
            region_name=cfg.region,
            connect_timeout=cfg.connect_timeout,
            read_timeout=cfg.read_timeout,
            retries={"mode": "standard", "max_attempts": cfg.max_attempts},
            max_pool_connections=cfg.max_connections + 4,
            s3={"addressing_style": cfg.addressing_style},
            # Payload checksums cost client CPU and some S3 servers reject them.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        core = botocore.session.get_session()
        core.get_component("response_parser_factory").set_parser_defaults(
            timestamp_parser=parse_timestamp
        )
        session = boto3.session.Session(
            botocore_session=core,
            aws_access_key_id=cfg.access_key,
            aws_secret_access_key=cfg.secret_key,
            region_name=cfg.region,
        )
        self.client: Any = session.client("s3", endpoint_url=cfg.endpoint, config=bcfg)
        self._session = session
        self.lean: lean.LeanClient | None = None
        if cfg.lean:
            self.lean = lean.LeanClient(
                cfg.endpoint or f"https://s3.{cfg.region}.amazonaws.com",
                cfg.region,
                self._credentials(session),
                addressing_style=(
                    "virtual"
                    if cfg.addressing_style == "auto" and cfg.endpoint is None
                    else cfg.addressing_style
                ),
                connect_timeout=cfg.connect_timeout,
                read_timeout=cfg.read_timeout,
                max_attempts=cfg.max_attempts,
                connections=cfg.max_connections + cfg.max_copies + 4,
            )
        self.transfer = TransferConfig(
            multipart_threshold=cfg.multipart_threshold,
            multipart_chunksize=cfg.multipart_chunksize,
            max_concurrency=max(1, cfg.max_connections // 2),
            use_threads=True,
        )
        self.requests = 0
        self.errors = 0  # failed requests; "not found" is an answer, counted in not_found
        self.not_found = 0
        self.by_operation: Counter[str] = Counter()  # requests by S3 operation, for status
        # Bytes sent so far of each multipart upload under way, for `fedfs sync` progress.
        self._sending: dict[tuple[str, str], int] = {}
        self._sending_lock = threading.Lock()
        self.recent: deque[float] = deque(maxlen=500)  # latest request durations, for status
        # Called after every request with (operation, seconds, error class name or None),
        # from the calling thread: metrics.py times requests without this module knowing it.
        self.on_call: Callable[[str, float, str | None], None] | None = None
        # Signs the user metadata of every object written for the key it is written to
        # (meta/seal.py, with [object_acl]); None: metadata goes as given.
        self.seal: Sealer | None = None

    def _call(self, what: str, fn: Any, **kw: Any) -> Any:
        self.requests += 1
        self.by_operation[getattr(fn, "__name__", "other")] += 1
        started = time.monotonic()
        error: str | None = None
        try:
            return fn(**kw)
        except Exception as e:
            failure = translate(e, what)
            error = type(failure).__name__
            if isinstance(failure, NotFound):
                self.not_found += 1  # an answer (a lookup of a name that is not there)
            else:
                self.errors += 1
            raise failure from e
        finally:
            self.recent.append(time.monotonic() - started)
            if self.on_call is not None:
                self.on_call(getattr(fn, "__name__", "other"), time.monotonic() - started, error)

    def derived_key(self, purpose: str) -> bytes | None:
        """A key for purpose derived from this store's S3 secret key; None without one.

        Whoever holds the secret key can write any object, so what such a key signs
        (the shared metadata index) is no more than they could write anyway.
        """
        creds = self._session.get_credentials()
        secret = creds.get_frozen_credentials().secret_key if creds is not None else None
        if not secret:
            return None
        return hmac.new(secret.encode(), purpose.encode(), hashlib.sha256).digest()

    @staticmethod
    def _credentials(session: Any) -> Callable[[], lean.Credentials]:
        """The keys botocore resolved (static, environment, profile, instance role), fresh."""

        def current() -> lean.Credentials:
            found = session.get_credentials()
            if found is None:
                raise botocore.exceptions.NoCredentialsError()
            frozen = found.get_frozen_credentials()
            return lean.Credentials(frozen.access_key, frozen.secret_key, frozen.token)

        return current

    def _call_lean(self, what: str, name: str, fn: Callable[..., Any], *args: Any) -> Any:
        """A lean.py request, counted and timed like `_call`'s, its errors translated.
        A HEAD answered 404 (None) counts as a NotFound answer, as boto3's does."""
        self.requests += 1
        self.by_operation[name] += 1
        started = time.monotonic()
        error: str | None = None
        try:
            result = fn(*args)
            if result is None and name == "head_object":
                error = "NotFound"
                self.not_found += 1
            return result
        except Exception as e:
            failure = translate(e, what)
            error = type(failure).__name__
            if isinstance(failure, NotFound):
                self.not_found += 1
            else:
                self.errors += 1
            raise failure from e
        finally:
            self.recent.append(time.monotonic() - started)
            if self.on_call is not None:
                self.on_call(name, time.monotonic() - started, error)

    def sent(self, bucket: str, key: str) -> int:
        """Bytes of the object being uploaded now that the store has received (0 if none)."""
        return max(0, self._sending.get((bucket, key), 0))

    def probe(self) -> Probe:
        """One ListBuckets request; what the endpoint answered, and its clock.

        A refusal is an answer too (it tells bad credentials from a skewed clock);
        only silence raises Unavailable.
        """
        try:
            r = self.client.list_buckets()
            code, message = None, "ok"
        except botocore.exceptions.ClientError as e:
            r, code = e.response, _code(e)
            message = str(e.response.get("Error", {}).get("Message") or code)
        except Exception as e:
            raise translate(e, "list buckets") from e
        date = r.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
        try:
            server_time = parsedate_to_datetime(date).timestamp() if date else None
        except (TypeError, ValueError):
            server_time = None
        return Probe(code, message, server_time)

    # -- buckets ---------------------------------------------------------

    def check_bucket(self, bucket: str) -> None:
        """Raise NotFound/AccessDenied/Unavailable unless the bucket is usable."""
        self._call(f"bucket {bucket!r}", self.client.head_bucket, Bucket=bucket)

    def create_bucket(self, bucket: str) -> None:
        try:
            self._call(f"create bucket {bucket!r}", self.client.create_bucket, Bucket=bucket)
        except StoreError as e:
            if "BucketAlreadyOwnedByYou" not in str(e) and "BucketAlreadyExists" not in str(e):
                raise

    # -- bucket access control (fedfs/policy/objectacl, docs/OBJECT_ACL.md) --

    def get_bucket_policy(self, bucket: str) -> str | None:
        """The bucket's policy document as the store returned it (JSON text), None if none."""
        try:
            r = self._call(
                f"bucket policy of {bucket!r}", self.client.get_bucket_policy, Bucket=bucket
            )
        except NotFound as e:
            if "NoSuchBucketPolicy" in str(e):
                return None
            raise
        return str(r.get("Policy") or "") or None

    def put_bucket_policy(self, bucket: str, document: str) -> None:
        self._call(
            f"bucket policy of {bucket!r}",
            self.client.put_bucket_policy,
            Bucket=bucket,
            Policy=document,
        )

    def delete_bucket_policy(self, bucket: str) -> None:
        self._call(f"bucket policy of {bucket!r}", self.client.delete_bucket_policy, Bucket=bucket)

    def get_bucket_acl(self, bucket: str) -> dict[str, Any]:
        """GetBucketAcl's answer: {"Owner": {...}, "Grants": [...]}."""
        r = self._call(f"bucket ACL of {bucket!r}", self.client.get_bucket_acl, Bucket=bucket)
        return {"Owner": r.get("Owner") or {}, "Grants": list(r.get("Grants") or [])}

    def writer_of(self, bucket: str, key: str) -> str | None:
        """Who owns an object on the store (on RGW: the user whose key wrote it), from
        GetObjectAcl: its ID; None when the store does not say."""
        r = self._call(
            f"object ACL of s3://{bucket}/{key}", self.client.get_object_acl, Bucket=bucket, Key=key
        )
        owner = r.get("Owner") or {}
        found = owner.get("ID") or owner.get("DisplayName")
        return str(found) if found else None

    # -- metadata --------------------------------------------------------

    def head(self, bucket: str, key: str) -> ObjectInfo | None:
        if self.lean is not None:
            h = self._call_lean(f"s3://{bucket}/{key}", "head_object", self.lean.head, bucket, key)
            if h is None:
                return None
            return ObjectInfo(key, h.size, h.etag, h.last_modified, h.metadata, h.content_type)
        try:
            r = self._call(f"s3://{bucket}/{key}", self.client.head_object, Bucket=bucket, Key=key)
        except NotFound:
            return None
        return ObjectInfo(
            key=key,
            size=r["ContentLength"],
            etag=r["ETag"].strip('"'),
            last_modified=r["LastModified"].timestamp(),
            metadata={k.lower(): v for k, v in r.get("Metadata", {}).items()},
            content_type=r.get("ContentType"),
        )

    def list_page(
        self,
        bucket: str,
        prefix: str,
        token: str | None = None,
        max_keys: int = 1000,
        delimiter: str | None = "/",
        start_after: str | None = None,
    ) -> ListPage:
        if self.lean is not None:
            got: lean.Listed = self._call_lean(
                f"list s3://{bucket}/{prefix}",
                "list_objects_v2",
                self.lean.list_page,
                bucket,
                prefix,
                token,
                max_keys,
                delimiter,
                start_after,
            )
            return ListPage(
                prefixes=got.prefixes,
                objects=[
                    ObjectInfo(key=k, size=n, etag=e, last_modified=m) for k, n, e, m in got.objects
                ],
                next_token=got.next_token,
            )
        kw: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": max_keys}
        if delimiter:
            kw["Delimiter"] = delimiter
        if token:
            kw["ContinuationToken"] = token
        elif start_after:
            kw["StartAfter"] = start_after
        r = self._call(f"list s3://{bucket}/{prefix}", self.client.list_objects_v2, **kw)
        page = ListPage(
            prefixes=[p["Prefix"] for p in r.get("CommonPrefixes", [])],
            objects=[
                ObjectInfo(
                    key=o["Key"],
                    size=o["Size"],
                    etag=o.get("ETag", "").strip('"'),
                    last_modified=o["LastModified"].timestamp(),
                )
                for o in r.get("Contents", [])
            ],
        )
        if r.get("IsTruncated"):
            page.next_token = r.get("NextContinuationToken")
        return page

    def list_all(
        self,
        bucket: str,
        prefix: str,
        delimiter: str | None = "/",
        start_after: str | None = None,
    ) -> Iterator[ListPage]:
        token: str | None = None
        while True:
            page = self.list_page(
                bucket, prefix, token, delimiter=delimiter, start_after=start_after
            )
            yield page
            token = page.next_token
            if not token:
                return

    def prefix_exists(self, bucket: str, prefix: str) -> bool:
        page = self.list_page(bucket, prefix, max_keys=1, delimiter=None)
        return bool(page.objects)

    # -- data ------------------------------------------------------------

    def get_range(self, bucket: str, key: str, start: int, length: int, etag: str | None) -> bytes:
        """Bytes [start, start+length) of the object; PreconditionFailed if its ETag moved on."""
        what = f"s3://{bucket}/{key}"
        kw: dict[str, Any] = {
            "Bucket": bucket,
            "Key": key,
            "Range": f"bytes={start}-{start + length - 1}",
        }
        if etag:
            kw["IfMatch"] = f'"{etag}"'
        for attempt in range(self.cfg.max_attempts):
            r = self._call(what, self.client.get_object, **kw)
            try:
                return bytes(r["Body"].read())
            except _BODY_ERRORS as e:
                self.errors += 1
                if attempt + 1 == self.cfg.max_attempts:
                    raise translate(e, what) from e
                log.warning("%s: read interrupted (%s); retrying", what, e)
                time.sleep(min(2.0, 0.1 * 2**attempt))
        raise AssertionError("unreachable")

    def get_range_into(
        self, bucket: str, key: str, start: int, length: int, etag: str | None, into: memoryview
    ) -> None:
        """Bytes [start, start+length) of the object received into `into` (all of them,
        or an error); PreconditionFailed if the ETag moved on.

        With the lean path the body goes from the socket into the buffer without
        passing through Python objects.
        """
        what = f"s3://{bucket}/{key}"
        if self.lean is not None:
            self._call_lean(
                what, "get_object", self.lean.get_range_into, bucket, key, start, length, etag, into
            )
            return
        data = self.get_range(bucket, key, start, length, etag)
        if len(data) != length:
            raise Unavailable(f"{what}: asked for {length} bytes at {start}, got {len(data)}")
        into[:length] = data

    def get_bytes(self, bucket: str, key: str, limit: int = 1 << 20) -> bytes:
        """A small object whole (policy log records, snapshots); refuses one above `limit`."""
        what = f"s3://{bucket}/{key}"
        r = self._call(what, self.client.get_object, Bucket=bucket, Key=key)
        if r.get("ContentLength", 0) > limit:
            r["Body"].close()
            raise TooLarge(f"{what} is {r['ContentLength']} bytes, more than the {limit} expected")
        try:
            return bytes(r["Body"].read())
        except _BODY_ERRORS as e:
            raise translate(e, what) from e

    def get_if_changed(self, bucket: str, key: str, etag: str | None) -> tuple[str, bytes] | None:
        """(ETag, bytes) of a small object, or None while its ETag is still `etag`.

        One conditional GET (If-None-Match): the store answers 304 without a body when
        nothing changed, which is what makes polling a change marker cheap.
        """
        what = f"s3://{bucket}/{key}"
        kw: dict[str, Any] = {"Bucket": bucket, "Key": key}
        if etag:
            kw["IfNoneMatch"] = f'"{etag}"'

        def get_object(**kw: Any) -> Any:
            try:
                return self.client.get_object(**kw)
            except botocore.exceptions.ClientError as e:
                if _code(e) in ("304", "NotModified"):
                    return None
                raise

        r = self._call(what, get_object, **kw)
        if r is None:
            return None
        try:
            return str(r["ETag"]).strip('"'), bytes(r["Body"].read(64 * 1024))
        except _BODY_ERRORS as e:
            raise translate(e, what) from e

    def download(self, bucket: str, key: str, fileobj: BinaryIO) -> None:
        """Whole object into fileobj with parallel ranged GETs (boto3's transfer manager)."""
        self._call(
            f"s3://{bucket}/{key}",
            self.client.download_fileobj,
            Bucket=bucket,
            Key=key,
            Fileobj=fileobj,
            Config=self.transfer,
        )

    def put_bytes(
        self,
        bucket: str,
        key: str,
        data: bytes,
        metadata: dict[str, str],
        content_type: str | None = None,
        if_none_match: bool = False,
    ) -> ObjectInfo:
        metadata = self._signed(bucket, key, metadata)
        kw: dict[str, Any] = {
            "Bucket": bucket,
            "Key": key,
            "Body": data,
            "Metadata": metadata,
            **self.acl,
        }
        if content_type:
            kw["ContentType"] = content_type
        if if_none_match:
            kw["IfNoneMatch"] = "*"
        r = self._call(f"s3://{bucket}/{key}", self.client.put_object, **kw)
        # PUT does not say when the store stamped it: 0.0 = unknown, learnt from a listing.
        return ObjectInfo(key, len(data), r["ETag"].strip('"'), 0.0, dict(metadata), content_type)

    def upload_file(
        self,
        bucket: str,
        key: str,
        path: Path,
        metadata: dict[str, str],
        content_type: str | None = None,
        if_none_match: bool = False,
    ) -> ObjectInfo:
        """A local file to an object; multipart with parallel parts above the threshold.

        if_none_match (single PUTs only): PreconditionFailed if the key exists.
        """
        size = path.stat().st_size
        if size < self.cfg.multipart_threshold:
            return self.put_bytes(
                bucket, key, path.read_bytes(), metadata, content_type, if_none_match
            )
        extra: dict[str, Any] = {"Metadata": self._signed(bucket, key, metadata), **self.acl}
        if content_type:
            extra["ContentType"] = content_type
        where = (bucket, key)
        with self._sending_lock:
            self._sending[where] = 0

        def sent(amount: int) -> None:  # from the transfer's worker threads
            with self._sending_lock:
                if where in self._sending:
                    self._sending[where] += amount

        try:
            self._call(
                f"s3://{bucket}/{key}",
                self.client.upload_file,
                Filename=str(path),
                Bucket=bucket,
                Key=key,
                ExtraArgs=extra,
                Config=self.transfer,
                Callback=sent,
            )
        finally:
            with self._sending_lock:
                self._sending.pop(where, None)
        return self._uploaded(bucket, key, size, f"s3://{bucket}/{key}")

    def _uploaded(self, bucket: str, key: str, size: int, what: str) -> ObjectInfo:
        """The object an upload just completed, as the store now has it (a HEAD)."""
        info = self.head(bucket, key)
        if info is None or info.size != size:
            raise Unavailable(f"{what}: upload finished but the object is not there")
        return info

    def rewrite(
        self,
        bucket: str,
        key: str,
        path: Path,
        parts: list[Part],
        base_etag: str,
        metadata: dict[str, str],
        content_type: str | None = None,
    ) -> ObjectInfo:
        """A new version of key from a local file, copying unchanged parts inside the store.

        One multipart upload: parts with `copy` come from the object's current
        version by UploadPartCopy, each on condition that its ETag is still
        base_etag; the others are read from path and sent. PreconditionFailed if
        the object changed: from the copy's condition, or from a HEAD before
        completing (Ceph RGW 16 ignores the condition of a part copy). On any
        failure the upload is aborted, so no part is left stored.
        """
        what = f"s3://{bucket}/{key}"
        size = path.stat().st_size
        metadata = self._signed(bucket, key, metadata)
        kw: dict[str, Any] = {"Bucket": bucket, "Key": key, "Metadata": metadata, **self.acl}
        if content_type:
            kw["ContentType"] = content_type
        upload_id = self._call(what, self.client.create_multipart_upload, **kw)["UploadId"]
        where = (bucket, key)
        with self._sending_lock:
            self._sending[where] = 0
        source = {"Bucket": bucket, "Key": key}

        def one(p: Part) -> dict[str, Any]:
            common = {"Bucket": bucket, "Key": key, "UploadId": upload_id, "PartNumber": p.number}
            if p.copy:
                r = self._call(
                    what,
                    self.client.upload_part_copy,
                    CopySource=source,
                    CopySourceRange=f"bytes={p.start}-{p.end - 1}",
                    CopySourceIfMatch=f'"{base_etag}"',
                    **common,
                )
                etag = r["CopyPartResult"]["ETag"]
            else:
                with open(path, "rb") as f:
                    data = os.pread(f.fileno(), p.end - p.start, p.start)
                if len(data) != p.end - p.start:
                    raise StoreError(f"{what}: the staged file shrank while being uploaded")
                etag = self._call(what, self.client.upload_part, Body=data, **common)["ETag"]
            with self._sending_lock:
                if where in self._sending:
                    self._sending[where] += p.end - p.start
            return {"PartNumber": p.number, "ETag": etag}

        try:
            workers = max(1, self.cfg.max_connections // 2)
            with ThreadPoolExecutor(workers, thread_name_prefix="fedfs-part") as pool:
                done = list(pool.map(one, parts))
            current = self.head(bucket, key)
            if current is None or current.etag != base_etag:
                raise PreconditionFailed(
                    f"{what}: the object changed meanwhile (its ETag moved on)"
                )
            self._call(
                what,
                self.client.complete_multipart_upload,
                Bucket=bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": done},
            )
        except BaseException:
            try:
                self.client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
            except Exception as e:  # the store's lifecycle rules clean up what is left
                log.warning("%s: could not abort the unfinished upload %s: %s", what, upload_id, e)
            raise
        finally:
            with self._sending_lock:
                self._sending.pop(where, None)
        return self._uploaded(bucket, key, size, what)

    def copy(
        self,
        bucket: str,
        src: str,
        dst: str,
        size: int,
        metadata: dict[str, str] | None = None,
        content_type: str | None = None,
        if_match: str | None = None,
    ) -> ObjectInfo:
        """Server-side copy; with metadata, the copy's metadata is replaced (chmod, rename).

        Without metadata the copy keeps the source's; when the store signs metadata,
        a seal valid for src is made again for dst (a HEAD first, and the copy only of
        the version that HEAD saw), so a renamed object keeps its owner and mode.
        if_match: copy only if src's ETag is still this one, else PreconditionFailed.
        """
        what = f"copy s3://{bucket}/{src} to {dst}"
        src_ref = {"Bucket": bucket, "Key": src}
        extra: dict[str, Any] = {**self.acl}
        if if_match is not None:
            extra["CopySourceIfMatch"] = f'"{if_match.strip(chr(34))}"'
        if metadata is None and self.seal is not None and self.seal.signing:
            source = self.head(bucket, src)
            if source is None:
                raise NotFound(f"{what}: s3://{bucket}/{src} is gone")
            if source.metadata and self.seal.valid(bucket, src, source.metadata):
                metadata, content_type = source.metadata, source.content_type
                extra["CopySourceIfMatch"] = f'"{source.etag}"'
        if metadata is not None:
            metadata = self._signed(bucket, dst, metadata)
            extra = {**extra, "Metadata": metadata, "MetadataDirective": "REPLACE"}
            if content_type:
                extra["ContentType"] = content_type
        if size < _MAX_SINGLE_COPY and self.lean is not None:
            headers = {f"x-amz-meta-{k}": v for k, v in (metadata or {}).items()}
            if metadata is not None:
                headers["x-amz-metadata-directive"] = "REPLACE"
                if content_type:
                    headers["content-type"] = content_type
            if self.acl:
                headers["x-amz-acl"] = self.acl["ACL"]
            if "CopySourceIfMatch" in extra:  # only the version whose seal was checked
                headers["x-amz-copy-source-if-match"] = extra["CopySourceIfMatch"]
            etag, last_modified = self._call_lean(
                what, "copy_object", self.lean.copy, bucket, src, dst, headers
            )
            return ObjectInfo(
                dst,
                size,
                etag,
                last_modified,
                dict(metadata) if metadata is not None else None,
                content_type,
            )
        if size < _MAX_SINGLE_COPY:
            r = self._call(
                what, self.client.copy_object, CopySource=src_ref, Bucket=bucket, Key=dst, **extra
            )
            res = r["CopyObjectResult"]
            return ObjectInfo(
                dst,
                size,
                res["ETag"].strip('"'),
                res["LastModified"].timestamp(),
                dict(metadata) if metadata is not None else None,
                content_type,
            )
        self._call(
            what,
            self.client.copy,
            CopySource=src_ref,
            Bucket=bucket,
            Key=dst,
            ExtraArgs=extra,
            Config=self.transfer,
        )
        info = self.head(bucket, dst)
        if info is None:
            raise Unavailable(f"{what}: copy finished but the object is not there")
        return info

    def _signed(self, bucket: str, key: str, metadata: dict[str, str]) -> dict[str, str]:
        return metadata if self.seal is None else self.seal.sign(bucket, key, metadata)

    def delete(self, bucket: str, key: str) -> None:
        self._call(f"delete s3://{bucket}/{key}", self.client.delete_object, Bucket=bucket, Key=key)

    def move_each(
        self, bucket: str, moves: list[tuple[str, str, int]], workers: int, batch: int = 200
    ) -> None:
        """Copy each (src, dst, size) within the bucket, metadata kept, and delete each src
        once its own copy is there; up to `workers` copies at once on their own threads.

        The sources whose copies are done go in DeleteObjects requests of `batch` keys
        while the other copies go on (a store deletes a batch one key at a time). On a
        failure nothing new starts and the first error is raised once the requests
        under way are answered: every key is then at its src, its dst or both.
        """
        lock = threading.Lock()
        copied: list[str] = []  # sources whose copy is there, not yet sent for deletion

        def one(src: str, dst: str, size: int) -> None:
            self.copy(bucket, src, dst, size)
            with lock:
                copied.append(src)
                if len(copied) < batch:
                    return
                done = copied[:]
                copied.clear()
            self.delete_many(bucket, done)

        pool = ThreadPoolExecutor(max(1, min(workers, len(moves))), thread_name_prefix="fedfs-mv")
        try:
            for f in [pool.submit(one, *m) for m in moves]:
                f.result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        if copied:
            self.delete_many(bucket, copied)

    def delete_many(self, bucket: str, keys: list[str]) -> None:
        for i in range(0, len(keys), 1000):
            chunk = keys[i : i + 1000]
            r = self._call(
                f"delete {len(chunk)} keys in s3://{bucket}",
                self.client.delete_objects,
                Bucket=bucket,
                Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True},
            )
            errors = r.get("Errors") or []
            if errors:
                first = errors[0]
                raise Unavailable(
                    f"delete s3://{bucket}/{first.get('Key')}: {first.get('Code')} "
                    f"({len(errors)} keys not deleted)"
                )
