"""The control socket transport: real Unix sockets, a real trio server, hostile clients.

Each server runs with its own `trio.run` in a background thread; clients are
plain blocking sockets (or `ControlClient`), some of them in processes of
another uid. Waiting is polling with a deadline, never a fixed sleep.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedfs.control.client import ControlClient, ControlError
from fedfs.control.server import ControlServer, Peer
from fedfs.errors import FedfsError
from tests.support import REPO, UnixUser, wait_for

REFUSAL = "bob holds read on /x; sharing needs manage"


class CodedRefusal(FedfsError):
    code = "not-found"


class Recorder:
    """A handler that records who asked what, with a few ops that misbehave on purpose."""

    def __init__(self) -> None:
        self.calls: list[tuple[Peer, str, dict[str, Any]]] = []

    async def __call__(self, peer: Peer, op: str, args: dict[str, Any]) -> Any:
        self.calls.append((peer, op, args))
        if op == "echo":
            return args
        if op == "whoami":
            return {"pid": peer.pid, "uid": peer.uid, "gid": peer.gid}
        if op == "refuse":
            raise FedfsError(REFUSAL)
        if op == "missing":
            raise CodedRefusal("no grant for bob on /x")
        if op == "crash":
            raise RuntimeError("secret internals")
        if op == "not-json":
            return {"when": object()}
        if op == "big":
            return "x" * int(args["size"])
        if op == "hang":
            await trio.sleep_forever()
        raise FedfsError(f"unknown op {op}")


class ServerThread:
    """A ControlServer in its own thread and trio run, stopped by cancelling its nursery."""

    def __init__(self, server: ControlServer) -> None:
        self.server = server
        self.error: BaseException | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._scope: trio.CancelScope | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as e:
            self.error = e
        finally:
            self._started.set()

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        async with trio.open_nursery() as nursery:
            self._scope = nursery.cancel_scope
            await nursery.start(self.server.serve)
            self._started.set()

    def start(self) -> ServerThread:
        self._thread.start()
        assert self._started.wait(10), "the control server did not start within 10 s"
        if self.error is not None:
            raise self.error
        return self

    def in_trio(self, fn: Callable[[], object]) -> None:
        """Run a synchronous function in the server's trio thread."""
        assert self._token is not None
        trio.from_thread.run_sync(fn, trio_token=self._token)

    def stop(self) -> None:
        if self._thread.is_alive() and self._scope is not None:
            with contextlib.suppress(trio.RunFinishedError):
                self.in_trio(self._scope.cancel)
        self.join()

    def join(self) -> None:
        self._thread.join(10)
        assert not self._thread.is_alive(), "the control server did not stop within 10 s"
        if self.error is not None:
            raise self.error


