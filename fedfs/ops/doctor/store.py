"""Doctor's checks of the object store: the endpoint, the credentials, the clock,
each bucket, and the keys in it that fedfs cannot show as file names.

Every S3 request is tried once with short timeouts (`quick_store`), so a dead
endpoint costs seconds. Blocking; runs in the doctor's only thread. Calls the
store layer and tree.names (which keys are hidden).
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time
from urllib.parse import urlparse

from fedfs.config import Config
from fedfs.errors import AccessDenied, FedfsError, NotFound
from fedfs.ops.doctor.finding import FAIL, OK, SKIP, WARN, Finding
from fedfs.store.s3 import ObjectStore, Probe
from fedfs.tree.names import key_problem

MAX_KEYS = 100_000  # keys listed per bucket when looking for names fedfs hides
SKEW_WARN = 30.0  # seconds; S3 refuses signatures beyond 15 minutes
SKEW_FAIL = 300.0
_BAD_KEYS = {"InvalidAccessKeyId", "InvalidClientTokenId", "UnrecognizedClientException"}
_BAD_SECRET = {"SignatureDoesNotMatch", "InvalidSignature", "IncompleteSignature"}
_SKEWED = {"RequestTimeTooSkewed", "RequestExpired"}


def quick_store(cfg: Config) -> ObjectStore:
    """The config's store with one attempt per request and short timeouts: bounded checks."""
    s = cfg.store
    quick = dataclasses.replace(
        s,
        max_attempts=1,
        connect_timeout=min(s.connect_timeout, 5.0),
        read_timeout=min(s.read_timeout, 30.0),
    )
    return ObjectStore(quick)


def check_store(cfg: Config, max_keys: int = MAX_KEYS) -> list[Finding]:
    endpoint = cfg.store.endpoint or f"AWS S3 ({cfg.store.region})"
    store = quick_store(cfg)
    started = time.monotonic()
    try:
        probe = store.probe()
    except FedfsError as e:
        return _unanswered(cfg, store, e)
    ms = (time.monotonic() - started) * 1000
    found = [Finding("endpoint", OK, f"{endpoint} answered in {ms:.0f} ms")]
    found.append(_credentials(cfg, probe))
    found.append(check_clock(probe.server_time, time.time(), probe.code))
    if found[1].status == FAIL:
        found += [
            Finding(f"bucket {b.name}", SKIP, "not checked: the credentials were refused")
            for b in cfg.buckets
        ]
        return found
    for b in cfg.buckets:
        bucket = _check_bucket(cfg, store, b.name)
        found.append(bucket)
        if bucket.status == OK:
            found.append(check_names(store, b.name, max_keys))
    return found


def _unanswered(cfg: Config, store: ObjectStore, error: FedfsError) -> list[Finding]:
    """What to say when ListBuckets got no answer: no endpoint, or nothing to sign with."""
    endpoint = cfg.store.endpoint or f"AWS S3 ({cfg.store.region})"
    checks = ("credentials", "clock", *(f"bucket {b.name}" for b in cfg.buckets))

    def dead(why: object) -> Finding:
        return Finding(
            "endpoint",
            FAIL,
            f"{endpoint} did not answer within {store.cfg.connect_timeout:g} s: {why}",
            "start the S3 service, or correct [store] endpoint (scheme, host and port); "
            f"from this node, `curl -sI {cfg.store.endpoint or 'https://s3.amazonaws.com'}` "
            "must print an HTTP status",
        )

    if not isinstance(error, AccessDenied):
        skipped = [Finding(c, SKIP, "not checked: the endpoint did not answer") for c in checks]
        return [dead(error), *skipped]
    # No credentials: nothing was sent, so only a TCP connection can test the endpoint.
    reached = (
        Finding("endpoint", OK, f"{endpoint} accepts connections")
        if _connects(cfg, store.cfg.connect_timeout)
        else dead("no TCP connection")
    )
    return [
        reached,
        Finding(
            "credentials",
            FAIL,
            str(error),
            "set [store] access_key and secret_key, or AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY in the mount's environment",
        ),
        *(Finding(c, SKIP, "not checked: no credentials") for c in checks[1:]),
    ]


def _connects(cfg: Config, timeout: float) -> bool:
    """A TCP connection to the endpoint: all that can be tried without credentials."""
    url = urlparse(cfg.store.endpoint or f"https://s3.{cfg.store.region}.amazonaws.com")
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname or "", port), timeout=timeout).close()
    except OSError:
        return False
    return True


