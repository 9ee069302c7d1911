"""The control socket: how `fedfs share ...` commands reach the running daemon.

This module owns the transport only: JSON lines over a Unix stream socket,
the caller's identity (SO_PEERCRED, never a field of the request), and the
rules that keep a root daemon safe from every local user (line size, idle
deadline, connection limit, malformed input). What a request *means* is
decided by the handler the daemon plugs into `ControlServer`.

Protocol, one line each way, a connection may carry several requests:

    -> {"v": 1, "op": "share-add", "args": {"path": "/x", "who": "bob"}}
    <- {"v": 1, "ok": true, "result": ...}
    <- {"v": 1, "ok": false, "error": "<a sentence for a person>", "code": "refused"}

Codes the transport itself answers with: "bad-request", "version",
"too-large", "busy", "internal"; a `FedfsError` from the handler gives its
`code` attribute, or "refused". The client adds "unreachable", "timeout",
"disconnected" and "protocol" for failures on its side.

Concurrency: `ControlServer.serve` runs in the daemon's trio nursery and owns
a nursery with one task per connection. Requests on one connection are
handled one after another; different connections call the handler
concurrently, so the handler must be safe for that. All server state is
touched only from the trio thread (call `close()` there, or through
`trio.from_thread.run_sync`). `ControlClient` is blocking and used by one
thread at a time.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import select
import socket
import stat
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import trio

from fedfs.errors import FedfsError

log = logging.getLogger(__name__)

__all__ = [
    "PROTOCOL_VERSION",
    "SUPPORTED_VERSIONS",
    "ControlClient",
    "ControlError",
    "ControlServer",
    "Handler",
    "Peer",
]

PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS = (1,)

_NAME = re.compile(r"[a-z][a-z0-9-]{0,40}")
# struct ucred {pid_t pid; uid_t uid; gid_t gid;}: uid and gid are unsigned, and
# directory-mapped uids above 2**31 exist.
_PEERCRED = struct.Struct("iII")
# sockaddr_un.sun_path is 108 bytes including the terminating NUL.
_MAX_SOCKET_PATH = 107
_EXAMPLE = '{"v": 1, "op": "status", "args": {}}'


@dataclass(frozen=True)
class Peer:
    """The process at the other end of a connection, as the kernel reports it."""

    pid: int
    uid: int
    gid: int


Handler = Callable[[Peer, str, dict[str, Any]], Awaitable[Any]]


class ControlError(FedfsError):
    """A control request failed; `code` is a short machine-readable reason."""

    def __init__(self, message: str, code: str = "refused") -> None:
        super().__init__(message)
        self.code = code


class _BadRequest(Exception):
    """A request line the transport answers itself, without calling the handler."""

    def __init__(self, message: str, code: str = "bad-request") -> None:
        super().__init__(message)
        self.code = code


class _LineTooLong(Exception):
    pass


def _encode(answer: dict[str, Any]) -> bytes:
    # ensure_ascii: strings from a request may hold lone surrogates ("\ud800"),
    # which cannot be encoded as UTF-8 but are fine as \u escapes.
    # allow_nan=False: NaN is not JSON, and every answer must parse anywhere.
    return (json.dumps(answer, ensure_ascii=True, allow_nan=False) + "\n").encode("ascii")


def _error(message: str, code: str) -> dict[str, Any]:
    return {"v": PROTOCOL_VERSION, "ok": False, "error": message, "code": code}


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "a number"
    return names.get(type(value), type(value).__name__)


def _parse_request(line: bytes) -> tuple[str, dict[str, Any]]:
    """The op and args of one request line, or _BadRequest saying what is wrong."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _BadRequest(
            f"the request is not valid UTF-8 (byte {e.start}); send one JSON object per line"
        ) from None
    if not text.strip():
        raise _BadRequest(
            f"the request line is empty; send one JSON object per line, like {_EXAMPLE}"
        )
    try:
        request = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as e:
        raise _BadRequest(
            f"the request is not valid JSON ({e.msg} at column {e.colno});"
            " send one JSON object per line"
        ) from None
    except (ValueError, RecursionError):
        # NaN/Infinity, integers beyond Python's digit limit, absurd nesting.
        raise _BadRequest(
            "the request is JSON this daemon does not accept (NaN, Infinity, a number of"
            " thousands of digits or nesting thousands deep); send plain JSON values"
        ) from None
    if not isinstance(request, dict):
        raise _BadRequest(
            f"the request must be a JSON object like {_EXAMPLE}, not {_json_type(request)}"
        )
    version = request.get("v")
    # type() rather than isinstance(): JSON true must not pass for version 1.
    if type(version) is not int or version not in SUPPORTED_VERSIONS:
        supported = ", ".join(str(v) for v in SUPPORTED_VERSIONS)
        got = 'no "v"' if "v" not in request else f'"v": {json.dumps(version)[:40]}'
        raise _BadRequest(
            f"this fedfs daemon speaks control protocol version {supported}; the request has {got}"
            " (are the fedfs command and the daemon the same release?)",
            "version",
        )
    op = request.get("op")
    if not isinstance(op, str) or not _NAME.fullmatch(op):
        got = 'no "op"' if "op" not in request else _json_type(op)
        if isinstance(op, str):
            got = f'"op": {json.dumps(op[:40])}'
        raise _BadRequest(
            'the request\'s "op" must be a name like "status" (a lowercase letter, then up to 40'
            f" lowercase letters, digits or dashes); the request has {got}"
        )
    args = request.get("args", {})
    if not isinstance(args, dict):
        raise _BadRequest(f'the request\'s "args" must be a JSON object, not {_json_type(args)}')
    return op, args


