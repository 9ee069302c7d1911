"""A small model of docs/SEMANTICS.md "Sharing": who may do what on a shared tree.

It knows nothing of ACLs. It follows one person down a path with the rule in plain
words (grants add to modes, limited by the owner's chmod; a way through private
directories to one's grants, and nothing else), and keeps an object's stored mode and
limit as the chmod rule says. tests/unit/test_policy_reach.py checks the policy engine
against it under the kernel's ACL check, tests/integration/test_reach_property.py a
real mount with real users.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from fedfs.policy.engine import ObjectMeta
from fedfs.policy.model import Grant, Level

R, W, X = 4, 2, 1


@dataclass(frozen=True)
class Person:
    """Someone running a process: uid, every group the kernel knows it by, its teams."""

    name: str
    uid: int
    gids: frozenset[int]
    teams: frozenset[str] = frozenset()


@dataclass
class Tree:
    """The stored attributes of every object, and which paths are directories."""

    metas: dict[str, ObjectMeta]
    dirs: frozenset[str]

    def is_dir(self, path: str) -> bool:
        return path in self.dirs


def ancestors(path: str) -> list[str]:
    """ "/b/x/y" -> ["/b", "/b/x"]: the directories above a path, bucket first."""
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(2, len(parts))]


def covers(grant: Grant, path: str) -> bool:
    return path == grant.path or path.startswith(grant.path + "/")


def limit(meta: ObjectMeta) -> int:
    return 7 if meta.explicit_mask is None else meta.explicit_mask


def chmod(
    meta: ObjectMeta, shown_mode: int, acl_shown: bool, new_mode: int, by_creator: bool = True
) -> ObjectMeta:
    """What an object stores after chmod(new_mode) (docs/SEMANTICS.md "Sharing").

    A chmod to what `ls -l` showed changes nothing, nor, while there is no limit, one to
    the object's own mode by the process that created it (by_creator). Its group bits
    become the limit on grants when it takes group permissions away from the object's own
    mode, or takes away some `ls -l` showed while giving the owning group none it lacked,
    and always once a limit exists (rwx: none). The owning group keeps its bits while
    `ls -l` shows an ACL (POSIX).
    """
    restates = by_creator and meta.explicit_mask is None and new_mode == meta.mode
    if new_mode == shown_mode or restates:
        return meta
    new_group, own, shown = (new_mode >> 3) & 7, (meta.mode >> 3) & 7, (shown_mode >> 3) & 7
    mask = meta.explicit_mask
    narrows_shown = not new_group & ~own and shown & ~new_group
    if mask is not None or own & ~new_group or narrows_shown:
        mask = None if new_group == 7 else new_group
    mode = (new_mode & ~0o070) | (meta.mode & 0o070) if acl_shown else new_mode
    return ObjectMeta(meta.uid, meta.gid, mode, mask)


def grants_of(
    grants: Iterable[Grant],
    person: Person,
    groups: Mapping[str, int],
    now: float,
    backing: Mapping[str, str] | None = None,
) -> list[Grant]:
    """The active grants that reach a person: by name, through a group or a team.

    backing: team -> the group that backs it, whose members hold the team's grants too.
    """
    backing = backing or {}
    out = []
    for g in grants:
        kind, name = g.principal.kind, g.principal.name
        if g.active(now) and (
            (kind == "user" and name == person.name)
            or (kind == "group" and groups.get(name) in person.gids)
            or (kind == "team" and name in person.teams)
            or (kind == "team" and name in backing and groups.get(backing[name]) in person.gids)
        ):
            out.append(g)
    return out


def rights(
    tree: Tree,
    grants: Iterable[Grant],
    groups: Mapping[str, int],
    person: Person,
    path: str,
    now: float,
    backing: Mapping[str, str] | None = None,
) -> int | None:
    """The rwx bits the person has on path, or None when it cannot reach path at all.

    Walking down from the bucket: a directory the person can search through modes and
    grants is passed freely. One it cannot search, but that lies above one of its
    grants, it passes through; from there on only the directories above its grants
    (search, plus what its grants inside give) and what its grants inside the last
    directory it passed through cover are open to it. Everything else there is
    closed. A pass-through never gives less than the person had without it.
    """
    mine = grants_of(grants, person, groups, now, backing)

    def base(p: str) -> int:
        meta = tree.metas[p]
        if person.uid == meta.uid:
            return (meta.mode >> 6) & 7
        own = (meta.mode >> 3) & 7 & limit(meta) if meta.gid in person.gids else meta.mode & 7
        level = max((g.level for g in mine if covers(g, p)), default=0)
        return own | (_perm(level, tree, p) & limit(meta))

    def on_way(p: str) -> bool:
        return any(g.path.startswith(p + "/") for g in mine)

    def inside(p: str, passed: str) -> int:
        return max(
            (g.level for g in mine if covers(g, p) and g.path.startswith(passed + "/")),
            default=0,
        )

    passed: str | None = None
    for a in ancestors(path):
        meta = tree.metas[a]
        if person.uid == meta.uid:
            if not (meta.mode >> 6) & X:
                return None
            continue
        searchable = bool(base(a) & X)
        if passed is None:
            if searchable:
                continue
            if on_way(a):
                passed = a
                continue
            return None
        if on_way(a):
            if not searchable:
                passed = a
            continue
        if inside(a, passed) and limit(meta) & X:
            continue
        return None
    meta = tree.metas[path]
    if person.uid == meta.uid:
        return (meta.mode >> 6) & 7
    here = tree.is_dir(path) and on_way(path)
    if passed is None:
        got = base(path)
        return got | X if here else got
    got = _perm(inside(path, passed), tree, path) & limit(meta)
    return got | X if here else got


def _perm(level: int, tree: Tree, path: str) -> int:
    """read: r, write: rw, and x on directories and on files with an execute bit."""
    if not level:
        return 0
    x = X if tree.is_dir(path) or tree.metas[path].mode & 0o111 else 0
    return (R if level == Level.READ else R | W) | x
