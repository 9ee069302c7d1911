"""Grants -> POSIX view and levels: what getfacl shows and who may do what, per path."""

from __future__ import annotations

import itertools

import pytest

from fedfs.errors import PolicyError
from fedfs.policy.acl import Acl, AclTag
from fedfs.policy.engine import ObjectMeta, PolicyEngine, PosixView
from fedfs.policy.model import (
    OBJECT,
    Grant,
    Identities,
    Level,
    Principal,
    Team,
    normalize_path,
)

NOW = 1_700_000_000.0
ROOT_FILE_0640 = ObjectMeta(uid=0, gid=0, mode=0o640)
ROOT_DIR_0750 = ObjectMeta(uid=0, gid=0, mode=0o750)
OPEN_DIR = ObjectMeta(uid=0, gid=0, mode=0o755)  # every directory above, unless a test says

IDS = Identities(
    uids={"alice": 1001, "bob": 1002, "carol": 1003, "owner": 500},
    primary_gids={1001: 100, 1002: 100, 1003: 100, 500: 500},
    gids={"climate": 2000, "staff": 100, "cosmo-ldap": 3000, "owners": 500},
    supplementary={1001: frozenset({2000}), 1003: frozenset({3000})},
)
COSMO = Team("cosmo", gid=70001, members=frozenset({"bob", "carol", "ghost"}), owners=frozenset())
COSMO_BACKED = Team("cosmo", gid=70001, members=frozenset({"bob"}), group="cosmo-ldap")

# The bytes from the design review: write for uid 1001 on a root-owned 0640 file.
GRANTED_0640 = bytes.fromhex(
    "02000000 0100 0600 ffffffff 0200 0600 e9030000 0400 0400 ffffffff "
    "1000 0600 ffffffff 2000 0000 ffffffff".replace(" ", "")
)


def grant(path: str, principal: str, level: str = "read", expires: float | None = None) -> Grant:
    return Grant(path, Principal.parse(principal), Level.parse(level), "owner", NOW - 60, expires)


def view(
    grants: list[Grant],
    path: str = "/b/runs/out.nc",
    meta: ObjectMeta = ROOT_FILE_0640,
    is_dir: bool = False,
    teams: tuple[Team, ...] = (),
) -> PosixView:
    return PolicyEngine(grants, teams, IDS).view(path, meta, is_dir, NOW, lambda: open_above(path))


def open_above(path: str) -> list[ObjectMeta]:
    """Directories that anyone may search, one for each path above path."""
    return [OPEN_DIR] * (normalize_path(path).count("/") - 1)


def getfacl(data: bytes | None) -> str:
    assert data is not None
    return str(Acl.decode(data))


# --- the POSIX view ---------------------------------------------------------------------


def test_write_grant_on_0640_file_gives_the_reviewed_bytes() -> None:
    shown = view([grant("/b/runs/out.nc", "user:alice", "write")])
    assert shown.acl_access == GRANTED_0640
    assert shown.mode == 0o660  # ls -l shows the mask in the group bits
    assert (shown.uid, shown.gid, shown.acl_default) == (0, 0, None)


def test_same_grants_in_any_order_give_identical_bytes() -> None:
    grants = [
        grant("/b", "user:bob"),
        grant("/b/runs", "group:climate", "write"),
        grant("/b/runs", "team:cosmo"),
        grant("/b/runs/out.nc", "user:alice", "manage"),
    ]
    shown = {view(list(order), teams=(COSMO,)) for order in itertools.permutations(grants)}
    assert len(shown) == 1


def test_no_grants_means_no_acl_and_the_stored_mode() -> None:
    shown = view([], meta=ObjectMeta(0, 0, 0o4750))
    assert shown == PosixView(0, 0, 0o4750, None, None)


def test_grants_for_one_person_merge_into_one_entry() -> None:
    shown = view(
        [grant("/b", "user:alice"), grant("/b/runs", "user:alice", "write")],
        meta=ObjectMeta(0, 0, 0o600),
    )
    assert getfacl(shown.acl_access) == (
        "user::rw-\nuser:1001:rw-\ngroup::---\nmask::rw-\nother::---"
    )


def test_team_grant_names_each_known_member() -> None:
    shown = view([grant("/b/runs", "team:cosmo")], teams=(COSMO,))
    # bob and carol by uid; ghost has no uid, and an unbacked team has no kernel group.
    assert getfacl(shown.acl_access) == (
        "user::rw-\nuser:1002:r--\nuser:1003:r--\ngroup::r--\nmask::r--\nother::---"
    )


