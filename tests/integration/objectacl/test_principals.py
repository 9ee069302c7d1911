"""PrincipalMap: a POSIX user's object-store principal and back, by the [object_acl]
template and by an LDAP attribute read from a real slapd (seeded from
tests/backends/seed.ldif; bob and carol get their principal in `description`)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fedfs.config import ObjectAclConfig
from fedfs.errors import ConfigError, IdentityError
from fedfs.identity.ldap import LdapIdentity
from fedfs.identity.nss import NssIdentity
from fedfs.policy.objectacl.principals import PrincipalMap
from tests.backends.slapd import SEED_LDIF, SLAPD, Slapd
from tests.integration.objectacl.conftest import Rgw
from tests.integration.objectacl.test_export import BOUND, outcome
from tests.support import FEDFS, REPO, UnixUser, wait_for

BOB_ARN = "arn:aws:iam:::user/fedfs-bob"  # LDAP bob is RGW user fedfs-bob


@pytest.fixture(scope="module")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    if not Path(SLAPD).exists():
        pytest.fail(f"{SLAPD} is not installed: run scripts/install-test-deps (scripts/test does)")
    server = Slapd(tmp_path_factory.mktemp("slapd"))
    server.start()
    try:
        server.seed(SEED_LDIF.read_text())
        server.modify(
            "\n".join(
                [
                    "dn: uid=bob,ou=people,dc=fedfs,dc=test",
                    "changetype: modify",
                    "add: description",
                    f"description: {BOB_ARN}",
                    "",
                    # carol's value is a wildcard: never written into a statement
                    "dn: uid=carol,ou=people,dc=fedfs,dc=test",
                    "changetype: modify",
                    "add: description",
                    "description: arn:aws:iam:::user/*",
                    "",
                ]
            )
        )
        yield server
    finally:
        server.stop()


def ldap_map(slapd: Slapd, attribute: str = "description") -> PrincipalMap:
    ldap = LdapIdentity(slapd.url, slapd.base_dn, slapd.bind_dn, slapd.password)
    return PrincipalMap(ObjectAclConfig(ldap_attribute=attribute), ldap)


def test_the_ldap_attribute_maps_users_to_principals_and_back(slapd: Slapd) -> None:
    m = ldap_map(slapd)
    assert m.principal_of("bob") == BOB_ARN
    assert m.user_of(BOB_ARN) == "bob"
    assert m.principal_of("alice") is None  # no attribute: no principal, never a guess
    assert m.principal_of("carol") is None  # a wildcard is never written
    assert m.principal_of("mallory") is None
    assert m.user_of("arn:aws:iam:::user/FEDFS-BOB") is None  # compared exactly
    assert m.user_of("arn:aws:iam:::user/*") is None
    assert m.user_of("*") is None


def test_a_principal_two_users_hold_maps_to_nobody(slapd: Slapd) -> None:
    slapd.modify(
        "\n".join(
            [
                "dn: uid=alice,ou=people,dc=fedfs,dc=test",
                "changetype: modify",
                "add: description",
                f"description: {BOB_ARN}",
                "",
            ]
        )
    )
    try:
        assert ldap_map(slapd).user_of(BOB_ARN) is None
    finally:
        slapd.modify(
            "\n".join(
                [
                    "dn: uid=alice,ou=people,dc=fedfs,dc=test",
                    "changetype: modify",
                    "delete: description",
                    "",
                ]
            )
        )


def test_an_attribute_name_that_is_no_name_is_refused(slapd: Slapd) -> None:
    with pytest.raises(ConfigError, match="ldap_attribute"):
        ldap_map(slapd, "description)(uid=*")
    ldap = LdapIdentity(slapd.url, slapd.base_dn, slapd.bind_dn, slapd.password)
    with pytest.raises(IdentityError, match="not an attribute name"):
        ldap.user_attribute("bob", "x)(y")


def test_the_template_maps_local_users_both_ways(bob: UnixUser) -> None:
    m = PrincipalMap(ObjectAclConfig(principal="arn:aws:iam::site:user/{user}"), NssIdentity())
    assert m.principal_of(bob.name) == f"arn:aws:iam::site:user/{bob.name}"
    assert m.user_of(f"arn:aws:iam::site:user/{bob.name}") == bob.name
    for other in (
        f"arn:aws:iam:::user/{bob.name}",  # another tenant
        "arn:aws:iam::site:user/no-such-user-here",  # no local user
        "arn:aws:iam::site:user/",
        "arn:aws:iam::site:user/../root",
        "*",
    ):
        assert m.user_of(other) is None, other


def test_an_ldap_attribute_needs_an_ldap_source() -> None:
    with pytest.raises(ConfigError, match='source = "ldap"'):
        PrincipalMap(ObjectAclConfig(ldap_attribute="description"), NssIdentity())


def test_a_mount_with_ldap_identities_exports_to_the_principal_the_attribute_names(
    slapd: Slapd, rgw: Rgw, rgw_bucket: str, make_rgw_mount: Any
) -> None:
    """LDAP users with raw uids (no local account) share; bob's principal is his LDAP
    description, an RGW user of another name; carol, who has none, is not exported."""
    b = rgw_bucket
    rgw.client("fedfs-alice").put_object(Bucket=b, Key="runs/a.txt", Body=b"a")
    top = "\n".join(
        [
            "[identity]",
            'source = "ldap"',
            f'url = "{slapd.url}"',
            f'base_dn = "{slapd.base_dn}"',
            f'bind_dn = "{slapd.bind_dn}"',
            f'password = "{slapd.password}"',
            "[object_acl]",
            'ldap_attribute = "description"',
            "poll_interval = 2.0",
        ]
    )
    m = make_rgw_mount([(b, "user:alice")], top=top)
    alice = (2001, 2000)  # LDAP alice, as the kernel would name her
    r = subprocess.run(
        [*FEDFS, "share", str(m.path(b, "runs")), "--with", "group:cosmo-ldap", "--read"],
        user=alice[0],
        group=alice[1],
        extra_groups=[],
        capture_output=True,
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "HOME": "/tmp", "LC_ALL": "C"},
    )
    assert r.returncode == 0, r.stderr
    bob_s3 = rgw.client("fedfs-bob")
    wait_for(
        lambda: outcome(bob_s3.get_object, Bucket=b, Key="runs/a.txt") == "ok",
        "bob's own keys reading runs/",
        timeout=BOUND,
    )
    r = subprocess.run(
        [*FEDFS, "share", str(m.path(b, "runs")), "--with", "user:carol", "--read"],
        user=alice[0],
        group=alice[1],
        extra_groups=[],
        capture_output=True,
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "HOME": "/tmp", "LC_ALL": "C"},
    )
    assert r.returncode == 0, r.stderr
    wait_for(
        lambda: "event=object-acl-not-exported" in m.log_text(), "carol reported", timeout=BOUND
    )
    assert "user=carol" in m.log_text()  # her value is a wildcard: not a principal
    assert outcome(rgw.client("fedfs-carol").get_object, Bucket=b, Key="runs/a.txt") == (
        "AccessDenied"
    )
