"""A partial rewrite's plan rebuilds exactly the new file from the old version and the sent parts."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from fedfs.data.parts import END, MAX_PARTS, MIN_PART, MiB, add_range, part_size, plan

PART = 64  # bytes: the rules do not depend on the unit, and small files keep examples fast

# One change to a file: ("write", offset, length) or ("truncate", size, 0).
changes = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.integers(0, 6 * PART), st.integers(1, PART + 3)),
        st.tuples(st.just("truncate"), st.integers(0, 6 * PART), st.just(0)),
    ),
    max_size=8,
)


def apply(base: bytearray, ops: list[tuple[str, int, int]]) -> tuple[bytearray, object]:
    """The file after ops, and the ranges a staging copy would have collected."""
    data, ranges = bytearray(base), []
    ranges_or_none: list[tuple[int, int]] | None = ranges
    for n, (kind, a, b) in enumerate(ops):
        if kind == "write":
            if a > len(data):
                data.extend(bytes(a - len(data)))
            data[a : a + b] = bytes([(n % 250) + 1]) * b
            ranges_or_none = add_range(ranges_or_none, a, a + b)
        else:
            if a < len(data):
                ranges_or_none = add_range(ranges_or_none, a, END)
                del data[a:]
            else:
                data.extend(bytes(a - len(data)))
    return data, ranges_or_none


@settings(max_examples=300, deadline=None)
@given(base_parts=st.integers(0, 5), tail=st.integers(0, PART - 1), ops=changes)
def test_copied_parts_and_sent_parts_make_the_new_file(
    base_parts: int, tail: int, ops: list[tuple[str, int, int]]
) -> None:
    base = bytearray(i % 251 for i in range(base_parts * PART + tail))
    new, changed = apply(base, ops)
    parts = plan(len(new), len(base), changed, PART, min_part=PART)  # type: ignore[arg-type]
    if parts is None:
        return  # uploaded whole: nothing to check beyond the plan's own rules
    assert [p.number for p in parts] == list(range(1, len(parts) + 1))
    assert parts[0].start == 0 and parts[-1].end == len(new)
    assert all(a.end == b.start for a, b in itertools.pairwise(parts))
    assert all(p.end - p.start == PART for p in parts[:-1])
    rebuilt = b"".join(
        bytes(base[p.start : p.end]) if p.copy else bytes(new[p.start : p.end]) for p in parts
    )
    assert rebuilt == new


@given(st.lists(st.tuples(st.integers(0, 1000), st.integers(1, 50)), max_size=40))
def test_ranges_cover_exactly_what_was_written(writes: list[tuple[int, int]]) -> None:
    ranges: list[tuple[int, int]] | None = []
    written: set[int] = set()
    for a, n in writes:
        ranges = add_range(ranges, a, a + n)
        written.update(range(a, a + n))
    assert ranges is not None
    assert ranges == sorted(ranges)
    assert all(a[1] < b[0] for a, b in itertools.pairwise(ranges))  # merged
    assert {i for lo, hi in ranges for i in range(lo, hi)} == written


def test_unknown_changes_or_no_base_upload_whole() -> None:
    assert plan(100 * MiB, None, [], 16 * MiB) is None
    assert plan(100 * MiB, 100 * MiB, None, 16 * MiB) is None
    assert plan(16 * MiB, 16 * MiB, [], 16 * MiB) is None  # one part: a PUT is as good
    assert plan(64 * MiB, 64 * MiB, [(0, 64 * MiB)], 16 * MiB) is None  # nothing to copy


def test_one_byte_of_a_gib_sends_one_part() -> None:
    parts = plan(1024 * MiB, 1024 * MiB, [(500 * MiB, 500 * MiB + 1)], 16 * MiB)
    assert parts is not None and len(parts) == 64
    assert [p.number for p in parts if not p.copy] == [32]


def test_too_many_scattered_changes_upload_whole() -> None:
    ranges: list[tuple[int, int]] | None = []
    for i in range(2000):
        ranges = add_range(ranges, i * 10, i * 10 + 1)
    assert ranges is None


def test_parts_stay_within_s3_limits() -> None:
    size = 5 * 1024**4  # 5 TiB, S3's largest object
    part = part_size(size, 16 * MiB)
    assert part % MiB == 0 and -(-size // part) <= MAX_PARTS
    assert part_size(100 * MiB, 1 * MiB) == MIN_PART
