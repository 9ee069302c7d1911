"""Every POSIX operation of docs/SEMANTICS.md on a real mount over moto's S3 server."""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.support import FEDFS, REPO, Mount, wait_for

libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD = -100
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2


def renameat2(old: Path, new: Path, flags: int) -> None:
    if libc.renameat2(AT_FDCWD, bytes(old), AT_FDCWD, bytes(new), flags) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def s3_body(s3: Any, bucket: str, key: str) -> bytes:
    return bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def keys(s3: Any, bucket: str) -> list[str]:
    """The bucket's keys, fedfs's own metadata index objects aside (written in the
    background after a listing of 64 files or more: docs/PERFORMANCE.md)."""
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    found = (o["Key"] for p in pages for o in p.get("Contents", []))
    return sorted(k for k in found if not k.startswith(".fedfs-index/"))


def in_s3(s3: Any, bucket: str, key: str, data: bytes, timeout: float = 30) -> None:
    """Wait until the flusher uploaded `data` under key (write-back: close returns first)."""
    wait_for(
        lambda: s3_body(s3, bucket, key) == data,
        f"s3://{bucket}/{key} to hold {data[:40]!r}",
        timeout,
    )


def keys_become(s3: Any, bucket: str, expected: list[str], timeout: float = 30) -> None:
    wait_for(
        lambda: keys(s3, bucket) == sorted(expected), f"keys of {bucket} to be {expected}", timeout
    )


def test_root_lists_buckets(mount: Mount, bucket: str) -> None:
    assert os.listdir(mount.mountpoint) == [bucket]
    st = os.stat(mount.mountpoint)
    assert stat.S_ISDIR(st.st_mode)
    with pytest.raises(PermissionError):
        os.mkdir(mount.path("not-a-bucket"))


def test_create_write_read_at_offsets(fs: Path, s3: Any, bucket: str) -> None:
    p = fs / "data.bin"
    fd = os.open(p, os.O_CREAT | os.O_RDWR, 0o640)
    assert os.pwrite(fd, b"hello", 0) == 5
    assert os.pwrite(fd, b"XY", 10) == 2  # a hole in between reads as zeros
    assert os.pread(fd, 20, 0) == b"hello\0\0\0\0\0XY"
    os.close(fd)
    assert p.read_bytes() == b"hello\0\0\0\0\0XY"
    in_s3(s3, bucket, "data.bin", b"hello\0\0\0\0\0XY")
    st = p.stat()
    assert st.st_size == 12
    assert stat.S_IMODE(st.st_mode) == 0o640
    # rewrite the middle of an existing object
    with open(p, "r+b") as f:
        f.seek(2)
        f.write(b"LL")
    in_s3(s3, bucket, "data.bin", b"heLLo\0\0\0\0\0XY")


def test_truncate_ftruncate_and_append(fs: Path, s3: Any, bucket: str) -> None:
    p = fs / "t.txt"
    p.write_bytes(b"0123456789")
    os.truncate(p, 4)
    assert p.read_bytes() == b"0123"
    in_s3(s3, bucket, "t.txt", b"0123")
    os.truncate(p, 6)
    assert p.read_bytes() == b"0123\0\0"
    with open(p, "r+b") as f:
        f.truncate(2)
    in_s3(s3, bucket, "t.txt", b"01")
    with open(p, "ab") as f:
        f.write(b"ab")
    fd = os.open(p, os.O_WRONLY | os.O_APPEND)
    os.write(fd, b"cd")
    os.close(fd)
    assert p.read_bytes() == b"01abcd"
    with open(p, "wb") as f:  # O_TRUNC
        f.write(b"new")
    in_s3(s3, bucket, "t.txt", b"new")


