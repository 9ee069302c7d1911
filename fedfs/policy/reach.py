"""Reaching a grant: a way through private directories to it, and to nothing else.

DESIGN.md "Reaching a grant", docs/SEMANTICS.md "Sharing". A holder who cannot
search a directory above one of its grants gets search (x) there; below the first
such directory it reaches only the directories on the way to its grants and what
its grants inside the last such directory cover. Everything else there gets a named
entry with no permissions for it, which POSIX ACLs check before "other", so a
guessed name or a cached dentry opens nothing.

What a grant gives each object on the way is `bits`: all of a `fedfs share` grant's
level, or, for the rights a bucket policy gives, only what the store covers (files
under a prefix but not the object named like it, directories search but listing
only from s3:ListBucket; docs/OBJECT_ACL.md "Import").

A holder is a kernel principal: a uid (named USER entries: users and team members,
who also carry the grants of their groups) or a gid (named GROUP entries: groups and
the groups that back teams, taken as a member of that group and of no other).
`walk` follows one holder from the bucket root down to an object. Pure and without
I/O, it calls nothing outside policy/: PolicyEngine.view (policy/engine.py) calls it,
in the trio thread, only where a pass-through is in play, with the stored attributes
of the directories above the object.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from fedfs.policy.acl import R, W, X
from fedfs.policy.model import BELOW, LIST, LIST_ONE, OBJECT, TREE, Level, Shape

FREE = -1  # reached the object's parent through modes and grants alone
BLOCKED = -2  # cannot reach the object's parent at all


class Stored(Protocol):
    """What an object stores about itself (ObjectMeta, or a tree inode)."""

    @property
    def uid(self) -> int: ...
    @property
    def gid(self) -> int: ...
    @property
    def mode(self) -> int: ...
    @property
    def explicit_mask(self) -> int | None: ...


class Reaches(Protocol):
    """A compiled grant, as far as reaching it goes."""

    @property
    def level(self) -> Level: ...
    @property
    def shape(self) -> Shape: ...
    @property
    def gids(self) -> tuple[int, ...]: ...
    @property
    def persons(self) -> frozenset[int]: ...


def perm(level: int, with_x: bool) -> int:
    """The rwx bits a level gives (0: no grant); x on directories and executable files."""
    if not level:
        return 0
    base = R if level == Level.READ else R | W
    return base | X if with_x else base


def bits(level: int, shape: Shape, at: bool, is_dir: bool, with_x: bool) -> int:
    """The rwx bits a grant of level and shape gives an object (at: the grant's own path).

    TREE: perm(level). OBJECT (a `fedfs share` on a file): perm(level) on the
    non-directory at its own path only; a directory there (a prefix named like the file)
    and everything below get nothing. The shapes of a bucket policy give what the store does: a file
    only where its key is covered (BELOW: never the file named like the prefix itself),
    a directory search (and write) but not listing, which only LIST and LIST_ONE give.
    """
    if shape == TREE:
        return perm(level, with_x)
    if shape == OBJECT:
        return perm(level, with_x) if at and not is_dir else 0
    if shape in (LIST, LIST_ONE):
        return R if is_dir and (at or shape == LIST) else 0
    if is_dir:
        return perm(level, True) & ~R
    if at and shape == BELOW:
        return 0
    return perm(level, with_x)


def limit_of(meta: Stored) -> int:
    mask = meta.explicit_mask
    return 7 if mask is None else mask


def is_open(meta: Stored) -> bool:
    """Every holder can search this directory without help: no pass-through needed."""
    mask = meta.explicit_mask
    return meta.mode & 0o011 == 0o011 and (mask is None or bool(mask & X))


@dataclass(slots=True)
class Holder:
    """One uid or gid followed down a path; `gids` are the groups a uid is in."""

    is_user: bool
    id: int
    gids: frozenset[int]

    def base(self, meta: Stored, granted_bits: int, group_grant: bool) -> int:
        """What modes and covering grants (their bits) give this holder, grants limited by
        the mask.

        A uid's own entry also keeps what its groups or "other" gave it; a gid entry
        keeps what "other" gives (grants only add). The owner has its owner bits.
        """
        mode = meta.mode
        limit = limit_of(meta)
        granted = granted_bits & limit
        if self.is_user:
            if self.id == meta.uid:
                return (mode >> 6) & 7
            owning = meta.gid in self.gids
            cls = ((mode >> 3) & 7 & limit) if owning else 0
            if not owning or group_grant:
                cls |= mode & 7
            return granted | cls
        if self.id == meta.gid:
            return granted | ((mode >> 3) & 7 & limit)
        return granted | (mode & 7)


@dataclass(slots=True)
class Route:
    """One path from the bucket root to an object, prepared once for every holder walked.

    chain[i]: the stored attributes of the i-th path (the object last); hits[i]: active
    grants on it; below_uid[i] / below_gid[i]: who has active grants strictly below it
    (empty for the object unless it is a directory).
    """

    chain: Sequence[Stored]
    hits: Sequence[Sequence[Reaches]]
    below_uid: Sequence[Mapping[int, Sequence[Expiring]]]
    below_gid: Sequence[Mapping[int, Sequence[Expiring]]]
    now: float
    is_dir: bool
    with_x: bool
    opens: list[bool] = field(init=False)

    def __post_init__(self) -> None:
        self.opens = [is_open(meta) for meta in self.chain]

    def on_way(self, i: int, holder: Holder) -> bool:
        below = self.below_uid[i] if holder.is_user else self.below_gid[i]
        found = below.get(holder.id)
        if not found:
            return False
        now = self.now
        return any(g.expires is None or now < g.expires for g in found)


class Expiring(Protocol):
    @property
    def expires(self) -> float | None: ...


@dataclass(slots=True)
class Reached:
    """Where a walk left a holder at an object, and what it wants there.

    state: FREE, BLOCKED, or the index of the deepest directory it had to pass
    through. want: the holder's permissions on the object under the reach rule,
    None where the grants and modes alone decide (no entry of the reach rule);
    base: what those give it, for a holder that reached the object FREE.
    """

    state: int
    want: int | None
    base: int | None = None


def walk(holder: Holder, route: Route) -> Reached:
    """Follow holder from the bucket root (route.chain[0]) to the object (route.chain[-1])."""
    chain, hits, opens = route.chain, route.hits, route.opens
    top = len(chain) - 1
    is_user, ident, gids = holder.is_user, holder.id, holder.gids
    held: list[tuple[int, Reaches]] = []  # covering grants so far, with where they are
    inside: list[tuple[int, Reaches]] = []  # those strictly below the last directory passed
    group_grant = False
    passed = FREE
    for i in range(top + 1):
        for grant in hits[i]:
            if ident in (grant.persons if is_user else grant.gids):
                held.append((i, grant))
                if passed >= 0:
                    inside.append((i, grant))
            if is_user and grant.gids and not gids.isdisjoint(grant.gids):
                group_grant = True
        if i == top:
            break
        if passed == FREE:
            if opens[i] or holder.base(chain[i], _held_bits(held, i), group_grant) & X:
                continue
            if route.on_way(i, holder):
                passed, inside = i, []
                continue
            return Reached(BLOCKED, None)
        if route.on_way(i, holder):
            if not opens[i] and not holder.base(chain[i], _held_bits(held, i), group_grant) & X:
                passed, inside = i, []
            continue
        if _held_bits(inside, i) & X and limit_of(chain[i]) & X:
            continue  # a grant inside gives search on a directory (X), unless the mask cuts it
        return Reached(BLOCKED, None)
    meta = chain[top]
    on_way = route.is_dir and route.on_way(top, holder)
    if passed == FREE:
        held_here = _held_bits(held, top, route.is_dir, route.with_x)
        base = holder.base(meta, held_here, group_grant)
        if on_way and not base & X:
            return Reached(FREE, base | X, base)  # pass-through: never less than before
        return Reached(FREE, None, base)
    granted = _held_bits(inside, top, route.is_dir, route.with_x) & limit_of(meta)
    if on_way:
        return Reached(passed, granted | X)
    return Reached(passed, granted)  # covered by a grant inside, or 0: closed


def _held_bits(
    held: Sequence[tuple[int, Reaches]], at: int, is_dir: bool = True, with_x: bool = True
) -> int:
    """What the grants held (each with the index of its path) give the object at index at."""
    found = 0
    for i, grant in held:
        found |= bits(grant.level, grant.shape, i == at, is_dir, with_x)
    return found
