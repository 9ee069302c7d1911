"""The cache directory: writable staging copies and immutable clean blocks.

Layout under `cache.dir` (mode 0700, root only):
  staging/   one file per file open for writing (or truncated), named by a
             random id; it is the file's data until it is uploaded.
  clean/     read-cache blocks keyed by (bucket, key, ETag, block number);
             immutable, so a stale block is never served after the object
             changes and several nodes may share the directory.

Concurrency: all bookkeeping runs in the trio thread; file I/O that may be
large (downloads, uploads) runs in worker threads. Files are opened with
O_NOFOLLOW so a planted symlink cannot redirect the daemon.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import trio

from fedfs.config import CacheConfig
from fedfs.errors import CacheFull, FedfsError
from fedfs.store import ObjectStore

log = logging.getLogger(__name__)

_OPEN_FLAGS = os.O_NOFOLLOW | os.O_CLOEXEC


def prepare_dir(path: Path) -> None:
    """Create the cache directory tree, root-only; refuse one we cannot trust."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = path.lstat()
    except OSError as e:
        raise FedfsError(f"cache directory {path}: {e.strerror}; check [cache] dir") from e
    if not path.is_dir() or path.is_symlink():
        raise FedfsError(f"cache directory {path} is not a directory; check [cache] dir")
    if st.st_uid != os.geteuid():
        raise FedfsError(
            f"cache directory {path} is owned by uid {st.st_uid}, not by us; "
            "use a directory only fedfs writes to"
        )
    os.chmod(path, 0o700)
    for sub in ("staging", "clean"):
        (path / sub).mkdir(mode=0o700, exist_ok=True)


@dataclass
class Staging:
    """A file's local writable copy. `dirty` until its content is in the object store."""

    path: Path
    fd: int
    size: int = 0
    dirty: bool = False
    generation: int = 0  # bumped by every change, so an upload knows if it raced a write
    lock: trio.Lock = field(default_factory=trio.Lock)

    def write(self, offset: int, data: bytes) -> int:
        n = os.pwrite(self.fd, data, offset)
        self.size = max(self.size, offset + n)
        self.dirty = True
        self.generation += 1
        return n

    def read(self, offset: int, length: int) -> bytes:
        return os.pread(self.fd, length, offset)

    def truncate(self, size: int) -> None:
        os.ftruncate(self.fd, size)
        self.size = size
        self.dirty = True
        self.generation += 1

    def close(self, remove: bool = True) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if remove:
            self.path.unlink(missing_ok=True)


