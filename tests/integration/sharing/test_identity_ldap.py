"""LdapIdentity against a real slapd: answers, TTL caching, an outage and recovery.

One slapd serves the module (seeded from tests/backends/seed.ldif); tests that
stop or freeze it put it back before the next test runs.
"""

import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # to import tests.backends

from fedfs.errors import FedfsError, IdentityError
from fedfs.identity.ldap import LdapIdentity, LdapSchema
from fedfs.identity.source import Group, IdentitySource, User
from tests.backends.slapd import SEED_LDIF, SLAPD, Slapd

pytestmark = pytest.mark.skipif(not Path(SLAPD).exists(), reason=f"{SLAPD} is not installed")

_T = TypeVar("_T")

ALICE = User("alice", 2001, 2000, frozenset({2000}))
BOB = User("bob", 2002, 2000, frozenset({2000, 2100}))
CAROL = User("carol", 2003, 2000, frozenset({2000}))
SCIENTISTS = Group("scientists", 2000, frozenset({"alice", "bob"}))
COSMO = Group("cosmo-ldap", 2100, frozenset({"bob"}))


@pytest.fixture(scope="module")
def slapd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    server = Slapd(tmp_path_factory.mktemp("slapd"))
    server.start()
    try:
        server.seed(SEED_LDIF.read_text())
        yield server
    finally:
        server.stop()


@pytest.fixture
def slapd(slapd_server: Slapd) -> Iterator[Slapd]:
    """The module's slapd, running again after each test even if the test stopped it."""
    yield slapd_server
    if slapd_server.running:
        slapd_server.resume()
    else:
        slapd_server.start()


def connect(slapd: Slapd, **options: Any) -> LdapIdentity:
    return LdapIdentity(slapd.url, slapd.base_dn, slapd.bind_dn, slapd.password, **options)


