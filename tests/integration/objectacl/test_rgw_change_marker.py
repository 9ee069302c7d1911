"""The policy log's change marker on Ceph RGW: what idle nodes poll must be one cheap,
conditional request there too (moto answers If-None-Match; this checks the real store).

RGW's own request counters (its admin socket) count what reaches it.
"""

from __future__ import annotations

import uuid

from fedfs.config import StoreConfig
from fedfs.policy.log import LogStore
from fedfs.store.s3 import ObjectStore
from tests.integration.objectacl.conftest import SERVICE, Rgw


def test_the_change_marker_is_one_conditional_get_that_sees_every_rewrite(
    rgw: Rgw, rgw_bucket: str
) -> None:
    access, secret = rgw.keys[SERVICE]  # the daemon's keys, in a bucket it does not own
    store = ObjectStore(StoreConfig(endpoint=rgw.url, access_key=access, secret_key=secret))
    log = LogStore(store, rgw_bucket, f"policy-{uuid.uuid4().hex[:6]}/")

    assert log.marker(None) == ("", b"")  # no marker yet: nothing to wait for
    assert log.marker("") is None  # and still none
    log.put_marker("events policy/events/1-node1-0000000001 node1 1")
    first = log.marker("")
    assert first is not None and first[1].startswith(b"events ")

    before = rgw.cluster.request_counts()
    unchanged = [log.marker(first[0]) for _ in range(20)]
    after = rgw.cluster.request_counts()
    assert unchanged == [None] * 20  # 304 each time
    assert after["req"] - before["req"] == 20, (before, after)  # one request per poll
    print(f"RGW counted {after['failed_req'] - before['failed_req']} of the 20 304s as failed")

    # Two writers at once: the later write wins, and either one changes the ETag.
    log.put_marker("events policy/events/2-node2-0000000001 node2 2")
    log.put_marker("events policy/events/2-node3-0000000001 node3 2")
    second = log.marker(first[0])
    assert second is not None and second[0] != first[0] and b"node3" in second[1]
    assert log.marker(second[0]) is None
