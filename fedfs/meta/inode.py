"""What this node knows about one object: the `Inode`, its `Kind`, default modes.

An inode is a file, directory or symlink of the mount, named by (bucket, key).
Its POSIX attributes come from the object's user metadata (object_meta.py);
the rest is what this node did with it: listings, opens, and the local copy
the data path attaches while the file is written. That copy's type belongs
to the data path (data/cache.py's `Staging`), so `Inode` is generic in it and
asks of it only what `LocalCopy` declares.

Plain data: no I/O, no awaits, used from the trio thread only. Imports
nothing from fedfs.
"""

from __future__ import annotations

import math
import stat
from dataclasses import dataclass, field
from enum import Enum
from typing import Generic, Protocol, TypeVar

ROOT_INO = 1
DEFAULT_FILE_MODE = 0o664
DEFAULT_DIR_MODE = 0o775


def honoured_mode(mode: int, is_dir: bool) -> int:
    """The permission bits of mode that this mount honours, and so shows.

    Never setuid (the mount is nosuid); setgid and sticky on directories only, where
    they work (new files take a setgid directory's group, the kernel enforces sticky
    deletion). Modes from object metadata written by any tool pass through here.
    """
    return stat.S_IMODE(mode) & (0o3777 if is_dir else 0o777)


class Kind(Enum):
    DIR = stat.S_IFDIR
    FILE = stat.S_IFREG
    LINK = stat.S_IFLNK
    # Special files: empty objects whose mode (and device number) says what they are;
    # the kernel serves their I/O itself (pipes, sockets) or refuses it (nodev).
    FIFO = stat.S_IFIFO
    SOCKET = stat.S_IFSOCK
    CHAR_DEVICE = stat.S_IFCHR
    BLOCK_DEVICE = stat.S_IFBLK


SPECIAL_KINDS = frozenset({Kind.FIFO, Kind.SOCKET, Kind.CHAR_DEVICE, Kind.BLOCK_DEVICE})


def kind_of_mode(st_mode: int) -> Kind:
    """The kind a stored mode names; a mode without a file type is a regular file."""
    try:
        kind = Kind(stat.S_IFMT(st_mode))
    except ValueError:
        return Kind.FILE
    return Kind.FILE if kind is Kind.DIR else kind


class LocalCopy(Protocol):
    """What an inode needs of the local copy of its data: whether it still has to be uploaded."""

    dirty: bool


C = TypeVar("C", bound=LocalCopy)


@dataclass(eq=False)
class Inode(Generic[C]):
    ino: int
    parent: int
    name: str
    bucket: str  # "" for the mount root
    key: str  # object key of a file, prefix (without "/") of a directory; "" for a bucket root
    kind: Kind
    mode: int = DEFAULT_FILE_MODE  # permission bits only
    # mode is a default, not stated by metadata, chmod or create (docs/OBJECT_ACL.md)
    mode_default: bool = False
    uid: int = 0
    gid: int = 0
    size: int = 0
    mtime_ns: int = 0
    atime_ns: int | None = None  # set explicitly (utimensat); else atime reads as mtime
    ctime_ns: int = 0
    etag: str | None = None
    last_modified: float = 0.0
    meta_known: bool = False  # mode/uid/gid/xattrs were read from the object (or set here)
    checked: float = -math.inf  # monotonic time the attributes were last confirmed in S3
    # For the shared metadata index (meta/dir_index.py): the LastModified (ms) of the
    # listing that found this object new or changed, which the next HEAD confirms; and
    # the user metadata that HEAD returned with the listed time it belongs to.
    listed_ms: int | None = None
    object_meta: dict[str, str] | None = None
    indexed_ms: int | None = None
    # monotonic time this node last changed the object: an S3 answer to a request sent
    # before then (a HEAD or a listing racing an upload) is older than what we know
    changed: float = -math.inf
    local: bool = False  # exists only here so far: created, not yet uploaded
    has_marker: bool | None = None  # directories: whether a "key/" marker object exists
    shadows: bool = False  # directories: a file object with the same key exists
    xattrs: dict[str, bytes] = field(default_factory=dict)
    explicit_mask: int | None = None  # ACL mask set by chmod/setfacl while grants apply
    mask_by: str | None = None  # what set explicit_mask: "chmod" or "setfacl" (None: unknown)
    # the process (FUSE request pid) that created it through this mount: its chmod to the
    # object's own mode restates it (cp -p, rsync -a, tar x), see policy/mask.py
    creator_pid: int = 0
    target: bytes | None = None  # symlinks
    rdev: int = 0  # device nodes: the device number
    children: dict[str, int] | None = None  # directories: last complete listing
    # directories: inodes this node put here (create, mkdir, symlink, rename), so a
    # listing that raced their upload still shows them without scanning every inode
    placed: set[int] = field(default_factory=set)
    listed: float = -math.inf
    misses: int = 0  # directories: names asked for that the last listing did not have
    staging: C | None = None
    base_etag: str | None = None  # the version the staging copy was made from
    open_count: int = 0
    writers: int = 0
    # Written since the last close: mtime moves at close, not at every write(), so the
    # kernel's attribute refreshes during a long write do not drop the page cache.
    mtime_pending: bool = False
    written_mtime_ns: int = 0  # the kernel's (coarse) time of the latest write() seen
    kernel_etag: str | None = None  # the version the kernel page cache holds
    gone: bool = False

    @property
    def is_dir(self) -> bool:
        return self.kind is Kind.DIR

    @property
    def prefix(self) -> str:
        """Key prefix of this directory's children."""
        return f"{self.key}/" if self.key else ""

    @property
    def is_bucket_root(self) -> bool:
        return self.is_dir and self.key == "" and self.bucket != ""

    @property
    def is_special(self) -> bool:
        return self.kind in SPECIAL_KINDS

    @property
    def dirty(self) -> bool:
        return self.local or (self.staging is not None and self.staging.dirty)

    @property
    def st_mode(self) -> int:
        return self.kind.value | self.mode

    @property
    def path(self) -> str:
        """The path below the mount: /bucket/key, or / for the mount root."""
        return f"/{self.bucket}/{self.key}".rstrip("/") if self.bucket else "/"
