"""The store's fast timestamp parser answers exactly what botocore's would."""

from __future__ import annotations

import botocore.utils
import pytest

from fedfs.store.s3 import parse_timestamp

VALUES = [
    "2026-11-27T10:01:02.123Z",  # ListObjectsV2 (Ceph: milliseconds)
    "2026-11-27T10:01:02Z",
    "2026-11-27T10:01:02.000+00:00",
    "Fri, 27 Nov 2026 10:01:02 GMT",  # Last-Modified of a HEAD or GET
    "Fri, 27 Nov 2026 10:01:02 +0100",
    "1700000000",  # epoch seconds: botocore's own parser handles the rest
    "2026-11-27",
]


@pytest.mark.parametrize("value", VALUES)
def test_the_same_instant_and_zone_as_botocore(value: str) -> None:
    ours, theirs = parse_timestamp(value), botocore.utils.parse_timestamp(value)
    assert ours == theirs
    assert ours.utcoffset() == theirs.utcoffset()


def test_nonsense_fails_as_in_botocore() -> None:
    with pytest.raises(ValueError):
        botocore.utils.parse_timestamp("not a time")
    with pytest.raises(ValueError):
        parse_timestamp("not a time")
