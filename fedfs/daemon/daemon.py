"""The mount daemon: checks the config against the world, mounts, runs, unmounts.

Owns the process: start-up checks (endpoint, credentials, buckets, owners,
cache directory) that turn into one clear message before anything is
mounted, the trio nursery in which every background task lives, signal
handling, and the orderly unmount that waits for pending uploads.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pyfuse3
import trio

from fedfs import events
from fedfs.audit.chain import AuditTrail, SigningKey
from fedfs.config import Config, format_size
from fedfs.control.commands import Commands
from fedfs.control.server import ControlServer
from fedfs.data.cache import Cache
from fedfs.data.flusher import Flusher
from fedfs.errors import ConfigError, FedfsError, NotFound
from fedfs.fuse.operations import Operations
from fedfs.identity.sources import IdentitySource, LdapIdentity, NssIdentity
from fedfs.ops import notify
from fedfs.ops.metrics import Metrics
from fedfs.policy import replay
from fedfs.policy.log import PolicyLog
from fedfs.policy.model import Principal
from fedfs.policy.sharing import BucketOwner, Sharing
from fedfs.policy.site import load_site_policy, policy_files
from fedfs.policy.store import PolicyStore
from fedfs.store.s3 import ObjectStore
from fedfs.tree.namespace import Namespace

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


def make_identity(cfg: Config) -> IdentitySource:
    ident = cfg.identity
    if ident.source == "ldap":
        assert ident.url is not None and ident.base_dn is not None
        return LdapIdentity(
            ident.url,
            ident.base_dn,
            ident.bind_dn,
            ident.password,
            timeout=ident.timeout,
            ttl=ident.ttl,
        )
    return NssIdentity()


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


def check_mountpoint(mountpoint: Path) -> None:
    if not mountpoint.is_dir():
        raise FedfsError(f"mount point {mountpoint} is not a directory; create it with mkdir -p")
    if os.path.ismount(mountpoint):
        raise FedfsError(f"{mountpoint} is already a mount point; unmount it first (fedfs umount)")
    if not os.path.exists("/dev/fuse"):
        raise FedfsError(
            "/dev/fuse is missing; load the fuse module (modprobe fuse) or install fuse3"
        )


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
    def __init__(self, cfg: Config, mountpoint: Path) -> None:
        self.cfg = cfg
        self.mountpoint = mountpoint
        self.started = time.monotonic()
        self.store = ObjectStore(cfg.store)
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
        self.policy_log: PolicyLog | None = None
        if cfg.policy.log_bucket is not None:
            self.policy_log = PolicyLog(
                cfg.policy, self.store, self.sharing, self.trail, self.key, self.limiter
            )
            self.sharing.may_change = self.policy_log.check_may_change
            self.sharing.on_record = self.policy_log.wake
        self._record_site_policy()
        self.cache = Cache(cfg.cache, self.store, self.limiter)
        self.ns = Namespace(cfg, self.store, self.cache, self.limiter, owners)
        self.flusher = Flusher(self.ns)
        self.ns.flusher = self.flusher
        self.ops = Operations(self.ns, self.cache, self.sharing, str(cfg.control.socket))
        self.flusher.last_request = lambda: self.ops.last_request
        self.commands = Commands(self)
        self.mounted = False
        self.expiry_changed = trio.Event()
        self.left: list[str] = []
        events.set_context(mount=cfg.name)
        self.metrics = Metrics(self)

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
        self.ns.refresh_owners()
        self.expiry_changed.set()
        if not self.mounted:
            return
        seen: set[int] = set()
        for path in paths:
            # The directories above change too: a grant may give search (x) on each of
            # them, and closes to its holder what else is in them (policy/reach.py).
            above = self.ns.above(path)
            beside = {d.ino for d in above}
            nearby = [i for i in self.ns.inodes.values() if i.parent in beside and not i.gone]
            for inode in self.ns.under(path) + above + nearby:
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
        check_mountpoint(self.mountpoint)
        options = {"fsname=fedfs", "subtype=fedfs", "default_permissions", "noatime"}
        if self.cfg.fs.allow_other:
            options.add("allow_other")
        try:
            pyfuse3.init(self.ops, str(self.mountpoint), options)
        except RuntimeError as e:
            raise FedfsError(f"cannot mount on {self.mountpoint}: {e}") from e
        events.event(
            log,
            "mount",
            config=self.cfg.path,
            mountpoint=self.mountpoint,
            buckets=",".join(b.name for b in self.cfg.buckets),
            endpoint=self.cfg.store.endpoint or "AWS S3",
        )

    async def recover(self) -> None:
        """Upload every file the journal lists: closed (or open) when the last run ended."""
        await self.ns.finish_moves()
        rows = self.cache.journal.all()
        if rows:
            log.info("recovering %d files from the write-back journal", len(rows))
        for row in rows:
            path = f"/{row.bucket}/{row.key}"
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
                    "%s was open for writing when fedfs stopped; uploading the %d bytes "
                    "that reached the cache",
                    path,
                    st.size,
                )
            inode = self.ns.detached_inode(row.bucket, row.key, row.metadata, row.base_etag, st)
            await self.ns.commit(inode)
            log.info("%s: recovered and uploaded (%d bytes)", path, st.size)

    async def main(self, on_ready: Callable[[], None] | None = None) -> None:
        check_store(self.cfg, self.store)
        if self.policy_log is not None:
            await self.policy_log.start()  # the newest snapshot and every change since
        await self.sharing.rebuild()
        self.ns.refresh_owners()
        await self.recover()
        self.metrics.listen()
        self.mount()
        self.mounted = True
        async with trio.open_nursery() as nursery:
            self.ns.nursery = nursery
            nursery.start_soon(self._signals)
            nursery.start_soon(self.flusher.run)
            nursery.start_soon(self.sweep_expired)
            if self.policy_log is not None:
                nursery.start_soon(self.policy_log.run)
            nursery.start_soon(self.metrics.run)
            control = ControlServer(self.cfg.control.socket, self.commands.handle)
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
        """READY=1 for systemd once the mount answers: this stat waits for pyfuse3.main."""
        while True:
            try:
                await trio.to_thread.run_sync(os.stat, self.mountpoint, abandon_on_cancel=True)
                break
            except OSError as e:
                log.warning("mount point does not answer yet: %s", e)
                await trio.sleep(0.5)
        notify.ready(f"{self.cfg.path} mounted on {self.mountpoint}")

    async def _signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for sig in signals:
                log.info("received %s; unmounting", signal.Signals(sig).name)
                pyfuse3.terminate()
                return

    async def finish(self) -> list[str]:
        """Upload what is queued; return a line per file that could not be uploaded."""
        for inode in list(self.ns.inodes.values()):
            if inode.dirty and not inode.gone:
                self.flusher.queue(inode, delay=0)
        last = [0.0]

        def progress(files: int, nbytes: int) -> None:
            if files and time.monotonic() - last[0] > 5:
                last[0] = time.monotonic()
                log.info("unmount: waiting for %d uploads (%s)", files, format_size(nbytes))
                notify.status(f"unmount: waiting for {files} uploads ({format_size(nbytes)})")

        left = await self.flusher.drain(progress=progress, give_up_after=0)
        return [
            f"{self.ns.path_of(p.inode)}: {p.error} (kept in "
            f"{p.inode.staging.path if p.inode.staging else '?'}; uploaded at the next mount)"
            for p in left
        ]

    def serve(self, on_ready: Callable[[], None] | None = None) -> int:
        """Check, recover, mount, run until unmounted or signalled, clean up. Exit code."""
        mounted = False

        def ready() -> None:
            nonlocal mounted
            mounted = True
            if on_ready:
                on_ready()

        try:
            trio.run(self.main, ready)
        finally:
            if mounted:
                pyfuse3.close(unmount=True)
                events.event(
                    log, "unmount", mountpoint=self.mountpoint, not_uploaded=len(self.left)
                )
            self.cache.journal.close()
            self.policy_store.close()
        for line in self.left:
            log.error("not uploaded: %s", line)
        return 1 if self.left else 0


def setup_logging(level: str = "INFO", logfile: Path | None = None) -> None:
    handler: logging.Handler
    if logfile is not None:
        logfile.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(logfile)
    else:
        handler = events.console_handler()  # the journal's native protocol under systemd
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
