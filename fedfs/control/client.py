"""The control client: how the `fedfs` command, doctor and fsck ask a running daemon.

Owns the command's end of the control socket (`control/server.py` is the
daemon's, `control/protocol.py` the wire format both speak): one connection,
reused, a deadline on every call, and errors that say what to do. Blocking,
used by one thread at a time; needs only the standard library.
"""

from __future__ import annotations

import json
import select
import socket
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from fedfs.control.protocol import PROTOCOL_VERSION, ControlError, request_line

__all__ = ["ControlClient", "ControlError"]


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
        line = request_line(op, args)
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
