"""The daemon's side of every `fedfs` command that talks to a running mount.

Maps a control-socket request (op + args, and the caller's uid from
SO_PEERCRED) to the module that decides it: policy changes to
`policy/sharing.py`, uploads to the flusher, stage-in to the cache. Checks
the shape of every argument first, so a hostile request gets a clear
`bad-request` and touches nothing.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from fedfs import __version__
from fedfs.audit.chain import AuditRecord
from fedfs.control.mount import Mount
from fedfs.control.server import ControlError, Peer
from fedfs.data.cache import Staging
from fedfs.data.flusher import owner_name
from fedfs.errors import FedfsError, NotFound
from fedfs.meta.inode import Inode, Kind
from fedfs.policy import reports
from fedfs.policy.acl import R, X, permits
from fedfs.policy.model import Level, Principal, Team
from fedfs.policy.sharing import Actor

Op = Callable[[Peer, dict[str, Any]], Awaitable[Any]]


def _str(args: dict[str, Any], key: str, optional: bool = False) -> Any:
    value = args.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value or len(value) > 4096:
        raise ControlError(f"argument {key!r} must be a non-empty string", "bad-request")
    return value


def _names(args: dict[str, Any], key: str) -> list[str]:
    value = args.get(key)
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise ControlError(f"argument {key!r} must be a non-empty list of names", "bad-request")
    if len(value) > 10000:
        raise ControlError(f"argument {key!r} lists more than 10000 names", "bad-request")
    return value


def _team(t: Team) -> dict[str, Any]:
    return {
        "name": t.name,
        "gid": t.gid,
        "owners": sorted(t.owners),
        "members": sorted(t.members),
        "group": t.group,
    }


def _may_name(peer: Peer, inode: Inode[Staging]) -> bool:
    """Whether a control answer may show the caller this file's path: root and the owner."""
    return peer.uid in (0, inode.uid)


def wanted_path(args: dict[str, Any], path: str) -> bool:
    """Whether path is at or below the request's "path" argument (everything without one)."""
    want = _str(args, "path", optional=True)
    if want is None or want == "/":
        return True
    prefix = want.rstrip("/")
    return path == prefix or path.startswith(prefix + "/")


