"""The site policy: the shipped default, overrides, the rules, and errors naming file and key."""

from __future__ import annotations

import tomllib
from dataclasses import fields
from pathlib import Path

import pytest

from fedfs.errors import PolicyError
from fedfs.policy.model import Principal
from fedfs.policy.site import (
    SitePolicy,
    format_duration,
    load_site_policy,
    parse_duration,
    policy_files,
)

DEFAULT_TOML = Path(__file__).resolve().parents[3] / "policy" / "default.toml"
DAY = 86400.0


def write(tmp_path: Path, text: str, name: str = "10-site.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(*paths: Path) -> str:
    with pytest.raises(PolicyError) as e:
        load_site_policy(list(paths))
    return str(e.value)


# -- the shipped default --------------------------------------------------------------


def test_default_toml_is_the_default_policy() -> None:
    assert load_site_policy([DEFAULT_TOML]) == SitePolicy.default()
    assert load_site_policy([]) == SitePolicy.default()


def test_default_toml_spells_out_every_key() -> None:
    keys = set(tomllib.loads(DEFAULT_TOML.read_text()))
    assert keys == {f.name for f in fields(SitePolicy)}


def test_default_values_are_what_the_readme_promises() -> None:
    policy = SitePolicy.default()
    assert policy.team_gids == (600000, 699999)
    assert policy.max_grant_lifetime is None and policy.default_grant_lifetime is None
    assert policy.allowed_principals == {"user", "group", "team"}
    assert policy.forbidden_principals == {"group:users"}
    assert policy.team_creators is None
    assert policy.max_team_size == 5000
    assert policy.admins == () and policy.audit_readers == ()


# -- durations ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("365d", 365 * DAY),
        ("12h", 12 * 3600.0),
        ("30m", 1800.0),
        ("45s", 45.0),
        ("2w", 14 * DAY),
        ("1d12h", 1.5 * DAY),
        (" 1.5h ", 5400.0),
        ("90D", 90 * DAY),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "365", "d", "1y", "1 d", "-1d", "1d 2h", "1dd", "abc"])
def test_parse_duration_refuses_what_it_cannot_read(text: str) -> None:
    with pytest.raises(
        PolicyError, match='write a number with a unit, s m h d or w, such as "365d"'
    ):
        parse_duration(text)


def test_a_zero_duration_is_refused() -> None:
    with pytest.raises(PolicyError, match="must be longer than zero"):
        parse_duration("0d")


def test_format_duration_reads_back() -> None:
    for text in ["365d", "12h", "30m", "45s", "36h"]:
        assert format_duration(parse_duration(text)) == text
    assert format_duration(parse_duration("2w")) == "14d"  # days read better than weeks
    assert format_duration(90.5) == "90.5s"


# -- reading files --------------------------------------------------------------------


