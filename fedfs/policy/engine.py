"""Evaluates grants: what POSIX view (mode + ACLs) an object shows, and who holds what level.

A PolicyEngine is an index built once per policy change from grants, teams and an
identity snapshot; each question then walks only the ancestors of one path. Where a
grant lies below a directory its holder cannot search, the pass-through rule of
policy/reach.py decides, from the stored attributes of the directories above.
Pure and without I/O; called from the trio thread on every getattr/getxattr.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from fedfs.policy import reach
from fedfs.policy.acl import Acl, AclTag, pack_acl
from fedfs.policy.model import (
    BELOW,
    OBJECT,
    TREE,
    Denial,
    Grant,
    Identities,
    Level,
    Opening,
    Shape,
    Team,
    normalize_path,
)
from fedfs.policy.reach import BLOCKED, Holder, Stored

_EXEC_BITS = 0o111
_NEVER = float("inf")
_NO_GIDS: frozenset[int] = frozenset()
_NOTHING: dict[int, tuple[_Compiled, ...]] = {}

# The stored attributes of the directories above a path, bucket root first, asked for
# only when a pass-through decision needs them.
Above = Callable[[], Sequence[Stored]]


@dataclass(frozen=True, slots=True)
class ObjectMeta:
    """What an object stores about itself: owner, owning group, mode and an owner-set mask."""

    uid: int
    gid: int
    mode: int  # permission bits (0o7777), never the file type
    explicit_mask: int | None = None  # set by chmod (policy/mask.py) or setfacl, else None


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
    shape: Shape
    expires: float | None
    uids: tuple[int, ...]  # named USER entries it contributes
    gids: tuple[int, ...]  # named GROUP entries it contributes
    names: frozenset[str]  # user names that hold it by name (user or team member)
    # uids that hold it as people: its uids, and users named elsewhere in policy who are
    # in one of its groups (their own USER entry must carry their groups' grants too)
    persons: frozenset[int]


def _index_by(
    grants: Iterable[_Compiled], ids: Callable[[_Compiled], Iterable[int]]
) -> dict[int, tuple[_Compiled, ...]]:
    """The grants by each uid (or gid) they name."""
    found: dict[int, list[_Compiled]] = {}
    for compiled in grants:
        for id_ in ids(compiled):
            found.setdefault(id_, []).append(compiled)
    return {id_: tuple(found_) for id_, found_ in found.items()}


class _Below:
    """The grants strictly below one directory: whose way to a grant passes through it.

    Who holds them (by uid and by gid) is worked out on first use: only views below a
    directory that someone cannot search need it. Filled in the trio thread only.
    """

    __slots__ = ("_by_gid", "_by_uid", "grants", "until")

    def __init__(self, grants: list[_Compiled]) -> None:
        self.grants = tuple(grants)
        # the latest expiry among them (inf: one never expires)
        self.until = max((_NEVER if c.expires is None else c.expires) for c in grants)
        self._by_uid: dict[int, tuple[_Compiled, ...]] | None = None
        self._by_gid: dict[int, tuple[_Compiled, ...]] | None = None

    @property
    def by_uid(self) -> dict[int, tuple[_Compiled, ...]]:
        if self._by_uid is None:
            self._by_uid = _index_by(self.grants, lambda c: c.persons)
        return self._by_uid

    @property
    def by_gid(self) -> dict[int, tuple[_Compiled, ...]]:
        if self._by_gid is None:
            self._by_gid = _index_by(self.grants, lambda c: c.gids)
        return self._by_gid


def _active(grants: Iterable[_Compiled], now: float) -> tuple[_Compiled, ...]:
    return tuple(c for c in grants if c.expires is None or now < c.expires)


class _Entries:
    """Named entries in the making: what each one shows (raw) and what it must allow (want).

    A grant's part of an entry is limited by the explicit mask; the part an entry keeps
    from modes ("other", the owning group) and the reach rule's search are not. When the
    mask would cut those, the ACL is written with what each entry allows (see `acl`).
    Without an explicit mask both are the same, and so are the dicts.
    """

    __slots__ = (
        "group_obj",
        "group_obj_want",
        "groups",
        "groups_want",
        "limit",
        "users",
        "users_want",
    )

    def __init__(self, limit: int, group_obj: int) -> None:
        self.limit = limit
        self.users: dict[int, int] = {}
        self.groups: dict[int, int] = {}
        self.group_obj = group_obj
        self.group_obj_want = group_obj & limit
        self.users_want = self.users if limit == 7 else {}
        self.groups_want = self.groups if limit == 7 else {}

    def set_user(self, uid: int, raw: int, want: int) -> None:
        self.users[uid] = raw
        self.users_want[uid] = want

    def set_group(self, gid: int, raw: int, want: int) -> None:
        self.groups[gid] = raw
        self.groups_want[gid] = want

    def set_group_obj(self, perm: int) -> None:
        self.group_obj = self.group_obj_want = perm

    def drop_group(self, gid: int) -> None:
        self.groups.pop(gid, None)
        self.groups_want.pop(gid, None)

    def acl(self, mode: int) -> tuple[int, bytes | None]:
        """(mode with the mask as group bits, ACL bytes or None when no named entry is left)."""
        users, groups, go = self.users, self.groups, self.group_obj
        if not users and not groups:
            return (mode & ~0o070) | (self.group_obj_want << 3), None
        mask = go
        for perm in users.values():
            mask |= perm
        for perm in groups.values():
            mask |= perm
        if users is not self.users_want or go != self.group_obj_want:
            mask &= self.limit
            users_want, groups_want = self.users_want, self.groups_want
            if not (
                go & mask == self.group_obj_want
                and all(users[uid] & mask == want for uid, want in users_want.items())
                and all(groups[gid] & mask == want for gid, want in groups_want.items())
            ):
                # The owner's mask cannot show the grants as held and allow what the rest
                # must keep: write every entry as what it allows, with a mask that allows it.
                users, groups, go = users_want, groups_want, self.group_obj_want
                mask = go
                for perm in users.values():
                    mask |= perm
                for perm in groups.values():
                    mask |= perm
        if not mask and mode & 7:
            # Linux does not look at an ACL whose mask is empty (the mode bits decide, and
            # "other" would let in those the entries keep out): every entry here allows
            # nothing, so any mask shows the same; show other's bits.
            users, groups, go = self.users_want, self.groups_want, self.group_obj_want
            mask = mode & 7
        acl = pack_acl((mode >> 6) & 7, users, go, groups, mask, mode & 7)
        return (mode & ~0o070) | (mask << 3), acl


class PolicyEngine:
    """The grants in force, indexed by path; immutable, rebuild it when policy changes."""

    def __init__(
        self,
        grants: Iterable[Grant],
        teams: Iterable[Team],
        identities: Identities,
        denials: Iterable[Denial] = (),
        openings: Iterable[Opening] = (),
    ) -> None:
        # What the bucket's own policy says beyond grants (docs/OBJECT_ACL.md "Import"):
        # users (None: "other") with no access at a path, and "other" access at a path.
        self._denied: dict[str, set[int | None]] = {}
        for denial in denials:
            uid = None if denial.user is None else identities.uid_of(denial.user)
            if denial.user is None or uid is not None:
                self._denied.setdefault(denial.path, set()).add(uid)
        self._open: dict[str, list[Opening]] = {}
        for opening in openings:
            self._open.setdefault(opening.path, []).append(opening)
        self._teams = {team.name: team for team in teams}
        self._identities = identities
        raw = [(grant, *self._resolve(grant)) for grant in grants]
        # Users named in policy (in a grant, or a team's member: the identity snapshot holds
        # them), with their groups. A user's own entry decides for it (POSIX checks named
        # users before groups), so it carries its groups' grants, and the reach rule
        # follows such a user as a person rather than only as a member of its groups.
        named = {uid for _, uids, _, _ in raw for uid in uids} | set(identities.uids.values())
        self._gids_of: dict[int, frozenset[int]] = {
            uid: identities.gids_of(uid) or frozenset() for uid in named
        }
        members: dict[int, set[int]] = {}
        for uid, groups_of_uid in self._gids_of.items():
            for gid in groups_of_uid:
                members.setdefault(gid, set()).add(uid)
        self._members = members  # gid -> the named users in it
        grant_gids = {gid for _, _, gids, _ in raw for gid in gids}
        # named users in a group that some grant names: their entries carry its grants
        self._grouped = {
            uid: gids & grant_gids for uid, gids in self._gids_of.items() if gids & grant_gids
        }
        index: dict[str, list[_Compiled]] = {}
        for grant, uids, gids, names in raw:
            persons = set(uids)
            for gid in gids:
                in_group = members.get(gid)
                if in_group:
                    persons |= in_group
            compiled = _Compiled(
                grant,
                grant.level,
                grant.shape,
                grant.expires,
                uids,
                gids,
                names,
                frozenset(persons),
            )
            index.setdefault(grant.path, []).append(compiled)
        self._index: dict[str, tuple[_Compiled, ...]] = {
            path: tuple(compiled) for path, compiled in index.items()
        }
        below: dict[str, list[_Compiled]] = {}
        for path, at_path in index.items():
            cut = path.rfind("/")
            while cut > 0:
                below.setdefault(path[:cut], []).extend(at_path)
                cut = path.rfind("/", 0, cut)
        self._below = {path: _Below(grants) for path, grants in below.items()}

    def _resolve(self, grant: Grant) -> tuple[tuple[int, ...], tuple[int, ...], frozenset[str]]:
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
        return (
            tuple(uid for uid in uids if uid is not None),
            tuple(gid for gid in gids if gid is not None),
            names,
        )

    def _applicable(self, path: str) -> list[_Compiled]:
        """Compiled grants on path and its ancestors, nearest the root first.

        A grant of shape OBJECT (a share of a file) applies on its own path only."""
        path = normalize_path(path)
        index = self._index
        found: list[_Compiled] = []
        start = 1
        while True:
            cut = path.find("/", start)
            prefix = path if cut < 0 else path[:cut]
            hits = index.get(prefix)
            if hits:
                if cut < 0:
                    found.extend(hits)
                else:
                    found.extend(c for c in hits if c.shape != OBJECT)
            if cut < 0:
                return found
            start = cut + 1

    # -- the POSIX view -------------------------------------------------------------

    def view(
        self, path: str, meta: ObjectMeta, is_dir: bool, now: float, above: Above
    ) -> PosixView:
        """The uid, gid, mode and ACL xattrs the object at path shows under current grants
        and what the bucket's own policy adds ("other" access) or denies (see _granted)."""
        shown = self._granted(path, meta, is_dir, now, above)
        if not self._denied and not self._open:
            return shown
        return self._bucket_policy(normalize_path(path), shown, meta, is_dir, now)

    def _bucket_policy(
        self, path: str, shown: PosixView, meta: ObjectMeta, is_dir: bool, now: float
    ) -> PosixView:
        """The view with the bucket policy's word last: a denied user gets a named entry
        allowing nothing (checked before groups and "other", whatever grants gave it), a
        Deny for everyone closes "other", and a public Allow opens "other" within the
        owner's chmod limit."""
        denied: set[int] = set()
        closed = False
        opened = 0
        with_x = is_dir or bool(meta.mode & _EXEC_BITS)
        start = 1
        while True:
            cut = path.find("/", start)
            prefix = path if cut < 0 else path[:cut]
            for uid in self._denied.get(prefix, ()):
                if uid is None:
                    closed = True
                else:
                    denied.add(uid)
            for opening in self._open.get(prefix, ()):
                if opening.active(now):
                    at = prefix == path
                    opened |= reach.bits(opening.level, opening.shape, at, is_dir, with_x)
            if cut < 0:
                break
            start = cut + 1
        denied.discard(shown.uid)  # the owner is USER_OBJ: no named entry can narrow it
        if not denied and not closed and not opened:
            return shown
        other = 0 if closed else (shown.mode & 7) | (opened & reach.limit_of(meta))
        mode = (shown.mode & ~7) | other
        access, mask = _deny(shown.acl_access, shown.mode, other, denied)
        if mask is not None:
            mode = (mode & ~0o070) | (mask << 3)
        default = access
        if is_dir and shown.acl_default is not None and shown.acl_default != shown.acl_access:
            default = _deny(shown.acl_default, shown.mode, other, denied)[0]
        return PosixView(shown.uid, shown.gid, mode, access, default if is_dir else None)

    def _granted(
        self, path: str, meta: ObjectMeta, is_dir: bool, now: float, above: Above
    ) -> PosixView:
        """The uid, gid, mode and ACL xattrs the object at path shows under current grants.

        above() gives the stored attributes of the directories above path (bucket root
        first); it is called only where a grant lies below a directory on the path.
        A named USER entry for the owner is dropped (the kernel only consults USER_OBJ for
        the owner); a named GROUP entry for the owning gid is dropped only when GROUP_OBJ
        already allows all it would, so a grant to the owning group still takes effect.
        """
        path = normalize_path(path)
        index, below = self._index, self._below
        covering: list[_Compiled] = []
        on_way: list[int] = []  # levels with an active grant below them
        level = 0
        start = 1
        while True:
            cut = path.find("/", start)
            prefix = path if cut < 0 else path[:cut]
            hits = index.get(prefix)
            if hits:
                covering.extend(hits)
            under = below.get(prefix)
            if under is not None and now < under.until and (cut >= 0 or is_dir):
                on_way.append(level)
            if cut < 0:
                break
            level += 1
            start = cut + 1
        if on_way:
            metas = _aligned(above(), level)
            for i in on_way:
                if not reach.is_open(metas[i] if i < level else meta):
                    return self._reach_view(path, [*metas, meta], is_dir, now)
        entries = self._entries(covering, meta, is_dir, now, path)
        mode, acl = entries.acl(meta.mode & 0o7777)
        # getfacl shows the grants as defaults too; grants reach new objects by prefix anyway.
        return PosixView(meta.uid, meta.gid, mode, acl, acl if is_dir else None)

    def _entries(
        self, covering: Sequence[_Compiled], meta: Stored, is_dir: bool, now: float, path: str
    ) -> _Entries:
        """The named entries the active grants covering an object give, before the reach rule.

        A grant whose shape gives this object nothing (reach.bits: the file named like a
        prefix, a file under a listing right) adds no entry for it."""
        mode = meta.mode & 0o7777
        with_x = is_dir or bool(mode & _EXEC_BITS)
        limit = reach.limit_of(meta)
        group_obj = (mode >> 3) & 7
        other = mode & 7
        owner, owning_gid = meta.uid, meta.gid
        entries = _Entries(limit, group_obj)
        users, groups = entries.users, entries.groups  # raw values, built in place
        for compiled in covering:
            if compiled.expires is not None and now >= compiled.expires:
                continue
            if compiled.shape == TREE:
                perm = reach.perm(compiled.level, with_x)
            else:
                at = compiled.grant.path == path
                perm = reach.bits(compiled.level, compiled.shape, at, is_dir, with_x)
                if not perm:
                    continue
            for uid in compiled.uids:
                if uid != owner:
                    users[uid] = users.get(uid, 0) | perm
            for gid in compiled.gids:
                groups[gid] = groups.get(gid, 0) | perm
        if users:
            # A USER entry hides its user's groups and "other" from that user, so it carries
            # what they gave: its groups' grants, the owning group's bits or "other".
            grouped = self._grouped
            if groups and grouped:
                for uid, gids in grouped.items():
                    if uid in users:
                        for gid, granted in groups.items():
                            if gid in gids:
                                users[uid] |= granted
            in_owning = self._members.get(owning_gid, _NO_GIDS)
            if in_owning or other or limit != 7:
                for uid, perm in list(users.items()):
                    kept = other
                    if uid in in_owning:
                        gids = self._gids_of[uid]
                        kept = other if any(gid in gids for gid in groups) else 0
                        perm |= group_obj
                    entries.set_user(uid, perm | kept, (perm & limit) | kept)
        if groups:
            granted_owning = groups.get(owning_gid)
            if granted_owning is not None and granted_owning | group_obj == group_obj:
                del groups[owning_gid]  # the owning group's own bits allow it already
            if other or limit != 7:
                for gid, perm in list(groups.items()):
                    kept = 0 if gid == owning_gid else other
                    entries.set_group(gid, perm | kept, (perm & limit) | kept)
        return entries

    def _reach_view(self, path: str, chain: list[Stored], is_dir: bool, now: float) -> PosixView:
        """The view where someone's way to a grant passes a directory it could not search."""
        meta = chain[-1]
        parts = path.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(2, len(parts) + 1)]
        top = len(prefixes) - 1
        hits = [_active(self._index.get(prefix, ()), now) for prefix in prefixes]
        unders: list[_Below | None] = [
            under if (under := self._below.get(prefix)) is not None and now < under.until else None
            for prefix in prefixes
        ]
        if not is_dir:
            unders[top] = None
        covering = [c for level in hits for c in level]
        entries = self._entries(covering, meta, is_dir, now, path)
        mode = meta.mode & 0o7777
        route = reach.Route(
            chain,
            hits,
            [u.by_uid if u is not None else _NOTHING for u in unders],
            [u.by_gid if u is not None else _NOTHING for u in unders],
            now,
            is_dir,
            is_dir or bool(mode & _EXEC_BITS),
        )
        gids_of = self._gids_of

        def follow(is_user: bool, id_: int) -> reach.Reached:
            gids = gids_of.get(id_, _NO_GIDS) if is_user else frozenset({id_})
            return reach.walk(Holder(is_user, id_, gids), route)

        # Holders that may need the reach rule here: those on their way through the
        # parent or through this directory, and those with entries here already, if they
        # may have passed through a directory above that they could not search.
        closed = [
            (i, u.by_uid, u.by_gid)
            for i, u in enumerate(unders[:top])
            if u is not None and not route.opens[i]
        ]
        near = [u for u in (unders[top - 1] if top else None, unders[top]) if u is not None]
        users = {
            uid for u in near for uid in u.by_uid if any(uid in by_uid for _, by_uid, _ in closed)
        }
        users |= self._may_differ(entries, route, [(i, by_uid) for i, by_uid, _ in closed])
        groups = {
            gid
            for gid in {gid for u in near for gid in u.by_gid} | {meta.gid, *entries.groups}
            if any(gid in by_gid for _, _, by_gid in closed)
        }
        here = unders[top]
        if here is not None and not route.opens[top]:
            users.update(here.by_uid)
            groups.update(here.by_gid)
        users.discard(meta.uid)

        reached_g = {gid: follow(False, gid) for gid in sorted(groups)}
        protect = any(r.state >= 0 for r in reached_g.values())
        if protect:
            # Members of a group that passed through reach the parent; the owning group's
            # and other groups' entries must not open to them what those groups alone
            # could not reach (any one group entry that allows is enough for the kernel).
            for gid in sorted({meta.gid, *entries.groups} - set(reached_g)):
                reached_g[gid] = follow(False, gid)
        changed: set[int] = set()  # groups whose entry the reach rule set
        users_changed = False
        for gid, reached in reached_g.items():
            want = reached.want
            if reached.state == BLOCKED:
                shows = gid == meta.gid or gid in entries.groups
                want = 0 if protect and shows else None
            if want is None:
                continue
            if gid == meta.gid:
                entries.set_group_obj(want)
                entries.drop_group(gid)
                changed.add(gid)
            elif gid in entries.groups or want or mode & 7:
                # (an entry that allows nothing where "other" allows nothing is no entry)
                entries.set_group(gid, want, want)
                changed.add(gid)
        for gid in changed:
            # A group entry closed here to those who came through a pass-through must not
            # close it to a user named in policy who came another way: follow those too.
            users.update(self._members.get(gid, ()))
        users.discard(meta.uid)
        for uid in sorted(users):
            reached = follow(True, uid)
            want = reached.want
            if want is None and changed and reached.base is not None:
                want = reached.base
            if want is None or reached.state == BLOCKED:
                continue
            if uid in entries.users:
                if reached.want is not None:
                    entries.set_user(uid, want, want)
                    users_changed = True
            elif want != _without(uid, gids_of, meta, entries):
                entries.set_user(uid, want, want)
                users_changed = True
        mode_shown, acl = entries.acl(mode)
        if not changed and not users_changed:
            return PosixView(meta.uid, meta.gid, mode_shown, acl, acl if is_dir else None)
        # getfacl -d shows the grants, which reach new objects by prefix; the reach rule's
        # entries are worked out for each object anew.
        default = self._entries(covering, meta, is_dir, now, path).acl(mode)[1] if is_dir else None
        return PosixView(meta.uid, meta.gid, mode_shown, acl, default)

    @staticmethod
    def _may_differ(
        entries: _Entries,
        route: reach.Route,
        closed: Sequence[tuple[int, dict[int, tuple[_Compiled, ...]]]],
    ) -> set[int]:
        """Users with entries here whose entry the reach rule may change.

        One who passed through a closed directory keeps here only what its grants below
        the last one it passed give: its entry already, when every grant it holds here
        lies below each closed directory on its way and its entry keeps no mode bits.
        """
        top = len(route.chain) - 1
        deepest: dict[int, int] = {}  # uid -> the deepest closed directory on its way
        for uid in entries.users:
            for i, by_uid in closed:
                if uid in by_uid:
                    deepest[uid] = i
        if not deepest:
            return set()
        covering = [(i, c) for i, hits in enumerate(route.hits) for c in hits]
        limit = entries.limit
        differ = set()
        for uid, closed_at in deepest.items():
            first = top  # where its highest covering grant is
            held = 0  # the bits its grants give here
            for i, compiled in covering:
                if uid in compiled.persons:
                    first = min(first, i)
                    at = i == top
                    held |= reach.bits(
                        compiled.level, compiled.shape, at, route.is_dir, route.with_x
                    )
            granted = held & limit
            if first <= closed_at or entries.users_want[uid] != granted:
                differ.add(uid)
        return differ

    # -- levels and listings -------------------------------------------------------

    def level_of(
        self, user: str, uid: int, gids: frozenset[int], path: str, now: float
    ) -> Level | None:
        """The highest level user holds at path through any grant, or None.

        A grant counts when the ACL would let this person in: by user name or uid, by team
        membership, or through gids (the caller's groups, e.g. Identities.gids_of).
        """
        best: Level | None = None
        if self._denied and self._is_denied(uid, path):
            return None
        for compiled in self._applicable(path):
            if best is not None and compiled.level <= best:
                continue
            if compiled.shape == BELOW and compiled.grant.path == normalize_path(path):
                continue  # the object named like the prefix is not the store's to give
            if compiled.expires is not None and now >= compiled.expires:
                continue
            if user in compiled.names or uid in compiled.uids or not gids.isdisjoint(compiled.gids):
                best = compiled.level
        return best

    def _is_denied(self, uid: int, path: str) -> bool:
        path = normalize_path(path)
        cut = 0
        while cut >= 0:
            cut = path.find("/", cut + 1)
            if uid in self._denied.get(path if cut < 0 else path[:cut], ()):
                return True
        return False

    def grants_at(self, path: str, now: float) -> list[tuple[Grant, str]]:
        """Every active grant that applies at path, with the path it was made on."""
        active = [c.grant for c in self._applicable(path) if c.grant.active(now)]
        active.sort(key=lambda g: (g.path, str(g.principal), g.level, g.granted_at))
        return [(grant, grant.path) for grant in active]

    def grants_below(self, path: str, now: float) -> list[Grant]:
        """Active grants strictly below path: whose holders' way passes through it."""
        under = self._below.get(normalize_path(path))
        if under is None:
            return []
        return sorted(
            (c.grant for c in _active(under.grants, now)),
            key=lambda g: (g.path, str(g.principal)),
        )


