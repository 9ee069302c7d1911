"""chmod and setfacl set the owner's limit on grants as docs/SEMANTICS.md "Sharing" says."""

from __future__ import annotations

import pytest

from fedfs.policy import mask
from fedfs.policy.engine import ObjectMeta, PolicyEngine
from fedfs.policy.model import Grant, Identities, Level, Principal

NOW = 1_700_000_000.0
BOB = 1002
IDS = Identities(uids={"bob": BOB}, primary_gids={BOB: BOB})
OPEN = ObjectMeta(0, 0, 0o755)


def stored_after_chmod(
    meta: ObjectMeta, new_mode: int, grants: list[Grant], by_creator: bool = True
) -> ObjectMeta:
    """chmod as the owner runs it: the rule sees what `ls -l` showed just before.
    by_creator: the chmod comes from the process that created the object (cp -p)."""
    shown = PolicyEngine(grants, [], IDS).view("/b/d/f", meta, False, NOW, lambda: [OPEN, OPEN])
    new = mask.chmod(
        meta.mode,
        meta.explicit_mask,
        shown.mode,
        shown.acl_access is not None,
        new_mode,
        by_creator=by_creator,
    )
    return ObjectMeta(meta.uid, meta.gid, new.mode, new.explicit_mask)


def write_for_bob(path: str = "/b/d") -> Grant:
    return Grant(path, Principal("user", "bob"), Level.WRITE, "root", NOW - 60)


def bob_can(meta: ObjectMeta, grants: list[Grant]) -> int:
    from fedfs.policy.acl import R, W, permits

    shown = PolicyEngine(grants, [], IDS).view("/b/d/f", meta, False, NOW, lambda: [OPEN, OPEN])
    return sum(
        bit
        for bit in (R, W)
        if permits(shown.mode, shown.acl_access, shown.uid, shown.gid, BOB, frozenset(), bit)
    )


@pytest.mark.parametrize("before_share", [True, False])
def test_chmod_600_keeps_a_file_private_whether_the_share_came_before_or_after(
    before_share: bool,
) -> None:
    created = ObjectMeta(0, 0, 0o644)
    grants = [write_for_bob()]
    if before_share:
        meta = stored_after_chmod(created, 0o600, [])
    else:
        meta = stored_after_chmod(created, 0o600, grants)
    assert meta.explicit_mask == 0
    assert bob_can(meta, grants) == 0
    shown = PolicyEngine(grants, [], IDS).view("/b/d/f", meta, False, NOW, lambda: [OPEN, OPEN])
    assert shown.mode == 0o600


def test_chmod_700_of_a_file_created_private_and_already_shared_makes_it_private() -> None:
    created = ObjectMeta(0, 0, 0o600)  # umask 077; bob's grant shows as group rw-
    meta = stored_after_chmod(created, 0o700, [write_for_bob()])
    assert meta.explicit_mask == 0
    assert bob_can(meta, [write_for_bob()]) == 0


def test_chmod_600_of_a_file_already_0600_by_its_creator_changes_nothing() -> None:
    # `ls -l` shows the grant as -rw-rw----, but the file's own mode is 0600: restating it
    # (cp -p, rsync -a of a umask-077 file) must not hide it from the grants.
    created = ObjectMeta(0, 0, 0o600)
    assert stored_after_chmod(created, 0o600, [write_for_bob()]) == created


@pytest.mark.parametrize("own", [0o600, 0o640])
def test_chmod_to_the_own_mode_by_anyone_else_is_the_owners_word(own: int) -> None:
    # `chmod 600 f` in a shell: the file shows -rw-rw---- (bob's grant); the owner wants it
    # private, whatever mode it was created with.
    grants = [write_for_bob()]
    meta = stored_after_chmod(ObjectMeta(0, 0, own), own, grants, by_creator=False)
    assert meta.explicit_mask == (own >> 3) & 7
    assert bob_can(meta, grants) == (4 if own == 0o640 else 0)


@pytest.mark.parametrize(
    ("created", "restated"),
    [
        (0o644, 0o644),  # cp -p / rsync -a / tar x onto a file with the same mode
        (0o600, 0o644),  # ... onto a file they created private first (mkstemp, cp's O_EXCL)
        (0o600, 0o600),  # a source created with umask 077: the chmod changes nothing
        (0o664, 0o664),
    ],
)
def test_restating_a_mode_does_not_cut_a_write_grant(created: int, restated: int) -> None:
    grants = [write_for_bob()]
    meta = stored_after_chmod(ObjectMeta(0, 0, created), restated, grants)
    assert meta.explicit_mask is None
    assert bob_can(meta, grants) == 6  # bob still reads and writes


