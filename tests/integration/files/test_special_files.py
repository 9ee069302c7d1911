"""FIFOs, sockets and device nodes: stored as empty objects that s3fs reads the same.

Programs create them in working directories (pipeline FIFOs, tmux and ssh
control sockets). The kernel serves FIFO and socket I/O itself; the mount is
nodev, so a device node is kept but never opens a device.
"""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support import Mount, UnixUser

ATIME = 1_000_000_000_123_456_789
MTIME = 1_100_000_000_987_654_321


def kinds(d: Path) -> dict[str, tuple[str, int, int]]:
    out = {}
    for name in sorted(os.listdir(d)):
        st = os.lstat(d / name)
        kind = stat.filemode(st.st_mode)[0]
        out[name] = (kind, stat.S_IMODE(st.st_mode), st.st_rdev)
    return out


def fifo_carries(user: UnixUser, fifo: Path) -> bytes:
    """A writer and a reader process, of user, meet in the FIFO."""
    writer = subprocess.Popen(
        ["sh", "-c", f"printf 'through the pipe\\n' > '{fifo}'"],
        user=user.uid,
        group=user.gid,
        extra_groups=[],
    )
    got = user.run("timeout", "20", "cat", fifo).stdout
    assert writer.wait(20) == 0
    return got


def bind_socket(user: UnixUser, d: Path, name: str) -> None:
    # bind() paths are limited to 108 bytes: bind relative to the directory.
    code = (
        f"import os, socket\nos.chdir({str(d)!r})\nsocket.socket(socket.AF_UNIX).bind({name!r})\n"
    )
    r = user.run(sys.executable, "-c", code)
    assert r.returncode == 0, r.stderr


def test_fifo_socket_and_device_nodes(
    make_mount: Any, bucket: str, s3: Any, alice: UnixUser, bob: UnixUser, s3fs_mount: Any
) -> None:
    m: Mount = make_mount([(bucket, f"user:{alice.name}")])
    d = m.path(bucket)
    r = alice.run("mkfifo", "-m", "640", d / "pipe")
    assert r.returncode == 0, r.stderr
    bind_socket(alice, d, "ctl.sock")
    os.mknod(d / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # root: CAP_MKNOD
    os.chmod(d / "null", 0o666)  # past the umask
    os.mknod(d / "disk", 0o600 | stat.S_IFBLK, os.makedev(8, 1))
    r = alice.run("mknod", d / "hers", "c", "1", "3")  # the kernel: needs CAP_MKNOD
    assert r.returncode != 0 and b"Operation not permitted" in r.stderr

    assert fifo_carries(alice, d / "pipe") == b"through the pipe\n"
    # nodev: the device node is kept, but does not open the device
    with pytest.raises(PermissionError):
        os.open(d / "null", os.O_WRONLY)
    assert (
        b"nodev"
        in subprocess.run(
            ["findmnt", "-no", "OPTIONS", str(m.mountpoint)], capture_output=True, check=True
        ).stdout
    )

    # chmod, chown, rename, times, unlink
    assert alice.run("chmod", "600", d / "pipe").returncode == 0
    os.chown(d / "null", bob.uid, bob.gid)
    assert alice.run("mv", d / "ctl.sock", d / "moved.sock").returncode == 0
    os.utime(d / "pipe", ns=(ATIME, MTIME))
    st = os.stat(d / "pipe")
    assert (st.st_atime_ns, st.st_mtime_ns) == (ATIME, MTIME)
    assert alice.run("rm", d / "disk").returncode == 0
    with pytest.raises(OSError) as e:
        os.link(d / "pipe", d / "hard")
    assert e.value.errno == errno.EPERM

    sock_mode = kinds(d)["moved.sock"][1]  # bind() takes 0777 less the umask
    want = {
        "moved.sock": ("s", sock_mode, 0),
        "null": ("c", 0o666, os.makedev(1, 3)),
        "pipe": ("p", 0o600, 0),
    }
    assert kinds(d) == want
    assert os.stat(d / "null").st_uid == bob.uid
    head = s3.head_object(Bucket=bucket, Key="null")
    assert head["ContentLength"] == 0
    assert head["Metadata"]["mode"] == str(stat.S_IFCHR | 0o666)
    assert head["Metadata"]["rdev"] == str(os.makedev(1, 3))

    m.stop()
    m.start()
    assert kinds(d) == want
    st = os.stat(d / "pipe")
    assert (st.st_atime_ns, st.st_mtime_ns) == (ATIME, MTIME)
    assert fifo_carries(alice, d / "pipe") == b"through the pipe\n"

    # s3fs shows the same types and modes (it keeps no device number)
    seen = kinds(s3fs_mount())
    assert {n: (k, mode) for n, (k, mode, _) in seen.items()} == {
        n: (k, mode) for n, (k, mode, _) in want.items()
    }
    assert alice.run("rm", d / "moved.sock", d / "pipe").returncode == 0
    assert sorted(os.listdir(d)) == ["null"]