def test_team_backed_by_a_group_also_gets_a_group_entry() -> None:
    shown = view([grant("/b/runs", "team:cosmo", "write")], teams=(COSMO_BACKED,))
    acl = Acl.decode(shown.acl_access or b"")
    assert acl.perm(AclTag.USER, 1002) == 6
    assert acl.perm(AclTag.GROUP, 3000) == 6


def test_membership_change_shows_after_rebuild() -> None:
    grants = [grant("/b", "team:cosmo")]
    before = view(grants, teams=(COSMO,))
    after = view(grants, teams=(Team("cosmo", 70001, members=frozenset({"alice"})),))
    assert Acl.decode(before.acl_access or b"").perm(AclTag.USER, 1002) == 4
    assert Acl.decode(after.acl_access or b"").perm(AclTag.USER, 1002) is None
    assert Acl.decode(after.acl_access or b"").perm(AclTag.USER, 1001) == 4


@pytest.mark.parametrize(
    ("mode", "is_dir", "level", "expected"),
    [
        (0o640, False, "read", 0o4),  # plain file: r, no x
        (0o640, False, "write", 0o6),
        (0o750, False, "read", 0o5),  # executable file: like chmod a+rX
        (0o601, False, "read", 0o5),  # any execute bit counts
        (0o700, True, "read", 0o5),  # directories always get x to be traversable
        (0o700, True, "manage", 0o7),
    ],
)
def test_execute_follows_the_rX_rule(mode: int, is_dir: bool, level: str, expected: int) -> None:
    shown = view([grant("/b", "user:alice", level)], meta=ObjectMeta(0, 0, mode), is_dir=is_dir)
    assert Acl.decode(shown.acl_access or b"").perm(AclTag.USER, 1001) == expected


def test_directories_show_grants_as_default_acl_too() -> None:
    shown = view([grant("/b", "group:climate")], path="/b/runs", meta=ROOT_DIR_0750, is_dir=True)
    assert shown.acl_default == shown.acl_access
    assert getfacl(shown.acl_default) == (
        "user::rwx\ngroup::r-x\ngroup:2000:r-x\nmask::r-x\nother::---"
    )


def test_explicit_mask_limits_every_named_entry() -> None:
    # The owner ran chmod 700 inside a shared tree: the file is private again.
    private = view([grant("/b", "user:alice", "write")], meta=ObjectMeta(0, 0, 0o700, 0))
    assert private.mode == 0o700
    assert Acl.decode(private.acl_access or b"").perm(AclTag.MASK) == 0
    # setfacl -m m::r-- keeps reading possible but not writing.
    read_only = view([grant("/b", "user:alice", "write")], meta=ObjectMeta(0, 0, 0o640, 0o4))
    assert read_only.mode == 0o640
    assert Acl.decode(read_only.acl_access or b"").perm(AclTag.MASK) == 4


def test_grants_work_on_files_created_with_a_strict_umask() -> None:
    shown = view([grant("/b", "user:alice", "write")], meta=ObjectMeta(0, 0, 0o600))
    assert shown.mode == 0o660
    assert Acl.decode(shown.acl_access or b"").perm(AclTag.MASK) == 6


def test_expired_grants_are_ignored() -> None:
    shown = view(
        [
            grant("/b", "user:alice", expires=NOW - 1),
            grant("/b", "user:bob", expires=NOW),  # expiry is exclusive
            grant("/b", "user:carol", expires=NOW + 1),
        ]
    )
    assert getfacl(shown.acl_access) == (
        "user::rw-\nuser:1003:r--\ngroup::r--\nmask::r--\nother::---"
    )


@pytest.mark.parametrize(
    ("path", "covered"),
    [
        ("/b/runs", True),
        ("/b/runs/x", True),
        ("/b/runs/x/y/z.nc", True),
        ("/b/runs2", False),
        ("/b/run", False),
        ("/b", False),
        ("/c/runs", False),
    ],
)
def test_a_grant_covers_its_path_and_everything_below(path: str, covered: bool) -> None:
    shown = view([grant("/b/runs", "user:alice")], path=path)
    assert (shown.acl_access is not None) == covered


def test_paths_are_compared_in_canonical_form() -> None:
    grants = [grant("b/runs/", "user:alice")]
    assert view(grants, path="/b//runs/./x/") == view(grants, path="/b/runs/x")
    assert view(grants, path="/b/runs/x").acl_access is not None


def test_unknown_principals_add_nothing() -> None:
    shown = view(
        [grant("/b", "user:nobody-here"), grant("/b", "group:nogroup"), grant("/b", "team:none")]
    )
    assert shown.acl_access is None
    assert shown.mode == 0o640


