"""Evaluates grants: what POSIX view (mode + ACLs) an object shows, and who holds what level.

A PolicyEngine is an index built once per policy change from grants, teams and an
identity snapshot; each question then walks only the ancestors of one path.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from fedfs.policy.acl import R, W, X, pack_acl
from fedfs.policy.model import Grant, Identities, Level, Team, normalize_path

_EXEC_BITS = 0o111


@dataclass(frozen=True, slots=True)
class ObjectMeta:
    """What an object stores about itself: owner, owning group, mode and an owner-set mask."""

    uid: int
    gid: int
    mode: int  # permission bits (0o7777), never the file type
    explicit_mask: int | None = None  # set by chmod g=... or setfacl -m m::..., else None


@dataclass(frozen=True, slots=True)
class PosixView:
    """What getattr/getxattr report for an object: the kernel enforces exactly this."""

    uid: int
    gid: int
    mode: int  # permission bits; the group bits are the ACL mask when acl_access is set
    acl_access: bytes | None
    acl_default: bytes | None  # directories with grants only


@dataclass(frozen=True, slots=True)
class _Compiled:
    """A grant resolved against identities and teams once, so views need no lookups."""

    grant: Grant
    level: Level
    expires: float | None
    uids: tuple[int, ...]  # named USER entries it contributes
    gids: tuple[int, ...]  # named GROUP entries it contributes
    names: frozenset[str]  # user names that hold it by name (user or team member)


def _perm(level: Level, with_x: bool) -> int:
    base = R if level == Level.READ else R | W
    return base | X if with_x else base


class PolicyEngine:
    """The grants in force, indexed by path; immutable, rebuild it when policy changes."""

    def __init__(
        self, grants: Iterable[Grant], teams: Iterable[Team], identities: Identities
    ) -> None:
        self._teams = {team.name: team for team in teams}
        self._identities = identities
        index: dict[str, list[_Compiled]] = {}
        for grant in grants:
            index.setdefault(grant.path, []).append(self._compile(grant))
        self._index: dict[str, tuple[_Compiled, ...]] = {
            path: tuple(compiled) for path, compiled in index.items()
        }
        # A grant lets its principal search (x, not list) every directory above its path,
        # so the path can be reached in a tree that is otherwise private.
        below: dict[str, list[_Compiled]] = {}
        for path, compiled in index.items():
            cut = path.rfind("/")
            while cut > 0:
                below.setdefault(path[:cut], []).extend(compiled)
                cut = path.rfind("/", 0, cut)
        self._traverse: dict[str, tuple[_Compiled, ...]] = {
            path: tuple(compiled) for path, compiled in below.items()
        }

    def _compile(self, grant: Grant) -> _Compiled:
        ids = self._identities
        kind, name = grant.principal.kind, grant.principal.name
        uids: list[int | None] = []
        gids: list[int | None] = []
        names: frozenset[str] = frozenset()
        if kind == "user":
            uids.append(ids.uid_of(name))
            names = frozenset({name})
        elif kind == "group":
            gids.append(ids.gid_of(name))
        else:
            team = self._teams.get(name)
            if team is not None:
                # Teams are not kernel groups, so members become named USER entries.
                uids.extend(ids.uid_of(member) for member in sorted(team.members))
                names = team.members
                if team.group is not None:
                    gids.append(ids.gid_of(team.group))
        # Unknown users and groups have no id the kernel could match, so they add nothing.
        return _Compiled(
            grant=grant,
            level=grant.level,
            expires=grant.expires,
            uids=tuple(uid for uid in uids if uid is not None),
            gids=tuple(gid for gid in gids if gid is not None),
            names=names,
        )

    def _applicable(self, path: str) -> list[_Compiled]:
        """Compiled grants on path and its ancestors, nearest the root first."""
        path = normalize_path(path)
        index = self._index
        found: list[_Compiled] = []
        start = 1
        while True:
            cut = path.find("/", start)
            prefix = path if cut < 0 else path[:cut]
            hits = index.get(prefix)
            if hits:
                found.extend(hits)
            if cut < 0:
                return found
            start = cut + 1

    def view(self, path: str, meta: ObjectMeta, is_dir: bool, now: float) -> PosixView:
        """The uid, gid, mode and ACL xattrs the object at path shows under current grants.

        A named USER entry for the owner is dropped (the kernel only consults USER_OBJ for
        the owner); a named GROUP entry for the owning gid is dropped only when GROUP_OBJ
        already allows all it would, so a grant to the owning group still takes effect.
        """
        mode = meta.mode & 0o7777
        with_x = is_dir or bool(mode & _EXEC_BITS)
        group_obj = (mode >> 3) & 7
        users: dict[int, int] = {}
        groups: dict[int, int] = {}
        if is_dir:
            for compiled in self._traverse.get(normalize_path(path), ()):
                if compiled.expires is not None and now >= compiled.expires:
                    continue
                for uid in compiled.uids:
                    if uid != meta.uid:
                        users[uid] = users.get(uid, 0) | X
                for gid in compiled.gids:
                    groups[gid] = groups.get(gid, 0) | X
        for compiled in self._applicable(path):
            if compiled.expires is not None and now >= compiled.expires:
                continue
            perm = _perm(compiled.level, with_x)
            for uid in compiled.uids:
                if uid != meta.uid:
                    users[uid] = users.get(uid, 0) | perm
            for gid in compiled.gids:
                groups[gid] = groups.get(gid, 0) | perm
        if meta.gid in groups and groups[meta.gid] | group_obj == group_obj:
            del groups[meta.gid]
        if not users and not groups:
            return PosixView(meta.uid, meta.gid, mode, None, None)

        mask = group_obj
        for perm in users.values():
            mask |= perm
        for perm in groups.values():
            mask |= perm
        if meta.explicit_mask is not None:
            mask &= meta.explicit_mask
        acl = pack_acl((mode >> 6) & 7, users, group_obj, groups, mask, mode & 7)
        # getfacl shows the grants as defaults too; grants reach new objects by prefix anyway.
        return PosixView(
            meta.uid, meta.gid, (mode & ~0o070) | (mask << 3), acl, acl if is_dir else None
        )

    def level_of(
        self, user: str, uid: int, gids: frozenset[int], path: str, now: float
    ) -> Level | None:
        """The highest level user holds at path through any grant, or None.

        A grant counts when the ACL would let this person in: by user name or uid, by team
        membership, or through gids (the caller's groups, e.g. Identities.gids_of).
        """
        best: Level | None = None
        for compiled in self._applicable(path):
            if best is not None and compiled.level <= best:
                continue
            if compiled.expires is not None and now >= compiled.expires:
                continue
            if user in compiled.names or uid in compiled.uids or not gids.isdisjoint(compiled.gids):
                best = compiled.level
        return best

    def grants_at(self, path: str, now: float) -> list[tuple[Grant, str]]:
        """Every active grant that applies at path, with the path it was made on."""
        active = [c.grant for c in self._applicable(path) if c.grant.active(now)]
        active.sort(key=lambda g: (g.path, str(g.principal), g.level, g.granted_at))
        return [(grant, grant.path) for grant in active]
