"""The lean request path: HEAD, ranged GET, CopyObject and ListObjectsV2 as SigV4-signed
urllib3 requests.

botocore spends about 1 ms of CPU building, signing and parsing each request
(its event hooks, models and response parsers), and reads a GET's body through
several layers of copies. The requests that dominate a cold read, a first
`ls -l` and a directory `mv` (one CopyObject per file) do not need any of
that, nor does a listing page, whose 1,000 entries botocore's XML parser turns
into a dictionary for about 30 ms of CPU (the C parser of `xml.etree` takes a
few): this module signs them itself (AWS Signature Version 4,
`hashlib`/`hmac`) and sends them on a urllib3 pool
(urllib3 is botocore's own HTTP library, so no new dependency). A ranged GET's
body goes from the socket straight into the caller's buffer, outside the GIL,
so several downloads run on several cores. Everything else keeps using boto3 (`s3.py`).

What it keeps from boto3: the same endpoint, region, addressing style and
credentials (static keys or whatever botocore's chain resolved, refreshed per
request), connect and read timeouts, and retries of connection errors,
timeouts, throttling and 5xx answers with capped exponential backoff and
jitter (botocore's "standard" mode: up to `max_attempts` tries, at most 20 s
apart). Errors are raised as `HttpError`; `s3.translate` turns them into
fedfs's StoreError family like botocore's.

Blocking and thread-safe: called from the store's worker threads only.
Imports only the standard library and urllib3.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import random
import re
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, unquote_plus, urlsplit

import urllib3
import urllib3.exceptions

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_START_AFTER = re.compile(rb"<StartAfter>[^<]*</StartAfter>")
_RETRY_STATUS = {429, 500, 502, 503, 504}
_RETRY_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "InternalError"}
_MAX_BACKOFF = 20.0
# What a dropped or stalled connection raises, before or during the body.
_TRANSIENT = (urllib3.exceptions.HTTPError, OSError)


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str
    token: str | None = None


class HttpError(Exception):
    """An S3 error answer: HTTP status, S3 error code ("NoSuchKey"), message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.status = status
        self.code = code
        self.message = message


class TransferError(Exception):
    """No answer, or an answer that broke off, after every attempt."""


@dataclass(frozen=True)
class Head:
    size: int
    etag: str
    last_modified: float
    metadata: dict[str, str]
    content_type: str | None


@dataclass(frozen=True)
class Listed:
    """One ListObjectsV2 page: common prefixes, objects as (key, size, ETag without quotes,
    LastModified as Unix time), and the token of the next page (None on the last)."""

    prefixes: list[str]
    objects: list[tuple[str, int, str, float]]
    next_token: str | None


