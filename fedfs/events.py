"""Structured log events, and where log lines go.

Owns the form of the lines an admin filters on (mount, unmount, policy
changes, upload failures, identity outages, hidden keys): one line each,
`event=NAME key=value ...` (logfmt), the same in a log file, on stderr and in
the journal. Under systemd (stderr is the journal) records go over journald's
native protocol and every field also becomes a journal field, so
`journalctl FEDFS_EVENT=share FEDFS_PRINCIPAL=user:bob` works without parsing.
docs/OPERATIONS.md lists every event and its fields.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
import socket
import struct
import sys
import time
from collections.abc import Mapping
from pathlib import Path

JOURNAL_SOCKET = Path("/run/systemd/journal/socket")
IDENTIFIER = "fedfs"  # SYSLOG_IDENTIFIER: `journalctl -t fedfs`

# Fields on every event of this process, e.g. the mount's name (set once by the daemon).
_context: dict[str, str] = {}
_BARE = re.compile(r"[^\s=\"\\]+")
_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6}


def set_context(**fields: str) -> None:
    """Fields added to every later event of this process (the daemon sets mount=NAME)."""
    _context.update(fields)


def event(
    log: logging.Logger,
    name: str,
    /,
    *,
    severity: int = logging.INFO,
    msg: str | None = None,
    **fields: object,
) -> None:
    """Log one event: `event=NAME mount=... FIELD=VALUE ... msg="..."`.

    None values are left out. `msg` is a sentence for people, kept last, for
    events whose fields alone do not say what happens next.
    """
    given = {k: v for k, v in fields.items() if v is not None}
    line = {"event": name, **_context, **given}
    if msg:
        line["msg"] = msg
    log.log(
        severity,
        "%s",
        logfmt(line),
        extra={"fedfs_event": name, "fedfs_fields": given},
        stacklevel=2,
    )


def iso(t: float) -> str:
    """A Unix time as the UTC ISO 8601 form event fields use (2026-12-31T18:00:00Z)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def logfmt(fields: Mapping[str, object]) -> str:
    return " ".join(f"{k}={_value(v)}" for k, v in fields.items())


_CONTROL_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: object) -> str:
    """text as one safe line for a terminal: control characters and DEL escaped (\\n, \\x1b).

    A file name may hold any byte but "/" and NUL; printed raw, a newline fakes a line
    of output and an escape sequence rewrites the screen. Backslashes are doubled so an
    escape shown is never confused with a name that has a backslash in it. Bytes that
    are not UTF-8 (surrogate escapes) are shown as \\xNN too.
    """
    out = []
    for ch in "true" if text is True else "false" if text is False else str(text):
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:
            out.append(f"\\x{code - 0xDC00:02x}")
        elif ch in _CONTROL_ESCAPES:
            out.append(_CONTROL_ESCAPES[ch])
        elif code < 0x20 or 0x7F <= code < 0xA0:
            out.append(f"\\x{code:02x}")
        else:
            out.append(ch)
    return "".join(out)


def _text(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    # Keys that are not UTF-8 arrive with surrogate escapes; show them as escapes.
    return str(v).encode("utf-8", "backslashreplace").decode("utf-8")


def _value(v: object) -> str:
    text = _text(v)
    if _BARE.fullmatch(text) and text.isprintable():
        return text
    return json.dumps(text, ensure_ascii=False)


# -- the journal -------------------------------------------------------------------


def stderr_is_journal() -> bool:
    """True when systemd connected our stderr to the journal (JOURNAL_STREAM=DEV:INODE)."""
    try:
        dev, ino = (int(x) for x in os.environ.get("JOURNAL_STREAM", "").split(":"))
        st = os.fstat(sys.stderr.fileno())
    except (ValueError, OSError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


def console_handler() -> logging.Handler:
    """The journal's native protocol under systemd, else plain lines on stderr."""
    if stderr_is_journal() and JOURNAL_SOCKET.exists():
        return JournalHandler()
    return logging.StreamHandler(sys.stderr)


def journal_field(name: str) -> str:
    """A journal field name: upper case letters, digits and '_', not starting with '_'."""
    return "FEDFS_" + re.sub(r"[^A-Z0-9_]", "_", name.upper())[:58]


def encode_journal(fields: Mapping[str, str]) -> bytes:
    """journald's native datagram: KEY=VALUE lines; values with newlines length-prefixed."""
    out = bytearray()
    for key, value in fields.items():
        raw = value.encode("utf-8", "backslashreplace")
        if b"\n" in raw:
            out += key.encode() + b"\n" + struct.pack("<Q", len(raw)) + raw + b"\n"
        else:
            out += key.encode() + b"=" + raw + b"\n"
    return bytes(out)


class JournalHandler(logging.Handler):
    """Writes records to journald over its native socket, with event fields as journal fields.

    The message is the same logfmt line a log file gets (no time or level: the
    journal keeps those), so `journalctl -t fedfs` reads like `--foreground`.
    """

    def __init__(self, path: Path = JOURNAL_SOCKET, identifier: str = IDENTIFIER) -> None:
        super().__init__()
        self.path = str(path)
        self.identifier = identifier
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._message = logging.Formatter("%(message)s")

    def fields(self, record: logging.LogRecord) -> dict[str, str]:
        f = {
            "MESSAGE": self._message.format(record),
            "PRIORITY": str(_PRIORITY.get(record.levelno, 7 if record.levelno < 20 else 3)),
            "SYSLOG_IDENTIFIER": self.identifier,
            "CODE_FILE": record.pathname,
            "CODE_LINE": str(record.lineno),
            "CODE_FUNC": record.funcName,
            "FEDFS_LOGGER": record.name,
        }
        for k, v in _context.items():
            f[journal_field(k)] = _text(v)
        name = getattr(record, "fedfs_event", None)
        if name:
            f["FEDFS_EVENT"] = name
            for k, v in getattr(record, "fedfs_fields", {}).items():
                f[journal_field(k)] = _text(v)
        return f

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._send(encode_journal(self.fields(record)))
        except Exception:
            self.handleError(record)

    def _send(self, data: bytes) -> None:
        try:
            self.sock.sendto(data, self.path)
            return
        except OSError as e:
            if e.errno not in (errno.EMSGSIZE, errno.ENOBUFS):
                raise
        # Too big for one datagram: journald accepts a sealed memfd holding it instead.
        fd = os.memfd_create("fedfs-journal", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.write(fd, data)
            os.lseek(fd, 0, os.SEEK_SET)
            seals = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
            rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", fd))]
            self.sock.sendmsg([], rights, 0, self.path)
        finally:
            os.close(fd)

    def close(self) -> None:
        self.sock.close()
        super().close()