class Commands:
    def __init__(self, daemon: Mount) -> None:
        self.d = daemon
        self.ops: dict[str, Op] = {
            "share": self.share,
            "unshare": self.unshare,
            "grants": self.grants,
            "team-create": self.team_create,
            "team-add": self.team_add,
            "team-remove": self.team_remove,
            "team-show": self.team_show,
            "team-list": self.team_list,
            "sync": self.sync,
            "pending": self.pending,
            "stage": self.stage,
            "status": self.status,
            "audit-verify": self.audit_verify,
            "audit-who": self.audit_who,
            "audit-user": self.audit_user,
            "audit-expiring": self.audit_expiring,
            "audit-orphans": self.audit_orphans,
            "audit-log": self.audit_log,
        }

    async def handle(self, peer: Peer, op: str, args: dict[str, Any]) -> Any:
        fn = self.ops.get(op)
        if fn is None:
            raise ControlError(
                f"unknown request {op!r}; known: {', '.join(sorted(self.ops))}", "bad-request"
            )
        return await fn(peer, args)

    # -- policy ----------------------------------------------------------------

    async def share(self, peer: Peer, args: dict[str, Any]) -> Any:
        expires = args.get("expires")
        if expires is not None and (
            not isinstance(expires, int | float) or isinstance(expires, bool)
        ):
            raise ControlError(
                "argument 'expires' must be a time in seconds since the epoch", "bad-request"
            )
        sharing = self.d.sharing
        actor = await sharing.actor(peer.uid)
        grant, previous = await sharing.share(
            actor, _str(args, "path"), _str(args, "principal"), _str(args, "level"), expires
        )
        return {
            "path": grant.path,
            "principal": str(grant.principal),
            "level": str(grant.level),
            "expires": grant.expires,
            "replaced": str(previous.level) if previous else None,
            "note": await self._published(),
        }

    async def unshare(self, peer: Peer, args: dict[str, Any]) -> Any:
        sharing = self.d.sharing
        actor = await sharing.actor(peer.uid)
        g = await sharing.unshare(actor, _str(args, "path"), _str(args, "principal"))
        return {
            "path": g.path,
            "principal": str(g.principal),
            "level": str(g.level),
            "note": await self._published(),
        }

    async def _published(self) -> str | None:
        """With a shared policy log: whether the change just made reached it (else a note)."""
        return await self.d.policy_log.confirm() if self.d.policy_log else None

    async def grants(self, peer: Peer, args: dict[str, Any]) -> Any:
        actor = await self.d.sharing.actor(peer.uid)
        return self.d.sharing.grants_at(actor, _str(args, "path"))

    async def team_create(self, peer: Peer, args: dict[str, Any]) -> Any:
        actor = await self.d.sharing.actor(peer.uid)
        team = await self.d.sharing.team_create(
            actor, _str(args, "name"), _str(args, "group", optional=True)
        )
        return {**_team(team), "note": await self._published()}

    async def team_add(self, peer: Peer, args: dict[str, Any]) -> Any:
        actor = await self.d.sharing.actor(peer.uid)
        owner = args.get("owner", False)
        if not isinstance(owner, bool):
            raise ControlError("argument 'owner' must be true or false", "bad-request")
        team = await self.d.sharing.team_add(
            actor, _str(args, "name"), _names(args, "users"), owner
        )
        return {**_team(team), "note": await self._published()}

    async def team_remove(self, peer: Peer, args: dict[str, Any]) -> Any:
        actor = await self.d.sharing.actor(peer.uid)
        team = await self.d.sharing.team_remove(actor, _str(args, "name"), _names(args, "users"))
        return {**_team(team), "note": await self._published()}

    async def team_show(self, peer: Peer, args: dict[str, Any]) -> Any:
        name = _str(args, "name")
        team = self.d.sharing.store.team(name)
        if team is None:
            raise ControlError(
                f"there is no team {name!r}; `fedfs team list` shows the teams", "not-found"
            )
        return _team(team)

    async def team_list(self, peer: Peer, args: dict[str, Any]) -> Any:
        return [_team(t) for t in self.d.sharing.store.teams()]

    # -- data ------------------------------------------------------------------

    def _wanted(self, args: dict[str, Any]) -> Callable[[Inode[Staging]], bool]:
        return lambda inode: wanted_path(args, inode.path)

    async def sync(self, peer: Peer, args: dict[str, Any]) -> Any:
        """Start every queued upload under path now; `pending` then reports progress."""
        wanted = self._wanted(args)
        flusher = self.d.flusher
        for inode in self.d.inodes.all():
            if inode.dirty and not inode.gone and inode.writers == 0 and wanted(inode):
                flusher.queue(inode, delay=0)
        return await self.pending(peer, args)

    async def pending(self, peer: Peer, args: dict[str, Any]) -> Any:
        wanted = self._wanted(args)
        left = [p for p in self.d.flusher.pending.values() if wanted(p.inode)]
        open_for_writing = [
            i
            for i in self.d.inodes.all()
            if i.dirty and i.writers > 0 and not i.gone and wanted(i) and _may_name(peer, i)
        ]
        return {
            # how long an unmount waits for uploads that make no progress
            "drain_timeout": self.d.cfg.cache.drain_timeout,
            "files": len(left),
            "bytes": sum(p.inode.staging.size for p in left if p.inode.staging),
            # Paths only of the caller's own files: a name below a private directory is
            # itself a secret. "files" and "bytes" are totals, which name nothing.
            "open": [i.path for i in open_for_writing][:100],
            "failed": [
                {
                    "path": p.inode.path,
                    "error": p.error,
                    "attempts": p.attempts,
                    "kept_in": str(p.inode.staging.path) if p.inode.staging else None,
                }
                for p in left
                if p.error and _may_name(peer, p.inode)
            ][:100],
            # Refused by the store for good: not queued, kept aside; named to root and owner.
            "refused": [r for r in self._refused(peer) if wanted_path(args, str(r["path"]))][:100],
        }

    def _refused(self, peer: Peer) -> list[dict[str, Any]]:
        return [
            {
                "path": f"/{r.bucket}/{r.key}",
                "uid": r.uid,
                "owner": owner_name(r.uid),
                "size": r.size,
                "error": r.error,
                "kept_in": r.kept,
            }
            for r in self.d.cache.journal.refused()
            if peer.uid in (0, r.uid)
        ]

    async def stage(self, peer: Peer, args: dict[str, Any]) -> Any:
        """Prefetch whole files into the cache (stage-in); only files the caller may read."""
        paths = _names(args, "paths")
        actor = await self.d.sharing.actor(peer.uid)
        staged, nbytes, refused = 0, 0, []
        gids = actor.gids | {peer.gid}

        def allows(inode: Inode[Staging], want: int) -> bool:
            view = self.d.ops.view(inode)
            return permits(view.mode, view.acl_access, view.uid, view.gid, actor.uid, gids, want)

        async with trio.open_nursery() as nursery:
            for path in paths:
                # As the kernel would: every directory on the way must let the caller
                # search it. One answer for missing and hidden, so it tells no secrets.
                inode = await self._resolve(path, enter=lambda d: allows(d, X))
                if inode is None or inode.kind is not Kind.FILE or not allows(inode, R):
                    refused.append(f"{path}: not a file, or permission denied")
                    continue
                if inode.etag is None:
                    continue  # written here and not uploaded: its data is local already
                staged += 1
                nbytes += inode.size
                bs = self.d.cache.block_size
                for block in range((inode.size + bs - 1) // bs):
                    nursery.start_soon(
                        self.d.cache.prefetch,
                        inode.bucket,
                        inode.key,
                        inode.etag,
                        inode.size,
                        block,
                    )
        return {"files": staged, "bytes": nbytes, "refused": refused}

    async def _resolve(
        self, path: str, enter: Callable[[Inode[Staging]], bool] = lambda d: True
    ) -> Inode[Staging] | None:
        node = self.d.inodes.get(1)
        try:
            for part in path.strip("/").split("/"):
                if not part:
                    continue
                if node.is_dir and node.bucket and not enter(node):
                    return None
                found = await self.d.lookups.lookup(node, part.encode())
                if found is None:
                    return None
                node = found
            await self.d.revalidation.revalidate(node)
        except (FedfsError, NotFound):
            return None
        return node

    # -- audit -----------------------------------------------------------------

    async def _reader(self, peer: Peer) -> tuple[Actor, bool]:
        """The caller, and whether they may read all of the audit (admins, audit readers)."""
        actor = await self.d.sharing.actor(peer.uid)
        return actor, self.d.site.may_read_audit(actor.uid, actor.name, actor.groups)

    def _manages(self, actor: Actor, path: str | None) -> bool:
        if not path:
            return False
        try:
            return self.d.sharing.authority(actor, path).level is Level.MANAGE
        except FedfsError:
            return False

    async def audit_verify(self, peer: Peer, args: dict[str, Any]) -> Any:
        actor, everything = await self._reader(peer)
        if not everything:
            raise ControlError(
                f"{actor.label} may not verify the audit log (site admins and audit_readers)"
            )
        trail = self.d.trail
        report = trail.verify()
        answer: dict[str, Any] = {
            "ok": report.ok,
            "checked": report.checked,
            "first_bad": report.first_bad,
            "reason": report.reason,
            "node": trail.node,
            "log": str(trail.log_path),
            "summary": str(report),
        }
        if self.d.policy_log is not None:
            # Several nodes: every node's chain as the shared log holds it, verified together.
            chains = await self.d.policy_log.verify_all()
            answer["nodes"] = {
                node: {
                    "ok": r.ok,
                    "checked": r.checked,
                    "first_bad": r.first_bad,
                    "reason": r.reason,
                    "summary": str(r),
                }
                for node, r in chains.items()
            }
            answer["ok"] = report.ok and all(r.ok for r in chains.values())
            answer["shared_log"] = self.d.policy_log.objects.where()
        return answer

    async def audit_who(self, peer: Peer, args: dict[str, Any]) -> Any:
        actor, everything = await self._reader(peer)
        path = _str(args, "path")
        if not everything and not self._manages(actor, path):
            raise ControlError(
                f"{actor.label} does not manage {path}; `fedfs audit who` needs manage there"
            )
        sharing = self.d.sharing
        owner = sharing._bucket_of(path).principal
        teams = {t.name: t for t in sharing.store.teams()}
        return reports.who(sharing.engine, teams, owner, path, time.time())

    async def audit_user(self, peer: Peer, args: dict[str, Any]) -> Any:
        actor, everything = await self._reader(peer)
        name = _str(args, "name")
        if not everything and name != actor.name:
            raise ControlError(
                f"{actor.label} may only ask about themselves (site admins may ask about anyone)"
            )
        sharing = self.d.sharing
        user = await sharing._ask(sharing.identity.user, name)
        groups: set[str] = set()
        if user is not None:
            for gid in user.gids:
                g = await sharing._ask(sharing.identity.group_by_gid, gid)
                if g is not None:
                    groups.add(g.name)
        owned = [
            o.bucket
            for o in sharing.owners.values()
            if await self._owns_by_name(name, groups, o.principal)
        ]
        teams = {t.name: t for t in sharing.store.teams()}
        return reports.user_access(sharing.store.grants(), teams, name, groups, owned, time.time())

    async def _owns_by_name(self, name: str, groups: set[str], owner: Any) -> bool:
        if owner.kind == "user":
            return bool(owner.name == name)
        if owner.kind == "group":
            return owner.name in groups
        team = self.d.sharing.store.team(owner.name)
        return team is not None and name in team.owners

    async def audit_expiring(self, peer: Peer, args: dict[str, Any]) -> Any:
        actor, everything = await self._reader(peer)
        within = args.get("within", 7 * 86400)
        if not isinstance(within, int | float) or isinstance(within, bool) or within < 0:
            raise ControlError("argument 'within' must be a number of seconds", "bad-request")
        rows = reports.expiring(self.d.sharing.store.grants(), float(within), time.time())
        return [r for r in rows if everything or self._manages(actor, r["path"])]

    async def audit_orphans(self, peer: Peer, args: dict[str, Any]) -> Any:
        actor, everything = await self._reader(peer)
        sharing = self.d.sharing
        rows: list[dict[str, Any]] = []
        known: dict[str, bool] = {}

        async def exists(p: Any) -> bool:
            key = str(p)
            if key not in known:
                if p.kind == "user":
                    known[key] = await sharing._ask(sharing.identity.user, p.name) is not None
                elif p.kind == "group":
                    known[key] = await sharing._ask(sharing.identity.group, p.name) is not None
                else:
                    known[key] = sharing.store.team(p.name) is not None
            return known[key]

        for g in sharing.store.grants():
            if not await exists(g.principal):
                rows.append(
                    {
                        "kind": "grant",
                        "path": g.path,
                        "principal": str(g.principal),
                        "problem": f"{g.principal} no longer exists",
                        "level": str(g.level),
                    }
                )
        for t in sharing.store.teams():
            for m in sorted(t.members):
                if not await exists(Principal("user", m)):
                    rows.append(
                        {
                            "kind": "team",
                            "path": None,
                            "principal": f"team:{t.name}",
                            "problem": f"member {m} no longer exists",
                            "level": None,
                        }
                    )
        for o in sharing.owners.values():
            if o.principal.kind != "team" and not await exists(o.principal):
                rows.append(
                    {
                        "kind": "bucket",
                        "path": f"/{o.bucket}",
                        "principal": str(o.principal),
                        "problem": "the bucket owner no longer exists",
                        "level": "owner",
                    }
                )
        for inode in self.d.inodes.all():
            if inode.meta_known and not inode.gone and inode.bucket and inode.uid != 0:
                user = await sharing._ask(sharing.identity.user_by_uid, inode.uid)
                if user is None:
                    rows.append(
                        {
                            "kind": "data",
                            "path": inode.path,
                            "principal": f"uid {inode.uid}",
                            "problem": "owned by a uid with no user (seen by this mount)",
                            "level": None,
                        }
                    )
        return [r for r in rows if everything or self._manages(actor, r["path"])]

    async def audit_log(self, peer: Peer, args: dict[str, Any]) -> Any:
        actor, everything = await self._reader(peer)
        since = args.get("since")
        if since is not None and (not isinstance(since, int | float) or isinstance(since, bool)):
            raise ControlError(
                "argument 'since' must be a time in seconds since the epoch", "bad-request"
            )
        records = self.d.trail.records()
        if self.d.policy_log is not None:  # other nodes' records, as applied here
            records += [AuditRecord.decode(raw) for raw in self.d.sharing.store.kept_records()]
            records.sort(key=lambda r: r.time)
        rows = reports.history(
            records,
            since,
            _str(args, "path", optional=True),
            _str(args, "actor", optional=True),
        )
        return [r for r in rows if everything or self._manages(actor, r["path"])]

    async def status(self, peer: Peer, args: dict[str, Any]) -> Any:
        d = self.d
        health = d.sharing.identity.health()
        return {
            "version": __version__,
            "config": str(d.cfg.path),
            "mountpoint": str(d.mountpoint),
            "endpoint": d.cfg.store.endpoint or "AWS S3",
            "buckets": [b.name for b in d.cfg.buckets],
            "uptime": time.monotonic() - d.started,
            "cache": {
                **d.cache.stats(),
                "dir": str(d.cfg.cache.dir),
                "free_disk": d.cache.free_disk(),
            },
            "uploads": {
                "queued": len(d.flusher.pending),
                "queued_bytes": d.flusher.queued_bytes(),
                "failed": len(d.flusher.failed()),
                "done": d.flusher.uploaded,
                "done_bytes": d.flusher.uploaded_bytes,
                "conflicts": d.writeback.conflicts,
                "refused": len(d.cache.journal.refused()),
                # Which ones: all to root, to anyone else only their own files.
                "refused_files": self._refused(peer)[:100],
            },
            "s3": {
                "requests": d.store.requests,
                "errors": d.store.errors,
                **_latency_ms(list(d.store.recent)),
            },
            "policy": {
                # One node applies its own changes at once; several nodes sharing a
                # policy log will report how far behind the newest event they are.
                "lag": d.policy_log.lag() if d.policy_log else 0.0,
                "log": d.policy_log.status() if d.policy_log else None,
                "version": d.sharing.store.version,
                "grants": len(d.sharing.store.grants()),
                "teams": len(d.sharing.store.teams()),
            },
            "identity": {
                "source": health.source,
                "ok": health.ok,
                "last_error": health.last_error,
            },
            "fuse_requests": d.ops.ops,
        }


def _latency_ms(durations: list[float]) -> dict[str, float | None]:
    """p50 and p99 of the latest S3 requests, in milliseconds (None before the first)."""
    if not durations:
        return {"latency_p50_ms": None, "latency_p99_ms": None}
    ordered = sorted(durations)
    pick = lambda q: round(1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)  # noqa: E731
    return {"latency_p50_ms": pick(0.5), "latency_p99_ms": pick(0.99)}