class LeanClient:
    """Signed HEAD, ranged GET, CopyObject and ListObjectsV2 requests to one S3 endpoint."""

    def __init__(
        self,
        endpoint: str,
        region: str,
        credentials: Callable[[], Credentials],
        addressing_style: str = "path",
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        max_attempts: int = 5,
        connections: int = 20,
    ) -> None:
        url = urlsplit(endpoint)
        self.scheme = url.scheme or "https"
        self.host = url.netloc
        self.base_path = url.path.rstrip("/")
        self.region = region
        self.credentials = credentials
        self.virtual = addressing_style == "virtual"
        self.max_attempts = max(1, max_attempts)
        self.timeout = urllib3.Timeout(connect=connect_timeout, read=read_timeout)
        self.pool = urllib3.PoolManager(
            num_pools=8, maxsize=connections, block=False, retries=False, timeout=self.timeout
        )
        self._keys: dict[tuple[str, str], bytes] = {}  # (secret, date) -> signing key
        self._lock = threading.Lock()

    # -- requests --------------------------------------------------------

    def head(self, bucket: str, key: str) -> Head | None:
        """The object's size, ETag, time and user metadata; None if there is none."""
        r = self._send("HEAD", bucket, key, {}, lambda r: r)
        if r is None:
            return None
        h = r.headers
        meta = {k[11:].lower(): v for k, v in h.items() if k.lower().startswith("x-amz-meta-")}
        return Head(
            size=int(h.get("content-length", 0)),
            etag=h.get("etag", "").strip('"'),
            last_modified=_http_time(h.get("last-modified", "")),
            metadata=meta,
            content_type=h.get("content-type"),
        )

    def get_range_into(
        self, bucket: str, key: str, start: int, length: int, etag: str | None, into: memoryview
    ) -> int:
        """Bytes [start, start+length) of the object, received straight into `into`.

        PreconditionFailed (HttpError 412) if its ETag is no longer `etag`. A body
        that breaks off is fetched again, whole, under the same retry budget.
        """
        headers = {"Range": f"bytes={start}-{start + length - 1}"}
        if etag:
            headers["If-Match"] = f'"{etag}"'

        def body(r: Any) -> int:
            got = int(r.headers.get("content-length", -1))
            if got != length:
                raise HttpError(r.status, "BadRange", f"asked for {length} bytes, got {got}")
            # http.client's buffered socket file fills a large buffer straight from the
            # socket, in as many recv calls as it takes, without the GIL; urllib3's own
            # readinto reads into a new bytes object and copies it over.
            fp = getattr(r, "_fp", None)
            readinto = fp.readinto if fp is not None else r.readinto
            done = 0
            while done < length:
                n = readinto(into[done:length])
                if not n:
                    raise urllib3.exceptions.ProtocolError(
                        f"connection closed after {done} of {length} bytes"
                    )
                done += n
            return done

        got = self._send("GET", bucket, key, headers, body)
        if got is None:
            raise HttpError(404, "NoSuchKey", "the object is gone")
        return int(got)

    def copy(self, bucket: str, src: str, dst: str, headers: dict[str, str]) -> tuple[str, float]:
        """Server-side copy of src to dst in one bucket (CopyObject): (new ETag, its time).

        headers: what else the request carries (x-amz-metadata-directive,
        x-amz-meta-*, content-type, x-amz-acl, x-amz-copy-source-if-match, ...).
        An error inside a 200 answer (S3 may send one once the copy began) is
        raised, and retried when it is a transient one, like any other.
        """
        extra = {**headers, "x-amz-copy-source": quote(f"{bucket}/{src}", safe="/~")}

        def result(r: Any) -> tuple[str, float]:
            root = ET.fromstring(r.read())
            if _local(root.tag) == "Error":
                code = _text(root, "Code") or "InternalError"
                err = HttpError(r.status, code, _text(root, "Message"))
                if code in _RETRY_CODES:
                    raise _Retry(err)
                raise err
            return _text(root, "ETag").strip('"'), _iso_time(_text(root, "LastModified"))

        got: tuple[str, float] = self._send("PUT", bucket, dst, extra, result)
        return got

    def list_page(
        self,
        bucket: str,
        prefix: str,
        token: str | None = None,
        max_keys: int = 1000,
        delimiter: str | None = "/",
        start_after: str | None = None,
    ) -> Listed:
        """One page of ListObjectsV2, keys URL-encoded on the wire (`encoding-type=url`,
        as boto3 asks for them: XML 1.0 cannot carry every byte a key may hold)."""
        query = {"list-type": "2", "prefix": prefix, "max-keys": str(max_keys)}
        query["encoding-type"] = "url"
        if delimiter:
            query["delimiter"] = delimiter
        if token:
            query["continuation-token"] = token
        elif start_after:
            query["start-after"] = start_after

        def page(r: Any) -> Listed:
            body = r.read()
            if start_after and not token:
                # The answer echoes StartAfter unencoded (Ceph RGW writes a control
                # character in it as a reference XML 1.0 refuses); it is not needed.
                body = _START_AFTER.sub(b"", body, count=1)
            return _listed(body)

        got: Listed = self._send("GET", bucket, "", {}, page, query)
        return got

    # -- plumbing --------------------------------------------------------

    def _send(
        self,
        method: str,
        bucket: str,
        key: str,
        extra: dict[str, str],
        take: Callable[[Any], Any],
        query: dict[str, str] | None = None,
    ) -> Any:
        """One request with retries; take(response) for a 2xx answer, None for 404."""
        host, path = self._where(bucket, key)
        qs = _query(query or {})
        url = f"{self.scheme}://{host}{path}" + (f"?{qs}" if qs else "")
        last: Exception | None = None
        for attempt in range(self.max_attempts):
            if attempt:
                time.sleep(random.random() * min(_MAX_BACKOFF, 2.0**attempt) / 2)
            headers = self._sign(method, host, path, extra, query=qs)
            try:
                r = self.pool.request(
                    method, url, headers=headers, preload_content=False, redirect=False
                )
            except _TRANSIENT as e:
                last = TransferError(f"{method} {path}: no answer ({e})")
                continue
            if r.status in (200, 206):
                try:
                    result = take(r)
                except _TRANSIENT as e:
                    r.close()  # a connection that broke off mid-body is not reused
                    last = TransferError(f"{method} {path}: the answer broke off ({e})")
                    continue
                except _Retry as e:
                    r.release_conn()
                    last = e.error
                    continue
                except BaseException:
                    r.close()
                    raise
                r.release_conn()
                return result
            if r.status == 404 and method == "HEAD":
                r.release_conn()
                return None
            err = _error(r, method)
            r.drain_conn()
            r.release_conn()
            if r.status in _RETRY_STATUS or err.code in _RETRY_CODES:
                last = err
                continue
            raise err
        assert last is not None
        raise last

    def _where(self, bucket: str, key: str) -> tuple[str, str]:
        """Host and path of a key (of the bucket itself when key is "")."""
        quoted = quote(key, safe="/~")
        if not key:
            return (
                (f"{bucket}.{self.host}", f"{self.base_path}/")
                if self.virtual
                else (
                    self.host,
                    f"{self.base_path}/{bucket}",
                )
            )
        if self.virtual:
            return f"{bucket}.{self.host}", f"{self.base_path}/{quoted}"
        return self.host, f"{self.base_path}/{bucket}/{quoted}"

    def _sign(
        self,
        method: str,
        host: str,
        path: str,
        extra: dict[str, str],
        now: datetime.datetime | None = None,
        query: str = "",
    ) -> dict[str, str]:
        """The request's headers, signed (SigV4, every header included) for a request
        without a body: Authorization, x-amz-date, x-amz-content-sha256 and `extra`.
        `query`: the canonical query string the request is sent with (`_query`)."""
        creds = self.credentials()
        stamp = (now or datetime.datetime.now(datetime.UTC)).strftime("%Y%m%dT%H%M%SZ")
        date = stamp[:8]
        headers = {k.lower(): v.strip() for k, v in extra.items()}
        headers.update({"host": host, "x-amz-content-sha256": EMPTY_SHA256, "x-amz-date": stamp})
        if creds.token:
            headers["x-amz-security-token"] = creds.token
        names = sorted(headers)
        canonical = "\n".join(
            [
                method,
                path,
                query,
                *(f"{n}:{headers[n]}" for n in names),
                "",
                ";".join(names),
                EMPTY_SHA256,
            ]
        )
        scope = f"{date}/{self.region}/s3/aws4_request"
        to_sign = "\n".join(
            ["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()]
        )
        signature = hmac.new(self._key(creds.secret_key, date), to_sign.encode(), "sha256")
        headers["authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={creds.access_key}/{scope}, "
            f"SignedHeaders={';'.join(names)}, Signature={signature.hexdigest()}"
        )
        del headers["host"]  # urllib3 sends the same Host itself
        return headers

    def _key(self, secret: str, date: str) -> bytes:
        with self._lock:
            k = self._keys.get((secret, date))
            if k is None:
                k = ("AWS4" + secret).encode()
                for part in (date, self.region, "s3", "aws4_request"):
                    k = hmac.new(k, part.encode(), "sha256").digest()
                self._keys = {(secret, date): k}  # one day's key: older ones are of no use
            return k


class _Retry(Exception):
    """Raised by a body reader: the answer was an error worth another attempt."""

    def __init__(self, error: HttpError) -> None:
        super().__init__(str(error))
        self.error = error


def _query(params: dict[str, str]) -> str:
    """SigV4's canonical query string, which is also what is sent: names and values
    percent-encoded except unreserved characters (so "/" is %2F), sorted by name."""
    pairs = sorted((quote(k, safe="-_.~"), quote(v, safe="-_.~")) for k, v in params.items())
    return "&".join(f"{k}={v}" for k, v in pairs)


def _listed(body: bytes) -> Listed:
    """A ListObjectsV2 answer. Keys and prefixes are decoded when the answer says they
    were encoded (as botocore does: `unquote_plus`). About 5 ms for 1,000 keys."""
    root = ET.fromstring(body)
    tag = root.tag
    ns = tag[: tag.index("}") + 1] if tag.startswith("{") else ""
    key, size, etag, modified = ns + "Key", ns + "Size", ns + "ETag", ns + "LastModified"
    objects = [
        (
            c.findtext(key) or "",
            int(c.findtext(size) or 0),
            (c.findtext(etag) or "").strip('"'),
            _iso_time(c.findtext(modified) or ""),
        )
        for c in root.iterfind(ns + "Contents")
    ]
    prefixes = [p.findtext(ns + "Prefix") or "" for p in root.iterfind(ns + "CommonPrefixes")]
    if (root.findtext(ns + "EncodingType") or "").strip().lower() == "url":
        prefixes = [unquote_plus(p) for p in prefixes]
        objects = [(unquote_plus(k), n, e, m) for k, n, e, m in objects]
    truncated = (root.findtext(ns + "IsTruncated") or "").strip().lower() == "true"
    token = root.findtext(ns + "NextContinuationToken")
    return Listed(prefixes, objects, token if truncated else None)


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _text(root: ET.Element, name: str) -> str:
    """The text of root's child `name`, with or without the S3 XML namespace."""
    for child in root:
        if _local(child.tag) == name:
            return child.text or ""
    return ""


def _iso_time(value: str) -> float:
    """An ISO 8601 time (LastModified of a copy or a listing) as Unix time; 0.0 if unreadable."""
    try:
        return datetime.datetime.fromisoformat(value).timestamp()
    except ValueError:
        return 0.0


def _error(r: Any, method: str) -> HttpError:
    """The S3 error of a non-2xx answer: from its XML body, or the status (HEAD has none)."""
    code, message = str(r.status), ""
    if method != "HEAD":
        try:
            body = r.read(64 * 1024)
            root = ET.fromstring(body)
            code = root.findtext("Code") or code
            message = root.findtext("Message") or ""
        except (ET.ParseError, *_TRANSIENT):
            pass
    return HttpError(r.status, code, message)


def _http_time(value: str) -> float:
    """An RFC 1123 Last-Modified as Unix time; 0.0 if missing or unreadable."""
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return 0.0