def test_unlink_and_rmdir(fs: Path, s3: Any, bucket: str) -> None:
    (fs / "d").mkdir()
    (fs / "d" / "f").write_text("x")
    with pytest.raises(OSError) as e:
        os.rmdir(fs / "d")
    assert e.value.errno == errno.ENOTEMPTY
    with pytest.raises(IsADirectoryError):
        os.unlink(fs / "d")
    os.unlink(fs / "d" / "f")
    assert os.listdir(fs / "d") == []
    assert (fs / "d").is_dir()  # an emptied directory persists
    os.rmdir(fs / "d")
    assert not (fs / "d").exists()
    keys_become(s3, bucket, [])
    with pytest.raises(FileNotFoundError):
        os.unlink(fs / "nothing")
    with pytest.raises(NotADirectoryError):
        (fs / "plain").write_text("x")
        os.rmdir(fs / "plain")


def test_mkdir_writes_a_marker(fs: Path, s3: Any, bucket: str) -> None:
    os.mkdir(fs / "empty", 0o750)
    keys_become(s3, bucket, ["empty/"])
    assert stat.S_IMODE((fs / "empty").stat().st_mode) == 0o750
    with pytest.raises(FileExistsError):
        os.mkdir(fs / "empty")


def test_directory_made_by_key_prefix_persists_when_emptied(fs: Path, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="implied/only.txt", Body=b"x")
    assert os.listdir(fs / "implied") == ["only.txt"]
    os.unlink(fs / "implied" / "only.txt")
    assert (fs / "implied").is_dir()
    wait_for(lambda: "implied/" in keys(s3, bucket), "the implied directory's marker")


def test_rename_file(fs: Path, s3: Any, bucket: str) -> None:
    (fs / "a").write_bytes(b"A")
    (fs / "b").write_bytes(b"B")
    st = (fs / "a").stat()
    os.chmod(fs / "a", 0o600)
    os.rename(fs / "a", fs / "c")
    assert (fs / "c").read_bytes() == b"A"
    assert stat.S_IMODE((fs / "c").stat().st_mode) == 0o600
    assert (fs / "c").stat().st_ino == st.st_ino  # the inode number moves with the file
    os.rename(fs / "c", fs / "b")  # replaces
    assert (fs / "b").read_bytes() == b"A"
    keys_become(s3, bucket, ["b"])
    (fs / "x").write_bytes(b"X")
    with pytest.raises(FileExistsError):
        renameat2(fs / "x", fs / "b", RENAME_NOREPLACE)
    assert (fs / "b").read_bytes() == b"A"
    renameat2(fs / "x", fs / "y", RENAME_NOREPLACE)
    assert (fs / "y").read_bytes() == b"X"
    with pytest.raises(OSError) as e:
        renameat2(fs / "y", fs / "b", RENAME_EXCHANGE)
    assert e.value.errno == errno.EINVAL


def test_rename_directory_moves_every_key(fs: Path, s3: Any, bucket: str) -> None:
    (fs / "src" / "sub").mkdir(parents=True)
    for i in range(25):
        (fs / "src" / f"f{i}").write_text(str(i))
    (fs / "src" / "sub" / "deep").write_text("deep")
    os.rename(fs / "src", fs / "dst")
    assert not (fs / "src").exists()
    assert sorted(os.listdir(fs / "dst")) == sorted([f"f{i}" for i in range(25)] + ["sub"])
    assert (fs / "dst" / "sub" / "deep").read_text() == "deep"
    wait_for(lambda: len(keys(s3, bucket)) == 28, "25 files, deep, sub/ and dst/ markers in S3")
    assert all(k.startswith("dst/") for k in keys(s3, bucket))
    (fs / "full").mkdir()
    (fs / "full" / "f").write_text("x")
    with pytest.raises(OSError) as e:
        os.rename(fs / "dst", fs / "full")
    assert e.value.errno == errno.ENOTEMPTY
    (fs / "emptydir").mkdir()
    os.rename(fs / "dst", fs / "emptydir")  # over an empty directory
    assert (fs / "emptydir" / "f3").read_text() == "3"
    with pytest.raises(OSError) as e:
        os.rename(fs / "emptydir", fs / "emptydir" / "sub" / "x")
    assert e.value.errno == errno.EINVAL
    with pytest.raises(NotADirectoryError):
        os.rename(fs / "emptydir", fs / "full" / "f")
    with pytest.raises(IsADirectoryError):
        os.rename(fs / "full" / "f", fs / "emptydir")


