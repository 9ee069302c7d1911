"""fedfs.ops.notify against a real datagram socket standing in for systemd's NOTIFY_SOCKET."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio.testing

from fedfs.ops import notify


@pytest.fixture
def systemd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A bound AF_UNIX datagram socket; NOTIFY_SOCKET names it."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify.sock"))
    for name in ("WATCHDOG_USEC", "WATCHDOG_PID"):
        monkeypatch.delenv(name, raising=False)
    yield sock
    sock.close()


def received(sock: socket.socket) -> list[str]:
    """Every message waiting on the socket, without blocking."""
    out = []
    while True:
        try:
            out.append(sock.recv(4096, socket.MSG_DONTWAIT).decode())
        except BlockingIOError:
            return out


def test_states_reach_the_socket(systemd: socket.socket) -> None:
    notify.ready("mounted /etc/fedfs/climate.toml on /mnt/fedfs/climate")
    notify.status("unmount: waiting for 3 uploads")
    notify.stopping()
    notify.watchdog()
    assert received(systemd) == [
        "READY=1\nSTATUS=mounted /etc/fedfs/climate.toml on /mnt/fedfs/climate",
        "STATUS=unmount: waiting for 3 uploads",
        "STOPPING=1",
        "WATCHDOG=1",
    ]


def test_abstract_socket_names_work(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"fedfs-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        notify.ready()
        assert received(sock) == ["READY=1"]


def test_without_notify_socket_nothing_happens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notify.ready("x")
    notify.stopping()
    notify.watchdog()


def test_a_socket_nobody_reads_never_blocks_the_daemon(systemd: socket.socket) -> None:
    for _ in range(10_000):  # far beyond the socket's queue
        notify.watchdog()
    assert received(systemd)[0] == "WATCHDOG=1"


def test_watchdog_interval_is_half_of_watchdog_sec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert notify.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "60000000")
    assert notify.watchdog_interval() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert notify.watchdog_interval() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", "1")  # meant for another process
    assert notify.watchdog_interval() is None
    monkeypatch.delenv("WATCHDOG_PID")
    monkeypatch.setenv("WATCHDOG_USEC", "0")
    assert notify.watchdog_interval() is None


def test_watchdog_pings_come_from_the_event_loop(
    systemd: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")

    async def run_for_ten_seconds() -> None:
        with trio.move_on_after(10):
            await notify.keep_watchdog_fed()

    trio.run(run_for_ten_seconds, clock=trio.testing.MockClock(autojump_threshold=0))
    assert received(systemd) == ["WATCHDOG=1"] * 10  # every second: at 0, 1, ... 9 s