def test_owner_is_not_repeated_as_a_named_user() -> None:
    owned_by_alice = ObjectMeta(1001, 100, 0o640)
    assert view([grant("/b", "user:alice", "write")], meta=owned_by_alice).acl_access is None


def test_owning_group_entry_only_when_it_adds_access() -> None:
    staff_file = ObjectMeta(0, 100, 0o640)
    assert view([grant("/b", "group:staff")], meta=staff_file).acl_access is None
    shown = view([grant("/b", "group:staff", "write")], meta=staff_file)
    assert getfacl(shown.acl_access) == (
        "user::rw-\ngroup::r--\ngroup:100:rw-\nmask::rw-\nother::---"
    )


# --- levels and listings ----------------------------------------------------------------


def level(
    engine: PolicyEngine, user: str, path: str = "/b/runs/x", now: float = NOW
) -> Level | None:
    uid = IDS.uid_of(user)
    assert uid is not None
    return engine.level_of(user, uid, IDS.gids_of(uid) or frozenset(), path, now)


def test_level_through_user_group_and_team() -> None:
    engine = PolicyEngine(
        [
            grant("/b", "user:alice", "read"),
            grant("/b/runs", "group:climate", "manage"),  # alice is in climate
            grant("/b/runs", "team:cosmo", "write"),  # bob is a member
            grant("/b/runs/x", "team:cosmo", "manage", expires=NOW - 1),
        ],
        [COSMO_BACKED],
        IDS,
    )
    assert level(engine, "alice") == Level.MANAGE
    assert level(engine, "alice", "/b/other") == Level.READ
    assert level(engine, "bob") == Level.WRITE
    assert level(engine, "carol") == Level.WRITE  # via the team's backing group cosmo-ldap
    assert level(engine, "owner") is None
    assert level(engine, "bob", "/b") is None


def test_level_of_a_team_member_unknown_to_identities() -> None:
    engine = PolicyEngine([grant("/b", "team:cosmo")], [COSMO], IDS)
    assert engine.level_of("ghost", 4242, frozenset(), "/b/x", NOW) == Level.READ


def test_grants_at_lists_what_applies_sorted_by_path_then_principal() -> None:
    engine = PolicyEngine(
        [
            grant("/b/runs/x", "user:bob"),
            grant("/b/runs", "user:carol"),
            grant("/b", "team:cosmo"),
            grant("/b", "group:climate", expires=NOW),
            grant("/b", "user:alice"),
            grant("/b/runs2", "user:alice"),
        ],
        [COSMO],
        IDS,
    )
    listed = [(str(g.principal), path) for g, path in engine.grants_at("/b/runs/x/y", NOW)]
    assert listed == [
        ("team:cosmo", "/b"),
        ("user:alice", "/b"),
        ("user:carol", "/b/runs"),
        ("user:bob", "/b/runs/x"),
    ]


# --- the vocabulary people type ---------------------------------------------------------


def test_level_parse_names_the_valid_levels() -> None:
    assert Level.parse("Write") == Level.WRITE
    assert Level.READ < Level.WRITE < Level.MANAGE
    with pytest.raises(PolicyError, match="read, write, manage"):
        Level.parse("admin")


def test_principal_round_trips_through_text() -> None:
    assert str(Principal.parse("team:cosmo")) == "team:cosmo"
    assert Principal.parse("user:j.doe_2") == Principal("user", "j.doe_2")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("cosmo", "write user:NAME, group:NAME or team:NAME"),
        ("role:cosmo", "unknown principal kind 'role'"),
        ("user:-rf", "not starting with '-'"),
        ("user:a b", "A-Z a-z 0-9"),
        ("group:", "1 to 64 characters"),
        ("user:" + "a" * 65, "1 to 64 characters"),
    ],
)
def test_bad_principals_say_what_is_valid(text: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        Principal.parse(text)


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [("/b/runs", "/b/runs"), ("/b//runs/", "/b/runs"), ("b/./runs", "/b/runs"), ("/", "/")],
)
def test_normalize_path(raw: str, canonical: str) -> None:
    assert normalize_path(raw) == canonical


@pytest.mark.parametrize("bad", ["", "/b/../etc", "/b/x\0y", ".."])
def test_normalize_path_refuses_escapes_and_nul(bad: str) -> None:
    with pytest.raises(PolicyError, match="invalid path"):
        normalize_path(bad)


