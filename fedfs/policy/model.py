"""The policy vocabulary: levels, principals, grants, teams and the identity snapshot.

Everything here is an immutable value validated on construction, so the engine
can trust what it is given; invalid input raises PolicyError with a sentence for a person.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, cast

from fedfs.errors import PolicyError

PrincipalKind = Literal["user", "group", "team"]
PRINCIPAL_KINDS: tuple[PrincipalKind, ...] = ("user", "group", "team")

# POSIX portable user/group names, as useradd/groupadd accept them by default.
_NAME_RE = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.-]*")
NAME_MAX = 64
_NAME_RULE = f"1 to {NAME_MAX} characters from A-Z a-z 0-9 . _ -, not starting with '-'"


class Level(enum.IntEnum):
    """How much a grant allows; higher levels include the lower ones."""

    READ = 1
    WRITE = 2
    MANAGE = 3

    @classmethod
    def parse(cls, text: str) -> Level:
        """Parse "read", "write" or "manage" (any case), as a person types it."""
        try:
            return cls[text.strip().upper()]
        except KeyError:
            valid = ", ".join(level.name.lower() for level in cls)
            raise PolicyError(f"unknown access level {text!r}: use one of {valid}") from None

    def __str__(self) -> str:
        return self.name.lower()


def validate_name(name: str, what: str) -> str:
    """Return name if it is a portable user/group/team name, else raise PolicyError."""
    if len(name) > NAME_MAX or not _NAME_RE.fullmatch(name):
        raise PolicyError(f"invalid {what} name {name!r}: a name is {_NAME_RULE}")
    return name


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a grant is for: a user, an NSS/LDAP group, or a fedfs team."""

    kind: PrincipalKind
    name: str

    def __post_init__(self) -> None:
        if self.kind not in PRINCIPAL_KINDS:
            raise PolicyError(
                f"unknown principal kind {self.kind!r}: use one of {', '.join(PRINCIPAL_KINDS)}"
            )
        validate_name(self.name, self.kind)

    @classmethod
    def parse(cls, text: str) -> Principal:
        """Parse "user:NAME", "group:NAME" or "team:NAME"."""
        kind, sep, name = text.strip().partition(":")
        if not sep:
            raise PolicyError(
                f"invalid principal {text!r}: write user:NAME, group:NAME or team:NAME"
            )
        if kind not in PRINCIPAL_KINDS:
            raise PolicyError(
                f"unknown principal kind {kind!r} in {text!r}: "
                f"write user:NAME, group:NAME or team:NAME"
            )
        return cls(cast(PrincipalKind, kind), name)

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"


def normalize_path(path: str) -> str:
    """Return the canonical "/bucket/a/b" form of a fedfs path.

    A missing leading "/" is read as relative to the fedfs root, and "//", "."
    and a trailing "/" are dropped; ".." is refused rather than resolved because
    a grant path must name the place the person meant, not one it escapes to.
    """
    if "\0" in path:
        raise PolicyError(f"invalid path {path!r}: a path cannot contain a NUL byte")
    # Fast path: the mount passes canonical paths on every lookup.
    if (
        path.startswith("/")
        and "//" not in path
        and "/." not in path
        and (len(path) == 1 or not path.endswith("/"))
    ):
        return path
    if not path:
        raise PolicyError("invalid path '': a path needs at least '/'")
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise PolicyError(f"invalid path {path!r}: '..' is not allowed in a fedfs path")
    return "/" + "/".join(parts)


# What a grant or an opening covers (docs/OBJECT_ACL.md "Import", the rule for prefixes
# and listing). `fedfs share` grants are TREE on a directory and OBJECT on anything else;
# the others are what a bucket policy states, which the store evaluates per key and per
# listing, never per directory.
Shape = Literal["tree", "below", "prefix", "list", "list-one", "object"]
TREE: Shape = "tree"  # the path and everything below it; directories r-x (fedfs share)
# the object at path only: a non-directory there, never a directory at path (a prefix that
# came to shadow the file) nor anything below it (fedfs share on a file, link, device)
OBJECT: Shape = "object"
BELOW: Shape = "below"  # keys under "P/": files strictly below; directories at/below, no r
PREFIX: Shape = "prefix"  # keys "P" and under "P/": the file P too; directories, no r
LIST: Shape = "list"  # listing: r on the directory at path and every directory below
LIST_ONE: Shape = "list-one"  # listing of the directory at path only
SHAPES: tuple[Shape, ...] = (TREE, BELOW, PREFIX, LIST, LIST_ONE, OBJECT)