_UNKNOWN = ObjectMeta(uid=-1, gid=-1, mode=0)


def _aligned(above: Sequence[Stored], count: int) -> Sequence[Stored]:
    """The directories above, one per ancestor path; unknown ones count as closed to all."""
    if len(above) == count:
        return above
    found = list(above)
    return [_UNKNOWN] * (count - len(found)) + found[-count:] if count else []


def _without(uid: int, gids_of: dict[int, frozenset[int]], meta: Stored, entries: _Entries) -> int:
    """What uid gets here from the group entries and "other" if it has no entry of its own."""
    gids = gids_of.get(uid, _NO_GIDS)
    matched = False
    got = 0
    if meta.gid in gids:
        matched = True
        got |= entries.group_obj_want
    for gid, want in entries.groups_want.items():
        if gid in gids:
            matched = True
            got |= want
    return got if matched else meta.mode & 7


def _deny(
    acl: bytes | None, mode: int, other: int, denied: set[int]
) -> tuple[bytes | None, int | None]:
    """acl (or, without one, the mode) with "other" set and a named entry allowing nothing
    for each denied uid."""
    if acl is None and not denied:
        return None, None
    users: dict[int, int] = {}
    groups: dict[int, int] = {}
    user_obj, group_obj, mask = (mode >> 6) & 7, (mode >> 3) & 7, (mode >> 3) & 7
    if acl is not None:
        for entry in Acl.decode(acl).entries:
            if entry.tag == AclTag.USER_OBJ:
                user_obj = entry.perm
            elif entry.tag == AclTag.USER:
                users[entry.id] = entry.perm
            elif entry.tag == AclTag.GROUP_OBJ:
                group_obj = entry.perm
            elif entry.tag == AclTag.GROUP:
                groups[entry.id] = entry.perm
            elif entry.tag == AclTag.MASK:
                mask = entry.perm
    for uid in denied:
        users[uid] = 0
    if not mask and other:
        # An empty mask: show other's bits, with the entries it would let in allowing nothing
        # (see _Entries.acl); the owning group had nothing through the mask either.
        group_obj, mask = 0, other
    return pack_acl(user_obj, users, group_obj, groups, mask, other), mask