def test_chmod_narrowing_what_ls_showed_within_the_own_mode_limits_grants() -> None:
    # `ls -l` shows 0664 (bob's write grant); the owner says 640 on purpose: bob reads only.
    grants = [write_for_bob()]
    meta = stored_after_chmod(ObjectMeta(0, 0, 0o644), 0o640, grants)
    assert meta.explicit_mask == 0o4
    assert bob_can(meta, grants) == 4


def test_chmod_widening_the_owning_groups_bits_cuts_no_grant() -> None:
    # rsync -a and tar x create a file 0600, then chmod it to the source's 0640.
    grants = [write_for_bob()]
    meta = stored_after_chmod(ObjectMeta(0, 0, 0o600), 0o640, grants)
    assert meta.explicit_mask is None
    assert bob_can(meta, grants) == 6


def test_a_mode_from_creation_sets_no_limit() -> None:
    for created in (0o600, 0o640, 0o644):
        assert bob_can(ObjectMeta(0, 0, created), [write_for_bob()]) == 6


def test_chmod_g_w_limits_grants_to_read_and_chmod_back_lifts_the_limit() -> None:
    grants = [write_for_bob()]
    meta = stored_after_chmod(ObjectMeta(0, 0, 0o664), 0o644, grants)
    assert meta.explicit_mask == 0o4
    assert bob_can(meta, grants) == 4
    meta = stored_after_chmod(meta, 0o664, grants)
    assert meta.explicit_mask == 0o6  # the limit moved: rw- keeps nothing of a write grant
    assert bob_can(meta, grants) == 6
    assert stored_after_chmod(meta, 0o674, grants).explicit_mask is None  # rwx: no limit


def test_chmod_keeps_the_owning_groups_entry_while_an_acl_is_in_force() -> None:
    # POSIX: with named entries, chmod's group bits are the mask; GROUP_OBJ stays.
    meta = stored_after_chmod(ObjectMeta(0, 0, 0o640), 0o770, [write_for_bob()])
    assert meta.mode & 0o070 == 0o040
    # without an ACL the group bits are the owning group's, as always
    meta = stored_after_chmod(ObjectMeta(0, 0, 0o640), 0o660, [])
    assert meta.mode & 0o070 == 0o060


def test_ls_shows_the_limit_once_the_grants_are_gone() -> None:
    meta = stored_after_chmod(ObjectMeta(0, 0, 0o640), 0o600, [write_for_bob()])
    assert meta.mode & 0o070 == 0o040  # GROUP_OBJ kept (POSIX), the mask is ---
    shown = PolicyEngine([], [], IDS).view("/b/d/f", meta, False, NOW, lambda: [OPEN, OPEN])
    assert shown.mode == 0o600


@pytest.mark.parametrize(
    ("stored", "shown", "written", "named", "group_obj", "expected"),
    [
        (0, 0, 0, [6], 4, 0),  # getfacl | setfacl round trip keeps the limit
        (None, 6, 6, [6], 4, None),  # setfacl -m u:x:rw computes the mask: no limit
        (None, 6, 4, [6], 4, 4),  # setfacl -m m::r-- is the owner's limit
        (0, 0, 6, [6], 4, None),  # setfacl -m u:x:rw recomputes the mask (POSIX): lifted
        (4, 4, None, [], 4, None),  # no MASK entry: no limit
        (None, 7, 7, [7], 0, None),
    ],
)
def test_the_mask_setfacl_writes(
    stored: int | None,
    shown: int | None,
    written: int | None,
    named: list[int],
    group_obj: int,
    expected: int | None,
) -> None:
    assert mask.from_acl(stored, shown, written, named, group_obj) == expected


def test_a_mask_set_with_the_entries_unchanged_is_the_owners_limit() -> None:
    # after chmod 600 the write grant's entry shows as --- (limit ---); setfacl -m m::r
    # writes the same entries with MASK r--: a limit of r--, not "computed, none"
    assert mask.from_acl(0, 0, 4, [6], 4, named_changed=False) == 4
    assert mask.from_acl(0, 0, 4, [6], 4, named_changed=True) == 4
    assert mask.from_acl(None, 6, 4, [4], 4, named_changed=False) == 4