def test_a_grant_needs_a_bucket() -> None:
    with pytest.raises(PolicyError, match="needs a bucket"):
        grant("/", "user:alice")


def test_a_grant_lets_its_principal_search_but_not_list_the_private_directories_above() -> None:
    engine = PolicyEngine([grant("/b/private/deep/file.csv", "user:bob")], [], IDS)
    private = ObjectMeta(1000, 1000, 0o700)
    chain = {"/b": OPEN_DIR, "/b/private": private, "/b/private/deep": private}

    def shown(path: str, is_dir: bool = True, meta: ObjectMeta = private) -> PosixView:
        parts = path.split("/")
        above = [chain["/".join(parts[:i])] for i in range(2, len(parts))]
        return engine.view(path, meta, is_dir, NOW, lambda: above)

    assert view([grant("/b/private/deep/file.csv", "user:bob")], "/b", OPEN_DIR, True) == view(
        [], "/b", OPEN_DIR, True
    )  # anyone may search the bucket: nothing to add
    for d in ("/b/private", "/b/private/deep"):
        acl = Acl.decode(shown(d).acl_access or b"")
        assert acl.perm(AclTag.USER, 1002) == 1, d  # bob: --x, reach the path, not list names
    # what else is in the private directories stays closed to bob, whatever its mode
    readable = ObjectMeta(1000, 1000, 0o644)
    for beside in ("/b/private/other", "/b/private/deep/other.csv"):
        shown_beside = shown(beside, False, readable).acl_access
        assert Acl.decode(shown_beside or b"").perm(AclTag.USER, 1002) == 0


# --- a grant made on a file (shape OBJECT) -----------------------------------------------


def file_grant(path: str, principal: str, level: str = "read") -> Grant:
    return Grant(
        path, Principal.parse(principal), Level.parse(level), "owner", NOW - 60, None, OBJECT
    )


def _entry(shown: PosixView, uid: int) -> int | None:
    if shown.acl_access is None:
        return None
    return Acl.decode(shown.acl_access).perm(AclTag.USER, uid)


def test_a_file_grant_gives_the_file_its_entry() -> None:
    shown = view([file_grant("/b/d4/w.txt", "user:alice", "write")], path="/b/d4/w.txt")
    assert _entry(shown, 1001) == 0o6


def test_a_file_grant_gives_a_directory_of_its_name_and_all_below_nothing() -> None:
    grants = [file_grant("/b/d4/w.txt", "user:alice", "write")]
    at_dir = view(grants, path="/b/d4/w.txt", meta=ROOT_DIR_0750, is_dir=True)
    below = view(grants, path="/b/d4/w.txt/evil")
    deeper = view(grants, path="/b/d4/w.txt/sub", meta=ROOT_DIR_0750, is_dir=True)
    for shown in (at_dir, below, deeper):
        assert not _entry(shown, 1001)
        assert shown.acl_default is None or not Acl.decode(shown.acl_default).perm(
            AclTag.USER, 1001
        )


def test_a_file_grant_gives_no_level_below_it_and_is_not_listed_there() -> None:
    engine = PolicyEngine([file_grant("/b/d3/rep", "user:alice", "manage")], (), IDS)
    gids = frozenset({100, 2000})
    assert engine.level_of("alice", 1001, gids, "/b/d3/rep", NOW) == Level.MANAGE
    assert engine.level_of("alice", 1001, gids, "/b/d3/rep/private.csv", NOW) is None
    assert engine.grants_at("/b/d3/rep/private.csv", NOW) == []


def test_a_file_grant_in_a_private_directory_opens_the_file_not_a_directory_of_its_name() -> None:
    """The reach rule's walk (a 0700 directory above): the way to the file gets search, the
    file its level, and the directory a prefix `P/` makes at the file's name nothing."""
    private = ObjectMeta(uid=0, gid=0, mode=0o700)
    engine = PolicyEngine([file_grant("/b/priv/f", "user:alice", "write")], (), IDS)

    def shown(path: str, meta: ObjectMeta, is_dir: bool) -> PosixView:
        above = [OPEN_DIR, private, *[ROOT_DIR_0750] * (path.count("/") - 3)]
        return engine.view(path, meta, is_dir, NOW, lambda: above)

    assert _entry(shown("/b/priv", private, True), 1001) == 0o1  # the way: search only
    assert _entry(shown("/b/priv/f", ROOT_FILE_0640, False), 1001) == 0o6
    assert not _entry(shown("/b/priv/f", ROOT_DIR_0750, True), 1001)
    assert not _entry(shown("/b/priv/f/evil", ROOT_FILE_0640, False), 1001)
