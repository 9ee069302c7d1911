"""The shared metadata index: what HEADs returned, kept in the bucket for every node.

One index object per directory (`.fedfs-index/<sha256 of the prefix>`, format
and trust rules in index_format.py). A listing loads it when it shows objects
whose metadata this node does not know, takes each entry whose ETag, size and
listed LastModified are what the listing shows, and HEADs the rest; after a
complete listing that needed HEADs the directory's index is written again,
with an entry for every listed file whose metadata came from a HEAD sent
after a listing showed that version. A replaced object shows another ETag or
LastModified in the listing, so its old entry is never used.

Several nodes may write one directory's index: each write is a whole PUT
(atomic), the last one wins, and an entry that a lost write would have added
costs the next node a HEAD (which then writes it). Writes happen only after
a listing that needed HEADs or found entries gone, so a directory whose
index is current is never written.

Concurrency: async methods run in the trio thread; the store calls and the
(de)compression of large indexes run in worker threads. May call
index_format.py, object_meta.py and the store through worker threads.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import trio

from fedfs.errors import NotFound, StoreError
from fedfs.events import event
from fedfs.meta.index_format import (
    MAX_OBJECT,
    IndexEntry,
    IndexRejected,
    decode,
    encode,
    index_key,
    listed_ms,
)
from fedfs.meta.inode import Inode
from fedfs.meta.object_meta import Owner, apply_info
from fedfs.meta.seal import MetadataSeal
from fedfs.store.s3 import ObjectInfo, ObjectStore
from fedfs.store.threads import WorkerThreads

log = logging.getLogger(__name__)

INDEX_CONTENT_TYPE = "application/x-fedfs-meta-index"
KEY_PURPOSE = "fedfs shared metadata index v1"


class DirIndexes:
    """Loads and writes the index objects of one mount's directories."""

    def __init__(self, store: ObjectStore, s3: WorkerThreads, enabled: bool) -> None:
        self.store = store
        self.s3 = s3
        self.key = store.derived_key(KEY_PURPOSE) if enabled else None
        self.enabled = self.key is not None
        if enabled and self.key is None:
            log.warning(
                "no S3 secret key to sign the shared metadata index with: listings HEAD "
                "every object they have not seen on this node ([fs] metadata_index)"
            )
        self.saving: set[tuple[str, str]] = set()
        self.rejected: set[tuple[str, str]] = set()  # reported once per directory
        self.refused_writes = False  # reported once per mount
        self.loaded = self.saved = 0  # for tests and status

    async def load(self, bucket: str, prefix: str) -> dict[str, IndexEntry]:
        """The entries of a directory's index; {} when there is none or it is not believed."""
        if not self.enabled:
            return {}
        assert self.key is not None
        key = index_key(prefix)
        try:
            body = await self.s3(self.store.get_bytes, bucket, key, MAX_OBJECT)
        except NotFound:
            return {}
        except StoreError as e:  # the listing goes on with HEADs
            log.debug("metadata index of s3://%s/%s not read: %s", bucket, prefix, e)
            return {}
        self.loaded += 1
        try:
            return await trio.to_thread.run_sync(decode, body, bucket, prefix, self.key)
        except IndexRejected as e:
            if (bucket, prefix) not in self.rejected:
                self.rejected.add((bucket, prefix))
                event(
                    log,
                    "metadata-index-ignored",
                    severity=logging.WARNING,
                    object=f"s3://{bucket}/{key}",
                    directory=f"s3://{bucket}/{prefix}",
                    reason=str(e),
                    msg="the directory's metadata index is ignored: its objects are read "
                    "with a HEAD each, and the index is written again after the listing",
                )
            return {}

    async def save(self, bucket: str, prefix: str, entries: dict[str, IndexEntry]) -> None:
        """Write a directory's index (one write at a time per directory; failures logged)."""
        if not self.enabled or (bucket, prefix) in self.saving:
            return
        assert self.key is not None
        self.saving.add((bucket, prefix))
        try:
            body = await trio.to_thread.run_sync(encode, bucket, prefix, entries, self.key)
            await self.s3(
                self.store.put_bytes, bucket, index_key(prefix), body, {}, INDEX_CONTENT_TYPE
            )
            self.saved += 1
        except StoreError as e:
            if not self.refused_writes:
                self.refused_writes = True
                log.warning(
                    "could not write the metadata index of s3://%s/%s (%s); listings on other "
                    "nodes HEAD objects instead. Allow the daemon's keys to write %s* in the "
                    "bucket, or set [fs] metadata_index = false",
                    bucket,
                    prefix,
                    e,
                    index_key(""),
                )
            else:
                log.debug("metadata index of s3://%s/%s not written: %s", bucket, prefix, e)
        finally:
            self.saving.discard((bucket, prefix))


def usable(entry: IndexEntry | None, listed: ObjectInfo) -> bool:
    """Whether an index entry describes the version of the object this listing shows."""
    return (
        entry is not None
        and entry.etag == listed.etag
        and entry.size == listed.size
        and entry.listed_ms == listed_ms(listed.last_modified)
    )


def apply_entry(
    inode: Inode[Any],
    entry: IndexEntry,
    listed: ObjectInfo,
    owners: Mapping[str, Owner],
    seal: MetadataSeal,
) -> None:
    """Take an inode's attributes from an index entry, exactly as from the HEAD it records.

    The entry keeps the HEAD's metadata as the store gave it, seal included, so the
    seal is checked here as for a HEAD: a node without `[object_acl]` may have written
    the entry, and the index's own signature says only that a node saw this metadata.
    """
    info = ObjectInfo(listed.key, entry.size, entry.etag, entry.head_last_modified, entry.metadata)
    apply_info(inode, info, owners, seal)
    inode.object_meta, inode.indexed_ms = entry.metadata, entry.listed_ms


def note_head(inode: Inode[Any], info: ObjectInfo, basis: tuple[str | None, int | None]) -> None:
    """A HEAD answer just applied: recordable if it is the version a listing showed before it.

    basis is (ETag, listed LastModified in ms) from the listing that sent this inode to
    be read. HEAD gives LastModified in whole seconds: a later version with the same ETag
    in the same second may be what the HEAD saw, but then a listing shows that version's
    own milliseconds, which the entry does not match, so it costs a HEAD, never more.
    """
    etag, ms = basis
    if (
        ms is not None
        and info.metadata is not None
        and info.etag == etag
        and int(info.last_modified) == ms // 1000
    ):
        inode.object_meta, inode.indexed_ms = info.metadata, ms


def entry_of(inode: Inode[Any], listed: ObjectInfo) -> IndexEntry | None:
    """What this node may record for a listed object: a HEAD's answer for that version."""
    ms = listed_ms(listed.last_modified)
    if (
        inode.dirty
        or inode.gone
        or not inode.meta_known
        or inode.object_meta is None
        or inode.indexed_ms != ms
        or inode.etag != listed.etag
        or inode.size != listed.size
        or int(inode.last_modified) != ms // 1000
    ):
        return None
    return IndexEntry(listed.etag, ms, listed.size, inode.last_modified, inode.object_meta)
