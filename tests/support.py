"""Helpers the integration tests share: real S3 servers, mounts and users.

Everything here starts real things: moto's S3 server as a process on
loopback, `fedfs mount --foreground` as a process, and commands run under
other uids. Waiting is polling with a deadline, never a fixed sleep.
"""

from __future__ import annotations

import collections
import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import boto3

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[1]
FEDFS = [sys.executable, "-m", "fedfs.cli"]
KEY = "testing"


def wait_for(probe: Callable[[], T], what: str, timeout: float = 30.0, interval: float = 0.05) -> T:
    """Call probe until it returns something truthy; fail with `what` after timeout."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
            if last:
                return last
        except AssertionError:
            raise  # the probe knows it can never succeed
        except Exception as e:
            last = e
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MotoServer:
    """moto's S3 server as a separate process on 127.0.0.1."""

    def __init__(
        self, port: int | None = None, log: Path | None = None, env: dict[str, str] | None = None
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.env = env or {}  # e.g. INITIAL_NO_AUTH_ACTION_COUNT=0: moto checks credentials
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> MotoServer:
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=out,
            stderr=out,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **self.env},
        )
        wait_for(self._answers, f"moto server on {self.url}")
        return self

    def _answers(self) -> bool:
        try:
            urllib.request.urlopen(self.url + "/moto-api/", timeout=1)
        except OSError as e:
            return bool(getattr(e, "code", None))
        return True

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id=KEY,
            aws_secret_access_key=KEY,
        )


