"""Who may change policy, and the changes: share, unshare, teams, expiry.

Owns the rules of "who may share" (the bucket owner, holders of manage at or
above the path, site admins; nobody grants more than they hold, in level or
in time), the site rules of policy/*.toml, and every change to the policy
store. After each change it rebuilds the PolicyEngine (the pure evaluator)
from a fresh identity snapshot and reports which paths changed, so the
mount can invalidate what the kernel cached. Every refusal is one sentence
that names the reason and changes nothing.

Runs in the trio thread; identity lookups (NSS or LDAP) go to worker threads.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import shlex
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import trio

from fedfs.audit.chain import AuditRecord, AuditTrail
from fedfs.errors import PolicyError
from fedfs.events import event, iso
from fedfs.identity.source import IdentitySource, User
from fedfs.policy import mask as owner_mask
from fedfs.policy import replay
from fedfs.policy.acl import NAMED_TAGS, Acl, AclTag
from fedfs.policy.engine import Above, ObjectMeta, PolicyEngine, PosixView
from fedfs.policy.hlc import HybridClock
from fedfs.policy.in_force import GrantKey, InForce, check_team, in_force, key_of
from fedfs.policy.model import (
    OBJECT,
    TREE,
    Denial,
    Grant,
    Identities,
    Level,
    Opening,
    Principal,
    Shape,
    Team,
    normalize_path,
)
from fedfs.policy.objectacl import export
from fedfs.policy.objectacl.imported import EVERYONE, Observed
from fedfs.policy.site import SitePolicy
from fedfs.policy.store import PolicyStore, grant_row

_TEAM_NAME = re.compile(r"[a-z][a-z0-9_.-]*")
log = logging.getLogger(__name__)


class Refused(PolicyError):
    """A request that the rules do not allow; the message says why."""

    code = "refused"


@dataclass(frozen=True)
class Actor:
    """Who is asking: the uid the kernel vouched for (SO_PEERCRED or the FUSE request)."""

    uid: int
    name: str | None
    gids: frozenset[int] = frozenset()
    groups: frozenset[str] = frozenset()

    @property
    def label(self) -> str:
        return self.name or f"uid {self.uid}"


@dataclass(frozen=True)
class Authority:
    """What an actor holds at a path, and why (for messages and for `fedfs grants`)."""

    level: Level | None
    reason: str
    expires: float | None = None  # a manage grant that lapses caps what its holder can grant


@dataclass
class BucketOwner:
    bucket: str
    principal: Principal
    uid: int = 0
    gid: int = 0


@dataclass
class Sharing:
    store: PolicyStore
    site: SitePolicy
    identity: IdentitySource
    owners: dict[str, BucketOwner]
    limiter: trio.CapacityLimiter
    on_change: Callable[[list[str]], None] = lambda paths: None
    trail: AuditTrail | None = None  # every change is recorded here before it is acknowledged
    clock: HybridClock = field(default_factory=HybridClock)  # stamps changes (policy/replay.py)
    # Raises Refused when this node may not change policy now (e.g. its key is not enrolled).
    may_change: Callable[[], None] = lambda: None
    on_record: Callable[[Any], None] = lambda record: None  # a new record to publish
    # A policy path ("/bucket/key") as its user types it in a command: the daemon makes it
    # the path on the mount, so the commands messages suggest work as typed.
    typed: Callable[[str], str] = lambda path: path
    engine: PolicyEngine = field(init=False)
    identities: Identities = field(init=False, default_factory=Identities)
    # The members each team's backing group lists, as of the last rebuild.
    group_members: dict[str, frozenset[str]] = field(init=False, default_factory=dict)
    # Stored grants the site policy does not let apply now, with the reason (in_force.py).
    suspended: dict[GrantKey, tuple[Grant, str]] = field(init=False, default_factory=dict)
    _next_end: float | None = field(init=False, default=None)
    # What each bucket's own policy and ACL give in POSIX, as last observed, and when.
    imported: dict[str, tuple[Observed, float]] = field(init=False, default_factory=dict)
    # Observations by kind (policy/replay.py): what watcher nodes saw outside fedfs.
    observers: dict[str, replay.Observer] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.engine = self._engine(self._in_force().grants, self.store.teams())

    def _engine(self, grants: list[Grant], teams: list[Team]) -> PolicyEngine:
        denials: list[Denial] = []
        for observed, _ in self.imported.values():
            for d in observed.denials:
                denials.append(Denial(d.path, None if d.who == EVERYONE else d.who, d.source))
        return PolicyEngine(grants, teams, self.identities, denials, self.imported_openings())

    def imported_openings(self) -> list[Opening]:
        """What the bucket policies give everyone ("other"), as openings of their source."""
        return [
            Opening(r.path, Level(r.level), r.source, r.expires, r.shape)
            for observed, _ in self.imported.values()
            for r in observed.rights
            if r.who == EVERYONE
        ]

    def imported_grants(self) -> list[Grant]:
        """The bucket policies' and ACLs' rights for local users, as grants of their source
        (granted_at: when the right was first observed)."""
        found = []
        for observed, when in self.imported.values():
            for r in observed.rights:
                if r.who == EVERYONE:
                    continue
                try:
                    principal = Principal("user", r.who)
                    since = when if r.since is None else r.since
                    level = Level(r.level)
                    found.append(
                        Grant(r.path, principal, level, r.source, since, r.expires, r.shape)
                    )
                except PolicyError:
                    continue  # imported.py gives only valid names; a stored one may not be
        return found

    # -- identities and the engine -------------------------------------------

    async def _ask(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await trio.to_thread.run_sync(fn, *args, limiter=self.limiter)

    async def actor(self, uid: int) -> Actor:
        user: User | None = await self._ask(self.identity.user_by_uid, uid)
        if user is None:
            return Actor(uid, None)
        names = set()
        for gid in user.gids:
            g = await self._ask(self.identity.group_by_gid, gid)
            if g is not None:
                names.add(g.name)
        return Actor(uid, user.name, user.gids, frozenset(names))

    def _grants(self) -> list[Grant]:
        """Stored grants, the implicit ones bucket ownership gives and the imported ones."""
        return self.store.grants() + self._owner_grants() + self.imported_grants()

    def _owner_grants(self) -> list[Grant]:
        # A team-owned bucket: the team's members write, its owners manage.
        return [
            Grant(f"/{owner.bucket}", owner.principal, Level.WRITE, "(bucket owner)", 0)
            for owner in self.owners.values()
            if owner.principal.kind == "team"
        ]

    def _in_force(self) -> InForce:
        """The grants the site policy lets apply now (the mount's config owners are exempt)."""
        return in_force(
            self.site,
            self._grants(),
            {t.name: t for t in self.store.teams()},
            self.group_members,
            time.time(),
            exempt=frozenset(key_of(g) for g in self._owner_grants()),
        )

    def limits(self) -> list[export.Limit]:
        """Owners' limits on grants, by path, as export turns them into Deny statements."""
        found = []
        for _, path, _, payload in self.store.observations(replay.LIMIT):
            try:
                kept = json.loads(payload)
                mask = kept.get("mask")
                if isinstance(mask, int) and 0 <= mask <= 7:
                    found.append(export.Limit(path, mask, kept.get("dir") is True))
            except (ValueError, AttributeError):
                log.warning("ignoring an unreadable owner's limit kept for %s", path)
        return found

    def grants_in_force(self) -> list[Grant]:
        """The grants the engine applies now (stored, bucket ownership's, site rules kept),
        without those the buckets' own policies give (they are there already)."""
        return [g for g in self._in_force().grants if not _from_bucket(g)]

    def _note_suspended(self, found: InForce) -> None:
        """One log line when a grant stops applying under the site policy, one when it is back."""
        for key, (grant, why) in found.suspended.items():
            if self.suspended.get(key, (None, None))[1] != why:
                event(
                    log,
                    "grant-suspended",
                    severity=logging.WARNING,
                    path=grant.path,
                    principal=grant.principal,
                    level=grant.level,
                    granted_by=grant.granted_by,
                    msg=f"this grant does not apply under the site policy: {why}",
                )
        stored = {key_of(g) for g in found.grants}
        for key, (grant, _) in self.suspended.items():
            if key not in found.suspended and key in stored:
                event(
                    log,
                    "grant-restored",
                    path=grant.path,
                    principal=grant.principal,
                    level=grant.level,
                    msg="the site policy allows this grant again",
                )
        self.suspended = dict(found.suspended)
        self._next_end = found.next_end

    async def rebuild(self) -> None:
        """A fresh identity snapshot for every name policy mentions, then a new engine."""
        grants = self._grants()
        teams = self.store.teams()
        members: dict[str, frozenset[str]] = {}
        users: set[str] = set()
        groups: set[str] = set()
        for g in grants:
            if g.principal.kind == "user":
                users.add(g.principal.name)
            elif g.principal.kind == "group":
                groups.add(g.principal.name)
        for t in teams:
            users |= t.members
            if t.group:
                groups.add(t.group)
        for observed, _ in self.imported.values():
            users |= {d.who for d in observed.denials if d.who != EVERYONE}
        uids: dict[str, int] = {}
        primary: dict[int, int] = {}
        supplementary: dict[int, frozenset[int]] = {}
        for name in users:
            u = await self._ask(self.identity.user, name)
            if u is not None:
                uids[name], primary[u.uid], supplementary[u.uid] = u.uid, u.gid, u.gids
        gids: dict[str, int] = {}
        for name in groups:
            gr = await self._ask(self.identity.group, name)
            if gr is not None:
                gids[name] = gr.gid
                members[name] = gr.members
        self.identities = Identities(uids, primary, gids, supplementary)
        self.group_members = members
        found = self._in_force()
        self._note_suspended(found)
        self.engine = self._engine(found.grants, teams)
        for owner in self.owners.values():
            await self._resolve_owner(owner)

    async def _resolve_owner(self, owner: BucketOwner) -> None:
        p = owner.principal
        if p.kind == "user":
            u = await self._ask(self.identity.user, p.name)
            owner.uid, owner.gid = (u.uid, u.gid) if u else (0, 0)
        elif p.kind == "group":
            g = await self._ask(self.identity.group, p.name)
            owner.uid, owner.gid = 0, g.gid if g else 0
        else:
            t = self.store.team(p.name)
            owner.uid, owner.gid = 0, t.gid if t else 0

    def view(
        self, path: str, meta: ObjectMeta, is_dir: bool, above: Above | None = None
    ) -> PosixView:
        """The object's POSIX view. above: the stored attributes of the directories above
        it, bucket root first; without them they count as closed to everyone."""
        return self.engine.view(path, meta, is_dir, time.time(), above or _unknown_above)

    def chmod(
        self,
        path: str,
        meta: ObjectMeta,
        is_dir: bool,
        mode: int,
        above: Above | None = None,
        by_creator: bool = False,
        limits_as: int | None = None,
    ) -> ObjectMeta:
        """chmod as docs/SEMANTICS.md "Sharing" says (the rule: policy/mask.py).

        So `chmod 700 f` makes one file private inside a shared tree whether the grants
        came before or after it, and cp -p, tar x or rsync -a restating a mode cut nothing.
        Bits the mount does not honour are not kept (honoured_bits), so none is ever shown.
        limits_as: the object's mode is a default no one stated (with [object_acl], 0600
        or 0700); the limit is decided as if it were this one (0664 or 0775), the mode
        as it is.
        """
        mode &= honoured_bits(is_dir)
        new = self._chmod(path, meta, is_dir, above, by_creator, mode)
        if limits_as is not None:
            stated = ObjectMeta(meta.uid, meta.gid, limits_as, meta.explicit_mask)
            limit = self._chmod(path, stated, is_dir, above, by_creator, mode).explicit_mask
            new = owner_mask.Stored(new.mode, limit)
        return ObjectMeta(meta.uid, meta.gid, new.mode, new.explicit_mask)

    def _chmod(
        self,
        path: str,
        meta: ObjectMeta,
        is_dir: bool,
        above: Above | None,
        by_creator: bool,
        mode: int,
    ) -> owner_mask.Stored:
        shown = self.view(path, meta, is_dir, above)
        return owner_mask.chmod(
            meta.mode,
            meta.explicit_mask,
            shown.mode,
            shown.acl_access is not None,
            mode,
            by_creator=by_creator,
        )

    def attributes_changed(self, path: str, is_dir: bool) -> None:
        """A directory's owner, group or mode changed: whether holders of grants below it
        need to pass through it may have changed, and with it what they reach below."""
        if is_dir and self.engine.grants_below(path, time.time()):
            self.on_change([path])

    # -- authority -------------------------------------------------------------

    def _bucket_of(self, path: str) -> BucketOwner:
        parts = path.split("/")
        owner = self.owners.get(parts[1]) if len(parts) > 1 else None
        if owner is None:
            known = ", ".join(sorted(self.owners))
            raise Refused(f"{path} is not inside a bucket of this mount (buckets: {known})")
        return owner

    def owns_bucket(self, actor: Actor, bucket: str) -> bool:
        """Whether actor answers for the bucket (its owner, as [[buckets]] owner says)."""
        owner = self.owners.get(bucket)
        return owner is not None and self._owns(actor, owner)

    def _owns(self, actor: Actor, owner: BucketOwner) -> bool:
        p = owner.principal
        if p.kind == "user":
            return actor.name == p.name
        if p.kind == "group":
            return p.name in actor.groups
        team = self.store.team(p.name)
        return team is not None and actor.name in team.owners

    def authority(self, actor: Actor, path: str, is_dir: bool = False) -> Authority:
        """The level actor holds at path for changing policy, and where it comes from.

        is_dir: the path is known to be a directory, which a file grant (OBJECT) on the
        same path gives nothing (a prefix that came to shadow the shared file)."""
        path = normalize_path(path)
        owner = self._bucket_of(path)
        if self.site.is_admin(actor.uid, actor.name, actor.groups):
            return Authority(Level.MANAGE, "site admin")
        if self._owns(actor, owner):
            return Authority(Level.MANAGE, f"owner of bucket {owner.bucket} ({owner.principal})")
        now = time.time()
        best: Authority = Authority(None, "no grant")
        for grant, _ in self.engine.grants_at(path, now):
            if not self._holds(actor, grant.principal) or (is_dir and grant.shape == OBJECT):
                continue
            if (
                best.level is None
                or grant.level > best.level
                or (grant.level == best.level and _later(grant.expires, best.expires))
            ):
                best = Authority(
                    grant.level,
                    f"{grant.level} on {grant.path} via {grant.principal}",
                    grant.expires,
                )
        return best

    def _holds(self, actor: Actor, principal: Principal) -> bool:
        if principal.kind == "user":
            return actor.name == principal.name
        if principal.kind == "group":
            return principal.name in actor.groups
        team = self.store.team(principal.name)
        if team is None:
            return False
        return actor.name in team.members or (team.group is not None and team.group in actor.groups)

    def _need_manage(self, actor: Actor, path: str, doing: str, is_dir: bool = False) -> Authority:
        auth = self.authority(actor, path, is_dir)
        if auth.level is not Level.MANAGE:
            held = f"holds {auth.reason}" if auth.level else f"holds nothing at {path}"
            raise Refused(
                f"{actor.label} {held}; {doing} needs manage at {path} "
                f"(held by the bucket owner {self._bucket_of(path).principal}, by a manage grant at "
                f"or above it, or by a site admin)"
            )
        return auth

    # -- principals ------------------------------------------------------------

    async def _principal(self, text: str) -> Principal:
        try:
            p = Principal.parse(text)
        except PolicyError as e:
            raise Refused(str(e)) from None
        try:
            self.site.check_principal(p)
        except PolicyError as e:
            raise Refused(str(e)) from None
        if p.kind == "user" and await self._ask(self.identity.user, p.name) is None:
            raise Refused(f"there is no user {p.name!r} ({self._checked_with()})")
        if p.kind == "group" and await self._ask(self.identity.group, p.name) is None:
            raise Refused(f"there is no group {p.name!r} ({self._checked_with()})")
        if p.kind == "team":
            team = self.store.team(p.name)
            if team is None:
                raise Refused(
                    f"there is no team {p.name!r}; create it with `fedfs team create {p.name}`"
                )
            await self._check_team(team)
        return p

    async def _check_team(self, team: Team) -> None:
        """Refused unless the site allows the team as it would stand: its group and its size.

        A team reaches the members its backing group lists too, so the group is asked
        afresh (not the last rebuild's answer): the rule holds on the team's every route.
        """
        members = dict(self.group_members)
        if team.group is not None:
            group = await self._ask(self.identity.group, team.group)
            members[team.group] = group.members if group is not None else frozenset()
        try:
            check_team(self.site, team, members)
        except PolicyError as e:
            raise Refused(str(e)) from None

    # -- changes ---------------------------------------------------------------

    async def share(
        self,
        actor: Actor,
        path: str,
        principal: str,
        level: str,
        expires: float | None,
        check_path: Callable[[str], Awaitable[bool]] | None = None,
    ) -> tuple[Grant, Grant | None]:
        """Add or change a grant; returns (new grant, the grant it replaced or None).

        check_path (the mount's: the path exists and is no link) raises Refused, and says
        whether the path is a directory (without it, it is taken as one); it is asked only
        after the sharer is known to manage the path, so it tells nobody else
        whether anything is there.
        """
        path = _path(path)
        auth = self._need_manage(actor, path, "sharing")
        is_dir = True
        if check_path is not None:
            is_dir = await check_path(path)
            if is_dir:  # a file grant's manage gives nothing on a directory of its name
                auth = self._need_manage(actor, path, "sharing", is_dir=True)
        try:
            lvl = Level.parse(level)
        except PolicyError as e:
            raise Refused(str(e)) from None
        p = await self._principal(principal)
        now = time.time()
        try:
            expiry = self.site.grant_expiry(now, expires)
        except PolicyError as e:
            raise Refused(str(e)) from None
        if auth.expires is not None and (expiry is None or expiry > auth.expires):
            raise Refused(
                f"{actor.label} holds manage at {path} only until {_when(auth.expires)}; "
                f"a grant made by {actor.label} must expire by then (use --expires)"
            )
        # Only manage holders share, and manage is the top level: nobody grants above theirs.
        # A grant on anything but a directory covers that object only (model.OBJECT).
        grant = Grant(path, p, lvl, actor.label, now, expiry, _shape_for(is_dir))
        with self.store.transaction():
            previous = self._put_grant(actor, grant)
        await self.changed([path])
        event(
            log,
            "share",
            path=path,
            principal=p,
            level=lvl,
            actor=actor.label,
            expires=iso(expiry) if expiry else None,
            replaced=previous.level if previous else None,
        )
        return grant, previous

    async def unshare(self, actor: Actor, path: str, principal: str) -> Grant:
        path = _path(path)
        try:
            p = Principal.parse(principal)
        except PolicyError as e:
            raise Refused(str(e)) from None
        existing = self.store.grant(path, p)
        if existing is None:
            inherited = [g for g, _ in self.engine.grants_at(path, time.time()) if g.principal == p]
            hint = (
                f"; it holds {inherited[0].level} through a grant on {inherited[0].path}"
                if inherited
                else ""
            )
            source = next((g.granted_by for g in inherited if _from_bucket(g)), None)
            if source is not None:
                hint = (
                    f"; its access there comes from the bucket's own policy or ACL ({source}): "
                    "change that with S3 (put-bucket-policy, put-bucket-acl)"
                )
            raise Refused(f"there is no grant for {p} on {path}{hint}")
        if not self._holds(actor, p) or p.kind != "user":
            self._need_manage(actor, path, "unsharing")
        with self.store.transaction():
            self._drop_grant(actor, existing)
        await self.changed([path])
        event(log, "unshare", path=path, principal=p, level=existing.level, actor=actor.label)
        return existing

    async def expire(self, now: float | None = None) -> list[Grant]:
        """Remove grants whose time has come; returns them."""
        now = time.time() if now is None else now
        gone = self.store.expired(now)
        if self._next_end is not None and self._next_end <= now:
            # A grant reached max_grant_lifetime: rebuilding leaves it out and says so.
            ended = [g.path for g in self.store.grants()]
            await self.changed(ended)
        if not gone:
            return []
        with self.store.transaction():
            for g in gone:
                self._drop_grant(SYSTEM, g, action="expire")
        await self.changed([g.path for g in gone])
        for g in gone:
            event(
                log,
                "expire",
                path=g.path,
                principal=g.principal,
                level=g.level,
                granted_by=g.granted_by,
            )
        return gone

    # -- objects that go, and the owner's limits ---------------------------------

    def grants_on_object(self, path: str, is_dir: bool) -> list[Grant]:
        """The stored grants made on the object at path (a directory: at or below it, but
        not a file grant (OBJECT) on its own path: that is the file it shadows)."""
        try:
            path = normalize_path(path)
        except PolicyError:
            return []  # a name no grant can carry
        found = self.store.grants_under(path)
        if is_dir:
            return [g for g in found if g.path != path or g.shape != OBJECT]
        return [g for g in found if g.path == path]

    async def object_gone(
        self, actor: Actor, path: str, is_dir: bool, verb: str, moved_to: str | None = None
    ) -> list[Grant]:
        """The object at path was removed or renamed away (verb) by actor, through the mount.

        A grant belongs to the object it was made on: the grants on it (and below a
        directory) end, each one an unshare record with the reason, so the policy log
        carries it to every node; nobody needs to manage the path for that, the object
        is gone. moved_to (a rename) is invalidated too: the kernel may hold the moved
        object's ACLs. Raises Refused when this node may not change policy now.
        """
        found = self.grants_on_object(path, is_dir)
        if not found:
            return []
        path = normalize_path(path)
        reason = f"{path} was {verb} by {actor.label}"
        with self.store.transaction():
            for grant in found:
                self._drop_grant(actor, grant, reason=reason)
        await self.changed([path] if moved_to is None else [path, moved_to])
        for grant in found:
            event(
                log,
                "unshare",
                path=grant.path,
                principal=grant.principal,
                level=grant.level,
                actor=actor.label,
                reason=reason,
            )
        return found

    def note_limit(
        self,
        actor: Actor,
        path: str,
        before: int | None,
        after: int | None,
        via: str,
        is_dir: bool = False,
    ) -> None:
        """The owner set, moved or lifted an object's limit on grants (its explicit mask).

        One audit record (action "limit") and one log line. The limit lives in the
        object's own metadata, not in policy, so no other node redoes it and no node is
        refused it: an owner's chmod always works. Every node keeps the limits it hears
        of (observations of kind replay.LIMIT) so that export denies grantees' own S3
        keys what the limit takes away (policy/objectacl/export.py).
        """
        record = None
        if self.trail is not None:
            record = self.trail.append(
                actor_uid=actor.uid,
                actor=actor.label,
                action="limit",
                path=path,
                before=limit_text(before),
                after=limit_text(after),
                detail={"via": via, "dir": int(is_dir), "hlc": self.clock.now()},
            )
            self.on_record(record)
        stamp = replay.stamp_of(record) if record is not None else f"{self.clock.now()}-"
        with self.store.transaction():
            self.store.put_observation(
                replay.LIMIT, path, stamp, replay.limit_payload(after, is_dir)
            )
            if record is not None:
                replay.mark(self.store, record)
        self.on_change([path])
        event(
            log,
            "limit",
            path=path,
            actor=actor.label,
            before=limit_text(before),
            after=limit_text(after),
            via=via,
        )

    def next_expiry(self) -> float | None:
        """The next time a grant ends: its own expiry, or the site's max_grant_lifetime."""
        ends = [t for t in (self.store.next_expiry(), self._next_end) if t is not None]
        return min(ends) if ends else None

    def _put_grant(self, actor: Actor, grant: Grant, **detail: str) -> Grant | None:
        """Store a grant and its audit record (inside the caller's transaction)."""
        previous = self.store.put_grant(grant)
        data: dict[str, str | int] = {"granted_at_ms": round(grant.granted_at * 1000)}
        if grant.expires is not None:
            data["expires_ms"] = round(grant.expires * 1000)
        if grant.shape != TREE:
            data["shape"] = grant.shape  # absent: "tree", as in every older record
        self.record(
            actor,
            "share",
            principal=str(grant.principal),
            path=grant.path,
            level=str(grant.level),
            before=_desc(previous),
            after=_desc(grant),
            detail={**detail, **data},
        )
        return previous

    def _drop_grant(
        self, actor: Actor, grant: Grant, action: str = "unshare", **detail: str
    ) -> None:
        """Delete a grant and record it (inside the caller's transaction)."""
        self.store.delete_grant(grant.path, grant.principal)
        self.record(
            actor,
            action,
            principal=str(grant.principal),
            path=grant.path,
            level=str(grant.level),
            before=_desc(grant),
            after=None,
            detail=detail,
        )

    def on_observation(self, kind: str, observer: replay.Observer) -> None:
        """Be told of every observation of `kind`, made here or on another node.

        The observer runs inside the policy store's transaction in the trio thread
        (no awaits, no I/O) with (store, key, payload) and returns the paths whose
        policy changed; the kept payload is `store.observation(kind, key)` later on.
        """
        self.observers[kind] = observer

    async def publish_observation(
        self,
        kind: str,
        key: str,
        payload: Any,
        *,
        path: str | None = None,
        summary: str | None = None,
    ) -> bool:
        """Record what this node observed outside fedfs, apply it here and publish it.

        `payload` is the whole observed state of (kind, key) as JSON-able data (e.g. one
        bucket's rights from its bucket policy and ACL), so applying it twice or out of
        order does no harm: the newest observation wins on every node. It becomes a
        signed "observe" audit record (`path` and `summary` say what it is about for
        `fedfs audit`), which the shared policy log carries to the other nodes.
        Returns False when it equals the observation kept (nothing is recorded).
        """
        text = replay.canonical(payload)
        if len(text) > replay.OBSERVATION_LIMIT:
            raise PolicyError(
                f"the observation of {kind} {key} is {len(text)} characters of JSON, more than "
                f"the {replay.OBSERVATION_LIMIT} a policy log record carries; it was not recorded"
            )
        kept = self.store.observation(kind, key)
        if kept is not None and kept[1] == text:
            return False
        with self.store.transaction():
            record = self.record(
                OBSERVER,
                replay.OBSERVE,
                path=path,
                after=summary,
                detail={"kind": kind, "key": key, "payload": text},
            )
            stamp = replay.stamp_of(record) if record else f"{self.clock.now()}-"
            paths = replay.keep_observation(
                self.store, kind, key, json.loads(text), stamp, self.observers
            )
        await self.changed(paths)
        return True

    def record(self, actor: Actor, action: str, **fields: Any) -> AuditRecord | None:
        """One audit record, durable before the change it describes is acknowledged.

        Called inside the store transaction of the change: the record carries the
        change's clock stamp and everything another node needs to redo it
        (policy/replay.py), and its stamps are stored with the change.
        """
        if actor is not SYSTEM:  # expiry happens on every node by its own clock, always
            self.may_change()
        if self.trail is None:
            return None
        detail = {**fields.pop("detail", {}), "hlc": self.clock.now()}
        detail = {k: v for k, v in detail.items() if v is not None}
        record = self.trail.append(
            actor_uid=actor.uid, actor=actor.label, action=action, detail=detail, **fields
        )
        replay.mark(self.store, record)
        self.on_record(record)
        return record

    async def changed(self, paths: Iterable[str]) -> None:
        await self.rebuild()
        self.on_change(sorted(set(paths)))

    # -- teams -----------------------------------------------------------------

    def _team(self, name: str, seen_by: Actor | None = None) -> Team:
        """The team, or the one refusal for a missing team and one seen_by may not see."""
        team = self.store.team(name)
        if seen_by is not None and (team is None or not self.may_see_team(seen_by, team)):
            raise Refused(
                f"there is no team {name!r} that {seen_by.label} may see; "
                "`fedfs team list` shows yours"
            )
        if team is None:
            raise Refused(f"there is no team {name!r}; `fedfs team list` shows the teams")
        return team

    def may_see_team(self, actor: Actor, team: Team) -> bool:
        """Members, owners, members of its group, site admins and audit readers see a team."""
        return (
            actor.name in team.members
            or actor.name in team.owners
            or (team.group is not None and team.group in actor.groups)
            or self.site.may_read_audit(actor.uid, actor.name, actor.groups)
        )

    def _may_change_team(self, actor: Actor, team: Team) -> None:
        if actor.name in team.owners or self.site.is_admin(actor.uid, actor.name, actor.groups):
            return
        self._team(team.name, seen_by=actor)  # a team actor may not see answers as missing
        owners = ", ".join(sorted(team.owners))
        raise Refused(
            f"{actor.label} is not an owner of team {team.name}; its owners are: {owners}"
        )

    def _checked_with(self) -> str:
        health = self.identity.health()
        if health.ok:
            return f"checked with {health.source}"
        return (
            f"{health.source} does not answer ({health.last_error}), so only names it knew "
            "before are known; try again when it is back"
        )

    async def _users(self, names: Iterable[str]) -> list[str]:
        out = []
        for n in names:
            if await self._ask(self.identity.user, n) is None:
                raise Refused(f"there is no user {n!r} ({self._checked_with()})")
            out.append(n)
        return out

    async def team_create(self, actor: Actor, name: str, group: str | None) -> Team:
        if not self.site.may_create_team(actor.uid, actor.name, actor.groups):
            raise Refused(
                f"{actor.label} may not create teams at this site (policy: team_creators)"
            )
        if actor.name is None:
            raise Refused(f"uid {actor.uid} has no user name, and a team needs a named owner")
        admin = self.site.is_admin(actor.uid, actor.name, actor.groups)
        if name.isdigit():
            raise Refused(
                f"team name {name!r} is a number, which ACL listings and grants would read as "
                "a uid or gid: choose a name with a letter in it"
            )
        if not _TEAM_NAME.fullmatch(name):
            raise Refused(
                f"team name {name!r}: a new team's name starts with a lower-case letter and has "
                "only lower-case letters, digits, '.', '_' and '-', so it never passes for a "
                "user, a group, a uid or a gid (TH-BOB for th-bob, 0x10, 1e3)"
            )
        owned = sum(1 for t in self.store.teams() if actor.name in t.owners)
        if not admin and owned >= self.site.max_teams_per_owner:
            raise Refused(
                f"{actor.label} already owns {owned} teams, this site's limit "
                f"(policy: max_teams_per_owner = {self.site.max_teams_per_owner}); add people "
                "to one of them, or ask a site admin"
            )
        for kind, lookup in (("user", self.identity.user), ("group", self.identity.group)):
            if not admin and await self._ask(lookup, name) is not None:
                raise Refused(
                    f"{name!r} already names a {kind} at this site; a team of that name would "
                    f"pass for the {kind} in grants and ACL listings, so only a site admin may "
                    "create it: choose another name"
                )
        if group is not None:
            if await self._ask(self.identity.group, group) is None:
                raise Refused(f"there is no group {group!r} to back team {name}")
            if group not in actor.groups and not self.site.is_admin(
                actor.uid, actor.name, actor.groups
            ):
                raise Refused(
                    f"{actor.label} is not in group {group}, so cannot make it back team {name}"
                )
        try:
            planned = Team(name, 0, frozenset({actor.name}), frozenset({actor.name}), group)
        except PolicyError as e:
            raise Refused(str(e)) from None
        await self._check_team(planned)
        try:
            with self.store.transaction():
                team = self.store.create_team(name, {actor.name}, {actor.name}, group)
                self.record(
                    actor,
                    "team-create",
                    principal=f"team:{name}",
                    after=_team_desc(team),
                    detail={
                        "gid": team.gid,
                        "owners": ",".join(sorted(team.owners)),
                        "members": ",".join(sorted(team.members)),
                        "group": group,
                    },
                )
        except PolicyError as e:
            raise Refused(str(e)) from None
        await self.changed(self._team_paths(team))
        event(log, "team-create", team=name, gid=team.gid, actor=actor.label)
        return team

    async def team_add(self, actor: Actor, name: str, users: list[str], owners: bool) -> Team:
        team = self._team(name, seen_by=actor)
        self._may_change_team(actor, team)
        if owners and not self.site.is_admin(actor.uid, actor.name, actor.groups):
            # An owner answers for a team (and manages a team-owned bucket): nobody is
            # made one without their word, which a site admin takes.
            raise Refused(
                f"only a site admin may make someone an owner of team {name}: ownership is a "
                "responsibility its holder must agree to; ask an admin, with their agreement"
            )
        new = await self._users(users)
        await self._check_team(dataclasses.replace(team, members=team.members | set(new)))
        try:
            with self.store.transaction():
                before = team
                team = self.store.add_members(name, new, owners=owners)
                self.record(
                    actor,
                    "team-add",
                    principal=f"team:{name}",
                    before=_team_desc(before),
                    after=_team_desc(team),
                    detail={"users": ",".join(new), "owners": int(owners)},
                )
        except PolicyError as e:
            raise Refused(str(e)) from None
        await self.changed(self._team_paths(team))
        event(log, "team-add", team=name, users=",".join(new), owners=owners, actor=actor.label)
        return team

    async def team_remove(self, actor: Actor, name: str, users: list[str]) -> Team:
        team = self._team(name, seen_by=actor)
        if users != [actor.name]:  # anyone may leave a team
            self._may_change_team(actor, team)
        try:
            with self.store.transaction():
                before = team
                team = self.store.remove_members(name, users)
                self.record(
                    actor,
                    "team-remove",
                    principal=f"team:{name}",
                    before=_team_desc(before),
                    after=_team_desc(team),
                    detail={"users": ",".join(users)},
                )
        except PolicyError as e:
            raise Refused(str(e)) from None
        await self.changed(self._team_paths(team))
        event(log, "team-remove", team=name, users=",".join(users), actor=actor.label)
        return team

    def _team_paths(self, team: Team) -> list[str]:
        paths = [g.path for g in self._grants() if g.principal == Principal("team", team.name)]
        return paths or []

    # -- setfacl ----------------------------------------------------------------

    async def set_acl(
        self,
        actor: Actor,
        path: str,
        is_dir: bool,
        value: bytes | None,
        meta: ObjectMeta,
        default: bool = False,
        above: Above | None = None,
        by_creator: bool = False,
    ) -> ObjectMeta:
        """`setfacl` on the mount: named entries that differ become grants or unshares here.

        Returns the object's new stored attributes: USER_OBJ/GROUP_OBJ/OTHER become
        the mode and MASK the explicit mask (policy/mask.py); a GROUP_OBJ or MASK written
        back as getfacl showed it keeps what was stored. value None (removexattr) and an
        ACL that says no more than a mode (`setfacl -b`, cp -p) remove the ACL: see
        _remove_acl. Entries that come from grants on parent paths, or that let someone
        pass through to a grant below, cannot be removed here; the refusal says where.
        A default ACL (`default`) only adds grants: grants reach new objects by prefix
        anyway, so one without named entries, or its removal, changes nothing.
        """
        path = _path(path)
        current = self.view(path, meta, is_dir, above)
        acl = None if value is None else Acl.decode(value)  # PolicyError (EINVAL): no ACL
        if default:
            if acl is None or acl.is_minimal:
                return meta
            await self._acl_changes(
                actor, path, _named(current.acl_default), _named(value), True, is_dir
            )
            return meta
        if acl is None or acl.is_minimal:
            return await self._remove_acl(actor, path, meta, current, acl, by_creator)
        new_users, new_groups = _named(value)
        perms = {e.tag: e.perm for e in acl.entries if e.tag not in NAMED_TAGS}
        shown = (
            Acl.decode(current.acl_access)
            if current.acl_access is not None
            else Acl.from_mode(current.mode)
        )
        group_obj = perms[AclTag.GROUP_OBJ]
        if group_obj == shown.perm(AclTag.GROUP_OBJ):
            group_obj = (meta.mode >> 3) & 7
        mode = (meta.mode & ~0o777) | perms[AclTag.USER_OBJ] << 6 | group_obj << 3
        mode |= perms[AclTag.OTHER]
        mask = owner_mask.from_acl(
            meta.explicit_mask,
            shown.perm(AclTag.MASK),
            perms.get(AclTag.MASK),
            [*new_users.values(), *new_groups.values()],
            perms[AclTag.GROUP_OBJ],
            named_changed=(new_users, new_groups) != _named(current.acl_access),
        )
        await self._acl_changes(
            actor, path, _named(current.acl_access), (new_users, new_groups), False, is_dir
        )
        return ObjectMeta(meta.uid, meta.gid, mode, mask)

    async def _acl_changes(
        self,
        actor: Actor,
        path: str,
        old: tuple[dict[int, int], dict[int, int]],
        new: tuple[dict[int, int], dict[int, int]],
        only_add: bool,
        is_dir: bool,
    ) -> None:
        """Named entries that differ between old and new become grants or unshares at path."""
        changes: list[tuple[Principal, int]] = []  # perm 0: remove
        kinds: tuple[Literal["user", "group"], ...] = ("user", "group")
        for ids, wanted, kind in zip(old, new, kinds, strict=True):
            for id_ in set(ids) | set(wanted):
                if ids.get(id_) == wanted.get(id_) or (only_add and id_ not in wanted):
                    continue
                name = await self._name_of(kind, id_)
                changes.append((Principal(kind, name), wanted.get(id_, 0)))
        if not changes:
            return
        self._need_manage(actor, path, "changing the ACL (setfacl)", is_dir)
        now = time.time()
        with self.store.transaction():
            self._apply_acl_changes(actor, path, changes, now, is_dir)
        await self.changed([path])
        event(
            log,
            "setfacl",
            path=path,
            actor=actor.label,
            changes=",".join(f"{p}={_rwx(perm)}" for p, perm in changes),
        )

    async def _remove_acl(
        self,
        actor: Actor,
        path: str,
        meta: ObjectMeta,
        current: PosixView,
        acl: Acl | None,
        by_creator: bool = False,
    ) -> ObjectMeta:
        """`setfacl -b`, removexattr, or an ACL that says no more than a mode (cp -p writes
        one): the grants made exactly on this path go, and the owner's mask with them;
        entries from grants elsewhere stay (the log says where they come from). A minimal
        ACL sets the mode as chmod does."""
        own = [g for g in self.store.grants_under(path) if g.path == path]
        if own:
            self._need_manage(actor, path, "removing the ACL (setfacl -b)")
            with self.store.transaction():
                for grant in own:
                    self._drop_grant(actor, grant, via="setfacl -b")
            await self.changed([path])
            event(log, "setfacl", path=path, actor=actor.label, changes="removed")
        self._note_inherited(path, {g.principal for g in own})
        if acl is None:
            return ObjectMeta(meta.uid, meta.gid, meta.mode, None)
        # POSIX: the ACL written replaces GROUP_OBJ too, so the owning group's bits are set.
        stored = owner_mask.chmod(
            meta.mode,
            meta.explicit_mask,
            current.mode,
            False,
            (meta.mode & ~0o777) | acl.mode,
            by_creator=by_creator,
        )
        return ObjectMeta(meta.uid, meta.gid, stored.mode, stored.explicit_mask)

    def _note_inherited(self, path: str, dropped: set[Principal]) -> None:
        """Log the entries an ACL without them leaves in place: grants on parent paths give them."""
        now = time.time()
        kept = sorted(
            {
                f"{g.principal} (from {g.path})"
                for g, _ in self.engine.grants_at(path, now)
                if g.path != path and g.principal not in dropped
            }
        )
        if kept:
            log.info(
                "%s: an ACL without named entries was set; the entries of %s stay, "
                "since grants on parent paths give them (`fedfs unshare PATH --with WHO` "
                "removes one there)",
                path,
                ", ".join(kept),
            )

    def _apply_acl_changes(
        self,
        actor: Actor,
        path: str,
        changes: list[tuple[Principal, int]],
        now: float,
        is_dir: bool,
    ) -> None:
        for principal, perm in changes:
            existing = self.store.grant(path, principal)
            if perm & 2 and not perm & 4:
                raise Refused(
                    f"{principal}:{_rwx(perm)} on {self.typed(path)} would grant write "
                    "without read, which no grant level gives (read is r, write is rw): "
                    "write the entry as rw- (or r--)"
                )
            if perm & 6:
                level = Level.WRITE if perm & 2 else Level.READ
                self.site.check_principal(principal)
                expiry = existing.expires if existing else self.site.grant_expiry(now, None)
                grant = Grant(path, principal, level, actor.label, now, expiry, _shape_for(is_dir))
                self._put_grant(actor, grant, via="setfacl")
            elif existing is not None:
                self._drop_grant(actor, existing, via="setfacl")
            else:
                raise Refused(self._not_here(path, principal, now))

    def _not_here(self, path: str, principal: Principal, now: float) -> str:
        """Why an entry that no grant on path made cannot be removed with setfacl."""
        inherited = [g for g, _ in self.engine.grants_at(path, now) if g.principal == principal]
        if inherited:
            where, source = inherited[0].path, inherited[0].granted_by
            if source.startswith(("bucket-policy:", "bucket-acl")):
                return (
                    f"the entry for {principal} comes from the bucket's own policy or ACL "
                    f"({source}, on {self.typed(where)}), not from a fedfs grant: change it "
                    "with S3 (put-bucket-policy, put-bucket-acl)"
                )
            return (
                f"the entry for {principal} comes from a grant on {where}; "
                f"remove it there with `{self.command('unshare', where, principal)}`"
            )
        parent = path.rsplit("/", 1)[0] or "/"
        below = [
            g
            for g in self.engine.grants_below(path, now) + self.engine.grants_below(parent, now)
            if g.principal == principal
        ]
        if below:
            where = below[0].path
            return (
                f"the entry for {principal} lets it pass through to its grant on {where} "
                f"and keeps it out of everything else on the way; it goes with that grant "
                f"(`{self.command('unshare', where, principal)}`)"
            )
        return (
            f"the entry for {principal} comes from a grant on another path "
            f"(`{self.command('grants', path)}` and `{self.command('audit who', path)}` show "
            "them); change it there"
        )

    def command(self, name: str, path: str, principal: Principal | None = None) -> str:
        """A fedfs command on path as its user types it (the path on the mount, quoted)."""
        line = f"fedfs {name} {shlex.quote(self.typed(path))}"
        return line if principal is None else f"{line} --with {shlex.quote(str(principal))}"

    async def _name_of(self, kind: str, id_: int) -> str:
        if kind == "user":
            u = await self._ask(self.identity.user_by_uid, id_)
            if u is None:
                raise Refused(f"uid {id_} has no user name, and a grant names a user")
            return str(u.name)
        g = await self._ask(self.identity.group_by_gid, id_)
        if g is None:
            raise Refused(f"gid {id_} has no group name, and a grant names a group")
        return str(g.name)

    # -- questions -------------------------------------------------------------

    def grants_at(self, actor: Actor, path: str) -> list[dict[str, Any]]:
        """What applies at path and where it comes from. Only for those with any access there."""
        path = _path(path)
        auth = self.authority(actor, path)
        if auth.level is None:
            raise Refused(f"{actor.label} holds nothing at {path}, so cannot list its grants")
        now = time.time()
        rows = [
            {**grant_row(g), "inherited": g.path != path, "suspended": None, "shape": g.shape}
            for g, _ in self.engine.grants_at(path, now)
        ]
        for grant, why in self.suspended.values():
            if path == grant.path or path.startswith(grant.path + "/"):
                rows.append({**grant_row(grant), "inherited": grant.path != path, "suspended": why})
        return rows + self._bucket_policy_rows(path, now)

    def _bucket_policy_rows(self, path: str, now: float) -> list[dict[str, Any]]:
        """Public access and denials the bucket's own policy gives at path, as grant rows."""
        rows: list[dict[str, Any]] = []
        for observed, when in self.imported.values():
            for r in observed.rights:
                active = r.expires is None or now < r.expires
                if r.who == EVERYONE and active and (path + "/").startswith(r.path + "/"):
                    since = when if r.since is None else r.since
                    row = _row(r.path, "other", str(Level(r.level)), r.source, since, path)
                    rows.append({**row, "expires": r.expires, "shape": r.shape})
            for d in observed.denials:
                if (path + "/").startswith(d.path + "/"):
                    who = "other" if d.who == EVERYONE else f"user:{d.who}"
                    since = when if d.since is None else d.since
                    rows.append(_row(d.path, who, "none", d.source, since, path))
        return rows


SYSTEM = Actor(0, "fedfs")
OBSERVER = SYSTEM  # observations are facts about the object store, made by no user


def _shape_for(is_dir: bool) -> Shape:
    """A grant made on a directory covers it and all below; on anything else, that object."""
    return TREE if is_dir else OBJECT


def honoured_bits(is_dir: bool) -> int:
    """The mode bits the mount honours: never setuid (nosuid); setgid and sticky on
    directories only (new files take a setgid directory's group; the kernel enforces
    sticky deletion). The tree applies the same rule (honoured_mode) to modes read from
    objects."""
    return 0o3777 if is_dir else 0o777


def _unknown_above() -> list[ObjectMeta]:
    return []


def limit_text(mask: int | None) -> str:
    """An explicit mask as audit records and log lines show it: rwx letters, or "none"."""
    return "none" if mask is None else _rwx(mask)


def _desc(g: Grant | None) -> str | None:
    """A grant as the audit log states it: level, who made it, until when."""
    if g is None:
        return None
    until = f" until {_when(g.expires)}" if g.expires else ""
    return f"{g.level} by {g.granted_by}{until}"


def _team_desc(t: Team) -> str:
    return (
        f"gid {t.gid}; owners {','.join(sorted(t.owners))}; members {','.join(sorted(t.members))}"
    )


def _named(value: bytes | None) -> tuple[dict[int, int], dict[int, int]]:
    users: dict[int, int] = {}
    groups: dict[int, int] = {}
    if value is not None:
        for e in Acl.decode(value).entries:
            if e.tag == AclTag.USER:
                users[e.id] = e.perm
            elif e.tag == AclTag.GROUP:
                groups[e.id] = e.perm
    return users, groups


def _rwx(perm: int) -> str:
    return "".join(c if perm & b else "-" for c, b in (("r", 4), ("w", 2), ("x", 1)))


def _path(path: str) -> str:
    try:
        return normalize_path(path)
    except PolicyError as e:
        raise Refused(str(e)) from None


def _from_bucket(grant: Grant) -> bool:
    """A right the bucket's own policy or ACL gives (docs/OBJECT_ACL.md "Import")."""
    return grant.granted_by.startswith(("bucket-policy:", "bucket-acl"))


def _row(where: str, who: str, level: str, source: str, when: float, path: str) -> dict[str, Any]:
    return {
        "path": where,
        "principal": who,
        "level": level,
        "granted_by": source,
        "granted_at": when,
        "expires": None,
        "inherited": where != path,
        "suspended": None,
    }


def _later(a: float | None, b: float | None) -> bool:
    return a is None or (b is not None and a > b)


def _when(t: float | None) -> str:
    return "never" if t is None else time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))
