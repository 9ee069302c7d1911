"""The site policy: the rules an admin sets for every share and team, read from TOML.

This module owns the `policy/*.toml` format (see policy/README.md), the `SitePolicy`
value the rest of fedfs receives, and the duration syntax ("365d", "12h", "30m") used
wherever a person types a lifetime. Mistakes are PolicyErrors naming file, key and fix.
"""

from __future__ import annotations

import difflib
import math
import re
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedfs.errors import PolicyError
from fedfs.policy.model import PRINCIPAL_KINDS, Principal

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_DURATION_RULE = 'a number with a unit, s m h d or w, such as "365d", "12h", "30m" or "1d12h"'
UNLIMITED = "unlimited"  # the TOML spelling of "no limit", since TOML has no null
ANYONE = "anyone"  # the TOML spelling of team_creators = None

SYSTEM_GID_MAX = 999  # gids below 1000 belong to the distribution and local admins
# nogroup and (gid_t)(u16)-1: tools treat both as "no group", so a team must not get them.
_RESERVED_GIDS = (65534, 65535)
GID_MAX = 2**32 - 2  # (gid_t)-1 means "unchanged" to chown
# The kernel caps an xattr value at 64 KiB: a 4-byte header plus 8-byte entries leaves
# room for 8187 named entries, and a team grant becomes one entry per member.
TEAM_SIZE_LIMIT = 8000
# 9999-12-31T23:59:59Z: the last time every tool (date, strftime, SQLite, getfacl users'
# eyes) can show; a later "expiry" is a mistake or an attack, never a plan.
LATEST_EXPIRY = 253402300799.0


def parse_duration(text: str) -> float:
    """'365d' -> seconds; units s, m, h, d, w may be combined ("1d12h"). Raises PolicyError."""
    if not isinstance(text, str):
        raise PolicyError(f"{text!r} is not a duration: write {_DURATION_RULE}")
    compact = text.strip().lower()
    parts = _DURATION_PART.findall(compact)
    if not parts or "".join(n + u for n, u in parts) != compact:
        raise PolicyError(f"{text!r} is not a duration: write {_DURATION_RULE}")
    seconds = sum(float(number) * _UNITS[unit] for number, unit in parts)
    if seconds <= 0:
        raise PolicyError(f"{text!r} is not a duration: a duration must be longer than zero")
    return seconds


def format_duration(seconds: float) -> str:
    """Seconds -> the largest whole unit that fits, as parse_duration reads it ("365d")."""
    for unit, size in sorted(_UNITS.items(), key=lambda item: -item[1]):
        if unit != "w" and seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


@dataclass(frozen=True)
class SitePolicy:
    """What an admin allows: who is admin, team gids, grant lifetimes, allowed principals.

    uid 0 is always a site admin, whatever `admins` says: root can change the policy
    database and the site policy files anyway, so leaving it out would protect nothing.
    """

    admins: tuple[Principal, ...] = ()
    team_gids: tuple[int, int] = (600000, 699999)
    max_grant_lifetime: float | None = None  # seconds; None = unlimited
    default_grant_lifetime: float | None = None  # seconds; None = no expiry unless asked
    allowed_principals: frozenset[str] = frozenset(PRINCIPAL_KINDS)
    forbidden_principals: frozenset[str] = frozenset({"group:users"})
    team_creators: tuple[Principal, ...] | None = None  # None = anyone may create a team
    max_team_size: int = 5000
    max_teams_per_owner: int = 50
    audit_readers: tuple[Principal, ...] = ()

    @classmethod
    def default(cls) -> SitePolicy:
        """The shipped default; policy/default.toml spells out exactly these values."""
        return cls()

    # -- the rules, applied by whoever changes policy ---------------------------------

    def is_admin(self, uid: int, user: str | None, groups: Iterable[str]) -> bool:
        """True for uid 0 and for holders of any principal in `admins`."""
        return uid == 0 or _holds(self.admins, user, groups)

    def may_create_team(self, uid: int, user: str | None, groups: Iterable[str]) -> bool:
        """Site admins always may; otherwise anyone, or only holders of `team_creators`."""
        groups = tuple(groups)
        if self.team_creators is None or self.is_admin(uid, user, groups):
            return True
        return _holds(self.team_creators, user, groups)

    def may_read_audit(self, uid: int, user: str | None, groups: Iterable[str]) -> bool:
        """Site admins and holders of `audit_readers` may read the whole audit log."""
        groups = tuple(groups)
        return self.is_admin(uid, user, groups) or _holds(self.audit_readers, user, groups)

    def check_principal(self, principal: Principal) -> None:
        """Raise PolicyError unless grants may name principal at this site."""
        if principal.kind not in self.allowed_principals:
            allowed = ", ".join(k for k in PRINCIPAL_KINDS if k in self.allowed_principals)
            raise PolicyError(
                f"this site does not allow sharing with {principal.kind} principals "
                f"({principal}); allowed kinds: {allowed}"
            )
        if str(principal) in self.forbidden_principals:
            raise PolicyError(
                f"this site does not allow sharing with {principal}: it is too broad to name "
                "in a grant; share with a team or a smaller group instead"
            )

    def check_team_size(self, team: str, size: int) -> None:
        """Raise PolicyError if a team of size members is larger than the site allows."""
        if size > self.max_team_size:
            raise PolicyError(
                f"team {team!r} would have {size} members, more than this site's limit of "
                f"{self.max_team_size}; share with a group for collaborations that large"
            )

    def grant_expiry(self, now: float, expires: float | None) -> float | None:
        """The expiry a new grant gets when the sharer asked for `expires` (None: not asked).

        Unasked, a grant gets the default lifetime, or else the maximum one; asking for
        more than the maximum is refused rather than shortened, so nobody is surprised.
        """
        if expires is None:
            lifetime = self.default_grant_lifetime or self.max_grant_lifetime
            return None if lifetime is None else now + lifetime
        if not math.isfinite(expires) or expires > LATEST_EXPIRY:
            raise PolicyError(
                f"the expiry {expires!r} is not a time fedfs can keep: give a date before "
                "the year 10000 (such as 2027-12-31) or a duration (such as 365d), or no "
                "expiry at all"
            )
        if expires <= now:
            raise PolicyError("the expiry is in the past: a grant must expire in the future")
        limit = self.max_grant_lifetime
        if limit is not None and expires - now > limit:
            raise PolicyError(
                f"grants at this site may last at most {format_duration(limit)}; "
                f"ask for an expiry within {format_duration(limit)} from now"
            )
        return expires


