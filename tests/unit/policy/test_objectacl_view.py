"""What the bucket's own policy does to the POSIX view: a Deny wins over grants, a public
Allow is "other" access, both checked as the kernel checks the ACL (acl.permits)."""

from __future__ import annotations

from fedfs.policy.acl import R, W, X, permits
from fedfs.policy.engine import ObjectMeta, PolicyEngine, PosixView
from fedfs.policy.model import (
    BELOW,
    LIST,
    LIST_ONE,
    PREFIX,
    Denial,
    Grant,
    Identities,
    Level,
    Opening,
    Principal,
    Shape,
)

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


# -- shapes: what a bucket policy's rights give a file and a directory -----------------

DIR = ObjectMeta(uid=1001, gid=100, mode=0o700)
PRIVATE = ObjectMeta(uid=1001, gid=100, mode=0o600)


def imported(path: str, user: str, shape: Shape, level: Level = Level.READ) -> Grant:
    return Grant(path, Principal("user", user), level, "bucket-policy:S", NOW - 60, None, shape)


def bits_of(view: PosixView, uid: int) -> str:
    return "".join(c if may(view, uid, b) else "-" for c, b in (("r", R), ("w", W), ("x", X)))


def test_get_on_a_prefix_gives_files_below_it_never_the_object_of_its_name() -> None:
    engine = PolicyEngine([imported("/b/P", "carol", BELOW)], [], IDS)
    carol = 1003
    assert bits_of(shown(engine, "/b/P/x.nc", PRIVATE), carol) == "r--"
    assert bits_of(shown(engine, "/b/P/d/x.nc", PRIVATE), carol) == "r--"
    # the object P (a file of that name, or the file the prefix P/ shadows): nothing
    assert bits_of(shown(engine, "/b/P", PRIVATE), carol) == "---"
    # directories: search, never listing (the store lists only with s3:ListBucket)
    assert bits_of(shown(engine, "/b/P", DIR, is_dir=True), carol) == "--x"
    assert bits_of(shown(engine, "/b/P/d", DIR, is_dir=True), carol) == "--x"
    # the way to it through the private bucket root: search only (pass-through)
    assert bits_of(shown(engine, "/b", DIR, is_dir=True), carol) == "--x"
    assert bits_of(shown(engine, "/b/Q.nc", PRIVATE), carol) == "---"


def test_write_on_a_prefix_gives_directories_write_and_search_but_not_listing() -> None:
    engine = PolicyEngine([imported("/b/P", "carol", BELOW, Level.WRITE)], [], IDS)
    assert bits_of(shown(engine, "/b/P/x.nc", PRIVATE), 1003) == "rw-"
    assert bits_of(shown(engine, "/b/P/d", DIR, is_dir=True), 1003) == "-wx"
    assert bits_of(shown(engine, "/b/P", PRIVATE), 1003) == "---"


def test_a_prefix_without_slash_covers_the_object_of_its_name_too() -> None:
    engine = PolicyEngine([imported("/b/data", "carol", PREFIX)], [], IDS)
    assert bits_of(shown(engine, "/b/data", PRIVATE), 1003) == "r--"
    assert bits_of(shown(engine, "/b/data/x", PRIVATE), 1003) == "r--"
    assert bits_of(shown(engine, "/b/data", DIR, is_dir=True), 1003) == "--x"
    assert bits_of(shown(engine, "/b/datafile", PRIVATE), 1003) == "---"


def test_listing_rights_make_directories_readable_where_their_prefix_matches() -> None:
    engine = PolicyEngine(
        [
            imported("/b/P", "carol", BELOW),
            imported("/b/P", "carol", LIST_ONE),
            imported("/b/Q", "bob", BELOW),
            imported("/b/Q", "bob", LIST),
        ],
        [],
        IDS,
    )
    assert bits_of(shown(engine, "/b/P", DIR, is_dir=True), 1003) == "r-x"
    assert bits_of(shown(engine, "/b/P/d", DIR, is_dir=True), 1003) == "--x"  # one level only
    assert bits_of(shown(engine, "/b/Q/d/e", DIR, is_dir=True), 1002) == "r-x"
    assert bits_of(shown(engine, "/b/Q/d/x.nc", PRIVATE), 1002) == "r--"
    # a listing right gives files nothing
    assert bits_of(shown(engine, "/b/Q", PRIVATE), 1002) == "---"
    assert bits_of(shown(engine, "/b", DIR, is_dir=True), 1002) == "--x"


def test_a_fedfs_grant_still_covers_its_path_and_everything_below() -> None:
    engine = PolicyEngine([grant("/b/P", "carol"), imported("/b/P", "bob", BELOW)], [], IDS)
    assert bits_of(shown(engine, "/b/P", PRIVATE), 1003) == "r--"
    assert bits_of(shown(engine, "/b/P", DIR, is_dir=True), 1003) == "r-x"
    assert bits_of(shown(engine, "/b/P", PRIVATE), 1002) == "---"


def test_public_rights_have_the_same_shapes() -> None:
    engine = PolicyEngine(
        [], [], IDS, openings=[Opening("/b/pub", Level.READ, "bucket-policy:Pub", None, BELOW)]
    )
    stranger = 4242
    assert may(shown(engine, "/b/pub/a.nc"), stranger, R)
    assert not may(shown(engine, "/b/pub"), stranger, R)
    listing = shown(engine, "/b/pub", ObjectMeta(uid=1001, gid=100, mode=0o750), is_dir=True)
    assert not may(listing, stranger, R)
    assert may(listing, stranger, X)