def test_a_file_sets_every_kind_of_value(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        admins = ["group:hpc-admins", "user:root2"]
        team_gids = [800000, 800099]
        max_grant_lifetime = "365d"
        default_grant_lifetime = "90d"
        allowed_principals = ["user", "team"]
        forbidden_principals = ["group:users", "group:staff"]
        team_creators = ["group:pi"]
        max_team_size = 100
        audit_readers = ["group:security"]
        """,
    )
    assert load_site_policy([path]) == SitePolicy(
        admins=(Principal("group", "hpc-admins"), Principal("user", "root2")),
        team_gids=(800000, 800099),
        max_grant_lifetime=365 * DAY,
        default_grant_lifetime=90 * DAY,
        allowed_principals=frozenset({"user", "team"}),
        forbidden_principals=frozenset({"group:users", "group:staff"}),
        team_creators=(Principal("group", "pi"),),
        max_team_size=100,
        audit_readers=(Principal("group", "security"),),
    )


def test_later_files_override_earlier_keys_and_keep_the_rest(tmp_path: Path) -> None:
    site = write(tmp_path, 'admins = ["group:hpc"]\nmax_grant_lifetime = "365d"\n', "10-site.toml")
    project = write(tmp_path, 'max_grant_lifetime = "30d"\nmax_team_size = 50\n', "50-proj.toml")
    policy = load_site_policy([DEFAULT_TOML, site, project])
    assert policy.admins == (Principal("group", "hpc"),)  # from 10-site, untouched later
    assert policy.max_grant_lifetime == 30 * DAY  # 50-proj wins
    assert policy.max_team_size == 50
    assert policy.team_gids == (600000, 699999)  # from the default
    # The same files in the other order: the earlier value wins now.
    assert load_site_policy([project, site]).max_grant_lifetime == 365 * DAY


def test_lists_are_replaced_not_merged(tmp_path: Path) -> None:
    first = write(tmp_path, 'admins = ["user:alice", "user:bob"]\n', "10.toml")
    second = write(tmp_path, 'admins = ["user:carol"]\n', "20.toml")
    assert load_site_policy([first, second]).admins == (Principal("user", "carol"),)


def test_policy_files_apply_in_name_order(tmp_path: Path) -> None:
    for name in ["50-b.toml", "10-a.toml", "README.md", "90-c.toml"]:
        (tmp_path / name).write_text("")
    (tmp_path / "dir.toml").mkdir()
    assert [p.name for p in policy_files(tmp_path)] == ["10-a.toml", "50-b.toml", "90-c.toml"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "admins = 'group:hpc'",
            "admins: expected a list such as [\"group:NAME\"], got 'group:hpc'",
        ),
        (
            "admins = ['team:cosmo']",
            "admins: 'team:cosmo' cannot be used here: write user:NAME or group:NAME "
            "(teams are managed by their owners, not the site)",
        ),
        ("admins = ['hpc']", "admins: invalid principal 'hpc': write user:NAME"),
        ("admins = [42]", "admins: expected strings such as user:NAME or group:NAME, got 42"),
        (
            "team_gids = [699999, 600000]",
            "team_gids: the range [699999, 600000] is inverted: write [600000, 699999]",
        ),
        (
            "team_gids = [500, 9999]",
            "team_gids: the range [500, 9999] overlaps the system gids 0-999; start it at 1000",
        ),
        ("team_gids = [60000, 70000]", "team_gids: the range [60000, 70000] contains 65534"),
        ("team_gids = [600000]", "team_gids: expected two gids [FIRST, LAST]"),
        ("team_gids = ['600000', '699999']", "team_gids: expected two gids [FIRST, LAST]"),
        (
            "team_gids = [4294967000, 4294967295]",
            "team_gids: the range [4294967000, 4294967295] ends above the largest gid 4294967294",
        ),
        (
            "max_grant_lifetime = '1 year'",
            "max_grant_lifetime: '1 year' is not a lifetime: write \"unlimited\" or a number",
        ),
        ("max_grant_lifetime = 365", "max_grant_lifetime: 365 is not a lifetime"),
        ("default_grant_lifetime = '0s'", "default_grant_lifetime: '0s' is not a lifetime"),
        (
            "allowed_principals = ['user', 'role']",
            'allowed_principals: \'role\' is not a principal kind; use "user", "group", "team"',
        ),
        ("allowed_principals = []", "allowed_principals: expected a non-empty list"),
        (
            "forbidden_principals = ['users']",
            "forbidden_principals: invalid principal 'users'",
        ),
        (
            "team_creators = 'nobody'",
            'team_creators: expected "anyone" or a list such as ["group:pi"]',
        ),
        ("max_team_size = 0", "max_team_size: 0 is out of range: use 1 to 8000"),
        ("max_team_size = 20000", "max_team_size: 20000 is out of range: use 1 to 8000"),
        ("max_team_size = '5000'", "max_team_size: expected a whole number"),
        ("max_team_size = true", "max_team_size: expected a whole number"),
        (
            "max_grant_lifetim = '30d'",
            "max_grant_lifetim: unknown key (did you mean 'max_grant_lifetime'?); "
            "valid keys are admins, team_gids",
        ),
        ("[policy]\nadmins = []", "policy: unknown key"),
    ],
)
def test_each_mistake_names_the_file_the_key_and_the_fix(
    tmp_path: Path, text: str, expected: str
) -> None:
    good = write(tmp_path, "max_team_size = 10\n", "00-good.toml")
    bad = write(tmp_path, text + "\n", "10-bad.toml")
    assert error_of(good, bad).startswith(f"{bad}: {expected}")


def test_invalid_toml_names_the_file_and_line(tmp_path: Path) -> None:
    bad = write(tmp_path, 'admins = ["user:ops"]\nmax_team_size = = 3\n')
    assert error_of(bad).startswith(f"{bad}: is not valid TOML:")
    assert "line 2" in error_of(bad)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    assert error_of(missing) == (
        f"{missing}: cannot read the site policy file: No such file or directory"
    )


def test_a_default_lifetime_above_the_maximum_blames_the_later_file(tmp_path: Path) -> None:
    site = write(tmp_path, 'max_grant_lifetime = "365d"\n', "10-site.toml")
    proj = write(tmp_path, 'default_grant_lifetime = "400d"\n', "50-proj.toml")
    assert error_of(site, proj) == (
        f"{proj}: default_grant_lifetime: 400d is longer than max_grant_lifetime 365d "
        f"(set in {site}); make it no longer than the maximum"
    )
    both = write(tmp_path, 'default_grant_lifetime = "90d"\nmax_grant_lifetime = "30d"\n')
    assert error_of(both).startswith(f"{both}: default_grant_lifetime: 90d is longer than")


def test_lowering_the_maximum_below_an_earlier_default_blames_the_lowering(
    tmp_path: Path,
) -> None:
    site = write(tmp_path, 'default_grant_lifetime = "90d"\nmax_grant_lifetime = "365d"\n')
    proj = write(tmp_path, 'max_grant_lifetime = "30d"\n', "50-proj.toml")
    assert error_of(site, proj).startswith(
        f"{proj}: max_grant_lifetime: 30d is shorter than default_grant_lifetime 90d "
        f"(set in {site})"
    )


# -- the rules ------------------------------------------------------------------------


def test_uid_0_is_always_admin_and_others_by_user_or_group() -> None:
    policy = SitePolicy(admins=(Principal("user", "ops"), Principal("group", "hpc-admins")))
    assert policy.is_admin(0, "root", [])
    assert SitePolicy.default().is_admin(0, None, [])
    assert policy.is_admin(1200, "ops", [])
    assert policy.is_admin(1300, "dana", ["users", "hpc-admins"])
    assert not policy.is_admin(1400, "eve", ["users"])
    # A group named like an admin user does not make its members admins.
    assert not policy.is_admin(1500, "frank", ["ops"])


def test_team_creation_is_open_unless_the_site_restricts_it() -> None:
    assert SitePolicy.default().may_create_team(1000, "anyone", [])
    restricted = SitePolicy(
        admins=(Principal("group", "hpc-admins"),), team_creators=(Principal("group", "pi"),)
    )
    assert restricted.may_create_team(1000, "prof", ["pi"])
    assert restricted.may_create_team(1001, "ops", ["hpc-admins"])
    assert restricted.may_create_team(0, "root", [])
    assert not restricted.may_create_team(1002, "student", ["users"])


def test_audit_readers_and_admins_may_read_the_audit_log() -> None:
    policy = SitePolicy(audit_readers=(Principal("group", "security"),))
    assert policy.may_read_audit(1000, "sec", ["security"])
    assert policy.may_read_audit(0, "root", [])
    assert not policy.may_read_audit(1001, "bob", ["users"])


def test_check_principal_applies_allowed_kinds_and_forbidden_names() -> None:
    policy = SitePolicy(allowed_principals=frozenset({"user", "team"}))
    policy.check_principal(Principal("user", "alice"))
    with pytest.raises(PolicyError, match="does not allow sharing with group principals"):
        policy.check_principal(Principal("group", "cosmo"))
    with pytest.raises(PolicyError, match="group:users: it is too broad"):
        SitePolicy.default().check_principal(Principal("group", "users"))
    SitePolicy.default().check_principal(Principal("group", "cosmo"))


def test_check_team_size() -> None:
    policy = SitePolicy(max_team_size=3)
    policy.check_team_size("cosmo", 3)
    with pytest.raises(PolicyError, match=r"team 'cosmo' would have 4 members, more than .* 3"):
        policy.check_team_size("cosmo", 4)


def test_grant_expiry_applies_default_and_maximum() -> None:
    now = 1_000_000.0
    assert SitePolicy.default().grant_expiry(now, None) is None
    capped = SitePolicy(max_grant_lifetime=365 * DAY)
    assert capped.grant_expiry(now, None) == now + 365 * DAY  # unasked: the maximum
    both = SitePolicy(max_grant_lifetime=365 * DAY, default_grant_lifetime=30 * DAY)
    assert both.grant_expiry(now, None) == now + 30 * DAY
    assert both.grant_expiry(now, now + 100 * DAY) == now + 100 * DAY
    with pytest.raises(PolicyError, match="may last at most 365d"):
        both.grant_expiry(now, now + 400 * DAY)
    with pytest.raises(PolicyError, match="the expiry is in the past"):
        both.grant_expiry(now, now - 1)


def test_in_force_checks_a_teams_group_and_size_and_the_lifetime_of_old_grants() -> None:
    from fedfs.policy.in_force import in_force
    from fedfs.policy.model import Grant, Level, Principal, Team

    site = SitePolicy(
        forbidden_principals=frozenset({"group:crowd"}), max_team_size=2, max_grant_lifetime=100.0
    )
    teams = {
        "t1": Team("t1", 600000, frozenset({"a"}), frozenset({"a"}), "crowd"),
        "t2": Team("t2", 600001, frozenset({"a"}), frozenset({"a"}), "big"),
        "t3": Team("t3", 600002, frozenset({"a"}), frozenset({"a"})),
    }
    members = {"crowd": frozenset({"b"}), "big": frozenset({"b", "c"})}

    def grant(who: str, at: float = 1000.0, expires: float | None = None) -> Grant:
        return Grant("/b/d", Principal.parse(who), Level.READ, "a", at, expires)

    found = in_force(
        site,
        [grant("team:t1"), grant("team:t2"), grant("team:t3"), grant("user:x", at=800.0)],
        teams,
        members,
        now=1050.0,
    )
    why = {key[1].name: reason for key, (_, reason) in found.suspended.items()}
    assert "backed by group:crowd" in why["t1"]
    assert "3 members" in why["t2"]
    assert "max_grant_lifetime" in why["x"]
    # a grant made without expiry under no limit ends at the new limit from when it was made
    assert [(str(g.principal), g.expires) for g in found.grants] == [("team:t3", 1100.0)]
    assert found.next_end == 1100.0