def _credentials(cfg: Config, probe: Probe) -> Finding:
    key = cfg.store.access_key or os.environ.get("AWS_ACCESS_KEY_ID") or "(from the AWS profile)"
    fix_keys = (
        "set [store] access_key and secret_key (or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY) "
        "to a key pair this store issued"
    )
    if probe.code in _BAD_KEYS:
        return Finding(
            "credentials",
            FAIL,
            f"the store does not know access key {key} ({probe.code}: {probe.message})",
            fix_keys,
        )
    if probe.code in _BAD_SECRET:
        return Finding(
            "credentials",
            FAIL,
            f"the secret key does not match access key {key} ({probe.code}: {probe.message})",
            "correct [store] secret_key (it must belong to the same key pair as access_key)",
        )
    if probe.code in _SKEWED:
        return Finding("credentials", SKIP, "not checked: the store refused our clock (see clock)")
    if probe.code in (None, "AccessDenied", "403"):
        note = (
            ""
            if probe.code is None
            else " (it may not list all buckets, which fedfs does not need)"
        )
        return Finding("credentials", OK, f"access key {key} accepted{note}")
    return Finding(
        "credentials",
        WARN,
        f"the store answered {probe.code}: {probe.message}; the key could not be checked",
        "look at the S3 service's log for this request",
    )


def check_clock(server_time: float | None, local_time: float, code: str | None = None) -> Finding:
    """Compare the store's Date header with our clock: S3 refuses signatures 15 min off."""
    fix = "synchronise this node's clock (chronyc tracking; systemctl enable --now chrony)"
    if server_time is None:
        if code in _SKEWED:
            return Finding("clock", FAIL, f"the store refused our request time ({code})", fix)
        return Finding("clock", WARN, "the store's answer had no Date header; skew not measured")
    # The Date header drops the fraction of its second: compare with the middle of it.
    skew = local_time - (server_time + 0.5)
    direction = "ahead of" if skew > 0 else "behind"
    text = f"this node's clock is {abs(skew):.0f} s {direction} the store's"
    if abs(skew) < 1.5:
        text = "this node's clock agrees with the store's (within the Date header's 1 s)"
    if abs(skew) > SKEW_FAIL or code in _SKEWED:
        return Finding(
            "clock", FAIL, f"{text}; S3 refuses requests signed more than 15 min off", fix
        )
    if abs(skew) > SKEW_WARN:
        return Finding("clock", WARN, f"{text} (more than {SKEW_WARN:.0f} s)", fix)
    return Finding("clock", OK, text)


def _check_bucket(cfg: Config, store: ObjectStore, bucket: str) -> Finding:
    check = f"bucket {bucket}"
    try:
        store.list_page(bucket, "", max_keys=1, delimiter=None)
    except NotFound:
        return Finding(
            check,
            FAIL,
            f"bucket {bucket!r} does not exist at {cfg.store.endpoint or 'AWS S3'}",
            f"create it (aws s3 mb s3://{bucket}) or correct [[buckets]] name in {cfg.path}",
        )
    except AccessDenied as e:
        return Finding(
            check,
            FAIL,
            f"the key may not list {bucket!r}: {e}",
            "allow this key s3:ListBucket, s3:GetObject, s3:PutObject and s3:DeleteObject "
            "on the bucket (bucket policy or the key's user policy)",
        )
    except FedfsError as e:
        return Finding(check, FAIL, str(e), "look at the S3 service's log for this bucket")
    return Finding(check, OK, "exists and is listable")


def check_names(store: ObjectStore, bucket: str, max_keys: int = MAX_KEYS) -> Finding:
    """Keys fedfs does not show (README: "listed by fedfs doctor"), from a bounded listing."""
    hidden: list[tuple[str, str]] = []
    seen = 0
    complete = True
    try:
        for page in store.list_all(bucket, "", delimiter=None):
            for obj in page.objects:
                if seen >= max_keys:
                    complete = False
                    break
                seen += 1
                problem = key_problem(obj.key)
                if problem:
                    hidden.append((obj.key, problem))
            if not complete:
                break
    except FedfsError as e:
        return Finding(f"keys {bucket}", WARN, f"listing stopped: {e}", "run fedfs doctor again")
    check = f"keys {bucket}"
    scope = f"{seen} key(s) checked" if complete else f"stopped after {seen} keys (--max-keys)"
    if hidden:
        return Finding(
            check,
            WARN,
            f"{len(hidden)} key(s) cannot be file names and are not shown ({scope})",
            "rename them with an S3 tool so that every '/'-separated part is a valid file name "
            f"(not empty, not '.' or '..', at most 255 bytes), e.g. "
            f"aws s3 mv 's3://{bucket}/{hidden[0][0]}' 's3://{bucket}/NEW-NAME'; until then they "
            "stay untouched in the bucket",
            tuple(f"{key!r}: {problem}" for key, problem in hidden),
        )
    if not complete:
        return Finding(
            check,
            WARN,
            f"no hidden keys among the first {seen}; the rest was not checked",
            "run fedfs doctor --max-keys N with N above the bucket's key count to check all",
        )
    return Finding(check, OK, f"every key can be shown ({scope})")
