"""Hostile input against a running daemon: names, keys, control messages, ACL bytes.

Property-based (hypothesis) against one real mount per test: every input gets
success or a clear errno / error answer, never a crash or a hang, and the daemon
still answers afterwards (and logged no traceback: the `make_mount` fixture checks).
The transport's own fuzzing is in tests/unit/control/test_socket.py, the config file's in
tests/unit/test_config.py and the ACL decoder's in tests/unit/policy/test_acl.py.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import stat
import struct
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedfs.control.client import ControlClient, ControlError
from tests.support import Mount

CHECKS = settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
NAME_ERRNOS = {errno.EINVAL, errno.ENAMETOOLONG, errno.EEXIST}


def alive(m: Mount, root: Path) -> None:
    assert m.proc is not None and m.proc.poll() is None, "the daemon died"
    os.listdir(root)
    with ControlClient(control_socket(m), timeout=10) as c:
        assert c.call("status")["buckets"]


def control_socket(m: Mount) -> str:
    return os.getxattr(m.mountpoint, "user.fedfs.socket").decode()


# -- names through the mount ----------------------------------------------------

# No newline: moto's server answers 404 to a PutObject whose key holds one (real S3
# takes it), so such a name would test moto, not fedfs.
names = st.binary(min_size=1, max_size=300).filter(
    lambda b: b"/" not in b and b"\0" not in b and b"\n" not in b and b not in (b".", b"..")
)


def test_arbitrary_byte_names_through_the_mount(mount: Mount, fs: Path, bucket: str) -> None:
    root = bytes(fs)
    os.close(os.open(root + b"/src", os.O_CREAT | os.O_WRONLY, 0o644))

    @CHECKS
    @given(names, st.sampled_from(["open", "mkdir", "rename"]))
    def check(name: bytes, how: str) -> None:
        path = root + b"/" + name
        try:
            if how == "open":
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))
            elif how == "mkdir":
                os.mkdir(path)
            else:
                os.rename(root + b"/src", path)
        except OSError as e:
            assert e.errno in NAME_ERRNOS, f"{how} {name!r}: {e}"
            utf8 = True
            try:
                name.decode()
            except UnicodeDecodeError:
                utf8 = False
            if e.errno == errno.ENAMETOOLONG:
                assert len(name) > 255
            elif e.errno == errno.EINVAL:
                control = any(b < 0x20 or b == 0x7F for b in name)  # refused (SEMANTICS.md)
                assert not utf8 or control, f"{how} of the valid name {name!r} was refused"
            return
        # it worked: the name is a valid one and is listed as it was given
        assert len(name) <= 255
        assert not any(b < 0x20 or b == 0x7F for b in name), name
        name.decode()
        assert name in os.listdir(root)
        st_ = os.lstat(path)
        if how == "rename":
            os.rename(path, root + b"/src")
        elif stat.S_ISDIR(st_.st_mode):
            os.rmdir(path)
        else:
            os.unlink(path)

    check()
    alive(mount, fs)
    assert sorted(os.listdir(fs)) == ["src"]


# -- keys from the S3 side ------------------------------------------------------

key_parts = st.one_of(
    st.text(min_size=0, max_size=12).filter(lambda t: "\n" not in t),  # see `names`
    st.sampled_from(["", ".", "..", "a", "L" * 256, "x" * 255, "é", "\x7f", " ", "\r"]),
)
keys = st.lists(key_parts, min_size=1, max_size=4).map("/".join)


def valid_name(part: str) -> bool:
    return part not in ("", ".", "..") and len(part.encode()) <= 255 and "\0" not in part


def test_arbitrary_keys_from_s3_list_and_stat_without_harm(
    mount: Mount, fs: Path, s3: Any, bucket: str
) -> None:
    n = 0

    @CHECKS
    @given(st.lists(keys, min_size=1, max_size=5))
    def check(batch: list[str]) -> None:
        nonlocal n
        n += 1
        prefix = f"ex{n}"
        stored = []
        for key in batch:
            try:
                s3.put_object(Bucket=bucket, Key=f"{prefix}/{key}", Body=b"k")
                stored.append(key)
            except (ClientError, ValueError):
                pass  # a key S3 itself refuses (moto: e.g. too long, bad characters)
        shown: list[str] = []
        for dirpath, dirnames, filenames in os.walk(fs / prefix):
            rel = os.path.relpath(dirpath, fs / prefix)
            for name in dirnames + filenames:
                p = Path(dirpath) / name
                os.lstat(p)
                if p.is_file():
                    p.read_bytes()
                shown.append(name if rel == "." else f"{rel}/{name}")
        for path in shown:  # every shown name is a valid POSIX name that some key made
            parts = path.split("/")
            assert all(valid_name(part) for part in parts), path
            if parts[-1] == ".fedfs-shadowed-file":
                continue
            assert any(k == path or k.startswith(path + "/") for k in stored), (path, stored)
        for key in stored:  # every key made only of valid names is shown
            parts = key.split("/")
            if all(valid_name(part) for part in parts):
                assert key in shown or any(s.startswith(key + "/") for s in shown), (key, shown)

    check()
    alive(mount, fs)


# -- the control socket of the real daemon ---------------------------------------


def answers_or_closes(sock_path: str, data: bytes) -> list[dict[str, Any]]:
    """Send data; the answers the daemon gives before it closes or goes quiet (5 s)."""
    got: list[dict[str, Any]] = []
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(sock_path)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        buf = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            buf += chunk
        for line in buf.splitlines():
            answer = json.loads(line)
            assert answer["v"] == 1 and isinstance(answer["ok"], bool), answer
            if not answer["ok"]:
                assert isinstance(answer["error"], str) and answer["error"], answer
                assert answer["code"] != "internal", answer  # a handler bug
            got.append(answer)
    return got


OPS = [
    "share",
    "unshare",
    "grants",
    "team-create",
    "team-add",
    "team-remove",
    "team-show",
    "team-list",
    "sync",
    "pending",
    "stage",
    "status",
    "audit-verify",
    "audit-who",
    "audit-user",
    "audit-expiring",
    "audit-orphans",
    "audit-log",
    "no-such-op",
]
json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=False),
        st.text(max_size=30),
        st.sampled_from(["/", "/..", "user:root", "team:x", "manage", "read", "../../etc"]),
    ),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)


def test_arbitrary_requests_to_every_op_of_the_real_daemon(
    make_mount: Any, bucket: str, alice: Any
) -> None:
    m: Mount = make_mount([(bucket, f"user:{alice.name}")])
    path = control_socket(m)

    @CHECKS
    @given(
        st.sampled_from(OPS),
        st.dictionaries(
            st.sampled_from(
                [
                    *("path", "paths", "principal", "level", "expires", "name", "users"),
                    *("owner", "group", "within", "since", "actor", "x"),
                ]
            ),
            json_values,
            max_size=5,
        ),
    )
    def check(op: str, args: dict[str, Any]) -> None:
        line = json.dumps({"v": 1, "op": op, "args": args}).encode() + b"\n"
        assert len(answers_or_closes(path, line)) == 1

    check()
    alive(m, m.path(bucket))


def test_arbitrary_bytes_truncated_and_oversized_messages(mount: Mount, fs: Path) -> None:
    path = control_socket(mount)

    @CHECKS
    @given(st.binary(max_size=400))
    def check(data: bytes) -> None:
        answers_or_closes(path, data + b"\n")

    check()
    # truncated: half a request, then the client goes away
    assert answers_or_closes(path, b'{"v": 1, "op": "sta') == []
    # oversized: far past the line limit, answered with a reason, then closed
    got = answers_or_closes(path, b'{"v": 1, "op": "status", "args": {"x": "' + b"y" * 200_000)
    assert [a["code"] for a in got] == ["too-large"], got
    alive(mount, fs)


def test_slow_client_does_not_block_another(mount: Mount, fs: Path) -> None:
    path = control_socket(mount)
    request = b'{"v": 1, "op": "status", "args": {}}\n'
    slow_answer: list[bytes] = []

    def trickle() -> None:  # one byte per 100 ms
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(30)
            s.connect(path)
            for i in range(len(request)):
                s.sendall(request[i : i + 1])
                time.sleep(0.1)
            with contextlib.suppress(OSError):
                slow_answer.append(s.recv(65536))

    slow = threading.Thread(target=trickle)
    slow.start()
    served = 0
    while slow.is_alive():
        with ControlClient(path, timeout=5) as c:  # each call would time out if blocked
            assert c.call("status")["buckets"]
        served += 1
        time.sleep(0.05)
    slow.join()
    assert served >= 10, f"only {served} requests were served beside the slow client"
    # the slow but complete request was answered (or closed at the line deadline)
    if slow_answer and slow_answer[0]:
        assert json.loads(slow_answer[0].splitlines()[0])["ok"] is True


def test_many_idle_connections_do_not_lock_others_out(mount: Mount, fs: Path) -> None:
    path = control_socket(mount)
    idle = []
    try:
        for _ in range(80):  # more than the connection limit
            s = socket.socket(socket.AF_UNIX)
            s.connect(path)
            idle.append(s)
        with ControlClient(path, timeout=5) as c:
            try:
                c.call("status")
            except ControlError as e:  # told to come back: an answer, not a hang
                assert e.code == "busy", e
    finally:
        for s in idle:
            s.close()
    with ControlClient(path, timeout=15) as c:
        for _ in range(50):
            try:
                assert c.call("status")["buckets"]
                break
            except ControlError as e:
                assert e.code == "busy", e
                time.sleep(0.1)
        else:
            pytest.fail("the daemon stayed busy after the idle clients left")
    alive(mount, fs)


# -- ACL bytes --------------------------------------------------------------------

ACL = "system.posix_acl_access"
ACL_ERRNOS = {errno.EINVAL, errno.EPERM, errno.ENOTSUP, errno.E2BIG, errno.ERANGE}


def acl_bytes(entries: list[tuple[int, int, int]], version: int = 2) -> bytes:
    return struct.pack("<I", version) + b"".join(struct.pack("<HHI", *e) for e in entries)


plausible_acls = st.builds(
    acl_bytes,
    st.lists(
        st.tuples(
            st.sampled_from([0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0xFFFF]),
            st.integers(0, 0xFFFF),
            st.sampled_from([0, 1, 2901, 2902, 65534, 2**31, 2**32 - 1]),
        ),
        max_size=8,
    ),
    st.sampled_from([2, 2, 2, 1, 0, 3]),
)


def test_arbitrary_acl_xattr_bytes(mount: Mount, fs: Path, alice: Any) -> None:
    f = fs / "file"
    f.write_bytes(b"content")
    d = fs / "dir"
    d.mkdir()

    @CHECKS
    @given(st.one_of(st.binary(max_size=120), plausible_acls), st.booleans())
    def check(data: bytes, on_dir: bool) -> None:
        target = d if on_dir else f
        try:
            os.setxattr(target, ACL, data)
        except OSError as e:
            assert e.errno in ACL_ERRNOS, f"{data!r}: {e}"
        # whatever happened, the ACL reads back as valid bytes and the file is intact
        with contextlib.suppress(OSError):
            back = os.getxattr(target, ACL)
            assert len(back) >= 4 and (len(back) - 4) % 8 == 0
        assert f.read_bytes() == b"content"

    check()
    alive(mount, fs)
