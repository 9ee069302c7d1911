"""Partial rewrites: which byte ranges of a staged file changed, and which parts go up again.

Owns two pure computations (docs/PERFORMANCE.md, "Partial rewrites"):
`add_range` keeps the changed byte ranges of a staging copy, relative to the
object version it was staged from (its base), merged and sorted; `plan` turns
them and the file's size into a multipart layout where every part that lies
whole inside the base and touches no changed byte is copied by the store
(UploadPartCopy) and only the others are sent.

Layout: parts of `[store] multipart_chunksize` (S3 needs at least 5 MiB for
every part but the last), made larger in whole MiB when the file would need
more than S3's 10,000 parts. A rewrite applies only with at least two parts
and at least one of them unchanged; otherwise the whole file goes up.

Concurrency: no I/O and no shared state; called from the trio thread (writes,
truncates, uploads). May use only the store's `Part`.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right

from fedfs.store.s3 import Part

MiB = 1024**2
MIN_PART = 5 * MiB  # S3's smallest part, except the last
MAX_PARTS = 10_000  # S3's most parts in one upload
MAX_RANGES = 1024  # more scattered changes than this: the whole file goes up again
END = 2**62  # "to the end of the file, whatever its size" (a truncation)

Ranges = list[tuple[int, int]]


def add_range(ranges: Ranges | None, lo: int, hi: int) -> Ranges | None:
    """Mark [lo, hi) changed; None stays None (unknown: everything changed).

    Returns None once there are more than MAX_RANGES separate ranges, so a journal
    row stays small; the file then goes up whole.
    """
    if ranges is None or hi <= lo:
        return ranges
    if ranges and ranges[-1][0] <= lo <= ranges[-1][1]:  # a sequential write: extend the last
        if hi > ranges[-1][1]:
            ranges[-1] = (ranges[-1][0], hi)
        return ranges
    first = bisect_left(ranges, lo, key=lambda r: r[1])  # first range ending at or after lo
    past = bisect_right(ranges, hi, key=lambda r: r[0])  # first range starting after hi
    if first < past:
        lo, hi = min(lo, ranges[first][0]), max(hi, ranges[past - 1][1])
    ranges[first:past] = [(lo, hi)]
    return ranges if len(ranges) <= MAX_RANGES else None


def part_size(size: int, chunk: int, min_part: int = MIN_PART) -> int:
    """The part size for a file of `size` bytes: `chunk`, or more to stay within 10,000 parts."""
    part = max(chunk, min_part)
    if size > part * MAX_PARTS:
        part = -(-size // MAX_PARTS)
        part = -(-part // MiB) * MiB
    return part


def _touches(ranges: Ranges, start: int, end: int) -> bool:
    i = bisect_right(ranges, start, key=lambda r: r[1])  # first range ending after start
    return i < len(ranges) and ranges[i][0] < end


def plan(
    size: int,
    base_size: int | None,
    changed: Ranges | None,
    chunk: int,
    min_part: int = MIN_PART,
) -> list[Part] | None:
    """The parts of a partial rewrite of a file now `size` bytes long, or None: upload it whole.

    base_size: the size of the version the file was staged from (None: no such version
    or not known); changed: the byte ranges written or cut since (None: not known).
    """
    if base_size is None or changed is None:
        return None
    part = part_size(size, chunk, min_part)
    if size <= part:
        return None
    parts = []
    for n, start in enumerate(range(0, size, part), 1):
        end = min(size, start + part)
        parts.append(Part(n, start, end, end <= base_size and not _touches(changed, start, end)))
    return parts if any(p.copy for p in parts) else None
