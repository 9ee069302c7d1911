"""The mount daemon: checks the config against the world, mounts, runs, unmounts.

Owns the process: the locks on its state and cache directories (taken
before anything is written, see lock.py), start-up checks (endpoint,
credentials, buckets, owners, cache directory and its disk) that turn into
one clear message before anything is mounted, the trio nursery in which
every background task lives, signal handling, the orderly unmount that waits
for pending uploads (bounded by `cache.drain_timeout`), start-up recovery of
journaled files (which never blocks the mount), and taking the mount down
again when a start fails.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import resource
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pyfuse3
import trio

from fedfs import events
from fedfs.audit.chain import AuditTrail, SigningKey
from fedfs.config import Config, format_size
from fedfs.control.commands import REVOCATIONS, Commands
from fedfs.control.server import ControlServer
from fedfs.daemon.lock import DirLocks
from fedfs.daemon.mountpoint import check_mountpoint
from fedfs.daemon.readahead import set_read_ahead
from fedfs.data.cache import Cache, Staging
from fedfs.data.flusher import MAX_BACKOFF, Flusher, Pending, keep_refused
from fedfs.data.writeback import WriteBack
from fedfs.errors import ConfigError, FedfsError, NotFound, PolicyError, StoreRefused
from fedfs.fuse.operations import Operations
from fedfs.identity.choose import make_identity
from fedfs.identity.source import IdentitySource
from fedfs.meta.dir_index import DirIndexes
from fedfs.meta.inode import Inode
from fedfs.meta.seal import KEY_PURPOSE as SEAL_PURPOSE
from fedfs.meta.seal import MetadataSeal
from fedfs.ops import notify
from fedfs.ops.metrics import Metrics
from fedfs.policy import replay
from fedfs.policy.log import PolicyLog
from fedfs.policy.model import Principal
from fedfs.policy.objectacl.exporter import Exporter, PolicyView
from fedfs.policy.objectacl.importer import Importer
from fedfs.policy.objectacl.principals import PrincipalMap
from fedfs.policy.sharing import BucketOwner, Sharing
from fedfs.policy.site import load_site_policy, policy_files
from fedfs.policy.store import PolicyStore
from fedfs.store.s3 import ObjectStore
from fedfs.store.threads import WorkerThreads
from fedfs.tree.attributes import Attributes
from fedfs.tree.changes import Changes
from fedfs.tree.inodes import Inodes
from fedfs.tree.listing import Listings
from fedfs.tree.lookup import Lookups
from fedfs.tree.revalidate import Revalidation

log = logging.getLogger(__name__)


def node_key(cfg: Config) -> SigningKey:
    """This node's Ed25519 signing key, made on first start (state_dir/node.key, 0600)."""
    path = cfg.policy.state_dir / "node.key"
    if path.exists():
        return SigningKey.load(path)
    key = SigningKey.generate()
    key.save(path)
    log.info("generated node signing key %s (%s)", key.key_id, path)
    return key


def raise_fd_limit() -> int:
    """Raise the soft limit on open files to the hard limit; the new soft limit.

    Every file open for writing, every control connection and every cached block
    being read holds a descriptor of this one process for all users together;
    the usual soft limit (1,024) is far too low for that.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (OSError, ValueError) as e:
            log.warning("cannot raise the open-files limit from %d to %d: %s", soft, hard, e)
    return soft


def check_owners(cfg: Config, identity: IdentitySource, owners: dict[str, BucketOwner]) -> None:
    """Every [[buckets]] owner must exist (a team may be created later, on the mount)."""
    for owner in owners.values():
        p = owner.principal
        found = True
        if p.kind == "user":
            found = identity.user(p.name) is not None
        elif p.kind == "group":
            found = identity.group(p.name) is not None
        if not found:
            raise ConfigError(
                f"{cfg.path}: [[buckets]] owner: no {p.kind} {p.name!r} for bucket {owner.bucket} "
                f"(checked with {identity.health().source})"
            )


def first_reason(group: BaseExceptionGroup) -> BaseException:
    """The error to tell a person from a nursery's group: a FedfsError if there is one."""
    leaves: list[BaseException] = []

    def walk(e: BaseException) -> None:
        if isinstance(e, BaseExceptionGroup):
            for sub in e.exceptions:
                walk(sub)
        else:
            leaves.append(e)

    walk(group)
    return next((e for e in leaves if isinstance(e, FedfsError)), leaves[0] if leaves else group)


