"""The policy log's change marker, against moto in-process (the RGW test checks the real
store): what a poll sees when nothing changed, when two writers write at once, and when
an admin enrols a key.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from moto import mock_aws

from fedfs.audit.chain import SigningKey
from fedfs.config import StoreConfig
from fedfs.policy.log import Enrollment, LogStore
from fedfs.store.s3 import ObjectStore


@pytest.fixture
def log() -> Iterator[LogStore]:
    with mock_aws():
        store = ObjectStore(StoreConfig(access_key="k", secret_key="s"))
        store.create_bucket("control")
        yield LogStore(store, "control", "policy/")


def test_a_poll_sees_nothing_until_a_writer_rewrites_the_marker(log: LogStore) -> None:
    assert log.marker(None) == ("", b"")
    assert log.marker("") is None
    log.put_marker("events policy/events/1-a-0000000000 a 1")
    first = log.marker("")
    assert first is not None
    sent = log.store.requests
    assert log.marker(first[0]) is None
    assert log.store.requests == sent + 1  # one conditional GET
    assert log.store.errors == 0  # a 304 is an answer, not a failure


def test_two_writers_at_once_change_the_etag_whichever_wins(log: LogStore) -> None:
    log.put_marker("events policy/events/1-a-0000000000 a 1")
    seen = log.marker(None)
    assert seen is not None
    log.put_marker("events policy/events/2-b-0000000000 b 2")
    log.put_marker("events policy/events/2-c-0000000000 c 2")
    after = log.marker(seen[0])
    assert after is not None and after[0] != seen[0] and b" c " in after[1]


def test_an_enrolment_rewrites_the_marker_so_nodes_read_the_enrolments(log: LogStore) -> None:
    admin, node = SigningKey.generate(), SigningKey.generate()
    log.put_enrollment(Enrollment.make(admin, "n1", node.public_pem().decode()))
    seen = log.marker(None)
    assert seen is not None and seen[1].startswith(b"nodes " + node.key_id.encode())
