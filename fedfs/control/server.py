"""The control server: how `fedfs share ...` commands reach the running daemon.

This module owns the daemon's end of the socket: a Unix stream socket, the
caller's identity (SO_PEERCRED, never a field of the request), and the rules
that keep a root daemon safe from every local user (line size, idle deadline,
malformed input, and connection limits counted per uid, so one user's load
never refuses another user's request). The wire format is `control/protocol.py`;
the `fedfs` command's end is `control/client.py`. What a request *means* is
decided by the handler the daemon plugs into `ControlServer`.

Concurrency: `ControlServer.serve` runs in the daemon's trio nursery and owns
a nursery with one task per connection. Requests on one connection are
handled one after another; different connections call the handler
concurrently, so the handler must be safe for that. All server state is
touched only from the trio thread (call `close()` there, or through
`trio.from_thread.run_sync`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import stat
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from fedfs.control.protocol import (
    NAME,
    BadRequest,
    ControlError,
    encode,
    failure,
    parse_request,
    success,
)
from fedfs.errors import FedfsError

log = logging.getLogger(__name__)

# ControlError is the protocol's; handlers raise it to answer with a code.
__all__ = ["ControlError", "ControlServer", "Handler", "Peer"]

# struct ucred {pid_t pid; uid_t uid; gid_t gid;}: uid and gid are unsigned, and
# directory-mapped uids above 2**31 exist.
_PEERCRED = struct.Struct("iII")
# sockaddr_un.sun_path is 108 bytes including the terminating NUL.
_MAX_SOCKET_PATH = 107


@dataclass(frozen=True)
class Peer:
    """The process at the other end of a connection, as the kernel reports it."""

    pid: int
    uid: int
    gid: int


Handler = Callable[[Peer, str, dict[str, Any]], Awaitable[Any]]


class _LineTooLong(Exception):
    pass


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
        max_connections: int = 1024,
        max_per_user: int = 16,
        reserved_ops: frozenset[str] = frozenset(),
        reserve: int = 2,
        unlimited_uids: frozenset[int] = frozenset({0}),
    ) -> None:
        self.path = Path(path)
        self.handler = handler
        self.mode = mode
        self.max_line = max_line
        self.idle_timeout = idle_timeout
        # Each user has max_per_user connections of their own; max_connections only
        # bounds the descriptors all users together can hold. root (the admin, and
        # `fedfs umount`) has no per-user limit.
        self.max_connections = max_connections
        self.max_per_user = max_per_user
        # A user at the limit still gets `reserve` more connections that may carry only
        # reserved_ops (revocations: unshare, team remove), so a user who has used up
        # her own connections can always take access back.
        self.reserved_ops = reserved_ops
        self.reserve = reserve
        self.unlimited_uids = unlimited_uids
        self._active = 0
        self._per_user: dict[int, int] = {}
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
            try:
                peer = _peer_of(stream)
            except OSError as e:
                log.warning("control socket: cannot read peer credentials: %s", e)
                await stream.aclose()
                continue
            refusal = self._refusal(peer)
            only: str | None = None  # served, but only for reserved_ops; else this refusal
            if refusal is not None and self._may_use_reserve(peer):
                refusal, only = None, refusal
            if refusal is not None:
                await self._refuse_busy(stream, refusal)
                continue
            # Counted here, not in the task, so the limits hold for connections
            # accepted before their tasks have started.
            self._active += 1
            self._per_user[peer.uid] = self._per_user.get(peer.uid, 0) + 1
            nursery.start_soon(self._connection, stream, peer, only)

    def _refusal(self, peer: Peer) -> str | None:
        """Why a new connection of peer is refused now (None: it is served)."""
        mine = self._per_user.get(peer.uid, 0)
        if mine >= self.max_per_user and peer.uid not in self.unlimited_uids:
            log.debug("control socket: uid %d is at its limit of connections", peer.uid)
            return (
                f"you already have {min(mine, self.max_per_user)} connections open to the fedfs"
                f" daemon (at most"
                f" {self.max_per_user} per user); close some, or try again in a moment"
            )
        if self._active >= self.max_connections:
            return (
                f"the fedfs daemon is already serving {self.max_connections} control"
                " connections; try again in a moment"
            )
        return None

    def _may_use_reserve(self, peer: Peer) -> bool:
        """Whether a refused connection of peer may still carry a revocation: the user is at
        her own limit (not the daemon at its total) and has reserve slots left."""
        mine = self._per_user.get(peer.uid, 0)
        return (
            bool(self.reserved_ops)
            and self.max_per_user <= mine < self.max_per_user + self.reserve
            and self._active < self.max_connections + self.reserve * 4
        )

    def connections_of(self, uid: int) -> int:
        return self._per_user.get(uid, 0)

    async def _refuse_busy(self, stream: trio.SocketStream, message: str) -> None:
        answer = failure(message, "busy")
        # A fresh socket's buffer takes a short line at once; the deadline only
        # guards the accept loop against the unforeseen.
        with (
            trio.move_on_after(1.0),
            contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError),
        ):
            await stream.send_all(encode(answer))
        await stream.aclose()

    async def _connection(
        self, stream: trio.SocketStream, peer: Peer, only: str | None = None
    ) -> None:
        try:
            async with stream:
                await self._converse(stream, peer, only)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            # The client went away mid-request or mid-answer: its loss, not ours.
            log.debug("control client disconnected abruptly")
        except Exception:
            # A bug here must cost one connection, never the server.
            log.exception("control connection failed")
        finally:
            self._active -= 1
            left = self._per_user.pop(peer.uid) - 1
            if left:
                self._per_user[peer.uid] = left

    async def _converse(
        self, stream: trio.SocketStream, peer: Peer, only: str | None = None
    ) -> None:
        """Answer requests until the client stops. only: this connection came from the
        reserve and serves one request of reserved_ops; anything else gets `only`, the
        refusal it would have had."""
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
                await self._send(stream, encode(failure(message, "too-large")))
                return
            if idle.cancelled_caught:
                log.debug("closing control connection of uid %d: idle or too slow", peer.uid)
                return
            if line is None:
                return
            if only is not None:
                await self._send(stream, await self._answer_reserved(peer, line, only))
                return
            if not await self._send(stream, await self._answer(peer, line)):
                return

    async def _answer_reserved(self, peer: Peer, line: bytes, refusal: str) -> bytes:
        try:
            op, _ = parse_request(line)
        except BadRequest as e:
            return encode(failure(str(e), e.code))
        if op not in self.reserved_ops:
            return encode(failure(refusal, "busy"))
        log.info("control socket: uid %d at its connection limit: serving %s", peer.uid, op)
        return await self._answer(peer, line)

    async def _answer(self, peer: Peer, line: bytes) -> bytes:
        """The encoded answer line to one request line; never raises for a bad request."""
        try:
            op, args = parse_request(line)
        except BadRequest as e:
            return encode(failure(str(e), e.code))
        try:
            result = await self.handler(peer, op, args)
            # Encoded inside the try: a result that is not JSON is a bug in the
            # handler, answered as "internal" like any other.
            return encode(success(result))
        except FedfsError as e:
            code = getattr(e, "code", None)
            if not isinstance(code, str) or not NAME.fullmatch(code):
                code = "refused"
            return encode(failure(str(e) or f"the request {op!r} was refused", code))
        except Exception:
            log.exception("control request %r from uid %d failed", op, peer.uid)
            message = (
                f"the fedfs daemon failed while handling {op!r}; the daemon log has the details"
            )
            return encode(failure(message, "internal"))

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
