"""A bare pyfuse3 passthrough over a local directory: the Python FUSE ceiling.

The benchmark's reference for what any pyfuse3 filesystem can reach on this
machine: every request goes through the same kernel FUSE protocol, pyfuse3 and
trio as fedfs's do, and is answered with one local system call, nothing else
(no cache directory, no journal, no policy). Mount options match fedfs's
(default_permissions, noatime, no writeback cache, keep_cache on open).

    python tests/perf/passthrough.py SOURCE_DIR MOUNTPOINT   # until SIGTERM/SIGINT
"""

from __future__ import annotations

import errno
import os
import signal
import stat
import sys
from typing import Any

import pyfuse3
import trio


class Passthrough(pyfuse3.Operations):
    def __init__(self, source: str) -> None:
        super().__init__()
        self.paths: dict[int, str] = {pyfuse3.ROOT_INODE: source}
        self.lookups: dict[int, int] = {}
        self.fds: dict[int, int] = {}

    def _path(self, inode: int) -> str:
        try:
            return self.paths[inode]
        except KeyError:
            raise pyfuse3.FUSEError(errno.ENOENT) from None

    def _attr(self, path: str, fd: int | None = None) -> pyfuse3.EntryAttributes:
        try:
            st = os.fstat(fd) if fd is not None else os.lstat(path)
        except OSError as e:
            raise pyfuse3.FUSEError(e.errno) from None
        a = pyfuse3.EntryAttributes()
        for name in ("st_mode", "st_nlink", "st_uid", "st_gid", "st_rdev", "st_size"):
            setattr(a, name, getattr(st, name))
        a.st_ino = pyfuse3.InodeT(st.st_ino)
        a.st_atime_ns, a.st_mtime_ns, a.st_ctime_ns = st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns
        a.st_blksize, a.st_blocks = 4096, st.st_blocks
        a.attr_timeout = a.entry_timeout = 1.0  # fedfs's defaults
        if fd is None:
            self.paths[st.st_ino] = path
        return a

    def _remember(self, path: str) -> pyfuse3.EntryAttributes:
        a = self._attr(path)
        self.paths[a.st_ino] = path
        self.lookups[a.st_ino] = self.lookups.get(a.st_ino, 0) + 1
        return a

    async def lookup(
        self, parent_inode: int, name: bytes, ctx: Any = None
    ) -> pyfuse3.EntryAttributes:
        return self._remember(os.path.join(self._path(parent_inode), os.fsdecode(name)))

    async def forget(self, inode_list: Any) -> None:
        for inode, n in inode_list:
            left = self.lookups.get(inode, 0) - n
            if left <= 0:
                self.lookups.pop(inode, None)
                if inode != pyfuse3.ROOT_INODE:
                    self.paths.pop(inode, None)
            else:
                self.lookups[inode] = left

    async def getattr(self, inode: int, ctx: Any = None) -> pyfuse3.EntryAttributes:
        if inode in self.fds:
            return self._attr("", self.fds[inode])
        a = self._attr(self._path(inode))
        if inode == pyfuse3.ROOT_INODE:
            a.st_ino = pyfuse3.ROOT_INODE
        return a

    async def setattr(
        self, inode: int, attr: Any, fields: Any, fh: Any, ctx: Any
    ) -> pyfuse3.EntryAttributes:
        path = self._path(inode)
        try:
            if fields.update_size:
                os.truncate(path, attr.st_size)
            if fields.update_mode:
                os.chmod(path, stat.S_IMODE(attr.st_mode))
            if fields.update_uid or fields.update_gid:
                os.chown(
                    path,
                    attr.st_uid if fields.update_uid else -1,
                    attr.st_gid if fields.update_gid else -1,
                )
            if fields.update_atime or fields.update_mtime:
                st = os.lstat(path)
                os.utime(
                    path,
                    ns=(
                        attr.st_atime_ns if fields.update_atime else st.st_atime_ns,
                        attr.st_mtime_ns if fields.update_mtime else st.st_mtime_ns,
                    ),
                )
        except OSError as e:
            raise pyfuse3.FUSEError(e.errno) from None
        return await self.getattr(inode)

    async def opendir(self, inode: int, ctx: Any) -> int:
        return inode

    async def readdir(self, fh: int, start_id: int, token: Any) -> None:
        path = self._path(fh)
        names = sorted(os.listdir(path))
        for i, name in enumerate(names[start_id:], start_id):
            a = self._attr(os.path.join(path, name))
            if not pyfuse3.readdir_reply(token, os.fsencode(name), a, i + 1):
                return
            self.lookups[a.st_ino] = self.lookups.get(a.st_ino, 0) + 1

    async def releasedir(self, fh: int) -> None:
        pass

    async def mkdir(
        self, parent_inode: int, name: bytes, mode: int, ctx: Any
    ) -> pyfuse3.EntryAttributes:
        path = os.path.join(self._path(parent_inode), os.fsdecode(name))
        try:
            os.mkdir(path, mode)
            os.chown(path, ctx.uid, ctx.gid)
        except OSError as e:
            raise pyfuse3.FUSEError(e.errno) from None
        return self._remember(path)

    async def rmdir(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        try:
            os.rmdir(os.path.join(self._path(parent_inode), os.fsdecode(name)))
        except OSError as e:
            raise pyfuse3.FUSEError(e.errno) from None

    async def unlink(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        try:
            os.unlink(os.path.join(self._path(parent_inode), os.fsdecode(name)))
        except OSError as e:
            raise pyfuse3.FUSEError(e.errno) from None

    async def rename(
        self,
        old_parent: int,
        old_name: bytes,
        new_parent: int,
        new_name: bytes,
        flags: int,
        ctx: Any,
    ) -> None:
        old = os.path.join(self._path(old_parent), os.fsdecode(old_name))
        new = os.path.join(self._path(new_parent), os.fsdecode(new_name))
        try:
            os.rename(old, new)
        except OSError as e:
            raise pyfuse3.FUSEError(e.errno) from None
        for ino, p in list(self.paths.items()):
            if p == old or p.startswith(old + "/"):
                self.paths[ino] = new + p[len(old) :]

    async def open(self, inode: int, flags: int, ctx: Any) -> pyfuse3.FileInfo:
        try:
            fd = os.open(
                self._path(inode), flags & ~(os.O_CREAT | os.O_EXCL | os.O_TRUNC) | os.O_CLOEXEC
            )
            if flags & os.O_TRUNC:
                os.ftruncate(fd, 0)
        except OSError as e:
            raise pyfuse3.FUSEError(e.errno) from None
        return pyfuse3.FileInfo(fh=pyfuse3.FileHandleT(fd), keep_cache=True)

    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: Any
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        path = os.path.join(self._path(parent_inode), os.fsdecode(name))
        try:
            fd = os.open(path, flags | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
            os.fchown(fd, ctx.uid, ctx.gid)
        except OSError as e:
            raise pyfuse3.FUSEError(e.errno) from None
        return pyfuse3.FileInfo(fh=pyfuse3.FileHandleT(fd)), self._remember(path)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        return os.pread(fh, size, off)

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        return os.pwrite(fh, buf, off)

    async def flush(self, fh: int) -> None:
        pass

    async def fsync(self, fh: int, datasync: bool) -> None:
        (os.fdatasync if datasync else os.fsync)(fh)

    async def release(self, fh: int) -> None:
        os.close(fh)

    async def statfs(self, ctx: Any) -> pyfuse3.StatvfsData:
        st = os.statvfs(self.paths[pyfuse3.ROOT_INODE])
        out = pyfuse3.StatvfsData()
        for name in (
            "f_bsize",
            "f_frsize",
            "f_blocks",
            "f_bfree",
            "f_bavail",
            "f_files",
            "f_ffree",
            "f_favail",
        ):
            setattr(out, name, getattr(st, name))
        out.f_namemax = 255
        return out


async def _main() -> None:
    async with trio.open_nursery() as nursery:

        async def stop_on_signal() -> None:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    pyfuse3.terminate()
                    return

        nursery.start_soon(stop_on_signal)
        await pyfuse3.main(min_tasks=4, max_tasks=64)
        nursery.cancel_scope.cancel()


def main() -> int:
    source, mountpoint = sys.argv[1], sys.argv[2]
    options = {"fsname=passthrough", "default_permissions", "noatime", "allow_other"}
    pyfuse3.init(Passthrough(os.path.abspath(source)), mountpoint, options)
    try:
        trio.run(_main)
    finally:
        pyfuse3.close(unmount=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
