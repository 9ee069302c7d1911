"""The daemon's side of every `fedfs` command that talks to a running mount.

Maps a control-socket request (op + args, and the caller's uid from
SO_PEERCRED) to the module that decides it: policy changes to
`policy/sharing.py`, uploads to the flusher, stage-in to the cache. Checks
the shape of every argument first, so a hostile request gets a clear
`bad-request` and touches nothing.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import trio

from fedfs import __version__
from fedfs.audit.chain import AuditRecord
from fedfs.control import export_notes
from fedfs.control.fairness import Holding, StageLimits, holdings
from fedfs.control.mount import Mount
from fedfs.control.server import ControlError, Peer
from fedfs.data.cache import Staging
from fedfs.data.flusher import owner_name
from fedfs.errors import FedfsError, NotFound
from fedfs.meta.inode import ROOT_INO, Inode, Kind
from fedfs.policy import reach, reports
from fedfs.policy.acl import Acl, AclTag, R, X, permits
from fedfs.policy.model import TREE, Grant, Level, Principal, Team, check_shape
from fedfs.policy.objectacl.imported import EVERYONE
from fedfs.policy.sharing import Actor, Refused

Op = Callable[[Peer, dict[str, Any]], Awaitable[Any]]
AUDIT_WALK_MAX = 20000  # paths `audit user` looks at before it stops and says so


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


# Requests that take access away: a user who holds all her own control connections still
# gets these through (control/server.py's reserve), so revocation never waits on her load.
REVOCATIONS = frozenset({"unshare", "team-remove"})


class Commands:
    def __init__(self, daemon: Mount) -> None:
        self.d = daemon
        self.stage_limits = StageLimits(daemon.cfg.store.max_connections)
        self._probe = trio.CapacityLimiter(4)  # `audit orphans` asking the store what exists
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
            actor,
            _str(args, "path"),
            _str(args, "principal"),
            _str(args, "level"),
            expires,
            check_path=self._shareable,
        )
        return {
            "path": grant.path,
            "principal": str(grant.principal),
            "level": str(grant.level),
            "expires": grant.expires,
            "replaced": str(previous.level) if previous else None,
            "note": await self._published(),
            # [object_acl] export: whether the bucket policy holds it (None: export is off)
            "export": await export_notes.after_share(self.d.exporter, grant),
            "denied": self._denied_note(actor, grant.path, str(grant.principal)),
        }

    def _denied_note(self, actor: Any, path: str, principal: str) -> str | None:
        """Why a grant just made gives nothing: the bucket's own policy denies its grantee
        there (a Deny overrides every grant, on the store and through the mount)."""
        try:
            rows = self.d.sharing.grants_at(actor, path)
        except Refused:  # the sharer's authority went meanwhile: nothing to add
            return None
        for row in rows:
            if row["level"] == "none" and row["principal"] == principal:
                return (
                    f"{principal} is denied at {row['path']} by the bucket's own policy "
                    f"({row['granted_by']}), which overrides this grant on the store and "
                    "through the mount: it gives nothing there until the bucket's owner "
                    "removes that statement"
                )
        return None

    async def _shareable(self, path: str) -> bool:
        """A grant names a place that exists, and not a link: one on a link gives nothing,
        and the sharer almost always meant where it points (which may be somewhere else).
        True when it is a directory (a grant on anything else covers that object only)."""
        inode = await self._resolve(path)
        if inode is None:
            raise Refused(f"{path} does not exist; create it first, then share it")
        if inode.kind is Kind.LINK:
            # The target, when this node knows it already (reading it costs a GET).
            to = "" if inode.target is None else f" (to {inode.target.decode(errors='replace')!r})"
            raise Refused(
                f"{path} is a symbolic link{to}; a grant on a link gives nothing: "
                "share the path it points to"
            )
        return inode.kind is Kind.DIR

    async def unshare(self, peer: Peer, args: dict[str, Any]) -> Any:
        sharing = self.d.sharing
        actor = await sharing.actor(peer.uid)
        g = await sharing.unshare(actor, _str(args, "path"), _str(args, "principal"))
        note = await self._published()
        what = f"{g.principal} {g.level} on {g.path}"
        return {
            "path": g.path,
            "principal": str(g.principal),
            "level": str(g.level),
            "note": note,
            "export": await export_notes.after_revocation(
                self.d.exporter, [g.path.split("/", 2)[1]], what
            ),
        }

    async def _published(self) -> str | None:
        """With a shared policy log: whether the change just made reached it (else a note)."""
        return await self.d.policy_log.confirm() if self.d.policy_log else None

    async def grants(self, peer: Peer, args: dict[str, Any]) -> Any:
        """The grants at path, each with what the kernel lets it do there (the ACL mask)."""
        actor = await self.d.sharing.actor(peer.uid)
        path = _str(args, "path")
        rows = self.d.sharing.grants_at(actor, path)
        inode = await self._resolve(path) if rows else None
        if inode is None:
            return rows
        view = self.d.ops.view(inode)
        mask = (view.mode >> 3) & 7 if view.acl_access is not None else 7
        with_x = inode.is_dir or bool(view.mode & 0o111)
        for row in rows:
            # what the grant gives this object by its shape (an imported right gives a
            # directory search but not listing, and nothing to the object named like it)
            level = 0 if row["level"] == "none" else Level.parse(row["level"])
            at = not row["inherited"]
            granted = reach.bits(level, row.get("shape", "tree"), at, inode.is_dir, with_x)
            row["effective"] = reports.rwx(granted & mask)
            row["mask"] = reports.rwx(mask)
            row["limited_by"] = reports.rwx(granted & ~mask).replace("-", "") or None
            row["mask_by"] = inode.mask_by  # "chmod", "setfacl" or None (not known)
        # a Deny of the bucket's own policy here leaves its principal's grants nothing
        denied = {r["principal"]: r["granted_by"] for r in rows if r["level"] == "none"}
        for row in rows:
            if row["level"] != "none" and row["principal"] in denied:
                row["effective"], row["denied_by"] = "---", denied[row["principal"]]
        self._exported(rows)
        return rows

    def _exported(self, rows: list[dict[str, Any]]) -> None:
        """Each fedfs grant's place in the bucket policy ([object_acl] export on this node):
        "yes", or "no: why" (full, no principal, export failing); None for rows that are
        the bucket's own policy, or when this node does not export."""
        exporter = self.d.exporter
        for row in rows:
            row["exported"] = None
            if exporter is None or row.get("suspended") or row["level"] == "none":
                continue
            if str(row.get("granted_by", "")).startswith(("bucket-policy:", "bucket-acl")):
                continue
            try:
                grant = _grant_of(row)
            except FedfsError:
                continue  # "other" from a public bucket policy: not a grant of fedfs's
            verdict = exporter.verdict(grant)
            row["exported"] = "yes" if verdict is None else f"no: {verdict.short}"

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
        note = await self._published()
        export = await export_notes.after_team_add(self.d.exporter, team.name)
        return {**_team(team), "note": note, "export": export}

    async def team_remove(self, peer: Peer, args: dict[str, Any]) -> Any:
        actor = await self.d.sharing.actor(peer.uid)
        users = _names(args, "users")
        team = await self.d.sharing.team_remove(actor, _str(args, "name"), users)
        note = await self._published()
        what = f"{', '.join(users)} what team {team.name} gave them"
        buckets = [b.name for b in self.d.cfg.buckets]
        return {
            **_team(team),
            "note": note,
            "export": await export_notes.after_revocation(self.d.exporter, buckets, what),
        }

    async def team_show(self, peer: Peer, args: dict[str, Any]) -> Any:
        name = _str(args, "name")
        actor = await self.d.sharing.actor(peer.uid)
        team = self.d.sharing.store.team(name)
        # One answer for missing and not visible, so the question tells nothing.
        if team is None or not self.d.sharing.may_see_team(actor, team):
            raise ControlError(
                f"there is no team {name!r} that {actor.label} may see; "
                "`fedfs team list` shows yours",
                "not-found",
            )
        return _team(team)

    async def team_list(self, peer: Peer, args: dict[str, Any]) -> Any:
        """The teams the caller is in, owns or reaches through its group; admins see all."""
        actor = await self.d.sharing.actor(peer.uid)
        sharing = self.d.sharing
        return [_team(t) for t in sharing.store.teams() if sharing.may_see_team(actor, t)]

    # -- data ------------------------------------------------------------------

    async def _wanted(self, peer: Peer, args: dict[str, Any]) -> Callable[[Inode[Staging]], bool]:
        """The files a sync or pending request is about.

        With a path, only files the caller could `stat` through the mount (every
        directory above them lets the caller search it), so a path they cannot reach
        is answered like a path that does not exist: what is written, and how much,
        below a private directory is not theirs to learn. Without a path the answer
        is the mount's totals, which name nothing.
        """
        path = _str(args, "path", optional=True)
        if path is None or path == "/":
            return lambda inode: True
        prefix = path.rstrip("/")
        if peer.uid == 0:
            return lambda inode: (p := inode.path) == prefix or p.startswith(prefix + "/")
        allows = await self._allows(peer)
        # directory ino -> (the caller may search it, its parent's ino)
        searchable: dict[int, tuple[bool, int]] = {}

        def reachable(inode: Inode[Staging]) -> bool:
            ino = inode.parent
            while ino != ROOT_INO:
                if ino not in searchable:
                    try:
                        d = self.d.inodes.get(ino)
                        searchable[ino] = (allows(d, X), d.parent)
                    except NotFound:
                        searchable[ino] = (False, ROOT_INO)
                ok, ino = searchable[ino]
                if not ok:
                    return False
            return True

        return lambda inode: (
            ((p := inode.path) == prefix or p.startswith(prefix + "/")) and reachable(inode)
        )

    async def _allows(self, peer: Peer) -> Callable[[Inode[Staging], int], bool]:
        """Whether the kernel would grant the caller a right on an inode (mode and ACLs)."""
        actor = await self.d.sharing.actor(peer.uid)
        gids = actor.gids | {peer.gid}

        def allows(inode: Inode[Staging], want: int) -> bool:
            view = self.d.ops.view(inode)
            return permits(view.mode, view.acl_access, view.uid, view.gid, actor.uid, gids, want)

        return allows

    async def sync(self, peer: Peer, args: dict[str, Any]) -> Any:
        """Start every queued upload under path now; `pending` then reports progress."""
        wanted = await self._wanted(peer, args)
        flusher = self.d.flusher
        for inode in self.d.inodes.all():
            if inode.dirty and not inode.gone and inode.writers == 0 and wanted(inode):
                flusher.queue(inode, delay=0)
        return await self.pending(peer, args)

    async def pending(self, peer: Peer, args: dict[str, Any]) -> Any:
        wanted = await self._wanted(peer, args)
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
            # of those, what the store has received of uploads under way (multipart parts)
            "sent": sum(self.d.store.sent(p.inode.bucket, p.inode.key) for p in left),
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
        """Prefetch whole files into the cache (stage-in); only files the caller may read.

        A user's stage requests take their turn (`fairness.StageLimits`): a few at a
        time per user, a few block fetches each, and never the whole S3 pool.
        """
        paths = _names(args, "paths")
        allows = await self._allows(peer)
        staged, nbytes, refused = 0, 0, []
        limits = self.stage_limits
        blocks_in, blocks_out = trio.open_memory_channel[tuple[Inode[Staging], int]](64)

        async def fetch_blocks(todo: trio.MemoryReceiveChannel[tuple[Inode[Staging], int]]) -> None:
            async with todo:
                async for inode, block in todo:
                    assert inode.etag is not None
                    async with limits.fetch(peer.uid):
                        await self.d.cache.prefetch(
                            inode.bucket, inode.key, inode.etag, inode.size, block
                        )

        async with limits.requests.hold(peer.uid), trio.open_nursery() as nursery:
            async with blocks_out:
                for _ in range(limits.FETCHES_PER_USER):
                    nursery.start_soon(fetch_blocks, blocks_out.clone())
            async with blocks_in:
                for path in paths:
                    # Cached paths resolve without an await: let FUSE requests in between.
                    await trio.lowlevel.checkpoint()
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
                        await blocks_in.send((inode, block))
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
        chain = await self._chain(path)
        if chain is None:
            raise ControlError(f"{path}: no such file or directory", "not-found")
        steps = [self._step(inode) for inode in chain]
        uids: set[int] = set()
        gids: set[int] = set()
        for step in steps:
            uids.add(step.view.uid)
            gids.add(step.view.gid)
            if step.view.acl_access is not None:
                for e in Acl.decode(step.view.acl_access).entries:
                    if e.tag == AclTag.USER:
                        uids.add(e.id)
                    elif e.tag == AclTag.GROUP:
                        gids.add(e.id)
        uids.discard(0)  # root is not checked by the kernel
        subjects: list[reports.Subject] = []
        identity, ask = self.d.sharing.identity, self.d.sharing._ask
        for uid in sorted(uids):
            user = await ask(identity.user_by_uid, uid)
            name = f"user:{user.name}" if user is not None else f"uid:{uid}"
            subjects.append(reports.Subject(name, uid, user.gids if user else frozenset()))
        subjects.sort(key=lambda s: s.principal)
        sources = await self._sources(steps, gids=gids)
        groups = sorted(
            (f"group:{sources.group_names.get(gid, gid)}", gid) for gid in gids if gid != 0
        )
        subjects += [reports.Subject(name, None, frozenset({gid})) for name, gid in groups]
        subjects.append(reports.Subject("everyone else", None, frozenset()))
        return reports.who(steps, subjects, sources)

    async def audit_user(self, peer: Peer, args: dict[str, Any]) -> Any:
        """Every path under `path` (default: every bucket) that user NAME can reach, and how.

        Walks the tree as the kernel would let that user: below a directory they cannot
        search nothing is reachable, so nothing there is listed or even looked at.
        """
        actor, everything = await self._reader(peer)
        name = _str(args, "name")
        if not everything and name != actor.name:
            raise ControlError(
                f"{actor.label} may only ask about themselves (site admins may ask about anyone)"
            )
        sharing = self.d.sharing
        user = await sharing._ask(sharing.identity.user, name)
        if user is None:
            raise ControlError(f"there is no user {name!r}", "not-found")
        scope = _str(args, "path", optional=True) or "/"
        subject = reports.Subject(f"user:{name}", user.uid, user.gids)
        chain = await self._chain(scope)
        steps = [self._step(inode) for inode in chain] if chain else []
        sources = await self._sources(steps)
        # Asking about oneself names only what one could find: one answer for a missing
        # path and one on the far side of a directory one cannot search, and below a
        # directory one may search but not list, only the names one's own grants give.
        if chain is None or (not everything and not reports.reaches(steps, subject)):
            hidden = "" if everything else f", or {name} cannot reach it"
            raise ControlError(f"{scope}: no such file or directory{hidden}", "not-found")
        rows: list[dict[str, Any]] = []
        todo = [(steps, chain[-1])]
        visited = 0
        while todo and visited < AUDIT_WALK_MAX:
            on_way, inode = todo.pop()
            visited += 1
            here = reports.evaluate(on_way, subject, sources)
            if here.perm and inode.bucket:
                rows.append(
                    {
                        "path": on_way[-1].path,
                        "access": reports.rwx(here.perm),
                        "via": here.via,
                        "until": here.until,
                    }
                )
            if not inode.is_dir or not here.perm & X:
                continue
            for child in reversed(await self._children(inode)):
                step = self._step(child)
                if not (
                    everything
                    or here.perm & R
                    or reports.named_by_grants(step.path, subject, sources)
                ):
                    continue
                if step.view.gid not in sources.group_names:
                    sources = await self._sources([step], sources)
                todo.append(([*on_way, step], child))
        rows.sort(key=lambda r: r["path"])
        if todo:
            rows.append(
                {
                    "path": "...",
                    "access": "",
                    "via": f"stopped after {AUDIT_WALK_MAX} paths: ask about a smaller tree "
                    "with --mount PATH",
                    "until": None,
                }
            )
        return rows

    def _step(self, inode: Inode[Staging]) -> reports.Step:
        return reports.Step(inode.path, self.d.ops.view(inode), inode.is_dir)

    async def _sources(
        self,
        steps: list[reports.Step],
        known: reports.Sources | None = None,
        gids: Iterable[int] = (),
    ) -> reports.Sources:
        """The grants in force and the names of the steps' owning groups (and gids), for rows."""
        sharing = self.d.sharing
        names = dict(known.group_names) if known else {}
        for gid in {*(step.view.gid for step in steps), *gids}:
            if gid not in names:
                g = await sharing._ask(sharing.identity.group_by_gid, gid)
                names[gid] = g.name if g is not None else str(gid)
        if known is not None:
            return reports.Sources(
                known.grants, known.teams, known.identities, names, known.denials
            )
        now = time.time()
        return reports.Sources(
            tuple(g for g in sharing._grants() if g.active(now)),
            {t.name: t for t in sharing.store.teams()},
            sharing.identities,
            names,
            self._denials(),
        )

    def _denials(self) -> tuple[tuple[str, int | None, str], ...]:
        """The buckets' own Denies for reports: (path, uid, source); uid None: "other"."""
        sharing = self.d.sharing
        found = []
        for observed, _ in sharing.imported.values():
            for d in observed.denials:
                uid = None if d.who == EVERYONE else sharing.identities.uid_of(d.who)
                if d.who == EVERYONE or uid is not None:
                    found.append((d.path, uid, d.source))
        return tuple(found)

    async def _chain(self, path: str) -> list[Inode[Staging]] | None:
        """The inodes from the mount's root to path (looked up as root), or None if absent."""
        chain = [self.d.inodes.get(1)]
        try:
            for part in path.strip("/").split("/"):
                if part:
                    found = await self.d.lookups.lookup(chain[-1], part.encode())
                    if found is None:
                        return None
                    chain.append(found)
            await self.d.revalidation.revalidate(chain[-1])
        except (FedfsError, NotFound):
            return None
        return chain

    async def _children(self, d: Inode[Staging]) -> list[Inode[Staging]]:
        """A directory's entries with their metadata read (what getattr would show)."""
        listing = self.d.listings.open(d)
        found: list[Inode[Staging]] = []
        while (entry := await listing.entry(len(found))) is not None:
            found.append(entry[1])
        self.d.listings.prefetch_metadata(found)
        kept = []
        for inode in found:
            if inode.kind is Kind.LINK:
                continue  # a symlink's own bits are never checked
            try:
                await self.d.revalidation.revalidate(inode)
            except (FedfsError, NotFound):
                continue
            kept.append(inode)
        return kept

    async def audit_expiring(self, peer: Peer, args: dict[str, Any]) -> Any:
        actor, everything = await self._reader(peer)
        within = args.get("within", 7 * 86400)
        if not isinstance(within, int | float) or isinstance(within, bool) or within < 0:
            raise ControlError("argument 'within' must be a number of seconds", "bad-request")
        sharing = self.d.sharing
        grants = sharing.store.grants() + sharing.imported_grants()
        rows = reports.expiring(grants, float(within), time.time(), sharing.imported_openings())
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
        present: dict[str, bool] = {}
        for g in sharing.store.grants():
            if g.path not in present:
                present[g.path] = await self._in_store(g.path)
            if not present[g.path]:
                rows.append(
                    {
                        "kind": "path",
                        "path": g.path,
                        "principal": str(g.principal),
                        "problem": f"{g.path} does not exist in the object store (removed "
                        "outside this mount, or by a node that kept the grant); "
                        f"`{sharing.command('unshare', g.path, g.principal)}` removes the grant",
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

    async def _in_store(self, path: str) -> bool:
        """Whether the object a grant was made on exists: as a key, as a prefix (a directory
        with or without its marker), or on this node only (not uploaded yet). A bucket, a
        path outside the buckets and a store that does not answer count as existing: an
        orphan is reported only when the store says it is gone."""
        bucket, _, key = path.lstrip("/").partition("/")
        if not key or bucket not in {b.name for b in self.d.cfg.buckets}:
            return True
        for is_dir in (False, True):
            inode = self.d.inodes.find(bucket, key, is_dir)
            if inode is not None and (inode.local or inode.dirty) and not inode.gone:
                return True
        store = self.d.store
        try:
            if await trio.to_thread.run_sync(store.head, bucket, key, limiter=self._probe):
                return True
            page = await trio.to_thread.run_sync(
                store.list_page, bucket, key + "/", None, 1, None, limiter=self._probe
            )
        except FedfsError:
            return True
        return bool(page.objects or page.prefixes)

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

    async def _object_acl_status(self, peer: Peer) -> dict[str, Any] | None:
        """The import's status. Statements not mapped name principals and keys of the
        buckets' own policies, which the store shows only to those who may read them:
        root, site admins and each bucket's owner see them, others how many there are."""
        if self.d.importer is None:
            return None
        found: dict[str, Any] = dict(self.d.importer.status())
        sharing = self.d.sharing
        actor = await sharing.actor(peer.uid)
        if peer.uid == 0 or sharing.site.is_admin(actor.uid, actor.name, actor.groups):
            return found
        unmapped = found.get("unmapped") or []
        found["unmapped"] = [u for u in unmapped if sharing.owns_bucket(actor, u["bucket"])]
        found["unmapped_hidden"] = len(unmapped) - len(found["unmapped"])
        return found

    async def _unsealed_status(self, peer: Peer) -> list[dict[str, Any]]:
        """Per bucket, objects whose ownership metadata fedfs did not seal ([object_acl]):
        how many this daemon has seen, and a few keys, named only to root, site admins
        and the bucket's owner (a key names a file others may not reach)."""
        seal = self.d.seal
        if not seal.by_bucket and not seal.more:
            return []
        sharing = self.d.sharing
        actor = await sharing.actor(peer.uid)
        everything = peer.uid == 0 or sharing.site.is_admin(actor.uid, actor.name, actor.groups)
        return [
            {
                "bucket": bucket,
                "count": count,
                "at_least": bucket in seal.more,  # more were seen than are kept track of
                "examples": list(seal.examples.get(bucket, []))
                if everything or sharing.owns_bucket(actor, bucket)
                else [],
            }
            for bucket, count in sorted({**{b: 0 for b in seal.more}, **seal.by_bucket}.items())
        ]

    async def _export_status(self, peer: Peer) -> list[dict[str, Any]] | None:
        """The export's status per bucket. The grants left out of a full policy are named
        to root, site admins and the bucket's owner; others see those they made, and how
        many there are in all."""
        if self.d.exporter is None:
            return None
        sharing = self.d.sharing
        actor = await sharing.actor(peer.uid)
        everything = peer.uid == 0 or sharing.site.is_admin(actor.uid, actor.name, actor.groups)
        found = self.d.exporter.status()
        for row in found:
            out = row["not_exported"]
            row["not_exported_count"] = len(out)
            if not (everything or sharing.owns_bucket(actor, str(row["bucket"]))):
                row["not_exported"] = [g for g in out if g["granted_by"] == actor.label]
        return found

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
                "partial": d.writeback.rewrites,
                "partial_copied_bytes": d.writeback.rewrite_copied,
                "refused": len(d.cache.journal.refused()),
                # Which ones: all to root, to anyone else only their own files.
                "refused_files": self._refused(peer)[:100],
            },
            "s3": {
                "requests": d.store.requests,
                "by_operation": dict(d.store.by_operation),  # head_object, list_objects_v2...
                "errors": d.store.errors,
                "not_found": d.store.not_found,
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
            "object_acl": await self._object_acl_status(peer),
            "unsealed": await self._unsealed_status(peer),
            # [object_acl] export on this node (docs/OBJECT_ACL.md), None when off
            "object_acl_export": await self._export_status(peer),
            "identity": {
                "source": health.source,
                "ok": health.ok,
                "last_error": health.last_error,
            },
            "fuse_requests": d.ops.ops,
            "users": await self._holdings(peer),
            "descriptors": {
                "open": len(os.listdir("/proc/self/fd")),
                "limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
            },
        }

    async def _holdings(self, peer: Peer) -> list[dict[str, Any]]:
        """Who holds what of the write-back: every user for root, else the caller's own."""
        held = holdings(self.d.inodes.all(), self.d.flusher.pending.values())
        if peer.uid != 0:
            held.setdefault(peer.uid, Holding())  # "nothing": an answer too
        rows = []
        for uid, h in sorted(held.items()):
            if peer.uid not in (0, uid):
                continue
            user = await self.d.sharing._ask(self.d.sharing.identity.user_by_uid, uid)
            rows.append({"uid": uid, "user": user.name if user else None, **vars(h)})
        return rows


def _grant_of(row: dict[str, Any]) -> Grant:
    """A `fedfs grants` row back as the grant it shows (raises FedfsError for other rows)."""
    return Grant(
        row["path"],
        Principal.parse(row["principal"]),
        Level.parse(row["level"]),
        row["granted_by"],
        row["granted_at"],
        row["expires"],
        check_shape(row.get("shape") or TREE),
    )


def _latency_ms(durations: list[float]) -> dict[str, float | None]:
    """p50 and p99 of the latest S3 requests, in milliseconds (None before the first)."""
    if not durations:
        return {"latency_p50_ms": None, "latency_p99_ms": None}
    ordered = sorted(durations)
    pick = lambda q: round(1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)  # noqa: E731
    return {"latency_p50_ms": pick(0.5), "latency_p99_ms": pick(0.99)}
