"""Records applied in any order give the same policy: the rule every node follows.

Real SQLite files and real signed records; no daemon, no object store.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fedfs.audit.chain import AuditRecord, AuditWriter, SigningKey
from fedfs.errors import PolicyError
from fedfs.policy import replay
from fedfs.policy.hlc import HybridClock, format_hlc, parse_hlc
from fedfs.policy.log import Enrollment, LogError, import_snapshot, open_snapshot, sign_snapshot
from fedfs.policy.store import PolicyStore

GIDS = (600000, 699999)


class Node:
    """A node's writer with its own clock, making records as Sharing does."""

    def __init__(self, name: str, wall: list[float]) -> None:
        self.name = name
        self.key = SigningKey.generate()
        self.writer = AuditWriter(name, self.key.private_key, self.key.key_id)
        self.clock = HybridClock(lambda: wall[0])

    def make(self, action: str, **fields: Any) -> AuditRecord:
        detail = {**fields.pop("detail", {}), "hlc": self.clock.now()}
        rec = self.writer.append(
            actor_uid=1000, actor="alice", action=action, detail=detail, **fields
        )
        self.writer.drain()
        return rec

    def share(self, path: str, who: str, level: str, expires: float | None = None) -> AuditRecord:
        detail: dict[str, Any] = {"granted_at_ms": 1_000_000}
        if expires is not None:
            detail["expires_ms"] = int(expires * 1000)
        return self.make("share", path=path, principal=who, level=level, detail=detail)

    def unshare(self, path: str, who: str) -> AuditRecord:
        return self.make("unshare", path=path, principal=who, level="read")


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[list[PolicyStore]]:
    made = [PolicyStore(tmp_path / f"s{i}" / "policy.db", GIDS) for i in range(3)]
    yield made
    for s in made:
        s.close()


def state(s: PolicyStore) -> tuple[Any, ...]:
    return (
        [(g.path, str(g.principal), str(g.level), g.expires) for g in s.grants()],
        [(t.name, t.gid, sorted(t.members), sorted(t.owners)) for t in s.teams()],
    )


def history() -> list[AuditRecord]:
    wall = [1_700_000_000.0]
    a, b = Node("a", wall), Node("b", wall)
    recs = [
        a.make(
            "team-create",
            principal="team:cosmo",
            detail={"gid": 600001, "owners": "alice", "members": "alice"},
        ),
        a.share("/b/x", "user:bob", "read"),
        b.share("/b/x", "user:bob", "write"),  # same stamp millisecond: node name breaks the tie
        a.make("team-add", principal="team:cosmo", detail={"users": "bob,carol", "owners": 0}),
    ]
    wall[0] += 1
    recs += [
        b.unshare("/b/x", "user:bob"),
        a.share("/b/y", "team:cosmo", "read"),
        b.make("team-remove", principal="team:cosmo", detail={"users": "carol"}),
    ]
    wall[0] += 1
    recs += [
        a.share("/b/x", "user:bob", "manage"),
        b.share("/b/z", "group:lab", "read"),
        a.make("expire", path="/b/z", principal="group:lab", level="read"),  # not applied
    ]
    return recs


def test_any_order_gives_the_same_policy(stores: list[PolicyStore]) -> None:
    recs = history()
    # teams must exist before their membership changes: a creation travels first
    rng = random.Random(7)
    results = []
    for s in stores:
        order = recs[:1] + rng.sample(recs[1:], len(recs) - 1)
        for r in order:
            replay.apply(s, r)
        results.append(state(s))
    assert results[0] == results[1] == results[2]
    grants, teams = results[0]
    # the latest stamps win: bob's manage on /b/x (after the unshare), the team change
    assert ("/b/x", "user:bob", "manage", None) in grants
    assert ("/b/z", "group:lab", "read", None) in grants  # the expire record is not applied
    assert teams == [("cosmo", 600001, ["alice", "bob"], ["alice"])]


def test_an_older_change_arriving_late_does_nothing(stores: list[PolicyStore]) -> None:
    wall = [1_700_000_000.0]
    a = Node("a", wall)
    share = a.share("/b/x", "user:bob", "read")
    wall[0] += 1
    unshare = a.unshare("/b/x", "user:bob")
    s = stores[0]
    assert replay.apply(s, unshare) == ["/b/x"]
    assert replay.apply(s, share) is None  # older than the unshare's stamp: nothing changes
    assert s.grants() == []
    assert replay.apply(s, unshare) is None  # and applying twice is harmless


def test_tie_on_the_clock_is_broken_by_node_name(stores: list[PolicyStore]) -> None:
    wall = [1_700_000_000.0]
    a, b = Node("a", wall), Node("b", wall)
    ra, rb = a.share("/b/x", "user:bob", "read"), b.share("/b/x", "user:bob", "write")
    assert replay.hlc_of(ra) == replay.hlc_of(rb)
    for s, order in zip(stores[:2], ([ra, rb], [rb, ra]), strict=True):
        for r in order:
            replay.apply(s, r)
        assert [str(g.level) for g in s.grants()] == ["write"]  # "b" sorts after "a"