def _holds(principals: Iterable[Principal], user: str | None, groups: Iterable[str]) -> bool:
    groups = set(groups)
    return any(
        (p.kind == "user" and p.name == user) or (p.kind == "group" and p.name in groups)
        for p in principals
    )


def policy_files(directory: Path) -> list[Path]:
    """The *.toml files of a policy directory in the order they apply: sorted by name."""
    return sorted(p for p in directory.glob("*.toml") if p.is_file())


def load_site_policy(paths: list[Path]) -> SitePolicy:
    """Start from SitePolicy.default() and apply each file in order; later keys win."""
    values: dict[str, Any] = {}
    origins: dict[str, tuple[int, Path]] = {}
    for index, path in enumerate(paths):
        for key, value in _read(path).items():
            values[key] = _PARSERS[key](_Key(path, key), value)
            origins[key] = (index, path)
    policy = SitePolicy(**values)
    _check_lifetimes(policy, origins)
    return policy


@dataclass(frozen=True)
class _Key:
    """Where a value came from, so every error names the file and the key."""

    path: Path
    name: str

    def fail(self, why: str) -> PolicyError:
        return PolicyError(f"{self.path}: {self.name}: {why}")


def _read(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise PolicyError(f"{path}: cannot read the site policy file: {e.strerror}") from e
    except UnicodeDecodeError as e:
        raise PolicyError(f"{path}: is not UTF-8 text ({e.reason})") from e
    except tomllib.TOMLDecodeError as e:
        raise PolicyError(f"{path}: is not valid TOML: {e}") from e
    for key in data:
        if key not in _PARSERS:
            typo = difflib.get_close_matches(key, list(_PARSERS), 1)
            hint = f" (did you mean {typo[0]!r}?)" if typo else ""
            valid = ", ".join(_PARSERS)
            raise _Key(path, key).fail(f"unknown key{hint}; valid keys are {valid}")
    return data


def _principals(kinds: tuple[str, ...], why: str) -> Callable[[_Key, Any], tuple[Principal, ...]]:
    def parse(key: _Key, value: Any) -> tuple[Principal, ...]:
        allowed = " or ".join(f"{k}:NAME" for k in kinds)
        if not isinstance(value, list):
            raise key.fail(f'expected a list such as ["{kinds[-1]}:NAME"], got {value!r}')
        found = []
        for item in value:
            if not isinstance(item, str):
                raise key.fail(f"expected strings such as {allowed}, got {item!r}")
            try:
                principal = Principal.parse(item)
            except PolicyError as e:
                raise key.fail(str(e)) from None
            if principal.kind not in kinds:
                raise key.fail(f"{item!r} cannot be used here: write {allowed} ({why})")
            found.append(principal)
        return tuple(found)

    return parse


# Teams are managed by scientists; letting one confer site roles would let any team
# owner make people admins. So roles name users and NSS/LDAP groups only.
_site_roles = _principals(("user", "group"), "teams are managed by their owners, not the site")


def _team_creators(key: _Key, value: Any) -> tuple[Principal, ...] | None:
    if value == ANYONE:
        return None
    if isinstance(value, str):
        raise key.fail(f'expected "{ANYONE}" or a list such as ["group:pi"], got {value!r}')
    return _site_roles(key, value)


def _team_gids(key: _Key, value: Any) -> tuple[int, int]:
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        raise key.fail(f"expected two gids [FIRST, LAST] such as [600000, 699999], got {value!r}")
    low, high = value
    if low > high:
        raise key.fail(f"the range [{low}, {high}] is inverted: write [{high}, {low}]")
    if low <= SYSTEM_GID_MAX:
        raise key.fail(
            f"the range [{low}, {high}] overlaps the system gids 0-{SYSTEM_GID_MAX}; "
            f"start it at {SYSTEM_GID_MAX + 1} or above, in a block your NSS/LDAP does not use"
        )
    if high > GID_MAX:
        raise key.fail(f"the range [{low}, {high}] ends above the largest gid {GID_MAX}")
    for reserved in _RESERVED_GIDS:
        if low <= reserved <= high:
            raise key.fail(
                f"the range [{low}, {high}] contains {reserved}, which tools read as "
                "'no group' (nogroup); use a range without it, such as [600000, 699999]"
            )
    return (low, high)


def _lifetime(key: _Key, value: Any) -> float | None:
    if value == UNLIMITED:
        return None
    try:
        return parse_duration(value)
    except PolicyError:
        raise key.fail(
            f'{value!r} is not a lifetime: write "{UNLIMITED}" or {_DURATION_RULE}'
        ) from None


def _allowed_principals(key: _Key, value: Any) -> frozenset[str]:
    valid = ", ".join(f'"{k}"' for k in PRINCIPAL_KINDS)
    if not isinstance(value, list) or not value:
        raise key.fail(f"expected a non-empty list of principal kinds from {valid}, got {value!r}")
    for item in value:
        if item not in PRINCIPAL_KINDS:
            raise key.fail(f"{item!r} is not a principal kind; use {valid}")
    return frozenset(value)


_any_principals = _principals(PRINCIPAL_KINDS, "")


def _forbidden_principals(key: _Key, value: Any) -> frozenset[str]:
    return frozenset(str(p) for p in _any_principals(key, value))


def _teams_per_owner(key: _Key, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise key.fail(f"expected a whole number of teams, 1 or more, such as 50, got {value!r}")
    return value


def _team_size(key: _Key, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise key.fail(f"expected a whole number of members such as 5000, got {value!r}")
    if not 1 <= value <= TEAM_SIZE_LIMIT:
        raise key.fail(
            f"{value} is out of range: use 1 to {TEAM_SIZE_LIMIT} (a team grant becomes one "
            "ACL entry per member, and the kernel caps an ACL at about 8000 entries)"
        )
    return value


_PARSERS: dict[str, Callable[[_Key, Any], Any]] = {
    "admins": _site_roles,
    "team_gids": _team_gids,
    "max_grant_lifetime": _lifetime,
    "default_grant_lifetime": _lifetime,
    "allowed_principals": _allowed_principals,
    "forbidden_principals": _forbidden_principals,
    "team_creators": _team_creators,
    "max_team_size": _team_size,
    "max_teams_per_owner": _teams_per_owner,
    "audit_readers": _site_roles,
}


def _check_lifetimes(policy: SitePolicy, origins: dict[str, tuple[int, Path]]) -> None:
    default, limit = policy.default_grant_lifetime, policy.max_grant_lifetime
    if default is None or limit is None or default <= limit:
        return
    # Both are None unless a file set them; blame the later file, which broke the pair.
    (default_at, default_file), (limit_at, limit_file) = (
        origins["default_grant_lifetime"],
        origins["max_grant_lifetime"],
    )
    if default_at >= limit_at:
        raise PolicyError(
            f"{default_file}: default_grant_lifetime: {format_duration(default)} is longer "
            f"than max_grant_lifetime {format_duration(limit)} (set in {limit_file}); "
            "make it no longer than the maximum"
        )
    raise PolicyError(
        f"{limit_file}: max_grant_lifetime: {format_duration(limit)} is shorter than "
        f"default_grant_lifetime {format_duration(default)} (set in {default_file}); "
        "set default_grant_lifetime here too, no longer than the maximum"
    )
