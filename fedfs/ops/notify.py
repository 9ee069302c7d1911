"""What the daemon tells systemd (sd_notify): ready, stopping, watchdog pings, status.

Speaks through the `sdnotify` library to the socket named by NOTIFY_SOCKET, so
every call is a no-op outside a Type=notify unit. Sends never block: a full
socket drops the message rather than stall the trio loop that answers FUSE.
"""

from __future__ import annotations

import logging
import os

import sdnotify
import trio

log = logging.getLogger(__name__)

_notifier: tuple[str, sdnotify.SystemdNotifier] | None = None


def _send(message: str) -> None:
    global _notifier
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if _notifier is None or _notifier[0] != address:
        notifier = sdnotify.SystemdNotifier()
        if notifier.socket is not None:
            notifier.socket.setblocking(False)
        _notifier = (address, notifier)
    log.debug("sd_notify: %s", message.replace("\n", " "))
    _notifier[1].notify(message)


def ready(status: str = "") -> None:
    """The mount answers and the control socket listens."""
    _send("READY=1" + (f"\nSTATUS={status}" if status else ""))


def stopping(status: str = "") -> None:
    """The FUSE session ended; pending uploads drain before the process exits."""
    _send("STOPPING=1" + (f"\nSTATUS={status}" if status else ""))


def status(text: str) -> None:
    """One line for `systemctl status`."""
    _send(f"STATUS={text}")


def watchdog() -> None:
    _send("WATCHDOG=1")


def watchdog_interval() -> float | None:
    """Seconds between pings (half of WatchdogSec=), or None if systemd expects none."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2e6


async def keep_watchdog_fed() -> None:
    """Ping the watchdog from the event loop itself, so a hung loop stops the pings."""
    interval = watchdog_interval()
    if interval is None:
        return
    while True:
        watchdog()
        await trio.sleep(interval)