def test_symlinks(fs: Path, s3: Any, bucket: str) -> None:
    (fs / "target.txt").write_text("pointed at")
    os.symlink("target.txt", fs / "link")
    assert os.readlink(fs / "link") == "target.txt"
    assert (fs / "link").read_text() == "pointed at"
    assert stat.S_ISLNK(os.lstat(fs / "link").st_mode)
    head = s3.head_object(Bucket=bucket, Key="link")
    assert stat.S_ISLNK(int(head["Metadata"]["mode"]))  # s3fs's convention
    in_s3(s3, bucket, "link", b"target.txt")
    os.symlink("/absolute/nowhere", fs / "dangling")
    assert os.readlink(fs / "dangling") == "/absolute/nowhere"


def test_chmod_chown_utimens(fs: Path, s3: Any, bucket: str) -> None:
    p = fs / "m"
    p.write_text("x")
    os.chmod(p, 0o751)
    os.chown(p, 1234, 5678)
    os.utime(p, ns=(1_600_000_000_000_000_000, 1_600_000_000_123_456_789))
    st = p.stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o751, 1234, 5678)
    assert st.st_mtime_ns == 1_600_000_000_123_456_789
    meta = wait_for(
        lambda: (m := s3.head_object(Bucket=bucket, Key="m")["Metadata"])["uid"] == "1234" and m,
        "the new attributes in S3",
    )
    assert int(meta["mode"]) == stat.S_IFREG | 0o751
    assert (meta["uid"], meta["gid"], meta["mtime"]) == ("1234", "5678", "1600000000")
    (fs / "dd").mkdir()
    os.chmod(fs / "dd", 0o700)
    assert int(s3.head_object(Bucket=bucket, Key="dd/")["Metadata"]["mode"]) == stat.S_IFDIR | 0o700


def test_user_xattrs(fs: Path) -> None:
    p = fs / "x"
    p.write_text("x")
    os.setxattr(p, "user.project", b"cosmo")
    os.setxattr(p, "user.bin", bytes(range(256)))
    assert os.getxattr(p, "user.project") == b"cosmo"
    assert os.getxattr(p, "user.bin") == bytes(range(256))
    assert sorted(os.listxattr(p)) == ["user.bin", "user.project"]
    os.removexattr(p, "user.project")
    with pytest.raises(OSError) as e:
        os.getxattr(p, "user.project")
    assert e.value.errno == errno.ENODATA
    with pytest.raises(OSError) as e:
        os.setxattr(p, "user.big", b"x" * 4096)
    assert e.value.errno == errno.ENOSPC
    with pytest.raises(OSError) as e:
        os.setxattr(p, "trusted.x", b"1")
    assert e.value.errno in (errno.ENOTSUP, errno.EPERM)
    # ENOTSUP, not ENODATA: `ls -l` (libselinux) then stops asking for every file.
    with pytest.raises(OSError) as e:
        os.getxattr(p, "security.selinux")
    assert e.value.errno == errno.ENOTSUP
    os.setxattr(p, "user.project", b"again", os.XATTR_CREATE)
    with pytest.raises(FileExistsError):
        os.setxattr(p, "user.project", b"again", os.XATTR_CREATE)


def test_refused_operations(fs: Path) -> None:
    (fs / "f").write_text("x")
    with pytest.raises(PermissionError):
        os.link(fs / "f", fs / "hard")
    os.mkfifo(fs / "fifo")  # FIFOs and device nodes are kept (test_special_files.py)
    with pytest.raises(PermissionError):
        os.link(fs / "fifo", fs / "hard")


