"""Keys that cannot be POSIX names, shadowed files, and interop with plain S3 and s3fs."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.files.test_posix_ops import in_s3, keys, keys_become
from tests.support import Mount, UnixUser, wait_for

SHADOW = ".fedfs-shadowed-file"


def test_unrepresentable_keys_are_hidden_and_logged_once(
    make_mount: Any, s3: Any, bucket: str
) -> None:
    long_name = "L" * 256
    good = ["ok.txt", "dir/inner.txt", "x" * 255]
    bad = ["a//b", "./dot", "up/../y", long_name, f"deep/{long_name}/z"]
    for k in good + bad:
        s3.put_object(Bucket=bucket, Key=k, Body=b"1")
    m = make_mount([(bucket, "user:root")])
    root = m.path(bucket)
    for _ in range(2):  # listed twice, logged once
        names = sorted(os.listdir(root))
        assert names == sorted(["ok.txt", "dir", "x" * 255, "a", "up", "deep"])
        assert os.listdir(root / "a") == []  # "a//b" has an empty component
        assert os.listdir(root / "up") == []
        assert os.listdir(root / "deep") == []
        time.sleep(1.1)  # past the directory TTL, so the second round lists S3 again
    log = m.log_text()
    # what is hidden is logged: the key, or the prefix that hides all keys below it
    for k in ("a//", "up/../", "./", long_name, f"deep/{long_name}/"):
        assert log.count(f"/{k!r} is not shown") == 1, (
            f"{k!r} should be logged exactly once:\n{log}"
        )
    assert set(keys(s3, bucket)) == set(good + bad)  # nothing was changed


def test_impossible_names_are_refused_and_change_nothing(fs: Path, s3: Any, bucket: str) -> None:
    with pytest.raises(OSError) as e:
        (fs / ("n" * 256)).write_text("x")
    assert e.value.errno == errno.ENAMETOOLONG
    with pytest.raises(OSError) as e:
        os.mkdir(bytes(fs) + b"/bad\xff")
    assert e.value.errno == errno.EINVAL
    with pytest.raises(OSError) as e:
        os.open(bytes(fs) + b"/bad\xfe", os.O_CREAT | os.O_WRONLY)
    assert e.value.errno == errno.EINVAL
    (fs / "ok").write_text("x")
    with pytest.raises(OSError) as e:
        os.rename(fs / "ok", bytes(fs) + b"/\xc3\x28")
    assert e.value.errno == errno.EINVAL
    keys_become(s3, bucket, ["ok"])


def test_file_shadowed_by_prefix_stays_reachable(fs: Path, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="foo", Body=b"the file foo")
    s3.put_object(Bucket=bucket, Key="foo/bar", Body=b"bar")
    assert os.listdir(fs) == ["foo"]
    assert (fs / "foo").is_dir()
    assert sorted(os.listdir(fs / "foo")) == [SHADOW, "bar"]
    assert (fs / "foo" / SHADOW).read_bytes() == b"the file foo"
    with pytest.raises(OSError) as e:
        os.rmdir(fs / "foo")  # the directory still holds the shadowed file
    assert e.value.errno == errno.ENOTEMPTY
    os.unlink(fs / "foo" / SHADOW)
    assert sorted(os.listdir(fs / "foo")) == ["bar"]
    assert "foo" not in keys(s3, bucket)


def test_file_written_by_fedfs_reads_back_through_s3(fs: Path, s3: Any, bucket: str) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    (fs / "sub").mkdir()
    (fs / "sub" / "blob").write_bytes(data)
    os.chmod(fs / "sub" / "blob", 0o640)
    in_s3(s3, bucket, "sub/blob", data)
    meta = s3.head_object(Bucket=bucket, Key="sub/blob")["Metadata"]
    # s3fs's metadata names: mode is st_mode in decimal, mtime in seconds
    assert int(meta["mode"]) == stat.S_IFREG | 0o640
    assert (meta["uid"], meta["gid"]) == ("0", "0")
    assert abs(int(meta["mtime"]) - time.time()) < 300


def test_s3fs_written_objects_show_their_metadata(fs: Path, s3: Any, bucket: str) -> None:
    s3.put_object(
        Bucket=bucket,
        Key="s3fs-file",
        Body=b"from s3fs",
        Metadata={
            "mode": str(stat.S_IFREG | 0o600),
            "uid": "1000",
            "gid": "1001",
            "mtime": "1500000000",
        },
    )
    s3.put_object(
        Bucket=bucket,
        Key="s3fs-dir/",
        Body=b"",
        ContentType="application/x-directory",
        Metadata={"mode": str(stat.S_IFDIR | 0o750), "uid": "1000", "gid": "1001"},
    )
    s3.put_object(
        Bucket=bucket,
        Key="s3fs-link",
        Body=b"s3fs-file",
        Metadata={"mode": str(stat.S_IFLNK | 0o777)},
    )
    st = os.stat(fs / "s3fs-file")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, int(st.st_mtime)) == (
        0o600,
        1000,
        1001,
        1500000000,
    )
    st = os.stat(fs / "s3fs-dir")
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o750 and st.st_uid == 1000
    assert os.readlink(fs / "s3fs-link") == "s3fs-file"


def test_objects_without_metadata_belong_to_the_bucket_owner(
    make_mount: Any, s3: Any, bucket: str, alice: UnixUser
) -> None:
    s3.put_object(Bucket=bucket, Key="plain/data.csv", Body=b"a,b\n")
    m: Mount = make_mount([(bucket, f"user:{alice.name}")])
    root = m.path(bucket)
    for p, mode in ((root, 0o775), (root / "plain", 0o775), (root / "plain" / "data.csv", 0o664)):
        st = os.stat(p)
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (alice.uid, alice.gid, mode), p


def test_listing_10000_objects_is_complete(fs: Path, s3: Any, bucket: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    names = [f"obj-{i:05d}" for i in range(10_000)]

    def put(chunk: list[str]) -> None:
        for n in chunk:
            s3.put_object(Bucket=bucket, Key=f"big/{n}", Body=b"")

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, [names[i::16] for i in range(16)]))
    listed = os.listdir(fs / "big")
    assert len(listed) == 10_000
    assert sorted(listed) == names
    # and every entry answers stat (what ls -l does)
    assert all(e.stat().st_size == 0 for e in os.scandir(fs / "big"))


def test_one_gib_file_round_trips(make_mount: Any, bucket: str, s3: Any) -> None:
    m: Mount = make_mount([(bucket, "user:root")])
    path = m.path(bucket, "one-gib")
    h_written = hashlib.sha256()
    block = os.urandom(8 * 1024 * 1024)
    with open(path, "wb") as f:
        for i in range(128):
            chunk = bytes([i]) + block[1:]  # every 8 MiB differs, so misplaced blocks are caught
            f.write(chunk)
            h_written.update(chunk)
    assert path.stat().st_size == 1024**3
    import subprocess

    from tests.support import FEDFS, REPO

    sync = subprocess.run([*FEDFS, "sync", str(path)], capture_output=True, text=True, cwd=REPO)
    assert sync.returncode == 0, sync.stderr
    body = s3.get_object(Bucket=bucket, Key="one-gib")["Body"]
    h_s3 = hashlib.sha256()
    for chunk in iter(lambda: body.read(8 * 1024 * 1024), b""):
        h_s3.update(chunk)
    assert h_s3.hexdigest() == h_written.hexdigest()
    m.stop()
    # a second mount with an empty cache: the read below comes from S3 (ranged GETs)
    cold: Mount = make_mount([(bucket, "user:root")], name="cold")
    h_read = hashlib.sha256()
    with open(cold.path(bucket, "one-gib"), "rb") as f:
        for chunk in iter(lambda: f.read(8 * 1024 * 1024), b""):
            h_read.update(chunk)
    assert h_read.hexdigest() == h_written.hexdigest()


def test_interop_with_real_s3fs_both_ways(fs: Path, s3fs_mount: Any, s3: Any, bucket: str) -> None:
    (fs / "from-fedfs").write_bytes(b"written by fedfs\n")
    os.chmod(fs / "from-fedfs", 0o640)
    os.mkdir(fs / "dir-fedfs", 0o750)
    os.symlink("from-fedfs", fs / "link-fedfs")
    in_s3(s3, bucket, "from-fedfs", b"written by fedfs\n")
    wait_for(
        lambda: (
            s3.head_object(Bucket=bucket, Key="from-fedfs")["Metadata"]["mode"] == str(0o100640)
        ),
        "mode",
    )
    other = s3fs_mount()
    st = os.stat(other / "from-fedfs")
    assert stat.S_IMODE(st.st_mode) == 0o640 and stat.S_ISREG(st.st_mode)
    assert (other / "from-fedfs").read_bytes() == b"written by fedfs\n"
    assert stat.S_IMODE(os.stat(other / "dir-fedfs").st_mode) == 0o750
    assert os.readlink(other / "link-fedfs") == "from-fedfs"

    (other / "from-s3fs").write_bytes(b"written by s3fs\n")
    os.chmod(other / "from-s3fs", 0o604)
    os.chown(other / "from-s3fs", 4321, 8765)
    os.mkdir(other / "dir-s3fs", 0o711)  # s3fs stores directory modes without S_IFDIR
    os.symlink("from-s3fs", other / "link-s3fs")
    st = os.stat(fs / "from-s3fs")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o604, 4321, 8765)
    assert (fs / "from-s3fs").read_bytes() == b"written by s3fs\n"
    st = os.stat(fs / "dir-s3fs")
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o711
    assert os.readlink(fs / "link-s3fs") == "from-s3fs"
