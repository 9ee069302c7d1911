"""Keeping the POSIX view in step with each bucket's own policy and ACL (the import side).

At mount and every [object_acl] poll_interval (with jitter), a watcher node reads
each bucket's policy and ACL, maps them (imported.py) and, when what they give
changed, hands the observation to Sharing (new engine, the kernel's cached
attributes dropped), logs it and records it in the signed audit chain. A
statement that cannot be mapped is logged once and listed for status, doctor
and metrics. `apply_observation` is the one way an observation enters, from
this node's poll or from another node's record (idempotent: the payload is the
bucket's full observed rights).
Runs in the trio thread; S3 reads and identity lookups go to worker threads.
Calls the store, identity, audit and policy/sharing.py.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import trio

from fedfs.audit.chain import AuditTrail
from fedfs.config import ObjectAclConfig
from fedfs.errors import FedfsError, PolicyError
from fedfs.events import event
from fedfs.identity.source import IdentitySource
from fedfs.policy.objectacl.export import is_owned
from fedfs.policy.objectacl.imported import EVERYONE, Observed, Right, Unmapped, observe
from fedfs.policy.objectacl.principals import PrincipalMap
from fedfs.policy.sharing import Sharing
from fedfs.store.s3 import ObjectStore

log = logging.getLogger(__name__)
T = TypeVar("T")

KIND = "object-acl"  # the kind of the "observe" records of this module (policy/replay.py)
OBSERVED = "object-acl-observed"  # the log event; also the audit action when not published


@dataclass
class Importer:
    cfg: ObjectAclConfig
    buckets: list[str]
    store: ObjectStore
    sharing: Sharing
    identity: IdentitySource
    trail: AuditTrail
    limiter: trio.CapacityLimiter
    node: str = "local"
    unmapped: dict[str, tuple[Unmapped, ...]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # bucket -> why the last read failed
    polls: int = 0
    changes: int = 0
    unmapped_seen: int = 0  # distinct unmappable statements reported (counter)
    last_poll: float | None = None
    _reported: set[tuple[str, str, str]] = field(default_factory=set)
    _principals: PrincipalMap = field(init=False)

    def __post_init__(self) -> None:
        self._principals = PrincipalMap(self.cfg, self.identity)
        self.sharing.on_observation(KIND, self._observer)
        self._restore()

    def _restore(self) -> None:
        """The observations the policy store kept (a restart): in force until the first
        poll, and what that poll compares with (a policy unchanged since is no change).
        The engine picks them up at the daemon's first Sharing.rebuild."""
        for _, bucket, _, payload in self.sharing.store.observations(KIND):
            if bucket not in self.buckets:
                continue
            try:
                self._take(Observed.from_json(payload), time.time())
            except PolicyError as e:
                log.error("a kept object-acl observation of %s that cannot be read: %s", bucket, e)

    async def run(self) -> None:
        """Poll until cancelled (the first poll is the mount's: see poll_all)."""
        while True:
            await trio.sleep(self.cfg.poll_interval * random.uniform(0.8, 1.2))
            await self.poll_all()

    async def poll_all(self) -> None:
        for bucket in self.buckets:
            await self.poll(bucket)
        self.polls += 1
        self.last_poll = time.time()

    async def poll(self, bucket: str) -> None:
        """Read one bucket's policy and ACL; apply what they give when it changed."""
        try:
            policy = await self._s3(self.store.get_bucket_policy, bucket)
            acl = await self._s3(self.store.get_bucket_acl, bucket)
        except FedfsError as e:
            if self.errors.get(bucket) != str(e):
                event(
                    log,
                    "object-acl-unreadable",
                    severity=logging.WARNING,
                    bucket=bucket,
                    msg=f"cannot read the bucket policy or ACL of {bucket} ({e}); the view "
                    "keeps what was last observed; `fedfs doctor` checks the credentials",
                )
            self.errors[bucket] = str(e)
            return
        self.errors.pop(bucket, None)
        now = time.time()
        observed = await trio.to_thread.run_sync(
            self._observe, bucket, policy, acl, now, limiter=self.limiter
        )
        await self.apply_observation(self._since(observed, now), now)

    def _since(self, observed: Observed, now: float) -> Observed:
        """observed with each right's `since`: when it was first observed (kept from the
        last observation of the bucket, here or from the policy store after a restart)."""
        previous = self.sharing.imported.get(observed.bucket)
        if previous is None:
            kept = self.sharing.store.observation(KIND, observed.bucket)
            try:
                previous = (Observed.from_json(kept[1]), now) if kept else None
            except PolicyError:
                previous = None
        first: dict[tuple[str, str, int, str, str], float] = {}
        denied: dict[tuple[str, str, str], float] = {}
        if previous is not None:
            for r in previous[0].rights:
                first[_same(r)] = previous[1] if r.since is None else r.since
            for d in previous[0].denials:
                denied[(d.path, d.who, d.source)] = previous[1] if d.since is None else d.since
        return replace(
            observed,
            rights=tuple(replace(r, since=first.get(_same(r), now)) for r in observed.rights),
            denials=tuple(
                replace(d, since=denied.get((d.path, d.who, d.source), now))
                for d in observed.denials
            ),
        )

    def _observe(self, bucket: str, policy: str | None, acl: Any, now: float) -> Observed:
        """Worker thread: the mapping, with principals that name users this node knows."""
        known: dict[str, str | None] = {}

        def local_user(principal: str) -> str | None:
            if principal not in known:
                known[principal] = self._principals.user_of(principal)
            return known[principal]

        return observe(bucket, policy, acl, local_user, now, is_owned)

    async def _s3(self, fn: Callable[[str], T], bucket: str) -> T:
        return await trio.to_thread.run_sync(fn, bucket, limiter=self.limiter)

    async def apply_observation(self, observed: Observed, when: float) -> bool:
        """Make observed the bucket's imported rights; True when the view changed.

        It becomes an "observe" record of kind "object-acl" (Sharing.publish_observation):
        signed in the audit chain and carried by the shared policy log to every node,
        where `_observer` applies it. Its payload is the bucket's whole observed state,
        so applying the same observation twice changes nothing the second time.
        """
        bucket = observed.bucket
        if bucket not in self.buckets:
            raise PolicyError(
                f"an observation of bucket {bucket!r}, which this mount does not serve"
            )
        try:
            return await self.sharing.publish_observation(
                KIND,
                bucket,
                json.loads(observed.to_json()),
                path=f"/{bucket}",
                summary=_summary(observed)[:2000],
            )
        except PolicyError as e:  # too large for a log record, or this node may not publish
            event(
                log,
                "object-acl-not-published",
                severity=logging.WARNING,
                bucket=bucket,
                msg=f"bucket {bucket}: the observation is applied on this node only: {e}",
            )
            return await self._apply_here(observed, when)

    def _observer(self, store: object, key: str, payload: Any) -> list[str]:
        """policy/replay.py Observer: an observation of bucket `key`, this node's or
        another's; in the store's transaction, so no awaits and no I/O but the log."""
        try:
            observed = Observed.from_json(json.dumps(payload))
        except (PolicyError, TypeError, ValueError) as e:
            log.error("an object-acl observation of %s that cannot be read: %s", key, e)
            return []
        if observed.bucket != key or key not in self.buckets:
            return []
        return [f"/{key}"] if self._take(observed, time.time()) else []

    def _take(self, observed: Observed, when: float) -> bool:
        """Note the unmappable statements (once each) and make observed the bucket's
        imported rights; True when they changed."""
        bucket = observed.bucket
        self.unmapped[bucket] = observed.unmapped
        for u in observed.unmapped:
            key = (bucket, u.sid, u.reason)
            if key not in self._reported:
                self._reported.add(key)
                self.unmapped_seen += 1
                event(
                    log,
                    "object-acl-unmapped",
                    severity=logging.WARNING,
                    bucket=bucket,
                    sid=u.sid,
                    msg=f"bucket {bucket}: statement {u.sid}: {u.reason}",
                )
        previous = self.sharing.imported.get(bucket)
        if previous is not None and previous[0] == observed:
            return False
        self.sharing.imported[bucket] = (observed, when)
        self.changes += 1
        event(
            log,
            OBSERVED,
            bucket=bucket,
            rights=len(observed.rights),
            denials=len(observed.denials),
            unmapped=len(observed.unmapped),
            msg=f"bucket {bucket}: its own policy and ACL now give: {_summary(observed)}",
        )
        return True

    async def _apply_here(self, observed: Observed, when: float) -> bool:
        """Apply on this node only, with an audit record of its own (no policy log record)."""
        bucket = observed.bucket
        previous = self.sharing.imported.get(bucket)
        if not self._take(observed, when):
            return False
        await self.sharing.changed([f"/{bucket}"])
        payload = observed.to_json()
        self.trail.append(
            actor_uid=0,
            actor="object-store",
            action=OBSERVED,
            path=f"/{bucket}",
            before=(_summary(previous[0]) if previous else "nothing observed")[:2000],
            after=_summary(observed)[:2000],
            detail={
                "digest": hashlib.sha256(payload.encode()).hexdigest(),
                "rights": len(observed.rights),
                "denials": len(observed.denials),
                "unmapped": len(observed.unmapped),
            },
        )
        return True

    def status(self) -> dict[str, object]:
        """What status and doctor show: polling, read errors, statements not mapped."""
        return {
            "watcher": self.cfg.watcher,
            "poll_interval": self.cfg.poll_interval,
            "polls": self.polls,
            "last_poll": self.last_poll,
            "changes": self.changes,
            "errors": dict(self.errors),
            "imported": {
                bucket: len(observed.rights) + len(observed.denials)
                for bucket, (observed, _) in self.sharing.imported.items()
            },
            "unmapped": [
                {"bucket": bucket, "sid": u.sid, "reason": u.reason}
                for bucket, found in sorted(self.unmapped.items())
                for u in found
            ],
        }


def _same(r: Right) -> tuple[str, str, int, str, str]:
    """What makes a right the same one across polls (a new expiry date does not)."""
    return (r.path, r.who, r.level, r.source, r.shape)


def _summary(observed: Observed) -> str:
    """The rights and denials of an observation in one line, for the log and the audit."""
    parts = [
        f"{'other' if r.who == EVERYONE else r.who} {_covers(r)} ({r.source})"
        for r in observed.rights
    ]
    parts += [
        f"{'other' if d.who == EVERYONE else d.who} denied on {d.path} ({d.source})"
        for d in observed.denials
    ]
    return "; ".join(parts) or "nothing"


def _level(level: int) -> str:
    return "write" if level >= 2 else "read"


def _covers(r: Right) -> str:
    """What a right covers, in words (docs/OBJECT_ACL.md "Prefixes and objects")."""
    if r.shape == "list":
        return f"list {r.path} and below"
    if r.shape == "list-one":
        return f"list {r.path}"
    if r.shape == "prefix":
        return f"{_level(r.level)} on {r.path} and under {r.path}/"
    if r.shape == "below":
        return f"{_level(r.level)} under {r.path}/"
    return f"{_level(r.level)} on {r.path}"
