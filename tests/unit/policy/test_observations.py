"""Observations: what a watcher node saw outside fedfs, carried to every node as records.

Real SQLite files, real signed records and a real Sharing with its audit trail; no
daemon, no object store.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from fedfs.audit.chain import AuditRecord, AuditTrail, SigningKey
from fedfs.errors import PolicyError
from fedfs.identity.nss import NssIdentity
from fedfs.policy import replay
from fedfs.policy.log import import_snapshot, snapshot_body
from fedfs.policy.site import SitePolicy
from fedfs.policy.store import PolicyStore
from tests.unit.policy.test_replay import GIDS, Node

RIGHTS = "bucket-rights"


def observed(node: Node, bucket: str, payload: Any) -> AuditRecord:
    return node.make(
        replay.OBSERVE,
        detail={"kind": RIGHTS, "key": bucket, "payload": json.dumps(payload)},
    )


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[list[PolicyStore]]:
    made = [PolicyStore(tmp_path / f"s{i}" / "policy.db", GIDS) for i in range(3)]
    yield made
    for s in made:
        s.close()


class Seen:
    """An observer that remembers what it was handed, as the importer's would."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def __call__(self, store: PolicyStore, key: str, payload: Any) -> list[str]:
        self.calls.append((key, payload))
        return [f"/{key}"]


def test_the_newest_observation_wins_in_any_order_and_applying_twice_does_nothing(
    stores: list[PolicyStore],
) -> None:
    wall = [1_700_000_000.0]
    a, b = Node("a", wall), Node("b", wall)
    first = observed(a, "climate", {"read": ["carol"]})
    wall[0] += 1
    second = observed(b, "climate", {"read": []})
    other = observed(a, "ocean", {"write": ["bob"]})
    orders = [[first, second, other], [second, other, first], [other, second, first]]
    for store, order in zip(stores, orders, strict=True):
        seen = Seen()
        for r in order:
            replay.apply(store, r, {RIGHTS: seen})
        assert [p for _, _, _, p in store.observations()] == ['{"read":[]}', '{"write":["bob"]}']
        # The observer's last word on each bucket is the newest observation.
        assert dict(seen.calls)["climate"] == {"read": []}
        assert replay.apply(store, second, {RIGHTS: seen}) is None  # again: nothing
    assert stores[0].observations() == stores[1].observations() == stores[2].observations()


def test_an_observation_of_a_kind_nobody_handles_is_kept_and_a_malformed_one_refused(
    stores: list[PolicyStore],
) -> None:
    node = Node("a", [1_700_000_000.0])
    assert replay.apply(stores[0], observed(node, "climate", {"x": 1})) == []
    assert stores[0].observation(RIGHTS, "climate") is not None
    broken = node.make(replay.OBSERVE, detail={"kind": RIGHTS, "key": "c", "payload": "{"})
    with pytest.raises(PolicyError, match="not JSON"):
        replay.apply(stores[0], broken)
    missing = node.make(replay.OBSERVE, detail={"kind": RIGHTS})
    with pytest.raises(PolicyError, match="without kind, key or payload"):
        replay.apply(stores[0], missing)


def test_a_snapshot_carries_observations_to_a_new_node(stores: list[PolicyStore]) -> None:
    node = Node("a", [1_700_000_000.0])
    replay.apply(stores[0], observed(node, "climate", {"read": ["carol"]}))

    class Holder:  # what snapshot_body and import_snapshot need of Sharing
        store = stores[0]
        observers: dict[str, replay.Observer] = {RIGHTS: Seen()}

    body = json.loads(json.dumps(snapshot_body(Holder, {}, "0000000000001.00000")))  # type: ignore[arg-type]
    Holder.store = stores[1]
    import_snapshot(Holder, body)  # type: ignore[arg-type]
    assert stores[1].observations() == stores[0].observations()
    seen = Holder.observers[RIGHTS]
    assert isinstance(seen, Seen) and seen.calls == [("climate", {"read": ["carol"]})]


def test_publish_observation_records_applies_and_publishes_once_per_change(tmp_path: Path) -> None:
    trio.run(publish_observation_records_applies_and_publishes_once_per_change, tmp_path)


async def publish_observation_records_applies_and_publishes_once_per_change(tmp_path: Path) -> None:
    from fedfs.policy.sharing import Sharing

    store = PolicyStore(tmp_path / "policy.db", GIDS)
    trail = AuditTrail(tmp_path / "audit", "n1", SigningKey.generate())
    changed: list[list[str]] = []
    published: list[AuditRecord] = []
    sharing = Sharing(
        store,
        SitePolicy.default(),
        NssIdentity(),
        {},
        trio.CapacityLimiter(1),
        changed.append,
        trail,
    )
    sharing.on_record = published.append
    seen = Seen()
    sharing.on_observation(RIGHTS, seen)
    rights = {"read": {"shared/": ["carol"]}}
    assert await sharing.publish_observation(
        RIGHTS, "climate", rights, path="/climate", summary="carol r"
    )
    assert not await sharing.publish_observation(
        RIGHTS, "climate", {"read": {"shared/": ["carol"]}}
    )
    assert await sharing.publish_observation(RIGHTS, "climate", {})
    assert [r.action for r in published] == [replay.OBSERVE, replay.OBSERVE]
    assert published[0].path == "/climate" and published[0].after == "carol r"
    assert seen.calls == [("climate", rights), ("climate", {})]
    assert changed == [["/climate"], ["/climate"]]
    kept = store.observation(RIGHTS, "climate")
    assert kept is not None and kept[1] == "{}" and kept[0] == replay.stamp_of(published[1])
    # Another node applying the records in any order ends with the same observation.
    other = PolicyStore(tmp_path / "other.db", GIDS)
    for r in reversed(published):
        replay.apply(other, r)
    assert other.observations() == store.observations()
    with pytest.raises(PolicyError, match="more than"):
        await sharing.publish_observation(RIGHTS, "huge", {"x": "y" * replay.OBSERVATION_LIMIT})
    store.close()
    other.close()


def test_a_file_grants_manage_gives_no_say_over_a_directory_of_its_name(tmp_path: Path) -> None:
    """manage held through a grant on the file P counts at P only while P is that file: on
    a directory a prefix `P/` made there it is nothing (sharing would widen it to a tree)."""
    from fedfs.policy.model import OBJECT, Grant, Level, Principal
    from fedfs.policy.sharing import Actor, BucketOwner, Sharing

    store = PolicyStore(tmp_path / "policy.db", GIDS)
    store.put_grant(
        Grant("/b/d/f", Principal("user", "mallory"), Level.MANAGE, "alice", 1.0, None, OBJECT)
    )
    trail = AuditTrail(tmp_path / "audit", "n1", SigningKey.generate())
    sharing = Sharing(
        store,
        SitePolicy.default(),
        NssIdentity(),
        {"b": BucketOwner("b", Principal("user", "alice"))},
        trio.CapacityLimiter(1),
        print,
        trail,
    )
    mallory = Actor(4242, "mallory")
    assert sharing.authority(mallory, "/b/d/f").level == Level.MANAGE
    assert sharing.authority(mallory, "/b/d/f", is_dir=True).level is None
    assert sharing.authority(mallory, "/b/d/f/x").level is None
    store.close()