def check_shape(shape: str) -> Shape:
    if shape not in SHAPES:
        raise PolicyError(f"unknown grant shape {shape!r}: one of {', '.join(SHAPES)}")
    return cast(Shape, shape)


@dataclass(frozen=True, slots=True)
class Grant:
    """One share: principal gets level on path and everything below it, until expires.

    shape: TREE for a grant fedfs stores on a directory, OBJECT for one on a file (it
    covers that object and nothing named below it); the imported rights of a bucket
    policy cover only what the store does (see Shape), which policy/reach.py's `bits`
    applies.
    """

    path: str
    principal: Principal
    level: Level
    granted_by: str
    granted_at: float
    expires: float | None = None
    shape: Shape = TREE

    def __post_init__(self) -> None:
        path = normalize_path(self.path)
        if path == "/":
            raise PolicyError("a grant needs a bucket: share '/BUCKET' or a path inside it")
        object.__setattr__(self, "path", path)
        check_shape(self.shape)

    def active(self, now: float) -> bool:
        """True until the expiry time (a grant expiring at t no longer applies at t)."""
        return self.expires is None or now < self.expires

    def __str__(self) -> str:
        return f"{self.principal} {self.level} on {self.path}"


@dataclass(frozen=True, slots=True)
class Denial:
    """No access at path and below for user (None: for everyone else, "other"), whatever
    grants say: a bucket policy Deny seen in POSIX (docs/OBJECT_ACL.md "Import")."""

    path: str
    user: str | None
    source: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", normalize_path(self.path))


@dataclass(frozen=True, slots=True)
class Opening:
    """Access for everyone ("other") at path and below: a public bucket policy or ACL grant."""

    path: str
    level: Level
    source: str
    expires: float | None = None
    shape: Shape = TREE

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", normalize_path(self.path))
        check_shape(self.shape)

    def active(self, now: float) -> bool:
        return self.expires is None or now < self.expires


@dataclass(frozen=True, slots=True)
class Team:
    """A fedfs team: members get a team's grants, owners may change its membership."""

    name: str
    gid: int
    members: frozenset[str] = frozenset()
    owners: frozenset[str] = frozenset()
    group: str | None = None  # the NSS/LDAP group that backs the team, if any

    def __post_init__(self) -> None:
        validate_name(self.name, "team")
        if self.gid < 0:
            raise PolicyError(f"team {self.name!r} has gid {self.gid}: a gid is 0 or more")
        if self.group is not None:
            validate_name(self.group, "group")


@dataclass(frozen=True, slots=True)
class Identities:
    """A snapshot of the identity source (NSS/LDAP), so evaluating policy never does I/O."""

    uids: Mapping[str, int] = field(default_factory=dict)  # user name -> uid
    primary_gids: Mapping[int, int] = field(default_factory=dict)  # uid -> primary gid
    gids: Mapping[str, int] = field(default_factory=dict)  # group name -> gid
    supplementary: Mapping[int, frozenset[int]] = field(default_factory=dict)  # uid -> gids

    def uid_of(self, user: str) -> int | None:
        return self.uids.get(user)

    def primary_gid_of(self, uid: int) -> int | None:
        return self.primary_gids.get(uid)

    def gid_of(self, group: str) -> int | None:
        return self.gids.get(group)

    def gids_of(self, uid: int) -> frozenset[int] | None:
        """Every gid the kernel would check for uid (primary and supplementary), as for level_of."""
        primary = self.primary_gids.get(uid)
        extra = self.supplementary.get(uid)
        if primary is None and extra is None:
            return None
        return (extra or frozenset()) | ({primary} if primary is not None else frozenset())