def test_statfs_and_fsync_that_waits_for_the_upload(make_mount: Any, s3: Any, bucket: str) -> None:
    fs = make_mount([(bucket, "user:root")], extra='fsync = "upload"').path(bucket)
    sv = os.statvfs(fs)
    assert sv.f_namemax == 255
    assert sv.f_bavail > 0
    fd = os.open(fs / "synced", os.O_CREAT | os.O_WRONLY, 0o644)
    os.write(fd, b"durable")
    os.fsync(fd)
    assert s3_body(s3, bucket, "synced") == b"durable"  # fsync returned: it is in S3
    os.write(fd, b"!")
    os.fdatasync(fd)
    assert s3_body(s3, bucket, "synced") == b"durable!"
    os.close(fd)


def test_inode_numbers_are_stable(fs: Path) -> None:
    (fs / "d").mkdir()
    (fs / "d" / "f").write_text("x")
    first = {p: os.stat(fs / p).st_ino for p in ("d", "d/f")}
    os.listdir(fs / "d")
    again = {p: os.stat(fs / p).st_ino for p in ("d", "d/f")}
    assert first == again
    assert len(set(first.values())) == 2


def test_open_file_survives_unlink(fs: Path) -> None:
    with open(fs / "tmp", "w+") as f:
        f.write("scratch")
        f.flush()
        os.unlink(fs / "tmp")
        f.seek(0)
        assert f.read() == "scratch"
    assert not (fs / "tmp").exists()


def test_changes_through_s3_show_after_ttl(fs: Path, s3: Any, bucket: str) -> None:
    from tests.support import wait_for

    (fs / "f").write_text("one")
    s3.put_object(Bucket=bucket, Key="f", Body=b"two, longer")
    wait_for(
        lambda: (fs / "f").read_text() == "two, longer", "new content after the attribute TTL", 10
    )
    s3.put_object(Bucket=bucket, Key="new-from-s3", Body=b"")
    wait_for(lambda: "new-from-s3" in os.listdir(fs), "new key listed after the directory TTL", 10)
    s3.delete_object(Bucket=bucket, Key="f")
    wait_for(lambda: not (fs / "f").exists(), "deleted key gone after the TTL", 10)


def test_mmap_read_and_write(fs: Path, s3: Any, bucket: str) -> None:
    import mmap

    p = fs / "mapped"
    p.write_bytes(b"a" * 10000)
    with open(p, "r+b") as f, mmap.mmap(f.fileno(), 0) as mm:
        assert mm[:3] == b"aaa"
        mm[100:105] = b"HELLO"
        mm.flush()
    assert p.read_bytes()[100:105] == b"HELLO"
    wait_for(lambda: s3_body(s3, bucket, "mapped")[100:105] == b"HELLO", "the mmap write in S3")


def test_replaced_object_gives_estale_to_an_old_handle(fs: Path, s3: Any, bucket: str) -> None:
    size = 9 * 1024 * 1024  # two 8 MiB blocks
    s3.put_object(Bucket=bucket, Key="v", Body=b"1" * size)
    with open(fs / "v", "rb", buffering=0) as f:
        f.seek(size - 10)
        assert f.read(10) == b"1" * 10  # caches the second block only
        s3.put_object(Bucket=bucket, Key="v", Body=b"2" * size)
        f.seek(0)
        with pytest.raises(OSError) as e:
            f.read(10)  # the first block of version 1 is gone: no mixing of versions
        assert e.value.errno == errno.ESTALE
    from tests.support import wait_for

    wait_for(
        lambda: (fs / "v").open("rb").read(10) == b"2" * 10,
        "a new open to read the new version",
        10,
    )


def test_nanosecond_mtime_survives_a_round_trip_through_s3(fs: Path) -> None:
    p = fs / "precise"
    p.write_text("x")
    os.utime(p, ns=(1_700_000_000_123_456_789, 1_700_000_000_123_456_789))
    time.sleep(1.2)  # past the 1 s attribute lifetime, so the stat below reads S3 again
    assert os.stat(p).st_mtime_ns == 1_700_000_000_123_456_789  # re-read from S3 metadata


