"""NssIdentity against this node's real passwd and group databases."""

import grp
import pwd

import pytest

from fedfs.identity.nss import NssIdentity
from fedfs.identity.source import Group, IdentitySource


@pytest.fixture
def nss() -> NssIdentity:
    return NssIdentity()


def test_nss_is_an_identity_source(nss: NssIdentity) -> None:
    assert isinstance(nss, IdentitySource)


def test_root_is_found_by_name_and_uid(nss: NssIdentity) -> None:
    root = nss.user("root")

    assert root is not None
    assert (root.name, root.uid, root.gid) == ("root", 0, 0)
    assert 0 in root.gids
    assert nss.user_by_uid(0) == root


def test_root_group_is_found_by_name_and_gid(nss: NssIdentity) -> None:
    group = nss.group("root")

    assert isinstance(group, Group)
    assert (group.name, group.gid) == ("root", 0)
    assert nss.group_by_gid(0) == group


@pytest.mark.parametrize("name", ["fedfs-no-such-user", "", "bad\0name", "root\n"])
def test_unknown_user_names_are_none(nss: NssIdentity, name: str) -> None:
    assert nss.user(name) is None


@pytest.mark.parametrize("name", ["fedfs-no-such-group", "", "bad\0name"])
def test_unknown_group_names_are_none(nss: NssIdentity, name: str) -> None:
    assert nss.group(name) is None


@pytest.mark.parametrize("number", [3_999_999_999, -1, 2**40])
def test_unknown_or_impossible_ids_are_none(nss: NssIdentity, number: int) -> None:
    assert nss.user_by_uid(number) is None
    assert nss.group_by_gid(number) is None


def test_supplementary_groups_are_in_gids(nss: NssIdentity) -> None:
    memberships = [
        (member, group)
        for group in grp.getgrall()
        for member in group.gr_mem
        if member in {entry.pw_name for entry in pwd.getpwall()}
    ]
    if not memberships:
        pytest.skip("no group on this node lists a member")
    for member, group in memberships:
        user = nss.user(member)
        assert user is not None
        assert group.gr_gid in user.gids, f"{member} should be in {group.gr_name}"
        listed = nss.group(group.gr_name)
        assert listed is not None and member in listed.members


def test_health_is_ok_after_a_lookup(nss: NssIdentity) -> None:
    nss.user("fedfs-no-such-user")

    health = nss.health()

    assert health.source == "nss"
    assert health.ok and health.last_error is None
    assert health.last_success is not None
