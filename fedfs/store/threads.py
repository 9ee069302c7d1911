"""Calling the blocking object store from the trio thread.

Owns how tree and data code reach `s3.py`: each request runs in a worker
thread under the connection limiter (sized from `store.max_connections`), so
no more requests are in flight than connections; `concurrently` sends
independent requests in parallel and raises the first real error, not a group.
Called from the trio thread only; the worker threads run nothing but the
store's own (thread-safe) methods. A cancelled call is abandoned, not waited
for (its thread finishes on its own, its result is dropped): a request stuck
in the network never keeps the daemon from stopping.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio

T = TypeVar("T")


class WorkerThreads:
    """Runs blocking store calls in worker threads, at most the limiter's tokens at once."""

    def __init__(self, limiter: trio.CapacityLimiter) -> None:
        self.limiter = limiter

    async def __call__(self, fn: Callable[..., T], *args: Any) -> T:
        return await trio.to_thread.run_sync(
            fn, *args, limiter=self.limiter, abandon_on_cancel=True
        )


async def concurrently(*fns: Callable[[], Awaitable[None]]) -> None:
    """Run fns in parallel; on failure raise the first real error itself, not a group."""
    try:
        async with trio.open_nursery() as n:
            for fn in fns:
                n.start_soon(fn)
    except BaseExceptionGroup as group:
        errors = [e for e in _leaves(group) if not isinstance(e, trio.Cancelled)]
        if not errors:
            raise
        raise errors[0] from None


def _leaves(e: BaseException) -> list[BaseException]:
    if isinstance(e, BaseExceptionGroup):
        return [leaf for sub in e.exceptions for leaf in _leaves(sub)]
    return [e]
