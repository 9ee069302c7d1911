"""A hybrid logical clock: stamps that follow wall time and still order every change.

A stamp is "MILLISECONDS.COUNTER" (fixed width, so text order is time order). Taking
a stamp never goes backwards, even when the wall clock does; observing another
node's stamp moves this clock past it, so a change made after seeing another one
always sorts after it. Stamps from far in the future (a node with a wrong clock)
are not followed further than `max_drift` ahead of our own wall clock.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

_STAMP_RE = re.compile(r"(\d{13})\.(\d{5})")
MAX_COUNTER = 99_999


def format_hlc(millis: int, counter: int) -> str:
    return f"{millis:013d}.{counter:05d}"


def parse_hlc(text: str) -> tuple[int, int]:
    m = _STAMP_RE.fullmatch(text)
    if m is None:
        raise ValueError(f"{text!r} is not a clock stamp (MILLISECONDS.COUNTER)")
    return int(m[1]), int(m[2])


class HybridClock:
    def __init__(self, wall: Callable[[], float] = time.time, max_drift: float = 300.0) -> None:
        self.wall = wall
        self.max_drift_ms = int(max_drift * 1000)
        self.millis = 0
        self.counter = 0

    def now(self) -> str:
        """A new stamp, later than every stamp taken or observed before."""
        physical = int(self.wall() * 1000)
        if physical > self.millis:
            self.millis, self.counter = physical, 0
        elif self.counter < MAX_COUNTER:
            self.counter += 1
        else:  # 100,000 stamps in one millisecond: borrow the next one
            self.millis, self.counter = self.millis + 1, 0
        return format_hlc(self.millis, self.counter)

    def observe(self, stamp: str) -> None:
        """Another node's stamp: ours will sort after it (within max_drift of our wall clock)."""
        millis, counter = parse_hlc(stamp)
        limit = int(self.wall() * 1000) + self.max_drift_ms
        if millis > limit:
            log.warning(
                "a policy event is stamped %.0f s ahead of this node's clock; check NTP on "
                "both nodes",
                (millis - limit + self.max_drift_ms) / 1000,
            )
            return
        if (millis, counter) > (self.millis, self.counter):
            self.millis, self.counter = millis, counter