def check_store(cfg: Config, store: ObjectStore) -> None:
    """Fail early, with the bucket named, if the endpoint or a bucket is unusable."""
    if cfg.policy.log_bucket is not None:
        try:
            store.check_bucket(cfg.policy.log_bucket)
        except NotFound:
            raise ConfigError(
                f"{cfg.path}: [policy] log_bucket: bucket {cfg.policy.log_bucket!r} does not "
                f"exist at {cfg.store.endpoint or 'AWS S3'}; create it (one per site, written "
                "only by fedfs) or fix the name"
            ) from None
        except FedfsError as e:
            raise ConfigError(f"{cfg.path}: [store]: {e}") from None
    for b in cfg.buckets:
        try:
            store.check_bucket(b.name)
        except NotFound:
            raise ConfigError(
                f"{cfg.path}: [[buckets]] name: bucket {b.name!r} does not exist at "
                f"{cfg.store.endpoint or 'AWS S3'}; create it or fix the name"
            ) from None
        except FedfsError as e:
            raise ConfigError(f"{cfg.path}: [store]: {e}") from None


class Daemon:
    def __init__(self, cfg: Config, mountpoint: Path, nonempty: bool = False) -> None:
        self.cfg = cfg
        self.mountpoint = mountpoint
        self.nonempty = nonempty
        # Before anything is written: a second daemon of this state stops here.
        self.locks = DirLocks(
            [(cfg.policy.state_dir, True), (cfg.cache.dir, False)], mountpoint, cfg.path
        )
        self.fd_limit = raise_fd_limit()
        self.fuse_up = False  # pyfuse3.init succeeded: the mount must be taken down at the end
        self.warnings: list[str] = []  # said at start by `fedfs mount` as well as logged
        self.started = time.monotonic()
        oa = cfg.object_acl
        self.store = ObjectStore(cfg.store, oa.object_acl if oa.enabled else None)
        # With [object_acl], ownership metadata counts only under fedfs's own seal.
        self.seal = MetadataSeal(
            self.store.derived_key(SEAL_PURPOSE) if oa.enabled else None, oa.enabled
        )
        if self.seal.signing:
            self.store.seal = self.seal
        elif oa.enabled:
            self.warnings.append(
                "no S3 secret key to sign object metadata with: every object shows as "
                "its bucket owner's, mode 0600 (directories 0700), whatever its metadata "
                "says. Give [store] an access_key and secret_key ([object_acl] needs them)"
            )
            log.warning("%s", self.warnings[-1])
        self.limiter = trio.CapacityLimiter(cfg.store.max_connections)
        self.identity = make_identity(cfg)
        self.site = load_site_policy(policy_files(cfg.policy.site_dir))
        owners = {b.name: BucketOwner(b.name, Principal.parse(b.owner)) for b in cfg.buckets}
        check_owners(cfg, self.identity, owners)
        cfg.policy.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fresh = not (cfg.policy.state_dir / "policy.db").exists()
        self.policy_store = PolicyStore(cfg.policy.state_dir / "policy.db", self.site.team_gids)
        self.key = node_key(cfg)
        self.trail = AuditTrail(cfg.policy.state_dir / "audit", cfg.policy.node, self.key)
        if fresh:
            self._rebuild_policy()
        self.sharing = Sharing(
            self.policy_store,
            self.site,
            self.identity,
            owners,
            trio.CapacityLimiter(4),
            self.invalidate,
            self.trail,
        )
        on_mount = os.path.abspath(mountpoint)
        self.sharing.typed = lambda path: on_mount + path
        self.policy_log: PolicyLog | None = None
        if cfg.policy.log_bucket is not None:
            self.policy_log = PolicyLog(
                cfg.policy,
                self.store,
                self.sharing,
                self.trail,
                self.key,
                self.limiter,
                watcher=cfg.object_acl.enabled and cfg.object_acl.watcher,
            )
            self.sharing.may_change = self.policy_log.check_may_change
            self.sharing.on_record = self.policy_log.wake
        self.exporter: Exporter | None = None
        if oa.exports and oa.watcher:
            self.exporter = Exporter(
                [b.name for b in cfg.buckets],
                self.store,
                WorkerThreads(self.limiter),
                PolicyView(
                    self.sharing.grants_in_force,
                    self.policy_store.teams,
                    lambda: dict(self.sharing.group_members),
                    self.sharing.limits,
                ),
                PrincipalMap(oa, self.identity),
                oa.poll_interval,
                oa.max_policy_bytes,
            )
        self._record_site_policy()
        self.importer: Importer | None = None
        if cfg.object_acl.imports:
            self.importer = Importer(
                cfg.object_acl,
                [b.name for b in cfg.buckets],
                self.store,
                self.sharing,
                self.identity,
                self.trail,
                self.limiter,
                cfg.policy.node,
            )
        self.cache = Cache(cfg.cache, self.store, self.limiter)
        short = self.cache.disk_shortfall()
        if short:
            self.warnings.append(short)
            events.event(log, "cache-disk-small", severity=logging.WARNING, msg=short)
        self._wire_tree(owners)
        self.flusher.last_request = lambda: self.ops.last_request
        self.commands = Commands(self)
        self.mounted = False
        self.expiry_changed = trio.Event()
        self.left: list[str] = []
        self.signalled = False  # SIGTERM/SIGINT: the drain at the end is bounded in all
        self.drain_scope = trio.CancelScope()  # the drain at the end (a second signal cancels it)
        self.unrecovered: list[Inode[Staging]] = []  # journaled files whose upload failed at start
        events.set_context(mount=cfg.name)
        self.metrics = Metrics(self)

    def _wire_tree(self, owners: dict[str, BucketOwner]) -> None:
        """The tree's rooms, the write-back path and the FUSE adapter, wired to each other."""
        cfg, store = self.cfg, self.store
        s3 = WorkerThreads(self.limiter)
        self.inodes = Inodes([b.name for b in cfg.buckets], owners, self.seal)
        self.writeback = WriteBack(store, s3, self.cache, owners, self.seal, cfg.policy.node)
        self.flusher = Flusher(self.cache, self.writeback.commit)
        self.writeback.uploads = self.flusher
        self.revalidation = Revalidation(self.inodes, store, s3, cfg.fs.attr_timeout)
        self.indexes = DirIndexes(store, s3, cfg.fs.metadata_index)
        self.listings = Listings(
            self.inodes, store, s3, self.revalidation, cfg.fs.dir_timeout, self.indexes
        )
        self.lookups = Lookups(
            self.inodes, store, s3, self.revalidation, self.listings, cfg.fs.negative_timeout
        )
        self.changes = Changes(
            cfg,
            self.inodes,
            store,
            s3,
            self.lookups,
            self.revalidation,
            self.writeback,
            self.cache.journal,
        )
        attributes = Attributes(store, s3, self.revalidation, self.writeback)
        self.ops = Operations(
            cfg,
            self.inodes,
            self.revalidation,
            self.lookups,
            self.listings,
            self.changes,
            attributes,
            self.writeback,
            self.cache,
            self.sharing,
            str(cfg.control.socket),
        )

    def _rebuild_policy(self) -> None:
        """A new policy database beside an existing audit chain: redo this node's changes.

        (The database was removed or moved aside; with a shared policy log the
        other nodes' changes follow from the log at start.)
        """
        records = self.trail.records()
        if not any(r.action in replay.GRANT_ACTIONS | replay.TEAM_ACTIONS for r in records):
            return
        applied, problems = replay.replay(self.policy_store, records)
        events.event(
            log,
            "policy-rebuilt",
            severity=logging.WARNING,
            applied=applied,
            problems=len(problems),
            msg=f"the policy database was missing; rebuilt from this node's audit chain "
            f"({self.trail.log_path})",
        )
        for p in problems:
            log.error("policy rebuild: %s", p)

    def _record_site_policy(self) -> None:
        """A changed site policy (policy/*.toml) is an admin action the audit shows."""
        digest = hashlib.sha256(repr(self.site).encode()).hexdigest()
        last = next(
            (r for r in reversed(self.trail.records()) if r.action == "policy-change"), None
        )
        if last is None or last.after != digest:
            files = (
                ", ".join(str(p) for p in policy_files(self.cfg.policy.site_dir))
                or "(built-in default)"
            )
            self.trail.append(
                actor_uid=os.getuid(),
                actor="fedfs",
                action="policy-change",
                before=last.after if last else None,
                after=digest,
                detail={"files": files[:1000]},
            )

    def invalidate(self, paths: list[str]) -> None:
        """Policy changed at these paths: the kernel must re-read attributes and ACLs below them."""
        self.inodes.refresh_owners()
        self.expiry_changed.set()
        if self.exporter is not None:
            self.exporter.wake()
        if not self.mounted:
            return
        seen: set[int] = set()
        for path in paths:
            # The directories above change too: a grant may give search (x) on each of
            # them, and closes to its holder what else is in them (policy/reach.py).
            above = self.inodes.above(path)
            beside = {d.ino for d in above}
            nearby = [i for i in self.inodes.all() if i.parent in beside and not i.gone]
            for inode in self.inodes.under(path) + above + nearby:
                if inode.ino in seen:
                    continue
                seen.add(inode.ino)
                self.ops.forget_told(inode.ino)
                # OSError: the kernel does not know this inode, so nothing is cached to drop.
                with contextlib.suppress(OSError):
                    pyfuse3.invalidate_inode(pyfuse3.InodeT(inode.ino), attr_only=True)
        log.debug(
            "invalidated %d inodes at, below, above and beside %s", len(seen), ", ".join(paths)
        )

    async def sweep_expired(self) -> None:
        """Remove grants when they expire, so the kernel stops honouring them on time."""
        while True:
            nxt = self.sharing.next_expiry()
            wait = self.cfg.policy.sweep_interval
            if nxt is not None:
                wait = min(wait, max(0.0, nxt - time.time()))
            self.expiry_changed = trio.Event()
            with trio.move_on_after(wait):
                await self.expiry_changed.wait()
                continue
            try:
                await self.sharing.expire()
            except Exception:  # try again at the next wake-up
                log.exception("expiring grants failed")

    def mount(self) -> None:
        check_mountpoint(self.mountpoint, self.nonempty)
        # nodev: device nodes may be stored (mknod), never opened as devices here.
        options = {"fsname=fedfs", "subtype=fedfs", "default_permissions", "noatime", "nodev"}
        if self.cfg.fs.allow_other:
            options.add("allow_other")
        try:
            pyfuse3.init(self.ops, str(self.mountpoint), options)
        except RuntimeError as e:
            raise FedfsError(f"cannot mount on {self.mountpoint}: {e}") from e
        self.fuse_up = True
        events.event(
            log,
            "mount",
            config=self.cfg.path,
            mountpoint=self.mountpoint,
            buckets=",".join(b.name for b in self.cfg.buckets),
            endpoint=self.cfg.store.endpoint or "AWS S3",
        )

    async def recover(self) -> None:
        """Upload every file the journal lists: closed (or open) when the last run ended.

        Never blocks the mount: a file the store refuses for good is kept aside
        (lost+found, named by status/doctor/fsck), and one that fails for now is
        retried in the background once mounted (`retry_recovery`).
        """
        try:
            await self.changes.finish_moves()
        except FedfsError as e:
            log.error(
                "a directory rename left half done could not be finished yet (%s); "
                "it is tried again at the next mount",
                e,
            )
        rows = self.cache.journal.all()
        if rows:
            log.info("recovering %d files from the write-back journal", len(rows))
        for row in rows:
            path = events.printable(f"/{row.bucket}/{row.key}")  # one log line, whatever the name
            if self.cfg.bucket(row.bucket) is None:
                log.error(
                    "%s: bucket %s is no longer in %s; its data stays in %s/staging/%s",
                    path,
                    row.bucket,
                    self.cfg.path,
                    self.cfg.cache.dir,
                    row.staging,
                )
                continue
            try:
                st = self.cache.open_staging(row.staging)
            except FileNotFoundError:
                log.error(
                    "%s: the journal names staging file %s, which is gone; nothing to upload",
                    path,
                    row.staging,
                )
                self.cache.journal.forget(row.bucket, row.key)
                continue
            if row.state == "open":
                log.warning(
                    "%s was open for writing when fedfs stopped; uploading the %s "
                    "that reached the cache",
                    path,
                    format_size(st.size),
                )
            inode = self.writeback.recovered(row, st)
            outcome = await self._recover_one(inode)
            if outcome is None:
                self.unrecovered.append(inode)
            else:
                log.info("%s: recovered and %s (%s)", path, outcome, format_size(st.size))

    async def _recover_one(self, inode: Inode[Staging]) -> str | None:
        """One recovered file's upload: what became of it ("uploaded", or kept aside when
        the store refuses it for good), None if it is to be tried again later."""
        outcome = "uploaded"
        try:
            await self.writeback.commit(inode)
        except StoreRefused as e:
            try:
                keep_refused(self.cache, inode, e)
            except (FedfsError, OSError) as err:
                log.error(
                    "%s: refused by the store, and cannot be kept aside (%s)",
                    events.printable(inode.path),
                    err,
                )
                return None
            outcome = "kept aside: the store refuses it for good (see fedfs status)"
        except (FedfsError, OSError) as e:
            st = inode.staging
            events.event(
                log,
                "recovery-deferred",
                severity=logging.WARNING,
                path=inode.path,
                error=e,
                kept_in=st.path if st else None,
                msg=f"{events.printable(inode.path)}: not uploaded at start ({e}); mounting anyway and "
                "retrying in the background, the data is safe in the cache",
            )
            return None
        if inode.staging is not None:
            inode.staging.close()  # refused: its data is in lost+found now
        return outcome

    async def retry_recovery(self) -> None:
        """Retry, with backoff, recovered files whose upload failed at start."""
        delay = 2.0
        while self.unrecovered:
            await trio.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF)
            left = []
            for inode in self.unrecovered:
                st = inode.staging
                named = st is not None and any(
                    r.staging == st.name
                    for r in self.cache.journal.all()
                    if (r.bucket, r.key) == (inode.bucket, inode.key)
                )
                if not named:  # written again since: the newer row is the data
                    if st is not None:
                        st.close()
                    continue
                outcome = await self._recover_one(inode)
                if outcome is None:
                    left.append(inode)
                else:
                    log.info("%s: recovered and %s", events.printable(inode.path), outcome)
            self.unrecovered = left

    async def main(self, on_ready: Callable[[], None] | None = None) -> None:
        check_store(self.cfg, self.store)
        if self.policy_log is not None:
            await self.policy_log.start()  # the newest snapshot and every change since
        await self.sharing.rebuild()
        if self.importer is not None and self.cfg.object_acl.watcher:
            await self.importer.poll_all()  # the buckets' own policies, before the first request
        self.inodes.refresh_owners()
        await self.recover()
        self.metrics.listen()
        self.mount()
        self.mounted = True
        async with trio.open_nursery() as nursery:
            self.listings.nursery = self.ops.nursery = self.cache.nursery = nursery
            nursery.start_soon(self._signals)
            nursery.start_soon(self._reload_on_hangup)
            nursery.start_soon(self.flusher.run)
            nursery.start_soon(self.retry_recovery)
            nursery.start_soon(self.sweep_expired)
            if self.policy_log is not None:
                nursery.start_soon(self.policy_log.run)
            if self.importer is not None and self.cfg.object_acl.watcher:
                nursery.start_soon(self.importer.run)
            if self.exporter is not None:
                nursery.start_soon(self.exporter.run)
            nursery.start_soon(self.metrics.run)
            control = ControlServer(
                self.cfg.control.socket, self.commands.handle, reserved_ops=REVOCATIONS
            )
            await nursery.start(control.serve)
            if on_ready:
                on_ready()
            nursery.start_soon(self._notify_ready)
            nursery.start_soon(notify.keep_watchdog_fed)
            await pyfuse3.main(min_tasks=4, max_tasks=64)
            notify.stopping("unmounted; uploading what is pending")
            self.mounted = False
            self.left = await self.finish()
            nursery.cancel_scope.cancel()

    async def _notify_ready(self) -> None:
        """Once the mount answers (this stat waits for pyfuse3.main): read-ahead, READY=1."""
        while True:
            try:
                await trio.to_thread.run_sync(os.stat, self.mountpoint, abandon_on_cancel=True)
                break
            except OSError as e:
                log.warning("mount point does not answer yet: %s", e)
                await trio.sleep(0.5)
        # Larger kernel read requests, fewer round trips through pyfuse3 per MiB. Only now:
        # the kernel caps the read-ahead when the FUSE connection starts (FUSE_INIT).
        set_read_ahead(self.mountpoint, self.cfg.fs.read_ahead_kb)
        notify.ready(f"{self.cfg.path} mounted on {self.mountpoint}")

    async def _signals(self) -> None:
        """SIGTERM/SIGINT unmount after a drain bounded by cache.drain_timeout; a second one
        stops the drain at once (what is left is uploaded at the next mount)."""
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for sig in signals:
                name = signal.Signals(sig).name
                if not self.signalled:
                    self.signalled = True
                    log.info(
                        "received %s; unmounting (pending uploads get up to %.0fs)",
                        name,
                        self.cfg.cache.drain_timeout,
                    )
                    self.drain_scope.deadline = min(
                        self.drain_scope.deadline,
                        trio.current_time() + self.cfg.cache.drain_timeout,
                    )
                    pyfuse3.terminate()
                else:
                    log.info("received %s again; stopping the upload drain now", name)
                    self.drain_scope.cancel()

    async def _reload_on_hangup(self) -> None:
        """SIGHUP (`systemctl reload`): read the site policy files again and apply them."""
        with trio.open_signal_receiver(signal.SIGHUP) as signals:
            async for _ in signals:
                await self.reload_site_policy()

    async def reload_site_policy(self) -> None:
        """The site policy files as they are now; a broken file keeps the policy in force."""
        files = policy_files(self.cfg.policy.site_dir)
        try:
            site = load_site_policy(files)
        except PolicyError as e:
            events.event(
                log,
                "site-policy-rejected",
                severity=logging.ERROR,
                msg=f"{e}; the site policy in force is unchanged: fix the file and reload again",
            )
            return
        self.site = self.sharing.site = site
        self._record_site_policy()
        events.event(
            log,
            "site-policy-reloaded",
            files=", ".join(str(p) for p in files) or "(built-in default)",
        )
        # Every grant is checked again; what the kernel cached is dropped everywhere.
        await self.sharing.changed([f"/{b.name}" for b in self.cfg.buckets])

    async def finish(self) -> list[str]:
        """Upload what is queued; return a line per file that could not be uploaded.

        Bounded: after SIGTERM, cache.drain_timeout in all; at unmount, until no upload
        has finished for cache.drain_timeout. What is left stays in the cache and the
        journal, and is uploaded at the next mount.
        """
        for inode in self.inodes.all():
            if inode.dirty and not inode.gone:
                self.flusher.queue(inode, delay=0)
        last = [0.0]
        before = [-1]
        scope = self.drain_scope

        def progress(files: int, nbytes: int) -> None:
            if files != before[0] and not self.signalled:
                before[0] = files  # an upload finished: an unmount waits on while they do
                scope.deadline = trio.current_time() + self.cfg.cache.drain_timeout
            if files and time.monotonic() - last[0] > 5:
                last[0] = time.monotonic()
                log.info("unmount: waiting for %d uploads (%s)", files, format_size(nbytes))
                notify.status(f"unmount: waiting for {files} uploads ({format_size(nbytes)})")

        left: list[Pending] | None = None
        with scope:
            left = await self.flusher.drain(progress=progress, give_up_after=0)
        if left is None:  # the drain's time ran out
            left = list(self.flusher.pending.values())
            log.warning(
                "gave up waiting for %d upload(s) after %.0fs; they stay in %s and are "
                "uploaded at the next mount",
                len(left),
                self.cfg.cache.drain_timeout,
                self.cfg.cache.dir,
            )
        for r in self.cache.journal.refused():
            log.warning(
                "/%s/%s: refused by the object store for good; kept in %s (see `fedfs fsck`)",
                r.bucket,
                r.key,
                r.kept,
            )
        return [
            f"{p.inode.path}: {p.error or 'upload still under way'} (kept in "
            f"{p.inode.staging.path if p.inode.staging else '?'}; uploaded at the next mount)"
            for p in left
        ]

    def serve(self, on_ready: Callable[[], None] | None = None) -> int:
        """Check, recover, mount, run until unmounted or signalled, clean up. Exit code.

        A start that fails after FUSE mounted takes the mount down again, and
        raises its one reason (not trio's group of one).
        """
        try:
            trio.run(self.main, on_ready)
        except BaseExceptionGroup as group:
            raise first_reason(group) from group
        finally:
            if self.fuse_up:
                pyfuse3.close(unmount=True)
                self.fuse_up = False
                events.event(
                    log, "unmount", mountpoint=self.mountpoint, not_uploaded=len(self.left)
                )
            self.cache.journal.close()
            self.policy_store.close()
            self.locks.release()
        for line in self.left:
            log.error("not uploaded: %s", line)
        return 1 if self.left else 0