class Cache:
    """Staging files and the clean block cache of one mount."""

    def __init__(self, cfg: CacheConfig, store: ObjectStore, limiter: trio.CapacityLimiter) -> None:
        self.cfg = cfg
        self.store = store
        self.limiter = limiter
        self.block_size = cfg.block_size
        prepare_dir(cfg.dir)
        self.staging_dir = cfg.dir / "staging"
        self.clean_dir = cfg.dir / "clean"
        # block path -> size, in LRU order (oldest first)
        self.blocks: OrderedDict[str, int] = OrderedDict()
        self.clean_bytes = 0
        self.staged_bytes = 0
        self.inflight: dict[str, trio.Event] = {}
        self.hits = 0
        self.misses = 0
        self._scan_clean()

    # -- staging ---------------------------------------------------------

    def new_staging(self) -> Staging:
        path = self.staging_dir / secrets.token_hex(12)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | _OPEN_FLAGS, 0o600)
        return Staging(path=path, fd=fd)

    async def stage_existing(self, bucket: str, key: str, size: int) -> Staging:
        """A staging copy holding the object's current content (for a write to an old file)."""
        st = self.new_staging()
        self.reserve(size)
        if size:

            def fetch() -> None:
                with open(st.fd, "r+b", closefd=False) as f:
                    self.store.download(bucket, key, f)

            try:
                await trio.to_thread.run_sync(fetch, limiter=self.limiter)
            except BaseException:
                st.close()
                raise
        st.size = size
        return st

    def reserve(self, nbytes: int) -> None:
        """Make room for nbytes of new local data, evicting clean blocks; CacheFull if impossible."""
        self.evict(extra=nbytes)
        free = self.free_disk()
        if nbytes > free:
            raise CacheFull(
                f"cache directory {self.cfg.dir} has {free} bytes free, {nbytes} needed; "
                "free space there or raise [cache] size"
            )

    def free_disk(self) -> int:
        st = os.statvfs(self.cfg.dir)
        return st.f_bavail * st.f_frsize

    # -- clean blocks ----------------------------------------------------

    def _block_path(self, bucket: str, key: str, etag: str, block: int) -> Path:
        h = hashlib.sha256(f"{bucket}\0{key}\0{etag}".encode()).hexdigest()
        return self.clean_dir / h[:2] / f"{h}.{block}"

    def _scan_clean(self) -> None:
        found = []
        for sub in self.clean_dir.iterdir():
            if not sub.is_dir() or sub.is_symlink():
                continue
            for f in sub.iterdir():
                if f.name.endswith(".tmp"):
                    f.unlink(missing_ok=True)  # a download that never finished
                    continue
                st = f.lstat()
                found.append((st.st_atime, str(f), st.st_size))
        for _, p, size in sorted(found):
            self.blocks[p] = size
            self.clean_bytes += size

    async def read(
        self, bucket: str, key: str, etag: str, size: int, offset: int, length: int
    ) -> bytes:
        """Bytes of one object version, through the clean block cache."""
        end = min(size, offset + length)
        if offset >= end:
            return b""
        bs = self.block_size
        parts = []
        for block in range(offset // bs, (end - 1) // bs + 1):
            data = await self._block(bucket, key, etag, size, block)
            lo = max(offset, block * bs) - block * bs
            hi = min(end, (block + 1) * bs) - block * bs
            parts.append(data[lo:hi])
        return b"".join(parts)

    async def prefetch(self, bucket: str, key: str, etag: str, size: int, block: int) -> None:
        """Fetch one block into the cache if it is not there yet (readahead)."""
        if block * self.block_size < size:
            try:
                await self._block(bucket, key, etag, size, block)
            except FedfsError as e:
                log.debug("readahead of %s/%s block %d failed: %s", bucket, key, block, e)

    async def _block(self, bucket: str, key: str, etag: str, size: int, block: int) -> bytes:
        path = self._block_path(bucket, key, etag, block)
        p = str(path)
        while True:
            data = self._read_block_file(p)
            if data is not None:
                self.hits += 1
                return data
            ev = self.inflight.get(p)
            if ev is None:
                break
            await ev.wait()  # another task is fetching it; then read the file it wrote
        self.misses += 1
        ev = self.inflight[p] = trio.Event()
        try:
            start = block * self.block_size
            length = min(self.block_size, size - start)
            self.reserve(length)
            data = await trio.to_thread.run_sync(
                self.store.get_range, bucket, key, start, length, etag, limiter=self.limiter
            )
            await trio.to_thread.run_sync(self._write_block_file, path, data)
            self.blocks[p] = len(data)
            self.clean_bytes += len(data)
            return data
        finally:
            del self.inflight[p]
            ev.set()

    def _read_block_file(self, p: str) -> bytes | None:
        if p not in self.blocks:
            return None
        try:
            fd = os.open(p, os.O_RDONLY | _OPEN_FLAGS)
        except FileNotFoundError:
            self.clean_bytes -= self.blocks.pop(p)
            return None
        try:
            data = os.read(fd, self.blocks[p] + 1)
        finally:
            os.close(fd)
        self.blocks.move_to_end(p)
        return data

    @staticmethod
    def _write_block_file(path: Path, data: bytes) -> None:
        path.parent.mkdir(mode=0o700, exist_ok=True)
        tmp = path.with_name(path.name + f".{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _OPEN_FLAGS, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        os.replace(tmp, path)

    def evict(self, extra: int = 0) -> None:
        """LRU-evict clean blocks until clean + staged + extra fits in cache.size."""
        limit = self.cfg.size
        while self.blocks and self.clean_bytes + self.staged_bytes + extra > limit:
            p, size = self.blocks.popitem(last=False)
            self.clean_bytes -= size
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass
            except OSError as e:
                if e.errno != errno.ENOENT:
                    log.warning("cannot evict %s: %s", p, e)

    def stats(self) -> dict[str, int | float]:
        return {
            "clean_bytes": self.clean_bytes,
            "clean_blocks": len(self.blocks),
            "hits": self.hits,
            "misses": self.misses,
            "time": time.time(),
        }
