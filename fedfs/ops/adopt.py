"""`fedfs fsck --sign BUCKET[/PREFIX]`: put fedfs's seal on ownership metadata written before it.

With `[object_acl]` on, a mount believes an object's uid, gid, mode, mask and
xattrs only under fedfs's seal (meta/seal.py). Objects fedfs wrote before the
seal existed (or before `[object_acl]` was turned on), and objects other tools
wrote with s3fs's names, then show as the bucket owner's, 0600/0700. This
command lists every object under BUCKET/PREFIX whose ownership metadata has no
valid seal, with what it says, and with `--plan FILE` records that list (key,
ETag, digest of the metadata and content type). `--yes --plan FILE` seals
exactly the objects the plan names, each only if it is still the version
reviewed: same metadata digest, and a CopyObject in place conditional on the
reviewed ETag that writes the reviewed metadata. What was added, rewritten or
deleted since the review is reported as skipped, never sealed, so a grantee
writing with their own keys after the review gains nothing. `--yes` without a
plan is refused. Run it as root with the mount's config (the seal's key comes from its
S3 secret key); a mount may run meanwhile.

Blocking, one thread: HEAD per object, a copy per adopted one. Uses the store
and meta/seal.py, meta/index_format.py.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from fedfs.config import Config
from fedfs.errors import ConfigError, FedfsError, NotFound, PreconditionFailed
from fedfs.meta.index_format import INDEX_PREFIX
from fedfs.meta.seal import COVERED, KEY_PURPOSE, MetadataSeal
from fedfs.store.s3 import ObjectInfo, ObjectStore


@dataclass
class Adopted:
    """What `fedfs fsck --sign` found (and, with --yes, sealed)."""

    seen: int = 0  # objects read
    unsealed: int = 0  # of those, with ownership metadata and no valid seal
    sealed: int = 0  # sealed now
    planned: int = 0  # with --yes: objects the plan names
    skipped: list[str] = field(default_factory=list)  # with --yes: changed or gone since


def seal_for(cfg: Config, store: ObjectStore) -> MetadataSeal:
    """The seal a mount of cfg signs with; ConfigError when it signs nothing."""
    if not cfg.object_acl.enabled:
        raise ConfigError(
            "[object_acl] is not enabled in this config: without it fedfs neither signs nor "
            "checks object metadata, so there is nothing to seal"
        )
    seal = MetadataSeal(store.derived_key(KEY_PURPOSE), required=True)
    if not seal.signing:
        raise ConfigError("[store] has no secret key to sign with: set access_key and secret_key")
    return seal


def unsealed(
    store: ObjectStore, seal: MetadataSeal, bucket: str, prefix: str, found: Adopted
) -> Iterator[ObjectInfo]:
    """Objects under prefix whose ownership metadata carries no valid seal (HEAD each)."""
    for page in store.list_all(bucket, prefix, None):
        for listed in page.objects:
            if listed.key.startswith(INDEX_PREFIX):
                continue
            info = store.head(bucket, listed.key)
            if info is None or info.metadata is None:
                continue
            found.seen += 1
            meta = info.metadata
            if any(name in meta for name in COVERED) and not seal.valid(bucket, info.key, meta):
                found.unsealed += 1
                yield info


def describe(info: ObjectInfo) -> str:
    """One line: the key and the ownership fields it would be adopted with."""
    meta = info.metadata or {}
    shown = []
    for name in COVERED:
        if name in meta:
            value = meta[name]
            if name == "mode" and value.isdigit():
                value = oct(int(value))
            shown.append(f"{name}={value[:60]}")
    return f"{info.key.encode('unicode_escape').decode('ascii')}: {' '.join(shown)}"


def _trusted_writers(store: ObjectStore, bucket: str) -> set[str]:
    """The store IDs whose writes an admin expects: the bucket's owner and the daemon's
    own user (the owner of the buckets its key lists). Empty when the store will not say."""
    found: set[str] = set()
    try:
        owner = store.get_bucket_acl(bucket)["Owner"]
        found |= {str(owner[k]) for k in ("ID", "DisplayName") if owner.get(k)}
        mine = store.client.list_buckets().get("Owner") or {}
        found |= {str(mine[k]) for k in ("ID", "DisplayName") if mine.get(k)}
    except (FedfsError, BotoCoreError, ClientError):  # the key may not read them: say nothing
        return set()
    return found


def _written_by(
    store: ObjectStore, bucket: str, key: str, trusted: set[str]
) -> tuple[str | None, bool]:
    """Who wrote the object (its owner in the object's ACL), and whether that is someone
    other than the bucket's owner and the daemon's user (their own keys set the metadata)."""
    try:
        writer = store.writer_of(bucket, key)
    except FedfsError:
        return None, False
    if writer is None:
        return None, False
    return writer.encode("unicode_escape").decode("ascii"), bool(trusted) and writer not in trusted


PLAN_FORMAT = "fedfs-sign-plan/1"


def digest(info: ObjectInfo) -> str:
    """What the review saw of an object besides its body: its metadata and content type."""
    seen = {"metadata": info.metadata or {}, "content_type": info.content_type or ""}
    return hashlib.sha256(json.dumps(seen, sort_keys=True).encode()).hexdigest()


def sign(
    cfg: Config,
    target: str,
    plan: Path | None,
    apply: bool,
    say: Callable[[str], None] = print,
) -> Adopted:
    """List the unsealed objects under target ("BUCKET[/PREFIX]") and, with plan, record
    them there; with apply, seal exactly what plan records, each only if unchanged."""
    bucket, _, prefix = target.strip("/").partition("/")
    if bucket not in {b.name for b in cfg.buckets}:
        known = ", ".join(sorted(b.name for b in cfg.buckets))
        raise ConfigError(f"{bucket!r} is not a bucket of this config (its buckets: {known})")
    if apply and plan is None:
        raise ConfigError(
            "--yes seals only what was reviewed: first run fsck --sign TARGET --plan FILE, "
            "check the list, then run fsck --sign TARGET --plan FILE --yes"
        )
    store = ObjectStore(cfg.store, cfg.object_acl.object_acl)
    seal = seal_for(cfg, store)
    store.seal = seal
    found = Adopted()
    if apply:
        assert plan is not None
        return _apply(store, bucket, prefix, _read_plan(plan, bucket, prefix), found, say)
    entries = []
    trusted = _trusted_writers(store, bucket)
    for info in unsealed(store, seal, bucket, prefix, found):
        writer, other = _written_by(store, bucket, info.key, trusted)
        if other:
            say(
                f"not planned {describe(info)} (written by {writer}: neither the bucket's owner "
                "nor fedfs, so that user chose this owner and mode; the bucket's owner may "
                "chmod or chown it through the mount to make it fedfs's)"
            )
            continue
        say("would seal " + describe(info) + (f" (written by {writer})" if writer else ""))
        entries.append({"key": info.key, "etag": info.etag, "metadata_sha256": digest(info)})
    if plan is not None:
        _write_plan(
            plan, {"format": PLAN_FORMAT, "bucket": bucket, "prefix": prefix, "objects": entries}
        )
    return found


def _apply(
    store: ObjectStore,
    bucket: str,
    prefix: str,
    entries: list[dict[str, str]],
    found: Adopted,
    say: Callable[[str], None],
) -> Adopted:
    """Seal each planned object whose ETag and metadata are still the reviewed ones; a copy
    conditional on that ETag, carrying the metadata the review saw."""
    found.planned = len(entries)
    for entry in entries:
        key = entry["key"]
        shown = key.encode("unicode_escape").decode("ascii")
        info = store.head(bucket, key)
        if info is None or info.metadata is None:
            found.skipped.append(key)
            say(f"skipped {shown}: gone since the review")
            continue
        found.seen += 1
        if info.etag != entry["etag"] or digest(info) != entry["metadata_sha256"]:
            found.skipped.append(key)
            say(f"skipped {shown}: changed since the review (not sealed)")
            continue
        try:
            store.copy(
                bucket,
                key,
                key,
                info.size,
                info.metadata,
                info.content_type,
                if_match=entry["etag"],
            )
        except (NotFound, PreconditionFailed):
            found.skipped.append(key)
            say(f"skipped {shown}: changed since the review (not sealed)")
            continue
        found.sealed += 1
        say("sealed " + describe(info))
    return found


def _write_plan(path: Path, plan: dict[str, Any]) -> None:
    """The plan, readable by its writer only (it names what --yes will seal)."""
    text = json.dumps(plan, indent=1) + "\n"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
    except OSError as e:
        raise ConfigError(f"cannot write the plan {path}: {e.strerror}; choose another path") from e


def _read_plan(path: Path, bucket: str, prefix: str) -> list[dict[str, str]]:
    """The reviewed objects of a plan written for exactly this bucket and prefix."""
    try:
        plan = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(
            f"cannot read the plan {path} ({e}): review again with fsck --sign TARGET --plan FILE"
        ) from e
    if not isinstance(plan, dict) or plan.get("format") != PLAN_FORMAT:
        raise ConfigError(f"{path} is not a plan fsck --sign --plan wrote")
    if (plan.get("bucket"), plan.get("prefix")) != (bucket, prefix):
        raise ConfigError(
            f"{path} is the plan for {plan.get('bucket')}/{plan.get('prefix')}, not for "
            f"{bucket}/{prefix}: give --sign the target the plan was reviewed for"
        )
    objects = plan.get("objects")
    if not isinstance(objects, list) or not all(
        isinstance(o, dict)
        and all(isinstance(o.get(f), str) for f in ("key", "etag", "metadata_sha256"))
        for o in objects
    ):
        raise ConfigError(f"{path} is damaged: review again with fsck --sign TARGET --plan FILE")
    return objects