def test_mtime_moves_at_close_not_at_every_write(fs: Path) -> None:
    p = fs / "growing"
    with open(p, "wb") as f:
        f.write(b"a")
        f.flush()
        first = os.fstat(f.fileno()).st_mtime_ns
        f.write(b"b")
        f.flush()
        assert os.fstat(f.fileno()).st_mtime_ns == first
    assert os.stat(p).st_mtime_ns >= first


def test_a_local_write_that_loses_to_an_s3_write_then_shows_the_s3_version(
    make_mount: Any, bucket: str, s3: Any
) -> None:
    """The race of the test above made certain: fedfs uploads after the S3 write."""
    from tests.support import wait_for

    m = make_mount([(bucket, "user:root")], extra="flush_delay = 1.5")
    f = m.path(bucket, "f")
    f.write_text("one")
    assert f.read_text() == "one"  # the kernel has the local version's pages
    s3.put_object(Bucket=bucket, Key="f", Body=b"two, longer")
    wait_for(lambda: "event=upload-conflict" in m.log_text(), "the conflicting upload", 20)
    wait_for(lambda: f.read_text() == "two, longer", "the store's version after the conflict", 10)
    kept = [k for k in os.listdir(m.path(bucket)) if k.startswith("f.fedfs-conflict-")]
    assert len(kept) == 1 and (m.path(bucket) / kept[0]).read_text() == "one"


def test_rename_of_a_large_directory_keeps_every_byte_and_metadata(
    fs: Path, s3: Any, bucket: str
) -> None:
    """The copies run in parallel; each object arrives with its data and its POSIX metadata."""
    n = 300
    (fs / "big" / "sub").mkdir(parents=True)
    for i in range(n):
        p = fs / "big" / ("sub" if i % 10 == 0 else "") / f"f{i:04d}"
        p.write_bytes(f"file {i}\n".encode() * (i % 40 + 1))
        os.chmod(p, 0o600 + (i % 8) * 0o10)
    os.chown(fs / "big" / "f0001", 4242, 4343)
    r = subprocess.run([*FEDFS, "sync", str(fs)], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    before = {}
    for k in keys(s3, bucket):
        head = s3.head_object(Bucket=bucket, Key=k)
        before[k[len("big/") :]] = (
            s3.get_object(Bucket=bucket, Key=k)["Body"].read(),
            head["Metadata"],
        )
    stats = {name: os.stat(fs / "big" / name)[:6] for name in ("f0001", "f0002", "sub/f0010")}
    os.rename(fs / "big", fs / "moved")
    after = {}
    for k in keys(s3, bucket):
        assert k.startswith("moved/"), k
        head = s3.head_object(Bucket=bucket, Key=k)
        after[k[len("moved/") :]] = (
            s3.get_object(Bucket=bucket, Key=k)["Body"].read(),
            head["Metadata"],
        )
    assert after.keys() == before.keys()
    changed = [k for k in before if k and before[k] != after[k]]  # "" is the marker
    assert changed == []
    for name, st in stats.items():
        now = os.stat(fs / "moved" / name)
        assert (now.st_mode, now.st_uid, now.st_gid) == (st[0], st[4], st[5])


def test_rename_of_a_directory_of_more_than_a_thousand_files(
    fs: Path, s3: Any, bucket: str
) -> None:
    """Old keys are deleted 1,000 at a time (DeleteObjects' limit), the batches in parallel."""
    n = 2100
    s3.put_object(Bucket=bucket, Key="many/", Body=b"", ContentType="application/x-directory")
    with ThreadPoolExecutor(16) as pool:
        list(
            pool.map(
                lambda i: s3.put_object(Bucket=bucket, Key=f"many/f{i:05d}", Body=str(i).encode()),
                range(n),
            )
        )
    os.rename(fs / "many", fs / "moved")
    assert keys(s3, bucket) == sorted(["moved/", *(f"moved/f{i:05d}" for i in range(n))])
    assert len(os.listdir(fs / "moved")) == n
    assert (fs / "moved" / "f02099").read_bytes() == b"2099"