def _peer_of(stream: trio.SocketStream) -> Peer:
    # The kernel records these at connect(); a process cannot change them
    # afterwards, whatever it writes into its requests.
    raw = stream.socket.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    pid, uid, gid = _PEERCRED.unpack(raw)
    return Peer(pid, uid, gid)


class _LineReader:
    """Splits a stream into lines, never holding much more than max_line bytes."""

    def __init__(self, stream: trio.SocketStream, max_line: int) -> None:
        self.stream = stream
        self.max_line = max_line
        self.buffer = bytearray()
        # How far the buffer is known to hold no newline, so a trickle of
        # single bytes costs linear time, not quadratic.
        self.scanned = 0

    async def next_line(self) -> bytes | None:
        """The next line without its newline; None at end of stream."""
        while True:
            end = self.buffer.find(b"\n", self.scanned)
            if end >= 0:
                if end > self.max_line:
                    raise _LineTooLong
                line = bytes(self.buffer[:end])
                del self.buffer[: end + 1]
                self.scanned = 0
                return line
            if len(self.buffer) > self.max_line:
                raise _LineTooLong
            self.scanned = len(self.buffer)
            data = await self.stream.receive_some(65536)
            if not data:
                return None
            self.buffer += data


class ControlServer:
    """Listens on a Unix socket and answers each request line with the handler's result.

    Start it with `await nursery.start(server.serve)`; it removes its socket file
    when `serve` ends (cancelled or `close()`d).
    """

    def __init__(
        self,
        path: Path,
        handler: Handler,
        *,
        mode: int = 0o666,
        max_line: int = 65536,
        idle_timeout: float = 10.0,
        max_connections: int = 64,
    ) -> None:
        self.path = Path(path)
        self.handler = handler
        self.mode = mode
        self.max_line = max_line
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self._active = 0
        self._closed = False
        self._cancel_scope: trio.CancelScope | None = None
        # (st_dev, st_ino) of the socket we bound, so cleanup never removes a
        # socket a newer daemon has put at the same path.
        self._bound: tuple[int, int] | None = None

    @property
    def active_connections(self) -> int:
        return self._active

    def close(self) -> None:
        """Stop serving: `serve` closes every connection, removes the socket and returns."""
        self._closed = True
        if self._cancel_scope is not None:
            self._cancel_scope.cancel()

    async def serve(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Bind, report started, then accept connections until cancelled or closed."""
        if self._closed:
            task_status.started()
            return
        with trio.CancelScope() as scope:
            self._cancel_scope = scope
            listener = await self._listen()
            try:
                task_status.started()
                async with listener, trio.open_nursery() as nursery:
                    await self._accept_forever(listener, nursery)
            finally:
                self._remove_socket()

    async def _listen(self) -> trio.SocketListener:
        try:
            self._prepare_path()
        except OSError as e:
            raise FedfsError(f"cannot prepare the control socket {self.path}: {e}") from e
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            await sock.bind(str(self.path))
            st = os.stat(self.path)
            self._bound = (st.st_dev, st.st_ino)
            # chmod before listen(): until listen() every connect is refused, so
            # nobody can slip in while the mode still comes from the umask.
            os.chmod(self.path, self.mode)
            sock.listen(128)
        except BaseException as e:
            sock.close()
            self._remove_socket()
            if isinstance(e, OSError):
                # Another daemon may have bound the path since we checked it.
                raise FedfsError(f"cannot listen on the control socket {self.path}: {e}") from e
            raise
        log.info("control socket listening on %s (mode %o)", self.path, self.mode)
        return trio.SocketListener(sock)

    def _prepare_path(self) -> None:
        if len(os.fsencode(self.path)) > _MAX_SOCKET_PATH:
            raise FedfsError(
                f"the control socket path {self.path} is longer than {_MAX_SOCKET_PATH} bytes,"
                " the limit for Unix sockets; choose a shorter path"
            )
        parent = self.path.parent
        if not parent.exists():
            parent.mkdir(parents=True, exist_ok=True)
            parent.chmod(0o755)
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise FedfsError(
                f"{self.path} exists and is not a socket; fedfs will not delete it."
                " Move it away or choose another control socket path"
            )
        if _socket_answers(self.path):
            raise FedfsError(
                f"another process already listens on {self.path}; is a fedfs daemon for this"
                " mount already running? (fedfs status)"
            )
        # Nobody listens: a socket left behind by a daemon that crashed.
        log.info("removing stale control socket %s", self.path)
        self.path.unlink()

    def _remove_socket(self) -> None:
        if self._bound is None:
            return
        try:
            st = os.lstat(self.path)
            if (st.st_dev, st.st_ino) == self._bound:
                self.path.unlink()
        except FileNotFoundError:
            pass
        except OSError as e:
            log.warning("could not remove control socket %s: %s", self.path, e)
        self._bound = None

    async def _accept_forever(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        while True:
            try:
                stream = await listener.accept()
            except OSError as e:
                # Out of file descriptors or memory: wait a little instead of
                # spinning; the daemon keeps serving once connections close.
                log.warning("control socket: accept failed: %s", e)
                await trio.sleep(0.1)
                continue
            if self._active >= self.max_connections:
                await self._refuse_busy(stream)
                continue
            # Counted here, not in the task, so the limit holds for connections
            # accepted before their tasks have started.
            self._active += 1
            nursery.start_soon(self._connection, stream)

    async def _refuse_busy(self, stream: trio.SocketStream) -> None:
        answer = _error(
            f"the fedfs daemon is already serving {self.max_connections} control connections;"
            " try again in a moment",
            "busy",
        )
        # A fresh socket's buffer takes a short line at once; the deadline only
        # guards the accept loop against the unforeseen.
        with (
            trio.move_on_after(1.0),
            contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError),
        ):
            await stream.send_all(_encode(answer))
        await stream.aclose()

    async def _connection(self, stream: trio.SocketStream) -> None:
        try:
            async with stream:
                try:
                    peer = _peer_of(stream)
                except OSError as e:
                    log.warning("control socket: cannot read peer credentials: %s", e)
                    return
                await self._converse(stream, peer)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            # The client went away mid-request or mid-answer: its loss, not ours.
            log.debug("control client disconnected abruptly")
        except Exception:
            # A bug here must cost one connection, never the server.
            log.exception("control connection failed")
        finally:
            self._active -= 1

    async def _converse(self, stream: trio.SocketStream, peer: Peer) -> None:
        reader = _LineReader(stream, self.max_line)
        while True:
            too_large = False
            line: bytes | None = None
            # One deadline for the whole line: a client trickling a byte at a
            # time must not hold a connection longer than an idle one.
            with trio.move_on_after(self.idle_timeout) as idle:
                try:
                    line = await reader.next_line()
                except _LineTooLong:
                    too_large = True
            if too_large:
                message = (
                    f"the request is longer than {self.max_line} bytes;"
                    " send one JSON object per line"
                )
                await self._send(stream, _encode(_error(message, "too-large")))
                return
            if idle.cancelled_caught:
                log.debug("closing control connection of uid %d: idle or too slow", peer.uid)
                return
            if line is None:
                return
            if not await self._send(stream, await self._answer(peer, line)):
                return

    async def _answer(self, peer: Peer, line: bytes) -> bytes:
        """The encoded answer line to one request line; never raises for a bad request."""
        try:
            op, args = _parse_request(line)
        except _BadRequest as e:
            return _encode(_error(str(e), e.code))
        try:
            result = await self.handler(peer, op, args)
            # Encoded inside the try: a result that is not JSON is a bug in the
            # handler, answered as "internal" like any other.
            return _encode({"v": PROTOCOL_VERSION, "ok": True, "result": result})
        except FedfsError as e:
            code = getattr(e, "code", None)
            if not isinstance(code, str) or not _NAME.fullmatch(code):
                code = "refused"
            return _encode(_error(str(e) or f"the request {op!r} was refused", code))
        except Exception:
            log.exception("control request %r from uid %d failed", op, peer.uid)
            message = (
                f"the fedfs daemon failed while handling {op!r}; the daemon log has the details"
            )
            return _encode(_error(message, "internal"))

    async def _send(self, stream: trio.SocketStream, data: bytes) -> bool:
        """Send one answer line; False if the client would not take it in time."""
        with trio.move_on_after(self.idle_timeout):
            await stream.send_all(data)
            return True
        log.debug("control client does not read its answers; closing")
        return False


def _socket_answers(path: Path) -> bool:
    """Whether some process accepts connections on the Unix socket at path."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.setblocking(False)  # a listener with a full backlog must not stall start-up
    try:
        probe.connect(str(path))
    except BlockingIOError:
        return True  # backlog full: somebody listens
    except OSError:
        return False
    else:
        return True
    finally:
        probe.close()


class ControlClient:
    """Blocking client of a daemon's control socket, for the `fedfs` command.

    One connection is opened on first use and reused; every `call` has a
    deadline of `timeout` seconds.
    """

    def __init__(self, path: Path | str, *, timeout: float = 30.0) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._buffer = bytearray()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._buffer.clear()

    def call(self, op: str, /, **args: Any) -> Any:
        """Send one request and return its result; ControlError if it failed or was refused."""
        line = (json.dumps({"v": PROTOCOL_VERSION, "op": op, "args": args}) + "\n").encode()
        deadline = time.monotonic() + self.timeout
        try:
            sock = self._connection(deadline)
            try:
                self._settimeout(sock, deadline)
                sock.sendall(line)
            except (BrokenPipeError, ConnectionResetError):
                # The daemon may have refused us (busy) before reading the
                # request; its answer, if any, is still waiting to be read.
                pass
            answer = self._read_answer(sock, deadline)
        except TimeoutError:
            self.close()
            raise ControlError(
                f"the fedfs daemon on {self.path} did not answer {op!r} within"
                f" {self.timeout:g} s; it may be overloaded or stuck (fedfs status)",
                "timeout",
            ) from None
        except ControlError:
            self.close()
            raise
        except OSError as e:
            self.close()
            raise ControlError(
                f"the connection to the fedfs daemon on {self.path} failed ({e.strerror or e});"
                " it may have stopped (fedfs status)",
                "disconnected",
            ) from None
        return self._result_of(answer)

    def _connection(self, deadline: float) -> socket.socket:
        if self._sock is not None and not _still_open(self._sock):
            # The daemon closed an idle connection; nothing was sent on it,
            # so opening a new one cannot repeat a request.
            self.close()
        if self._sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                self._settimeout(sock, deadline)
                sock.connect(str(self.path))
            except (FileNotFoundError, ConnectionRefusedError):
                sock.close()
                raise ControlError(
                    f"no fedfs daemon answers on {self.path}; is the mount running? (fedfs status)",
                    "unreachable",
                ) from None
            except PermissionError:
                sock.close()
                raise ControlError(
                    f"you may not connect to {self.path}; the control socket should be"
                    " mode 0666 in a world-readable directory (ask the administrator)",
                    "unreachable",
                ) from None
            except BaseException:
                sock.close()
                raise
            self._sock = sock
        return self._sock

    @staticmethod
    def _settimeout(sock: socket.socket, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        sock.settimeout(remaining)

    def _read_answer(self, sock: socket.socket, deadline: float) -> Any:
        while (end := self._buffer.find(b"\n")) < 0:
            self._settimeout(sock, deadline)
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                data = b""
            if not data:
                raise ControlError(
                    f"the fedfs daemon on {self.path} closed the connection without answering;"
                    " it may have stopped or restarted (fedfs status)",
                    "disconnected",
                )
            self._buffer += data
        raw = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        try:
            return json.loads(raw)
        except ValueError:
            raise self._protocol_error() from None

    def _result_of(self, answer: Any) -> Any:
        if (
            not isinstance(answer, dict)
            or answer.get("v") != PROTOCOL_VERSION
            or not isinstance(answer.get("ok"), bool)
        ):
            self.close()
            raise self._protocol_error()
        if answer["ok"]:
            return answer.get("result")
        message = answer.get("error")
        code = answer.get("code")
        raise ControlError(
            message if isinstance(message, str) else "the fedfs daemon refused the request",
            code if isinstance(code, str) else "refused",
        )

    def _protocol_error(self) -> ControlError:
        return ControlError(
            f"the fedfs daemon on {self.path} sent an answer this command cannot read;"
            " are the fedfs command and the daemon the same release?",
            "protocol",
        )


def _still_open(sock: socket.socket) -> bool:
    """False if the peer has closed (or anything is pending on an idle connection)."""
    # poll, not select: select fails for descriptors above FD_SETSIZE.
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return not poller.poll(0)
