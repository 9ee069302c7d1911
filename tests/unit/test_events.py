"""Structured events: the logfmt line, and journald's native protocol over a real socket."""

from __future__ import annotations

import array
import logging
import os
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedfs import events
from fedfs.events import JournalHandler, event, logfmt


def test_logfmt_quotes_only_what_needs_it() -> None:
    line = logfmt(
        {
            "event": "share",
            "path": "/climate/runs 2026",
            "principal": "user:bob",
            "ok": True,
            "empty": "",
            "quote": 'say "hi"',
            "key": "a=b",
            "nonutf8": "caf\udce9",
            "newline": "a\nb",
        }
    )
    assert line == (
        'event=share path="/climate/runs 2026" principal=user:bob ok=true empty="" '
        'quote="say \\"hi\\"" key="a=b" nonutf8="caf\\\\udce9" newline="a\\nb"'
    )


def test_event_puts_the_name_and_the_context_first_and_drops_none(
    caplog: pytest.LogCaptureFixture,
) -> None:
    events.set_context(mount="climate")
    try:
        with caplog.at_level(logging.INFO, logger="fedfs.test"):
            event(
                logging.getLogger("fedfs.test"),
                "unshare",
                path="/climate/x",
                principal="user:bob",
                expires=None,
                msg="a sentence",
            )
    finally:
        events._context.clear()
    (record,) = caplog.records
    assert record.getMessage() == (
        'event=unshare mount=climate path=/climate/x principal=user:bob msg="a sentence"'
    )
    assert record.funcName == "test_event_puts_the_name_and_the_context_first_and_drops_none"


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[tuple[socket.socket, JournalHandler]]:
    """A datagram socket standing in for /run/systemd/journal/socket, and a handler to it."""
    path = tmp_path / "journal.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(path))
    server.settimeout(5)
    handler = JournalHandler(path)
    log = logging.getLogger("fedfs.journaltest")
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    log.propagate = False
    yield server, handler
    log.removeHandler(handler)
    handler.close()
    server.close()


def decode(data: bytes) -> dict[str, str]:
    """journald's native format: KEY=VALUE lines, or KEY, a 64-bit length and raw bytes."""
    fields: dict[str, str] = {}
    while data:
        nl = data.index(b"\n")
        line = data[:nl]
        if b"=" in line:
            key, _, value = line.partition(b"=")
            data = data[nl + 1 :]
        else:
            key = line
            (size,) = struct.unpack("<Q", data[nl + 1 : nl + 9])
            value = data[nl + 9 : nl + 9 + size]
            assert data[nl + 9 + size : nl + 10 + size] == b"\n"
            data = data[nl + 10 + size :]
        fields[key.decode()] = value.decode()
    return fields


def test_events_become_journal_fields(journal: tuple[socket.socket, JournalHandler]) -> None:
    server, _ = journal
    event(
        logging.getLogger("fedfs.journaltest"),
        "upload-failed",
        severity=logging.WARNING,
        path="/climate/a b",
        attempt=3,
        error="line one\nline two",
    )
    fields = decode(server.recv(65536))
    assert fields["MESSAGE"].startswith('event=upload-failed path="/climate/a b" attempt=3')
    assert fields["PRIORITY"] == "4"
    assert fields["SYSLOG_IDENTIFIER"] == "fedfs"
    assert fields["FEDFS_EVENT"] == "upload-failed"
    assert fields["FEDFS_PATH"] == "/climate/a b"
    assert fields["FEDFS_ATTEMPT"] == "3"
    assert fields["FEDFS_ERROR"] == "line one\nline two"  # a multi-line value, length-prefixed
    assert fields["CODE_FUNC"] == "test_events_become_journal_fields"


def test_a_record_too_big_for_a_datagram_goes_in_a_sealed_memfd(
    journal: tuple[socket.socket, JournalHandler],
) -> None:
    server, _ = journal
    huge = "x" * (4 * 1024 * 1024)  # above the datagram limit (net.core.wmem_max)
    logging.getLogger("fedfs.journaltest").error("big: %s", huge)
    fds = array.array("i")
    msg, ancdata, _, _ = server.recvmsg(1, socket.CMSG_LEN(fds.itemsize))
    assert msg == b""
    fds.frombytes(ancdata[0][2][: fds.itemsize])
    with os.fdopen(fds[0], "rb") as f:
        fields = decode(f.read())
    message = fields["MESSAGE"]  # compared by length and ends: a failure must not print 4 MiB
    assert (len(message), message[:8], message[-3:]) == (len(huge) + 5, "big: xxx", "xxx")
    assert fields["PRIORITY"] == "3"


def test_stderr_is_the_journal_only_when_journal_stream_names_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    st = os.fstat(2)
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    assert events.stderr_is_journal()
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino + 1}")
    assert not events.stderr_is_journal()
    monkeypatch.delenv("JOURNAL_STREAM")
    assert not events.stderr_is_journal()
    assert isinstance(events.console_handler(), logging.StreamHandler)
