"""Who users and groups are, as fedfs asks: `User`, `Group`, and the `IdentitySource`
protocol every source of them follows (NSS in `identity/nss.py`, LDAP in
`identity/ldap.py`; `identity/choose.py` picks the one a config names).

Lookups block. The daemon calls them from a worker thread under a trio
CapacityLimiter, so every source is thread-safe and every network wait is
bounded by a timeout. Data and a protocol only: imports nothing of fedfs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = ["Group", "IdentityHealth", "IdentitySource", "User", "UserAttributes"]


@dataclass(frozen=True)
class User:
    """A POSIX account. `gids` holds every group the user is in, the primary one included."""

    name: str
    uid: int
    gid: int
    gids: frozenset[int]


@dataclass(frozen=True)
class Group:
    """A POSIX group. `members` are the names listed in the group entry.

    As in /etc/group, users whose primary group this is are not listed unless
    the directory lists them; `User.gids` is the place to ask about one user.
    """

    name: str
    gid: int
    members: frozenset[str]


@dataclass(frozen=True)
class IdentityHealth:
    """What `fedfs status` shows about an identity source.

    `ok` is False from a failed contact until the next successful one;
    `last_success` is a Unix time, or None if the source never answered.
    """

    source: str
    ok: bool
    last_error: str | None
    last_success: float | None


@runtime_checkable
class IdentitySource(Protocol):
    """Where fedfs learns identities. Unknown names and ids give None, never an error."""

    def user(self, name: str) -> User | None: ...

    def user_by_uid(self, uid: int) -> User | None: ...

    def group(self, name: str) -> Group | None: ...

    def group_by_gid(self, gid: int) -> Group | None: ...

    def health(self) -> IdentityHealth: ...


@runtime_checkable
class UserAttributes(Protocol):
    """A source that holds more about a user than POSIX does (LDAP): one attribute's value,
    and the reverse, the one user whose attribute has a value. None when there is no
    such user or value, or when the answer would be ambiguous (several values or users)."""

    def user_attribute(self, name: str, attribute: str) -> str | None: ...

    def user_with_attribute(self, attribute: str, value: str) -> str | None: ...
