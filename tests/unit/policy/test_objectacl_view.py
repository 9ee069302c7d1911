"""What the bucket's own policy does to the POSIX view: a Deny wins over grants, a public
Allow is "other" access, both checked as the kernel checks the ACL (acl.permits)."""

from __future__ import annotations

from fedfs.policy.acl import R, W, permits
from fedfs.policy.engine import ObjectMeta, PolicyEngine, PosixView
from fedfs.policy.model import Denial, Grant, Identities, Level, Opening, Principal

NOW = 1_700_000_000.0
IDS = Identities(
    uids={"alice": 1001, "bob": 1002, "carol": 1003},
    primary_gids={1001: 100, 1002: 100, 1003: 100},
    gids={"staff": 100},
)
FILE = ObjectMeta(uid=1001, gid=100, mode=0o640)
OPEN = ObjectMeta(uid=1001, gid=100, mode=0o755)


def grant(path: str, user: str, level: Level = Level.READ) -> Grant:
    return Grant(path, Principal("user", user), level, "alice", NOW - 60)


def shown(
    engine: PolicyEngine, path: str, meta: ObjectMeta = FILE, is_dir: bool = False
) -> PosixView:
    return engine.view(path, meta, is_dir, NOW, lambda: [OPEN] * (path.count("/") - 1))


def may(view: PosixView, uid: int, want: int) -> bool:
    gids = frozenset({100}) if uid in IDS.uids.values() else frozenset({999})
    return permits(view.mode, view.acl_access, view.uid, view.gid, uid, gids, want)


def test_a_deny_wins_over_a_grant_and_over_the_owning_group() -> None:
    engine = PolicyEngine(
        [grant("/b/runs", "bob", Level.WRITE)],
        [],
        IDS,
        denials=[Denial("/b/runs/secret", "bob", "bucket-policy:NoBob")],
    )
    assert may(shown(engine, "/b/runs/a.nc"), 1002, R | W)
    secret = shown(engine, "/b/runs/secret/a.nc")
    assert not may(secret, 1002, R)
    assert may(secret, 1003, R)  # carol, in the owning group, keeps its bits
    assert may(secret, 1001, R | W)  # the owner is never narrowed
    assert engine.level_of("bob", 1002, frozenset({100}), "/b/runs/secret/a.nc", NOW) is None
    assert engine.level_of("bob", 1002, frozenset({100}), "/b/runs/a.nc", NOW) == Level.WRITE


def test_a_public_allow_opens_other_there_and_a_deny_for_everyone_closes_it() -> None:
    engine = PolicyEngine(
        [],
        [],
        IDS,
        denials=[Denial("/b/public/hidden", None, "bucket-policy:Hide")],
        openings=[Opening("/b/public", Level.READ, "bucket-policy:Pub")],
    )
    stranger = 4242
    assert not may(shown(engine, "/b/other.nc"), stranger, R)
    assert may(shown(engine, "/b/public/a.nc"), stranger, R)
    assert not may(shown(engine, "/b/public/a.nc"), stranger, W)
    assert not may(shown(engine, "/b/public/hidden/a.nc"), stranger, R)


def test_chmod_limits_public_access_as_it_limits_grants() -> None:
    engine = PolicyEngine([], [], IDS, openings=[Opening("/b/p", Level.READ, "bucket-acl")])
    private = ObjectMeta(uid=1001, gid=100, mode=0o600, explicit_mask=0)
    assert not may(shown(engine, "/b/p/a.nc", private), 4242, R)