def write_config(
    path: Path,
    endpoint: str,
    buckets: list[tuple[str, str]],
    cache_dir: Path,
    extra: str = "",
    store_extra: str = "",
    socket: Path | None = None,
    top: str = "",
    policy_extra: str = "",
    keys: tuple[str, str] = (KEY, KEY),
) -> Path:
    """A mount config; state and the site policy dir sit beside the cache dir."""
    state = cache_dir.with_name(cache_dir.name + "-state")
    socket = socket or Path(f"/tmp/fedfs-sock-{os.getpid()}-{abs(hash(str(path))) % 10**8}.sock")
    lines = [
        top,
        "[policy]",
        f'state_dir = "{state}"',
        f'site_dir = "{state}-site"',
        policy_extra,
        "[control]",
        f'socket = "{socket}"',
        "[store]",
        f'endpoint = "{endpoint}"',
        f'access_key = "{keys[0]}"',
        f'secret_key = "{keys[1]}"',
        "connect_timeout = 2",
        "read_timeout = 60",
        "max_attempts = 3",
        store_extra,
        "[cache]",
        *(
            line
            for key, line in (
                ("dir", f'dir = "{cache_dir}"'),
                ("size", 'size = "4GiB"'),
                ("flush_delay", "flush_delay = 0.2"),
            )
            if not any(
                x.strip().startswith(key + " ") or x.strip().startswith(key + "=")
                for x in extra.splitlines()
            )
        ),
        extra,
    ]
    for name, owner in buckets:
        lines += ["[[buckets]]", f'name = "{name}"', f'owner = "{owner}"']
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class Mount:
    """A running `fedfs mount --foreground` process and its mount point."""

    config: Path
    mountpoint: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0, env: dict[str, str] | None = None) -> Mount:
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        logf = open(self.log, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                *FEDFS,
                "mount",
                "--foreground",
                "--log-level",
                os.environ.get("FEDFS_TEST_LOG_LEVEL", "INFO"),
                "--config",
                str(self.config),
                str(self.mountpoint),
            ],
            stdout=logf,
            stderr=logf,
            stdin=subprocess.DEVNULL,
            cwd=REPO,
            env={**os.environ, **env} if env else None,
        )

        def mounted() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(
                    f"fedfs mount exited with {self.proc.returncode}:\n{self.log_text()}"
                )
            return os.path.ismount(self.mountpoint)

        wait_for(mounted, f"mount on {self.mountpoint}", timeout)
        return self

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self, timeout: float = 120.0) -> int:
        """Unmount with `fedfs umount` and wait for the daemon to exit; its exit code."""
        if self.proc is None:
            return 0
        if os.path.ismount(self.mountpoint):
            subprocess.run(
                [*FEDFS, "umount", "--wait", "120", str(self.mountpoint)], cwd=REPO, check=False
            )
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.proc = None
        return code

    def kill(self) -> None:
        """SIGKILL the daemon (a crash) and clear the dead mount."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self.proc = None
        subprocess.run(
            ["fusermount3", "-uz", str(self.mountpoint)], check=False, capture_output=True
        )

    def path(self, *parts: str) -> Path:
        return self.mountpoint.joinpath(*parts)


@dataclass(frozen=True)
class UnixUser:
    name: str
    uid: int
    gid: int
    groups: tuple[int, ...] = ()  # supplementary groups its processes get (none by default)

    def in_groups(self, *gids: int) -> UnixUser:
        """The same user, whose processes also run in these groups (as after a login)."""
        return UnixUser(self.name, self.uid, self.gid, tuple(gids))

    def run(
        self, *cmd: str | Path, check: bool = False, input: bytes | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        """Run a command as this user (its own uid, gid and only the groups in `groups`)."""
        return subprocess.run(
            [str(c) for c in cmd],
            user=self.uid,
            group=self.gid,
            extra_groups=list(self.groups),
            capture_output=True,
            check=check,
            input=input,
            env={"PATH": "/usr/bin:/bin", "HOME": "/tmp", "LC_ALL": "C"},
        )

    def python(self, code: str) -> subprocess.CompletedProcess[bytes]:
        """Run a Python snippet as this user; it may print results and exit non-zero."""
        return self.run(sys.executable, "-c", code)


def ensure_user(name: str, uid: int) -> UnixUser:
    """A local account for permission tests (created once, kept between runs)."""
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--uid",
                str(uid),
                "--user-group",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                name,
            ],
            check=True,
        )
        pw = pwd.getpwnam(name)
    return UnixUser(name, pw.pw_uid, pw.pw_gid)


def ensure_group(name: str, gid: int, members: list[UnixUser]) -> int:
    """A local group with (at least) these members, created once and kept between runs."""
    import grp

    try:
        grp.getgrnam(name)
    except KeyError:
        subprocess.run(["groupadd", "--gid", str(gid), name], check=True)
    for member in members:
        if member.name not in grp.getgrnam(name).gr_mem:
            subprocess.run(["usermod", "--append", "--groups", name, member.name], check=True)
    return grp.getgrnam(name).gr_gid


def which_fusermount() -> str:
    tool = shutil.which("fusermount3")
    assert tool, "fusermount3 is missing: run scripts/install"
    return tool


def s3_operation(method: str, path: str) -> tuple[str, str]:
    """(bucket, "OPERATION what") of one path-style S3 request, e.g. ("ctl", "LIST policy/events/")."""
    split = urllib.parse.urlsplit(path)
    bucket, _, key = urllib.parse.unquote(split.path).lstrip("/").partition("/")
    query = urllib.parse.parse_qs(split.query, keep_blank_values=True)
    for sub in ("policy", "acl", "uploads", "uploadId", "delete", "tagging"):
        if sub in query:
            return bucket, f"{method} ?{sub} {key}".rstrip()
    if method == "GET" and not key:
        return bucket, f"LIST {query.get('prefix', [''])[0]}"
    return bucket, f"{method} {key}"


class TcpProxy:
    """A loopback TCP proxy in front of a server, to cut, slow down and restore it.

    cut(): stop listening and drop every connection (clients see refused
    connections); restore(): listen again on the same port. delay: seconds
    added before each forwarded chunk (a slow server).
    """

    def __init__(self, target_port: int, port: int | None = None) -> None:
        import threading

        self.target_port = target_port
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.delay = 0.0
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []

    def start(self) -> TcpProxy:
        import threading

        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", self.port))
        ls.listen(64)
        self._listener = ls
        t = threading.Thread(target=self._accept, args=(ls,), daemon=True)
        t.start()
        return self

    def _accept(self, ls: socket.socket) -> None:
        import threading

        while True:
            try:
                client, _ = ls.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                if self.delay:
                    time.sleep(self.delay)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        if self._listener is not None:
            # shutdown wakes the thread blocked in accept(); close alone would not
            # stop the kernel from accepting on it.
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
                c.close()
            except OSError:
                pass

    def restore(self) -> None:
        self.start()

    def stop(self) -> None:
        self.cut()


class ThrottlingProxy:
    """An HTTP reverse proxy in front of an S3 server that answers 503 SlowDown to some requests.

    Each request is throttled with probability `fraction` (seeded, so a run can be
    repeated), but never twice in a row for the same method and path: like a store
    under load, it lets a client that backs off through, so every request succeeds
    within botocore's retries. `throttled` counts the 503s sent.
    """

    SLOW_DOWN = (
        b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
        b"<Message>Please reduce your request rate.</Message></Error>"
    )
    INVALID_ARGUMENT = (
        b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InvalidArgument</Code>'
        b"<Message>The object key is not accepted.</Message></Error>"
    )

    def __init__(
        self,
        target_port: int,
        fraction: float = 0.3,
        seed: int = 1,
        refuse: Callable[[str, str], bool] | None = None,
    ) -> None:
        """refuse(method, path): requests answered 400 InvalidArgument, every time (a key the
        store never accepts); `refused` counts them."""
        import random
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.target_port = target_port
        self.fraction = fraction
        self.throttled = 0
        self.forwarded = 0
        self.refuse = refuse
        self.refused = 0
        self.requests: list[tuple[str, str]] = []  # (method, path) of each request forwarded
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._last_throttled: set[tuple[str, str]] = set()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    out = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0], 16)
                        chunk = self.rfile.read(size + 2)[:size]
                        if not size:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return out
                        out += chunk
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _handle(self) -> None:
                import http.client

                body = self._body()
                if proxy.refuse is not None and proxy.refuse(self.command, self.path):
                    proxy.refused += 1
                    self.send_response(400, "Bad Request")
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(proxy.INVALID_ARGUMENT)))
                    self.end_headers()
                    self.wfile.write(proxy.INVALID_ARGUMENT)
                    return
                if proxy._throttle(self.command, self.path + self.headers.get("Range", "")):
                    self.send_response(503, "Slow Down")
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(proxy.SLOW_DOWN)))
                    self.end_headers()
                    self.wfile.write(proxy.SLOW_DOWN)
                    return
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() not in ("transfer-encoding", "connection", "content-length")
                }
                headers["Content-Length"] = str(len(body))
                up = http.client.HTTPConnection("127.0.0.1", proxy.target_port, timeout=60)
                try:
                    up.request(self.command, self.path, body=body, headers=headers)
                    resp = up.getresponse()
                    data = resp.read()
                    self.send_response(resp.status, resp.reason)
                    for k, v in resp.getheaders():
                        if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                            self.send_header(k, v)
                    length = resp.getheader("Content-Length") if self.command == "HEAD" else None
                    self.send_header("Content-Length", length or str(len(data)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                finally:
                    up.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _throttle(self, method: str, path: str) -> bool:
        with self._lock:
            key = (method, path)
            if key not in self._last_throttled and self._rng.random() < self.fraction:
                self._last_throttled.add(key)
                self.throttled += 1
                return True
            self._last_throttled.discard(key)
            self.forwarded += 1
            self.requests.append(key)
            return False

    def start(self) -> ThrottlingProxy:
        self._thread.start()
        return self

    def take(self) -> list[tuple[str, str]]:
        """(method, path) of the requests forwarded since the last take()."""
        with self._lock:
            taken, self.requests = self.requests, []
        return taken

    def counted(self, bucket: str | None = None) -> collections.Counter[str]:
        """The requests forwarded so far, as S3 operations ("LIST prefix", "GET key", ...),
        of one bucket or all; taken, so the next call counts from here."""
        found: collections.Counter[str] = collections.Counter()
        for method, path in self.take():
            b, op = s3_operation(method, path)
            if bucket is None or b == bucket:
                found[op] += 1
        return found

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class CountingProxy(ThrottlingProxy):
    """An HTTP reverse proxy in front of an S3 server that counts what each client sends
    (one per daemon gives each node's requests); `counted()` says what was sent."""

    def __init__(self, target_port: int) -> None:
        super().__init__(target_port, fraction=0.0)
