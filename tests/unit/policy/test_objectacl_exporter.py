"""The export task's behaviour towards the store: an outage is logged once and retried,
a policy it cannot read is left alone, and drift found by a poll is repaired and logged.
The store here is a small in-memory stand-in (what RGW enforces is tested on RGW)."""

from __future__ import annotations

import json
import logging

import pytest
import trio

from fedfs.config import ObjectAclConfig
from fedfs.errors import Unavailable
from fedfs.identity.nss import NssIdentity
from fedfs.policy.model import Grant, Level, Principal
from fedfs.policy.objectacl.export import is_owned
from fedfs.policy.objectacl.exporter import Exporter, PolicyView
from fedfs.policy.objectacl.principals import PrincipalMap
from fedfs.store.threads import WorkerThreads

GRANT = Grant("/runs/data", Principal("user", "bob"), Level.READ, "alice", 0.0)


class Store:
    """Bucket policies in memory; `down` makes every call fail as an outage would."""

    def __init__(self) -> None:
        self.policies: dict[str, str] = {}
        self.down = False
        self.puts = 0

    def _check(self) -> None:
        if self.down:
            raise Unavailable("bucket policy of 'runs': the object store did not answer")

    def get_bucket_policy(self, bucket: str) -> str | None:
        self._check()
        return self.policies.get(bucket)

    def put_bucket_policy(self, bucket: str, document: str) -> None:
        self._check()
        self.puts += 1
        self.policies[bucket] = document

    def delete_bucket_policy(self, bucket: str) -> None:
        self._check()
        self.policies.pop(bucket, None)


def exporter(store: Store, grants: list[Grant], max_bytes: int = 512 * 1024) -> Exporter:
    view = PolicyView(lambda: grants, lambda: [], lambda: {})
    principals = PrincipalMap(ObjectAclConfig(principal="arn:aws:iam:::user/{user}"), NssIdentity())
    threads = WorkerThreads(trio.CapacityLimiter(2))
    return Exporter(["runs"], store, threads, view, principals, 10.0, max_bytes)  # type: ignore[arg-type]


def ours(store: Store) -> list[str]:
    doc = store.policies.get("runs")
    return [s["Sid"] for s in json.loads(doc)["Statement"] if is_owned(s)] if doc else []


def test_an_outage_is_logged_once_retried_and_recovered(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    store = Store()
    store.down = True
    e = exporter(store, [GRANT])
    trio.run(e.sync_all, "change")
    trio.run(e.sync_all, "poll")
    assert caplog.text.count("event=object-acl-export-failed") == 1
    assert e.state["runs"].error and 0 < e.state["runs"].retry <= 10.0
    store.down = False
    trio.run(e.sync_all, "poll")
    assert len(ours(store)) == 2 and e.state["runs"].error is None
    assert "event=object-acl-export-recovered" in caplog.text


def test_a_policy_fedfs_cannot_read_is_left_as_it_is(caplog: pytest.LogCaptureFixture) -> None:
    store = Store()
    store.policies["runs"] = "{ not a policy"
    e = exporter(store, [GRANT])
    trio.run(e.sync_all, "change")
    assert store.policies["runs"] == "{ not a policy" and store.puts == 0
    assert "cannot be read as a policy document" in caplog.text


def test_drift_found_by_a_poll_is_repaired_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    store = Store()
    e = exporter(store, [GRANT])
    trio.run(e.sync_all, "change")
    wanted = ours(store)
    store.policies["runs"] = json.dumps({"Version": "2012-10-17", "Statement": []})
    trio.run(e.sync_all, "poll")
    assert ours(store) == wanted and e.state["runs"].repairs == 1
    assert "event=object-acl-repair" in caplog.text
    puts = store.puts
    trio.run(e.sync_all, "poll")  # nothing differs: nothing written
    assert store.puts == puts


def test_a_statement_taken_away_is_a_repair_also_when_a_change_starts_the_pass(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """alice's PutBucketPolicy that drops fedfs's statements is also an import observation,
    which wakes the export: the pass is a change, and what it puts back is a repair."""
    caplog.set_level(logging.INFO)
    store = Store()
    grants = [GRANT]
    e = exporter(store, grants)
    trio.run(e.sync_all, "change")
    wanted = ours(store)
    store.policies["runs"] = json.dumps({"Version": "2012-10-17", "Statement": []})
    trio.run(e.sync_all, "change")
    assert ours(store) == wanted and e.state["runs"].repairs == 1
    assert "event=object-acl-repair" in caplog.text
    # a new grant's statements are an export, not a repair
    grants.append(Grant("/runs/more", Principal("user", "bob"), Level.READ, "alice", 1.0))
    trio.run(e.sync_all, "change")
    assert len(ours(store)) == 4 and e.state["runs"].repairs == 1


def test_an_owners_statement_with_a_sid_like_fedfss_is_kept() -> None:
    """Only a Sid that is the hash of its statement marks it as fedfs's: the owner's Deny
    named "fedfs" + 24 zeros stays, and fedfs's own statements are written beside it."""
    store = Store()
    deny = {
        "Sid": "fedfs" + "0" * 24,
        "Effect": "Deny",
        "Principal": {"AWS": ["arn:aws:iam:::user/mallory"]},
        "Action": ["s3:GetObject"],
        "Resource": ["arn:aws:s3:::runs/shared/*"],
    }
    store.policies["runs"] = json.dumps({"Version": "2012-10-17", "Statement": [deny]})
    e = exporter(store, [GRANT])
    trio.run(e.sync_all, "change")
    trio.run(e.sync_all, "poll")
    statements = json.loads(store.policies["runs"])["Statement"]
    assert statements[0] == deny and not is_owned(deny)
    assert len(ours(store)) == 2 and e.state["runs"].repairs == 0


def test_grants_left_out_of_a_full_policy_are_named_logged_once_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    store = Store()
    grants = [
        Grant(f"/runs/d{i:02d}", Principal("user", "bob"), Level.READ, "alice", float(i))
        for i in range(20)
    ]
    e = exporter(store, grants, max_bytes=4000)
    trio.run(e.sync_all, "change")
    trio.run(e.sync_all, "poll")
    out = e.state["runs"].left_out()
    assert out and e.not_exported() == len(out)
    assert len(store.policies["runs"].encode()) <= 4000
    newest = grants[-1]
    verdict = e.verdict(newest)
    assert verdict and "is full" in verdict.detail and e.verdict(grants[0]) is None
    assert caplog.text.count("event=object-acl-not-exported") == len(out)  # once each
    row = e.status()[0]
    assert row["bytes"] <= row["max_bytes"] == 4000 < row["needed_bytes"]
    assert {g["path"] for g in row["not_exported"]} == {p for p, _ in out}


def test_a_command_waits_for_the_pass_that_includes_its_change() -> None:
    store = Store()
    e = exporter(store, [GRANT])

    async def main() -> tuple[bool, bool]:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(e.run)
            await e.caught_up(5.0)
            e.wake()
            before = e.done >= e.changes
            caught = await e.caught_up(5.0)
            nursery.cancel_scope.cancel()
        return before, caught

    before, caught = trio.run(main)
    assert not before and caught and len(ours(store)) == 2