class Raw:
    """A hand-driven client: sends exactly the bytes it is given."""

    opened: list[Raw] = []

    def __init__(self, path: Path, timeout: float = 5.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        Raw.opened.append(self)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def answer(self) -> dict[str, Any] | None:
        """The next answer line as an object; None if the server closed the connection."""
        while b"\n" not in self.buffer:
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                data = b""
            if not data:
                return None
            self.buffer += data
        line, self.buffer = self.buffer.split(b"\n", 1)
        answer = json.loads(line)
        assert isinstance(answer, dict)
        return answer

    def request(self, **request: Any) -> dict[str, Any] | None:
        self.send(json.dumps(request).encode() + b"\n")
        return self.answer()

    def close(self) -> None:
        self.sock.close()


Start = Callable[..., ServerThread]


@pytest.fixture(autouse=True)
def close_raw_clients() -> Iterator[None]:
    yield
    while Raw.opened:
        Raw.opened.pop().close()


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    # Short and world-traversable: sun_path holds 107 bytes, and clients of
    # other uids must reach the socket.
    d = Path(tempfile.mkdtemp(prefix="fedfs-ctl-", dir="/tmp"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def start(sock_dir: Path, recorder: Recorder) -> Iterator[Start]:
    """Start control servers (default path sock_dir/ctl.sock); all are stopped at the end."""
    running: list[ServerThread] = []

    def make(path: Path | None = None, **options: Any) -> ServerThread:
        server = ControlServer(path or sock_dir / "ctl.sock", recorder, **options)
        thread = ServerThread(server)
        running.append(thread)
        return thread.start()

    yield make
    for thread in running:
        thread.stop()


def echo_works(path: Path) -> None:
    with ControlClient(path, timeout=5) as client:
        assert client.call("echo", n=1) == {"n": 1}


def assert_closed_by_server(raw: Raw, within: float) -> None:
    raw.sock.settimeout(within)
    assert raw.answer() is None


def start_fails(server: ControlServer) -> FedfsError:
    async def main() -> None:
        with trio.fail_after(5):  # a server that starts serves forever
            await server.serve()

    with pytest.raises(FedfsError) as caught:
        trio.run(main)
    return caught.value


# --- round trips and identity -------------------------------------------------


def test_request_and_answer_round_trip(start: Start, recorder: Recorder) -> None:
    server = start().server

    with ControlClient(server.path) as client:
        assert client.call("echo", path="/x", level="read") == {"path": "/x", "level": "read"}

    assert recorder.calls == [
        (Peer(os.getpid(), os.getuid(), os.getgid()), "echo", {"path": "/x", "level": "read"})
    ]


def test_one_connection_carries_several_requests(start: Start) -> None:
    server = start().server
    raw = Raw(server.path)

    # Pipelined in one write: the answers come back one per line, in order.
    raw.send(
        b"".join(
            json.dumps({"v": 1, "op": "echo", "args": {"i": i}}).encode() + b"\n" for i in range(3)
        )
    )

    assert [raw.answer() for _ in range(3)] == [
        {"v": 1, "ok": True, "result": {"i": i}} for i in range(3)
    ]
    assert raw.request(v=1, op="echo", args={"i": 3}) == {"v": 1, "ok": True, "result": {"i": 3}}


def test_client_reuses_its_connection(start: Start) -> None:
    thread = start()

    with ControlClient(thread.server.path) as client:
        for i in range(5):
            assert client.call("echo", i=i) == {"i": i}
        assert thread.server.active_connections == 1


def test_args_are_optional_and_named_op_is_allowed(start: Start, recorder: Recorder) -> None:
    server = start().server
    raw = Raw(server.path)

    assert raw.request(v=1, op="echo") == {"v": 1, "ok": True, "result": {}}
    with ControlClient(server.path) as client:
        # `op` is positional-only in call(), so an argument may be named "op".
        assert client.call("echo", op="share") == {"op": "share"}


def test_handler_sees_the_kernels_identity_not_the_requests(
    start: Start, recorder: Recorder, alice: UnixUser
) -> None:
    path = start().server.path
    child = f"""
import json, os, socket, sys
sys.path.insert(0, {str(REPO)!r})
from fedfs.control.client import ControlClient
seen = ControlClient({str(path)!r}, timeout=10).call("whoami", uid=0, user="root", gid=0)
s = socket.socket(socket.AF_UNIX)
s.connect({str(path)!r})
forged = {{"v": 1, "op": "whoami", "uid": 0, "user": "root", "args": {{"uid": 0}}}}
s.sendall(json.dumps(forged).encode() + b"\\n")
raw = json.loads(s.makefile("rb").readline())
print(json.dumps({{"pid": os.getpid(), "client": seen, "raw": raw["result"]}}))
"""
    done = alice.python(child)
    assert done.returncode == 0, done.stderr.decode()
    out = json.loads(done.stdout)

    alice_peer = {"pid": out["pid"], "uid": alice.uid, "gid": alice.gid}
    assert out["client"] == alice_peer
    assert out["raw"] == alice_peer
    assert [peer for peer, _, _ in recorder.calls] == [Peer(**alice_peer)] * 2
    assert recorder.calls[0][2] == {"uid": 0, "user": "root", "gid": 0}


# --- the socket file --------------------------------------------------------------


def test_socket_is_world_connectable_and_owned_by_root(start: Start, sock_dir: Path) -> None:
    path = sock_dir / "run" / "fedfs" / "ctl.sock"
    start(path)

    st = os.lstat(path)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o666
    assert (st.st_uid, st.st_gid) == (0, 0)
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o755


def test_socket_mode_is_configurable(start: Start, sock_dir: Path, alice: UnixUser) -> None:
    path = sock_dir / "private.sock"
    start(path, mode=0o600)

    assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600
    child = f"""
import sys
sys.path.insert(0, {str(REPO)!r})
from fedfs.control.client import ControlClient, ControlError
try:
    ControlClient({str(path)!r}, timeout=10).call("echo")
except ControlError as e:
    print(e.code, e, sep="|")
"""
    done = alice.python(child)
    code, message = done.stdout.decode().strip().split("|")
    assert code == "unreachable"
    assert message.startswith(f"you may not connect to {path}")


def test_stale_socket_is_replaced(start: Start, sock_dir: Path) -> None:
    path = sock_dir / "ctl.sock"
    # What a crashed daemon leaves behind: a socket file nobody listens on.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as left_over:
        left_over.bind(str(path))
    path.chmod(0o600)

    start(path)

    assert stat.S_IMODE(os.lstat(path).st_mode) == 0o666
    echo_works(path)


def test_live_socket_of_another_daemon_is_left_alone(start: Start, sock_dir: Path) -> None:
    path = sock_dir / "ctl.sock"
    start(path)

    error = start_fails(ControlServer(path, Recorder()))

    assert str(error).startswith(f"another process already listens on {path};")
    echo_works(path)


def test_regular_file_at_the_path_is_refused(sock_dir: Path) -> None:
    path = sock_dir / "ctl.sock"
    path.write_text("precious data\n")

    error = start_fails(ControlServer(path, Recorder()))

    assert str(error) == (
        f"{path} exists and is not a socket; fedfs will not delete it."
        " Move it away or choose another control socket path"
    )
    assert path.read_text() == "precious data\n"


def test_overlong_socket_path_is_refused(sock_dir: Path) -> None:
    error = start_fails(ControlServer(sock_dir / ("x" * 120), Recorder()))

    assert "longer than 107 bytes" in str(error)


def test_socket_is_removed_when_serve_is_cancelled(start: Start) -> None:
    thread = start()
    path = thread.server.path
    Raw(path)  # an open connection must not keep serve from ending

    thread.stop()

    assert not path.exists()


def test_close_stops_the_server_and_removes_the_socket(start: Start) -> None:
    thread = start()
    path = thread.server.path
    raw = Raw(path)

    thread.in_trio(thread.server.close)
    thread.join()

    assert not path.exists()
    assert_closed_by_server(raw, within=5)


def test_socket_of_a_newer_daemon_is_not_removed(start: Start, sock_dir: Path) -> None:
    thread = start()
    path = thread.server.path
    # An operator removed our socket and another daemon took the path.
    path.unlink()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as newer:
        newer.bind(str(path))
        newer_inode = os.lstat(path).st_ino

        thread.stop()

        assert os.lstat(path).st_ino == newer_inode


# --- the client -----------------------------------------------------------------


def test_client_says_what_to_do_when_no_daemon_answers(sock_dir: Path) -> None:
    path = sock_dir / "x.sock"

    with pytest.raises(ControlError) as caught:
        ControlClient(path).call("status")

    assert caught.value.code == "unreachable"
    assert str(caught.value) == (
        f"no fedfs daemon answers on {path}; is the mount running? (fedfs status)"
    )


def test_client_gives_up_after_its_timeout(start: Start) -> None:
    server = start().server
    with ControlClient(server.path, timeout=0.3) as client:
        began = time.monotonic()
        with pytest.raises(ControlError) as caught:
            client.call("hang")

        assert caught.value.code == "timeout"
        assert "did not answer 'hang' within 0.3 s" in str(caught.value)
        assert time.monotonic() - began < 3
        # The stuck connection is dropped; the next call gets a fresh one.
        assert client.call("echo", again=True) == {"again": True}


def test_client_reconnects_after_the_server_closed_an_idle_connection(start: Start) -> None:
    server = start(idle_timeout=0.2).server

    with ControlClient(server.path) as client:
        assert client.call("echo", n=1) == {"n": 1}
        wait_for(lambda: server.active_connections == 0, "the idle connection to be closed", 5)
        assert client.call("echo", n=2) == {"n": 2}


# --- handler errors ---------------------------------------------------------------


def test_refusal_reaches_the_client_with_its_reason(start: Start) -> None:
    server = start().server

    with ControlClient(server.path) as client:
        with pytest.raises(ControlError) as caught:
            client.call("refuse")
        assert (caught.value.code, str(caught.value)) == ("refused", REFUSAL)

        with pytest.raises(ControlError) as caught:
            client.call("missing")
        assert (caught.value.code, str(caught.value)) == ("not-found", "no grant for bob on /x")

        assert client.call("echo", still="usable") == {"still": "usable"}


@pytest.mark.parametrize("op", ["crash", "not-json"])
def test_handler_bug_is_logged_and_answered_as_internal(
    start: Start, op: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="fedfs.control.server")
    server = start().server
    raw = Raw(server.path)

    answer = raw.request(v=1, op=op, args={})

    assert answer is not None
    assert answer == {
        "v": 1,
        "ok": False,
        "code": "internal",
        "error": f"the fedfs daemon failed while handling {op!r}; the daemon log has the details",
    }
    assert [r.exc_info is not None for r in caplog.records] == [True]
    assert raw.request(v=1, op="echo", args={"after": op}) == {
        "v": 1,
        "ok": True,
        "result": {"after": op},
    }


# --- hostile input ------------------------------------------------------------------


BAD_REQUESTS = [
    (b"\xff\xfe{}", "not valid UTF-8"),
    (b'{"v": 1, "op": "echo"', "not valid JSON"),
    (b"", "empty"),
    (b"   \r", "empty"),
    (b"[1, 2]", "not an array"),
    (b"42", "not a number"),
    (b'"echo"', "not a string"),
    (b"null", "not null"),
    (b'{"v": 1}', 'has no "op"'),
    (b'{"v": 1, "op": 7}', "has a number"),
    (b'{"v": 1, "op": ["echo"]}', "has an array"),
    (b'{"v": 1, "op": "Echo"}', '"op": "Echo"'),
    (b'{"v": 1, "op": "-echo"}', '"op": "-echo"'),
    (b'{"v": 1, "op": "echo\\n"}', '"op": "echo\\n"'),
    (b'{"v": 1, "op": "' + b"e" * 42 + b'"}', '"op": "eeee'),
    (b'{"v": 1, "op": "echo", "args": [1]}', '"args" must be a JSON object, not an array'),
    (b'{"v": 1, "op": "echo", "args": "x"}', '"args" must be a JSON object, not a string'),
    (b'{"v": 1, "op": "echo", "args": null}', '"args" must be a JSON object, not null'),
    (b'{"v": 1, "op": "echo", "args": {"x": NaN}}', "NaN"),
    (b'{"v": 1, "op": "echo", "args": {"x": ' + b"9" * 5000 + b"}}", "digits"),
    (b"[" * 20000 + b"]" * 20000, "nesting"),
]


@pytest.mark.parametrize(("line", "said"), BAD_REQUESTS, ids=range(len(BAD_REQUESTS)))
def test_bad_request_is_answered_and_connection_stays_usable(
    start: Start, recorder: Recorder, line: bytes, said: str
) -> None:
    server = start(max_line=100_000).server
    raw = Raw(server.path)

    raw.send(line + b"\n")
    answer = raw.answer()

    assert answer is not None
    assert (answer["v"], answer["ok"], answer["code"]) == (1, False, "bad-request")
    assert said in answer["error"]
    assert recorder.calls == []
    assert raw.request(v=1, op="echo", args={"ok": 1}) == {"v": 1, "ok": True, "result": {"ok": 1}}


@pytest.mark.parametrize("version", [2, 0, "1", True, 1.5, None, "missing"])
def test_unknown_version_names_the_supported_one(start: Start, version: Any) -> None:
    server = start().server
    raw = Raw(server.path)
    request: dict[str, Any] = {"op": "echo", "args": {}}
    if version != "missing":
        request["v"] = version

    answer = raw.request(**request)

    assert answer is not None
    assert (answer["ok"], answer["code"]) == (False, "version")
    assert "speaks control protocol version 1;" in answer["error"]


def test_lone_surrogates_are_echoed_as_valid_json(start: Start) -> None:
    raw = Raw(start().server.path)

    raw.send(b'{"v": 1, "op": "echo", "args": {"s": "\\ud800x"}}\n')

    assert raw.answer() == {"v": 1, "ok": True, "result": {"s": "\ud800x"}}


@pytest.mark.parametrize(
    "data",
    [b"{" + b" " * 2000 + b"\n", b"{" + b" " * 100_000],
    ids=["long-line-in-one-piece", "endless-line"],
)
def test_oversized_line_is_refused_and_closed(start: Start, data: bytes) -> None:
    server = start(max_line=1024).server
    raw = Raw(server.path)

    # The server may close before it has read everything: that is the point.
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        raw.send(data)

    assert raw.answer() == {
        "v": 1,
        "ok": False,
        "code": "too-large",
        "error": "the request is longer than 1024 bytes; send one JSON object per line",
    }
    assert_closed_by_server(raw, within=5)
    echo_works(server.path)


def test_line_of_exactly_max_line_bytes_is_accepted(start: Start) -> None:
    server = start(max_line=200).server
    request = json.dumps({"v": 1, "op": "echo", "args": {"pad": ""}}).encode()
    request = request.replace(b'""', b'"' + b"p" * (200 - len(request)) + b'"')
    assert len(request) == 200
    raw = Raw(server.path)

    raw.send(request + b"\n")

    answer = raw.answer()
    assert answer is not None and answer["ok"] is True


def test_slow_client_is_closed_while_others_are_served(start: Start) -> None:
    server = start(idle_timeout=0.5).server
    slow = Raw(server.path, timeout=0.05)
    slow.send(b'{"v": 1, ')
    served = 0
    began = time.monotonic()

    # Trickle a byte now and then, and serve another client between bytes,
    # until the server hangs up on the trickler.
    closed = False
    while not closed and time.monotonic() - began < 5:
        try:
            closed = slow.sock.recv(1) == b""
            if not closed:
                raise AssertionError("the server answered an incomplete line")
        except TimeoutError:
            try:
                slow.send(b" ")
            except (BrokenPipeError, ConnectionResetError):
                closed = True
        except ConnectionResetError:
            closed = True
        echo_works(server.path)
        served += 1
    elapsed = time.monotonic() - began

    assert closed, "the slow client was not closed within 5 s"
    assert 0.45 <= elapsed < 3
    assert served >= 3


def test_idle_connection_is_closed(start: Start) -> None:
    server = start(idle_timeout=0.3).server
    raw = Raw(server.path)
    assert raw.request(v=1, op="echo", args={}) is not None

    began = time.monotonic()
    assert_closed_by_server(raw, within=5)

    assert 0.25 <= time.monotonic() - began < 3
    wait_for(lambda: server.active_connections == 0, "the connection count to drop", 5)


def test_connections_beyond_the_limit_are_told_busy(start: Start) -> None:
    server = start(max_connections=3).server
    holders = [Raw(server.path) for _ in range(3)]
    for holder in holders:  # served, so certainly accepted and counted
        assert holder.request(v=1, op="echo", args={}) is not None

    extra = Raw(server.path)
    assert extra.answer() == {
        "v": 1,
        "ok": False,
        "code": "busy",
        "error": "the fedfs daemon is already serving 3 control connections; try again in a moment",
    }
    assert_closed_by_server(extra, within=5)
    with ControlClient(server.path) as client, pytest.raises(ControlError) as caught:
        client.call("echo")
    assert caught.value.code == "busy"

    holders.pop().close()
    wait_for(lambda: server.active_connections == 2, "a slot to become free", 5)
    echo_works(server.path)


def test_a_user_at_her_limit_still_gets_a_revocation_through(start: Start) -> None:
    server = start(
        max_per_user=2, reserved_ops=frozenset({"echo"}), reserve=1, unlimited_uids=frozenset()
    ).server
    holders = [Raw(server.path) for _ in range(2)]
    for holder in holders:  # served, so certainly accepted and counted
        assert holder.request(v=1, op="echo", args={}) is not None

    busy = Raw(server.path)  # from the reserve: anything but a reserved op is refused
    assert busy.request(v=1, op="status", args={}) == {
        "v": 1,
        "ok": False,
        "code": "busy",
        "error": "you already have 2 connections open to the fedfs daemon (at most 2 per"
        " user); close some, or try again in a moment",
    }
    assert_closed_by_server(busy, within=5)
    wait_for(lambda: server.connections_of(os.getuid()) == 2, "the reserve to free up", 5)
    revoking = Raw(server.path)
    answer = revoking.request(v=1, op="echo", args={"path": "/b/x"})
    assert answer is not None and answer["ok"] is True, answer
    assert_closed_by_server(revoking, within=5)  # one request per reserve connection
    wait_for(lambda: server.connections_of(os.getuid()) == 2, "the reserve to free up", 5)
    # the reserve is bounded: with it in use, one more connection is refused at once
    idle = Raw(server.path)
    wait_for(lambda: server.connections_of(os.getuid()) == 3, "the reserve in use", 5)
    extra = Raw(server.path)
    answer = extra.answer()
    assert answer is not None and answer["code"] == "busy", answer
    idle.close()


def test_abrupt_disconnects_do_not_hurt_the_server(
    start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="fedfs.control.server")
    server = start().server

    Raw(server.path).close()  # connect and vanish
    half = Raw(server.path)
    half.send(b'{"v": 1, "op": "ec')
    half.close()  # vanish mid-request
    greedy = Raw(server.path)
    greedy.send(b'{"v": 1, "op": "big", "args": {"size": 8000000}}\n')
    assert greedy.sock.recv(10)  # the answer has started: far larger than a socket buffer
    greedy.close()  # vanish mid-answer

    wait_for(lambda: server.active_connections == 0, "all connections to end", 5)
    echo_works(server.path)
    assert caplog.records == []


def test_arbitrary_bytes_get_well_formed_answers(start: Start) -> None:
    server = start().server

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        st.one_of(
            st.binary(max_size=300),
            # Valid JSON in the shape of a request, to reach the checks past parsing.
            st.fixed_dictionaries(
                {},
                optional={
                    "v": st.one_of(st.integers(-2, 3), st.text(max_size=3), st.none()),
                    "op": st.one_of(st.text(max_size=45), st.integers()),
                    "args": st.one_of(
                        st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
                        st.lists(st.integers(), max_size=3),
                    ),
                },
            ).map(lambda d: json.dumps(d).encode()),
        )
    )
    def check(data: bytes) -> None:
        raw = Raw(server.path)
        try:
            raw.send(data + b"\n")
            for _ in range(data.count(b"\n") + 1):
                answer = raw.answer()
                if answer is None:
                    break  # closing is an allowed answer; a normal client still works
                assert answer["v"] == 1
                if answer["ok"] is True:
                    assert "result" in answer
                else:
                    assert answer["ok"] is False
                    assert isinstance(answer["error"], str) and answer["error"]
                    assert answer["code"] in {"bad-request", "version", "refused"}
            else:
                assert raw.request(v=1, op="echo", args={"a": 1}) == {
                    "v": 1,
                    "ok": True,
                    "result": {"a": 1},
                }
        finally:
            raw.close()
        echo_works(server.path)

    check()