def test_an_expired_share_arriving_late_is_not_granted(stores: list[PolicyStore]) -> None:
    a = Node("a", [time.time()])
    replay.apply(stores[0], a.share("/b/x", "user:bob", "read", expires=time.time() - 5))
    assert stores[0].grants() == []


def test_two_creations_of_one_team_keep_the_earlier(stores: list[PolicyStore]) -> None:
    wall = [1_700_000_000.0]
    a, b = Node("a", wall), Node("b", wall)
    first = a.make("team-create", principal="team:t", detail={"gid": 600005, "owners": "alice"})
    wall[0] += 1
    second = b.make("team-create", principal="team:t", detail={"gid": 600009, "owners": "bob"})
    for s, order in zip(stores[:2], ([first, second], [second, first]), strict=True):
        for r in order:
            replay.apply(s, r)
        team = s.team("t")
        assert team is not None and team.gid == 600005 and team.owners == {"alice"}


def test_a_membership_change_for_an_unknown_team_is_an_error(stores: list[PolicyStore]) -> None:
    a = Node("a", [1_700_000_000.0])
    rec = a.make("team-add", principal="team:ghost", detail={"users": "bob"})
    with pytest.raises(PolicyError, match="does not exist here"):
        replay.apply(stores[0], rec)


def test_replay_rebuilds_from_records_and_lists_what_it_could_not_apply(
    stores: list[PolicyStore],
) -> None:
    recs = history()
    ghost = Node("c", [1_800_000_000.0]).make(
        "team-add", principal="team:ghost", detail={"users": "x"}
    )
    applied, problems = replay.replay(stores[0], [*reversed(recs), ghost])
    for r in recs:
        replay.apply(stores[1], r)
    assert state(stores[0]) == state(stores[1])
    assert applied >= 5 and len(problems) == 1 and "ghost" in problems[0]


def test_hybrid_clock_never_goes_back_and_follows_other_nodes() -> None:
    wall = [1000.0]
    clock = HybridClock(lambda: wall[0], max_drift=60)
    first = clock.now()
    wall[0] = 990.0  # the wall clock steps back
    second = clock.now()
    assert second > first
    clock.observe(format_hlc(1_005_000, 3))  # another node 5 s ahead
    assert clock.now() > format_hlc(1_005_000, 3)
    clock.observe(format_hlc(9_000_000, 0))  # hours ahead: not followed
    assert parse_hlc(clock.now())[0] < 2_000_000
    with pytest.raises(ValueError):
        parse_hlc("12:00")


def test_enrolment_is_checked_against_the_admin_keys() -> None:
    admin, node, other_admin = SigningKey.generate(), SigningKey.generate(), SigningKey.generate()
    e = Enrollment.make(admin, "n1", node.public_pem().decode())
    admins = {admin.key_id: admin.private_key.public_key()}
    assert e.check(admins) is None
    assert Enrollment.decode(e.encode()) == e
    assert "not in [policy] admin_keys" in (e.check({}) or "")
    forged = Enrollment(**{**e.__dict__, "node": "n2"})  # renamed after signing
    assert "signature does not match" in (forged.check(admins) or "")
    by_other = Enrollment.make(other_admin, "n1", node.public_pem().decode())
    assert by_other.check(admins) is not None
    with pytest.raises(LogError):
        Enrollment.decode(b'{"v": 9}')


def test_a_snapshot_loads_only_with_a_valid_signature(stores: list[PolicyStore]) -> None:
    admin, key = SigningKey.generate(), SigningKey.generate()
    enrolled = {key.key_id: Enrollment.make(admin, "a", key.public_pem().decode())}
    recs = history()
    for r in recs:
        replay.apply(stores[0], r)

    class Holder:  # what import_snapshot and snapshot_body need of Sharing
        store = stores[0]

    from fedfs.policy.log import snapshot_body

    body = snapshot_body(Holder, {"b": (4, "ab" * 32, "k")}, format_hlc(1, 0))  # type: ignore[arg-type]
    data = sign_snapshot(body, "a", key)
    snap = open_snapshot(data, enrolled)
    Holder.store = stores[1]
    import_snapshot(Holder, snap)  # type: ignore[arg-type]
    assert state(stores[1]) == state(stores[0])
    assert stores[1].heads() == {"b": (4, "ab" * 32, "k")}
    assert stores[1].stamps() == stores[0].stamps()
    tampered = data.replace(b'"manage"', b'"read"')
    with pytest.raises(LogError, match="signature"):
        open_snapshot(tampered, enrolled)
    with pytest.raises(LogError, match="not enrolled"):
        open_snapshot(data, {})


def test_a_file_grant_replays_with_its_shape_and_an_older_record_as_tree(
    stores: list[PolicyStore],
) -> None:
    node = Node("a", [1_700_000_000.0])
    detail = {"granted_at_ms": 1_000_000, "shape": "object"}
    shaped = node.make("share", path="/b/f", principal="user:bob", level="read", detail=detail)
    older = node.share("/b/d", "user:bob", "read")
    for rec in (shaped, older):
        replay.apply(stores[0], rec)
    assert {(g.path, g.shape) for g in stores[0].grants()} == {("/b/f", "object"), ("/b/d", "tree")}
