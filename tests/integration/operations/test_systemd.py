"""`fedfs mount --foreground` under systemd's notify protocol, with a real NOTIFY_SOCKET.

The test plays systemd: it binds the AF_UNIX datagram socket, starts the mount
with NOTIFY_SOCKET naming it, and looks at the mount the moment each message
arrives: READY=1 must mean the mount answers and the control socket listens.
"""

from __future__ import annotations

import itertools
import os
import socket
import threading
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import MountFactory
from tests.support import Mount, wait_for


@dataclass(frozen=True)
class Arrival:
    """A message and what the mount looked like when it arrived."""

    message: str
    at: float
    mounted: bool
    bucket_answers: bool
    control_listens: bool


class FakeSystemd:
    """Receives sd_notify datagrams in a thread and checks the mount on each arrival."""

    def __init__(self, path: Path, bucket_dir: Path, control: Path) -> None:
        self.path = path
        self.bucket_dir = bucket_dir
        self.control = control
        self.arrivals: list[Arrival] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.closed = False
        self.thread = threading.Thread(target=self._receive, daemon=True)
        self.thread.start()

    def _receive(self) -> None:
        while not self.closed:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            at = time.monotonic()
            self.arrivals.append(
                Arrival(
                    data.decode(),
                    at,
                    os.path.ismount(self.bucket_dir.parent),
                    self._answers(),
                    self._listens(),
                )
            )

    def _answers(self) -> bool:
        try:
            return self.bucket_dir.is_dir() and isinstance(os.listdir(self.bucket_dir), list)
        except OSError:
            return False

    def _listens(self) -> bool:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            try:
                s.connect(str(self.control))
            except OSError:
                return False
            return True

    def first(self, prefix: str) -> Arrival | None:
        return next((a for a in self.arrivals if a.message.startswith(prefix)), None)

    def count(self, message: str) -> int:
        return sum(1 for a in self.arrivals if message in a.message.splitlines())

    def close(self) -> None:
        self.closed = True
        self.thread.join(5)
        self.sock.close()


@pytest.fixture
def unstarted(make_mount: MountFactory, bucket: str) -> Mount:
    return make_mount([(bucket, "user:root")], start=False)


@pytest.fixture
def systemd(unstarted: Mount, bucket: str, tmp_path: Path) -> Iterator[FakeSystemd]:
    control = Path(tomllib.loads(unstarted.config.read_text())["control"]["socket"])
    fake = FakeSystemd(tmp_path / "notify.sock", unstarted.path(bucket), control)
    yield fake
    fake.close()


def test_ready_only_once_the_mount_answers_then_stopping_at_umount(
    unstarted: Mount, systemd: FakeSystemd
) -> None:
    absent_at: list[float] = []  # start times of probes that found no mount

    def watch_mount() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            started = time.monotonic()
            if os.path.ismount(unstarted.mountpoint):
                return
            absent_at.append(started)
            time.sleep(0.001)

    unstarted.mountpoint.mkdir(parents=True, exist_ok=True)
    watcher = threading.Thread(target=watch_mount, daemon=True)
    watcher.start()
    unstarted.start(env={"NOTIFY_SOCKET": str(systemd.path)})
    ready = wait_for(lambda: systemd.first("READY=1"), "READY=1 from the daemon")
    watcher.join(30)

    assert ready.mounted and ready.bucket_answers and ready.control_listens, ready
    assert absent_at and ready.at > absent_at[-1], "READY=1 came before the mount existed"
    assert systemd.arrivals[0] is ready, "nothing may come before READY=1"
    assert f"STATUS={unstarted.config} mounted on {unstarted.mountpoint}" in ready.message

    (systemd.bucket_dir / "results.nc").write_bytes(b"data")
    assert unstarted.stop() == 0
    stopping = wait_for(lambda: systemd.first("STOPPING=1"), "STOPPING=1 at unmount")
    assert stopping.at > ready.at
    assert systemd.count("READY=1") == 1
    assert systemd.count("WATCHDOG=1") == 0, "no pings unless systemd sets WATCHDOG_USEC"


def test_watchdog_pings_while_mounted(unstarted: Mount, systemd: FakeSystemd) -> None:
    unstarted.start(env={"NOTIFY_SOCKET": str(systemd.path), "WATCHDOG_USEC": "1000000"})
    wait_for(lambda: systemd.count("WATCHDOG=1") >= 4, "four watchdog pings (every 0.5 s)")
    pings = [a.at for a in systemd.arrivals if a.message == "WATCHDOG=1"]
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    assert all(0.25 < g < 1.5 for g in gaps), gaps