def wait_for(probe: Callable[[], _T], done: Callable[[_T], bool], timeout: float = 10.0) -> _T:
    """Call probe until done(result) holds; fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if done(result):
            return result
        assert time.monotonic() < deadline, f"still {result!r} after {timeout} s"
        time.sleep(0.05)


def timed(call: Callable[[], _T]) -> tuple[_T, float]:
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


# -- answers ----------------------------------------------------------------------------


def test_users_carry_primary_and_listed_groups(slapd: Slapd) -> None:
    ldap = connect(slapd)

    assert isinstance(ldap, IdentitySource)
    assert ldap.user("alice") == ALICE
    assert ldap.user("bob") == BOB
    # carol is listed in no group: only her primary group counts.
    assert ldap.user("carol") == CAROL


def test_ids_resolve_to_the_same_users_and_groups(slapd: Slapd) -> None:
    ldap = connect(slapd)

    assert ldap.user_by_uid(2001) == ALICE
    assert ldap.user_by_uid(2002) == BOB
    assert ldap.group("scientists") == SCIENTISTS
    assert ldap.group("cosmo-ldap") == COSMO
    assert ldap.group_by_gid(2000) == SCIENTISTS
    assert ldap.group_by_gid(2100) == COSMO


@pytest.mark.parametrize("name", ["mallory", "ALICE", "*", "alice)(uid=*", "ali*", ""])
def test_unknown_or_mismatched_user_names_are_none(slapd: Slapd, name: str) -> None:
    # "ALICE" differs from alice only by case, which POSIX names do not forgive;
    # the others would match every entry if they were not escaped.
    assert connect(slapd).user(name) is None


def test_unknown_ids_and_groups_are_none(slapd: Slapd) -> None:
    ldap = connect(slapd)

    assert ldap.user_by_uid(9999) is None
    assert ldap.group("no-such-team") is None
    assert ldap.group("*") is None
    assert ldap.group_by_gid(9999) is None
    health = ldap.health()
    assert health.ok and health.last_error is None and health.last_success is not None


def test_anonymous_bind_and_a_custom_schema_work(slapd: Slapd) -> None:
    # Sites map other attributes; here the group name comes from cn and users
    # are narrowed to the people branch with an extra filter term.
    schema = LdapSchema(user_filter="(&(objectClass=posixAccount)(cn=Bob))")
    ldap = LdapIdentity(slapd.url, slapd.base_dn, schema=schema)

    assert ldap.user("bob") == BOB
    assert ldap.user("alice") is None


def test_concurrent_lookups_get_correct_answers(slapd: Slapd) -> None:
    ldap = connect(slapd, ttl=0)  # every call goes to the server over the one connection
    questions: list[tuple[Callable[[], object], object]] = [
        (lambda: ldap.user("alice"), ALICE),
        (lambda: ldap.user("bob"), BOB),
        (lambda: ldap.user_by_uid(2003), CAROL),
        (lambda: ldap.group("cosmo-ldap"), COSMO),
        (lambda: ldap.group_by_gid(2000), SCIENTISTS),
        (lambda: ldap.user("mallory"), None),
    ] * 30

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda question: question[0](), questions))

    assert answers == [expected for _, expected in questions]
    assert ldap.health().ok


def test_a_refused_bind_is_reported_in_health_not_raised(slapd: Slapd) -> None:
    ldap = LdapIdentity(slapd.url, slapd.base_dn, slapd.bind_dn, "not-the-password")

    assert ldap.user("alice") is None
    health = ldap.health()
    assert not health.ok and health.last_success is None
    assert health.last_error is not None
    assert "invalidCredentials" in health.last_error and "bind_dn" in health.last_error


@pytest.mark.parametrize(
    ("url", "base_dn", "options", "named"),
    [
        ("http://ldap.example.org", "dc=x", {}, "ldap://"),
        ("ldap://", "dc=x", {}, "names no host"),
        ("ldap://host:notaport", "dc=x", {}, "not valid"),
        ("ldap://host/dc=x", "dc=x", {}, "base_dn separately"),
        ("ldap://host", " ", {}, "base_dn is empty"),
        ("ldap://host", "dc=x", {"bind_dn": "cn=admin,dc=x"}, "go together"),
        ("ldap://host", "dc=x", {"timeout": 0}, "timeout"),
        ("ldap://host", "dc=x", {"ttl": -1}, "ttl"),
        ("ldap://host", "dc=x", {"schema": LdapSchema(user_filter="uid=*")}, "user_filter"),
        ("ldap://host", "dc=x", {"schema": LdapSchema(group_filter="(a=b))(")}, "group_filter"),
    ],
)
def test_configuration_mistakes_are_named(
    url: str, base_dn: str, options: dict[str, Any], named: str
) -> None:
    with pytest.raises(IdentityError, match=named) as raised:
        LdapIdentity(url, base_dn, **options)
    assert isinstance(raised.value, FedfsError)


# -- caching ----------------------------------------------------------------------------

COSMO_ADD_ALICE = """\
dn: cn=cosmo-ldap,ou=groups,dc=fedfs,dc=test
changetype: modify
add: memberUid
memberUid: alice
"""

COSMO_REMOVE_ALICE = COSMO_ADD_ALICE.replace("add: memberUid", "delete: memberUid")

DAVE = """\
dn: uid=dave,ou=people,dc=fedfs,dc=test
changetype: add
objectClass: account
objectClass: posixAccount
uid: dave
cn: Dave
uidNumber: 2004
gidNumber: 2000
homeDirectory: /home/dave
"""

DAVE_REMOVE = "dn: uid=dave,ou=people,dc=fedfs,dc=test\nchangetype: delete\n"


def test_a_new_group_membership_shows_only_after_the_ttl(slapd: Slapd) -> None:
    ttl = 1.0
    ldap = connect(slapd, ttl=ttl)
    assert ldap.user("alice") == ALICE
    asked = time.monotonic()
    slapd.modify(COSMO_ADD_ALICE)
    try:
        cached = ldap.user("alice")
        assert time.monotonic() - asked < ttl, "too slow to observe the cache; rerun"
        assert cached == ALICE

        user = wait_for(lambda: ldap.user("alice"), lambda u: u is not None and 2100 in u.gids)

        assert time.monotonic() - asked >= ttl
        assert user == User("alice", 2001, 2000, frozenset({2000, 2100}))
    finally:
        slapd.modify(COSMO_REMOVE_ALICE)


def test_a_new_account_shows_only_after_the_ttl(slapd: Slapd) -> None:
    # "Not found" is cached too, so a flood of unknown names does not reach LDAP.
    ttl = 1.0
    ldap = connect(slapd, ttl=ttl)
    assert ldap.user("dave") is None
    asked = time.monotonic()
    slapd.modify(DAVE)
    try:
        cached = ldap.user("dave")
        assert time.monotonic() - asked < ttl, "too slow to observe the cache; rerun"
        assert cached is None

        dave = wait_for(lambda: ldap.user("dave"), lambda u: u is not None)

        assert time.monotonic() - asked >= ttl
        assert dave == User("dave", 2004, 2000, frozenset({2000}))
    finally:
        slapd.modify(DAVE_REMOVE)


# -- outage and recovery ----------------------------------------------------------------


def ask_everything(ldap: LdapIdentity) -> list[object]:
    return [
        ldap.user("alice"),
        ldap.user_by_uid(2002),
        ldap.group("scientists"),
        ldap.group_by_gid(2100),
        ldap.user("mallory"),
    ]


def test_ldap_down_serves_last_known_answers_and_reports_it(slapd: Slapd) -> None:
    timeout = 2.0
    # ttl=0: every answer is already past its TTL, so only the outage path can serve it.
    ldap = connect(slapd, ttl=0, timeout=timeout, retry_interval=0.1)
    known = ask_everything(ldap)
    assert known == [ALICE, BOB, SCIENTISTS, COSMO, None]
    answered_at = ldap.health().last_success

    slapd.stop()

    answers, elapsed = timed(lambda: ask_everything(ldap))
    assert answers == known
    assert elapsed < timeout
    # Never asked before the outage: unknown, not guessed from what is cached.
    unknown, elapsed = timed(lambda: [ldap.user("carol"), ldap.user_by_uid(2001)])
    assert unknown == [None, None]
    assert elapsed < timeout
    health = ldap.health()
    assert not health.ok
    assert health.last_error is not None
    assert slapd.url in health.last_error and "refused" in health.last_error.lower()
    assert health.last_success == answered_at


def test_a_hung_ldap_server_costs_one_timeout_per_lookup_at_most(slapd: Slapd) -> None:
    timeout = 1.0
    ldap = connect(slapd, ttl=0, timeout=timeout, retry_interval=0.2)
    assert ldap.user("alice") == ALICE

    slapd.pause()  # the kernel still accepts connections; nobody answers them

    answer, elapsed = timed(lambda: ldap.user("alice"))
    assert answer == ALICE
    assert elapsed < timeout + 0.5
    assert not ldap.health().ok
    # Once the retry interval passes, the next lookup opens a new connection;
    # its bind hangs too, and it is bounded the same way.
    time.sleep(0.2)  # cross the chosen retry_interval
    answer, elapsed = timed(lambda: ldap.user("carol"))
    assert answer is None
    assert elapsed < timeout + 0.5
    assert not ldap.health().ok


def test_lookups_recover_when_slapd_comes_back_on_the_same_port(slapd: Slapd) -> None:
    ldap = connect(slapd, ttl=0, timeout=2.0, retry_interval=0.1)
    assert ldap.user("alice") == ALICE
    slapd.stop()
    assert ldap.user("alice") == ALICE
    assert ldap.user("carol") is None
    assert not ldap.health().ok

    slapd.start()
    restarted = time.time()

    assert wait_for(lambda: ldap.user("carol"), lambda u: u is not None) == CAROL
    health = ldap.health()
    assert health.ok and health.last_error is None
    assert health.last_success is not None and health.last_success >= restarted
