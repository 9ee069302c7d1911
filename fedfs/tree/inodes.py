"""The inode table: inode numbers <-> (bucket, key), and where each inode sits in the tree.

Owns the numbers (stable for the life of the mount: an inode is never freed,
only marked gone), the mount root and bucket roots, the index by (bucket,
key, is-directory), and the tree's bookkeeping of names: new, place, forget,
rekey. Also answers which known inodes lie under or above a path (policy
invalidation).

No I/O and no awaits: every method runs to completion in the trio thread, so
callers may rely on what it says only until their next await. Uses meta,
tree/names.py and (as a type) the data path's staging copy; calls nothing.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping

from fedfs.data.cache import Staging
from fedfs.errors import NotFound
from fedfs.meta.inode import ROOT_INO, Inode, Kind
from fedfs.meta.object_meta import Owner
from fedfs.meta.seal import OPEN_DIR_MODE, MetadataSeal
from fedfs.tree.names import join

# A bucket root is no object: its owner and mode come from the config, with or without
# [object_acl] (what is below it shows as its objects' metadata, or their defaults, say).
BUCKET_ROOT_MODE = OPEN_DIR_MODE


class Inodes:
    """Every inode of one mount, by number and by (bucket, key, is-directory)."""

    def __init__(
        self, buckets: Iterable[str], owners: Mapping[str, Owner], seal: MetadataSeal
    ) -> None:
        self.owners = owners
        self.seal = seal  # which object metadata is believed, and the modes without it
        self.by_ino: dict[int, Inode[Staging]] = {}
        self.by_ident: dict[tuple[str, str, bool], int] = {}
        self.next_ino = ROOT_INO + 1
        now_ns = time.time_ns()
        # What a directory with no marker object shows until a listing of it saw an object.
        self.started_ns = now_ns
        root: Inode[Staging] = Inode(
            ROOT_INO,
            ROOT_INO,
            "",
            "",
            "",
            Kind.DIR,
            mode=0o755,
            mtime_ns=now_ns,
            ctime_ns=now_ns,
            meta_known=True,
            checked=math.inf,
        )
        root.children = {}
        root.listed = math.inf
        self.by_ino[ROOT_INO] = root
        for b in buckets:
            ino = self._new(ROOT_INO, b, b, "", Kind.DIR)
            ino.mode, ino.uid, ino.gid = BUCKET_ROOT_MODE, owners[b].uid, owners[b].gid
            ino.mtime_ns = ino.ctime_ns = now_ns
            ino.meta_known, ino.checked, ino.has_marker = True, math.inf, True
            root.children[b] = ino.ino

    def _new(self, parent: int, name: str, bucket: str, key: str, kind: Kind) -> Inode[Staging]:
        inode: Inode[Staging] = Inode(self.next_ino, parent, name, bucket, key, kind)
        self.next_ino += 1
        self.by_ino[inode.ino] = inode
        self.by_ident[(bucket, key, kind is Kind.DIR)] = inode.ino
        return inode

    def child(self, parent: Inode[Staging], name: str, kind: Kind) -> Inode[Staging]:
        """The inode for parent/name of this kind, created on first sight (numbers stay stable)."""
        key = join(parent.key, name)
        ident = (parent.bucket, key, kind is Kind.DIR)
        ino = self.by_ident.get(ident)
        inode = self.by_ino.get(ino) if ino else None
        if inode is None:
            inode = self._new(parent.ino, name, parent.bucket, key, kind)
            owner = self.owners[parent.bucket]
            inode.uid, inode.gid = owner.uid, owner.gid
            inode.mode = self.seal.default_mode(kind is Kind.DIR)
            inode.mode_default = True
            if kind is Kind.DIR:  # a marker's HEAD, or a listing of it, tells more later
                inode.mtime_ns = inode.ctime_ns = self.started_ns
        inode.parent, inode.name, inode.gone = parent.ino, name, False
        if kind is Kind.LINK:
            inode.kind = Kind.LINK  # a listing cannot tell links from files; never downgrade
        return inode

    def find(self, bucket: str, key: str, is_dir: bool) -> Inode[Staging] | None:
        """The inode last known under this key (it may be gone)."""
        ino = self.by_ident.get((bucket, key, is_dir))
        return self.by_ino.get(ino) if ino else None

    def get(self, ino: int) -> Inode[Staging]:
        inode = self.by_ino.get(ino)
        if inode is None or (inode.gone and inode.open_count == 0):
            raise NotFound(f"inode {ino} no longer exists")
        return inode

    def all(self) -> list[Inode[Staging]]:
        return list(self.by_ino.values())

    def refresh_owners(self) -> None:
        """Bucket roots show their owner's current uid/gid (a team's gid may be new)."""
        root = self.by_ino[ROOT_INO]
        assert root.children is not None
        for name, ino in root.children.items():
            self.by_ino[ino].uid, self.by_ino[ino].gid = (
                self.owners[name].uid,
                self.owners[name].gid,
            )

    def under(self, path: str) -> list[Inode[Staging]]:
        """Known inodes at or below a fedfs path (for cache invalidation)."""
        parts = path.strip("/").split("/", 1)
        bucket, key = parts[0], (parts[1] if len(parts) > 1 else "")
        pre = key + "/"
        return [
            i
            for i in self.by_ino.values()
            if i.bucket == bucket
            and not i.gone
            and (not key or i.key == key or i.key.startswith(pre))
        ]

    def above(self, path: str) -> list[Inode[Staging]]:
        """Known directory inodes above a fedfs path: the bucket and each parent directory."""
        parts = path.strip("/").split("/")
        parents = {"/".join(parts[1:i]) for i in range(1, len(parts))}
        return [
            i
            for i in self.by_ino.values()
            if i.bucket == parts[0] and i.is_dir and not i.gone and i.key.rstrip("/") in parents
        ]

    def has_local_descendants(self, d: Inode[Staging]) -> bool:
        """Whether files created here and not uploaded yet lie below directory d."""
        pre = d.prefix
        return any(
            i.local and not i.gone and i.bucket == d.bucket and i.key.startswith(pre)
            for i in self.by_ino.values()
        )

    def place(self, parent: Inode[Staging], name: str, inode: Inode[Staging]) -> None:
        """This node put inode into parent under name."""
        if parent.children is not None:
            parent.children[name] = inode.ino
        parent.placed.add(inode.ino)

    def forget(self, parent: Inode[Staging] | None, inode: Inode[Staging]) -> None:
        """inode is gone from the tree (its number stays taken; open handles keep it)."""
        inode.gone = True
        inode.changed = time.monotonic()
        self.by_ident.pop((inode.bucket, inode.key, inode.is_dir), None)
        siblings = parent.children if parent is not None else None
        if siblings is not None and siblings.get(inode.name) == inode.ino:
            del siblings[inode.name]

    def rekey(self, inode: Inode[Staging], parent: Inode[Staging], name: str, key: str) -> None:
        """inode was renamed to parent/name, whose object key is key."""
        self.by_ident.pop((inode.bucket, inode.key, inode.is_dir), None)
        inode.parent, inode.name, inode.key, inode.gone = parent.ino, name, key, False
        inode.changed = time.monotonic()
        self.by_ident[(inode.bucket, key, inode.is_dir)] = inode.ino

    def move_key(self, inode: Inode[Staging], key: str) -> None:
        """inode's key changed with its directory's (same parent, same name)."""
        self.by_ident.pop((inode.bucket, inode.key, inode.is_dir), None)
        inode.key = key
        inode.changed = time.monotonic()
        self.by_ident[(inode.bucket, inode.key, inode.is_dir)] = inode.ino
