"""`fedfs fsck --sign BUCKET[/PREFIX]`: put fedfs's seal on ownership metadata written before it.

With `[object_acl]` on, a mount believes an object's uid, gid, mode, mask and
xattrs only under fedfs's seal (meta/seal.py). Objects fedfs wrote before the
seal existed (or before `[object_acl]` was turned on), and objects other tools
wrote with s3fs's names, then show as the bucket owner's, 0600/0700. This
command lists every object under BUCKET/PREFIX whose ownership metadata has no
valid seal, with what it says, and with `--yes` seals it as it stands (a
CopyObject in place, as chmod makes): the admin adopts what the list shows, so
metadata a grantee wrote with their own keys is adopted only if the list was
not read. Run it as root with the mount's config (the seal's key comes from its
S3 secret key); a mount may run meanwhile.

Blocking, one thread: HEAD per object, a copy per adopted one. Uses the store
and meta/seal.py, meta/index_format.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from fedfs.config import Config
from fedfs.errors import ConfigError, NotFound
from fedfs.meta.index_format import INDEX_PREFIX
from fedfs.meta.seal import COVERED, KEY_PURPOSE, MetadataSeal
from fedfs.store.s3 import ObjectInfo, ObjectStore


@dataclass
class Adopted:
    """What `fedfs fsck --sign` found (and, with --yes, sealed)."""

    seen: int = 0  # objects read
    unsealed: int = 0  # of those, with ownership metadata and no valid seal
    sealed: int = 0  # sealed now


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


def sign(cfg: Config, target: str, apply: bool, say: Callable[[str], None] = print) -> Adopted:
    """List (and with apply, seal) the unsealed objects under target ("BUCKET[/PREFIX]")."""
    bucket, _, prefix = target.strip("/").partition("/")
    if bucket not in {b.name for b in cfg.buckets}:
        known = ", ".join(sorted(b.name for b in cfg.buckets))
        raise ConfigError(f"{bucket!r} is not a bucket of this config (its buckets: {known})")
    store = ObjectStore(cfg.store, cfg.object_acl.object_acl)
    seal = seal_for(cfg, store)
    store.seal = seal
    found = Adopted()
    for info in unsealed(store, seal, bucket, prefix, found):
        say(("sealed " if apply else "would seal ") + describe(info))
        if apply:
            try:
                store.copy(bucket, info.key, info.key, info.size, info.metadata, info.content_type)
            except NotFound:
                say(f"  gone meanwhile: {info.key}")
                continue
            found.sealed += 1
    return found
