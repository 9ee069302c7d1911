"""Keeps each bucket's policy holding the statements this node's grants imply: `Exporter`.

Owns the export task of the daemon's nursery: woken after every policy change (grants,
teams, memberships, expiry, records from other nodes), it waits a moment for the rest
of a burst, then for each bucket reads the policy, merges (export.py) and writes it only
if it differs. Every `[object_acl] poll_interval` (with jitter) it reads again and
repairs what differs (a statement deleted or changed by hand, an older view written by
another node), with a log line naming what was repaired. Every node computes the same
statements from the same policy, so nodes converge without a leader. The document is kept
under `[object_acl] max_policy_bytes` (budget.py); grants left out are logged once each,
counted, and named by `verdict` to `fedfs share`, `fedfs grants` and `fedfs status`.
`caught_up` lets a command wait (bounded) for the pass that includes its change. An outage
of the store is logged and retried with backoff; nothing here stops the daemon.

Runs in the trio thread; S3 requests go to worker threads through store/threads.py, and
principal lookups (identity: NSS or LDAP) to worker threads under their own limiter.
Calls the store, the policy's Sharing (read only) and principals.py/export.py/budget.py.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import trio

from fedfs.errors import FedfsError
from fedfs.events import event
from fedfs.policy.model import Grant, Team
from fedfs.policy.objectacl import budget, export
from fedfs.policy.objectacl.principals import PrincipalMap
from fedfs.store.s3 import ObjectStore
from fedfs.store.threads import WorkerThreads

log = logging.getLogger(__name__)

DEBOUNCE = 0.2  # seconds to gather a burst of changes (a team of 50 added one by one)
JITTER = 0.2  # the poll interval varies by this fraction, so nodes do not poll in step
MIN_RETRY = 1.0  # seconds before retrying a bucket the store failed for, doubling


@dataclass(frozen=True)
class Verdict:
    """Why a grant is not in its bucket's policy: a few words (a table cell), and in full."""

    short: str
    detail: str


@dataclass
class PolicyView:
    """What export reads of the policy: the grants in force, teams and group members."""

    grants: Callable[[], list[Grant]]
    teams: Callable[[], list[Team]]
    groups: Callable[[], dict[str, frozenset[str]]]
    limits: Callable[[], list[export.Limit]] = list  # owners' limits on grants


@dataclass
class BucketState:
    """What this node last did for one bucket, for status and for quiet logs."""

    synced: float | None = None  # time.time() of the last sync that reached the store
    error: str | None = None  # the last failure, None after a success
    writes: int = 0
    repairs: int = 0
    retry: float = 0.0  # seconds before the next try after a failure (0: none pending)
    said: set[str] = field(default_factory=set)  # skip reasons already logged
    skipped: tuple[export.Skipped, ...] = ()  # grants (or members) export cannot name
    fitted: budget.Fitted | None = None  # the last document's sizes and the grants left out
    full_said: set[tuple[str, str]] = field(default_factory=set)  # left out, logged once
    # Sids of fedfs's statements as this node last left the policy (None: not yet)
    ours: frozenset[str] | None = None

    def left_out(self) -> dict[tuple[str, str], Grant]:
        """The grants the budget left out of the policy, by (path, principal)."""
        found = self.fitted.left_out if self.fitted else ()
        return {(g.path, str(g.principal)): g for g in found}


class Exporter:
    """The export task: run() in the daemon's nursery, wake() after each policy change."""

    def __init__(
        self,
        buckets: Iterable[str],
        store: ObjectStore,
        s3: WorkerThreads,
        view: PolicyView,
        principals: PrincipalMap,
        poll_interval: float,
        max_policy_bytes: int = budget.DEFAULT_MAX_BYTES,
    ) -> None:
        self.buckets = list(buckets)
        self.store = store
        self.s3 = s3
        self.view = view
        self.principals = principals
        self.poll_interval = poll_interval
        self.max_policy_bytes = max_policy_bytes
        self.identity_limiter = trio.CapacityLimiter(2)
        self.state = {b: BucketState() for b in self.buckets}
        self._woken = trio.Event()
        self.passes = 0  # completed passes over every bucket (tests wait for one)
        self.changes = 0  # wake() calls so far
        self.done = 0  # the value of `changes` the last completed pass started from
        self._passed = trio.Event()

    def status(self) -> list[dict[str, Any]]:
        """Per bucket: when its policy was last brought in line, writes, repairs, the error."""
        return [
            {
                "bucket": bucket,
                "synced_ago": None if st.synced is None else round(time.time() - st.synced, 1),
                "writes": st.writes,
                "repairs": st.repairs,
                "error": st.error,
                "bytes": st.fitted.size if st.fitted else None,
                "needed_bytes": st.fitted.needed if st.fitted else None,
                "max_bytes": self.max_policy_bytes,
                "not_exported": [
                    {**grant_key(g), "granted_by": g.granted_by} for g in st.left_out().values()
                ],
            }
            for bucket, st in self.state.items()
        ]

    def not_exported(self) -> int:
        """Grants the budget leaves out of their bucket's policy (a metric)."""
        return sum(len(st.left_out()) for st in self.state.values())

    def wake(self) -> None:
        """Policy changed: export soon. Called from the trio thread."""
        self.changes += 1
        self._woken.set()

    async def caught_up(self, timeout: float) -> bool:
        """Wait up to `timeout` s for a pass that started after every change so far."""
        target = self.changes
        with trio.move_on_after(timeout):
            while self.done < target:
                await self._passed.wait()
        return self.done >= target

    def verdict(self, grant: Grant) -> Verdict | None:
        """Why a grant in force is not (yet) in its bucket's policy; None when it is."""
        bucket = grant.path.split("/", 2)[1]
        st = self.state.get(bucket)
        if st is None:
            return None
        if (grant.path, str(grant.principal)) in st.left_out() and st.fitted is not None:
            return Verdict("the bucket policy is full", st.fitted.reason(bucket))
        for s in st.skipped:
            if s.grant.path == grant.path and s.grant.principal == grant.principal:
                why = s.reason + (f" ({s.user})" if s.user else "")
                return Verdict(why, why)
        if st.error is not None:
            why = f"exporting to the bucket policy of {bucket} fails: {st.error}"
            return Verdict("the export fails (fedfs status)", why)
        return None

    async def run(self) -> None:
        reason = "start"
        while True:
            try:
                await self.sync_all(reason)
            except Exception:  # a fault of ours must not take the mount down: next round
                log.exception("exporting grants to bucket policies failed")
            wait = self.poll_interval * random.uniform(1 - JITTER, 1 + JITTER)
            retries = [s.retry for s in self.state.values() if s.retry]
            if retries:
                wait = min(wait, *retries)
            with trio.move_on_after(wait):
                await self._woken.wait()
            reason = "change" if self._woken.is_set() else "poll"
            if reason == "change":
                await trio.sleep(DEBOUNCE)
            self._woken = trio.Event()

    async def sync_all(self, reason: str) -> None:
        """One pass: every bucket's policy brought to what the grants imply."""
        started = self.changes  # read with the grants: no await in between
        grants, teams, groups = self.view.grants(), self.view.teams(), self.view.groups()
        principals = await self._principals(grants, teams, groups)
        for bucket in self.buckets:
            await self.sync_bucket(bucket, reason, grants, teams, groups, principals)
        self.passes += 1
        self.done = max(self.done, started)
        self._passed.set()
        self._passed = trio.Event()

    async def _principals(
        self, grants: list[Grant], teams: list[Team], groups: dict[str, frozenset[str]]
    ) -> dict[str, str | None]:
        by_team = {t.name: t for t in teams}
        users = sorted({u for g in grants for u in export.users_of(g, by_team, groups)})

        def lookup() -> dict[str, str | None]:
            return {user: self.principals.principal_of(user) for user in users}

        return await trio.to_thread.run_sync(
            lookup, limiter=self.identity_limiter, abandon_on_cancel=True
        )

    async def sync_bucket(
        self,
        bucket: str,
        reason: str,
        grants: list[Grant],
        teams: list[Team],
        groups: dict[str, frozenset[str]],
        principals: dict[str, str | None],
    ) -> None:
        state = self.state[bucket]
        wanted = export.desired(
            bucket, grants, teams, groups, principals, time.time(), self.view.limits()
        )
        self._say_skipped(bucket, state, wanted.skipped)
        state.skipped = wanted.skipped
        try:
            document = await self.s3(self.store.get_bucket_policy, bucket)
            top, present = export.parse(bucket, document)
            claim = {s["Sid"] for s in wanted.statements}
            foreign = export.foreign_of(present, claim)
            fitted = budget.fit(top, foreign, wanted, self.max_policy_bytes)
            self._say_left_out(bucket, state, fitted)
            change = export.merge(bucket, document, fitted.statements, claim)
            if change is not None:
                if change.document is None:
                    await self.s3(self.store.delete_bucket_policy, bucket)
                else:
                    await self.s3(self.store.put_bucket_policy, bucket, change.document)
        except export.UnreadablePolicy as e:
            self._failed(bucket, state, str(e), retry=False)
            return
        except FedfsError as e:
            self._failed(bucket, state, str(e), retry=True)
            return
        if state.error is not None:
            event(log, "object-acl-export-recovered", bucket=bucket)
        state.synced, state.error, state.retry = time.time(), None, 0.0
        prev, state.ours = state.ours, frozenset(s["Sid"] for s in fitted.statements)
        if change is None:
            return
        state.writes += 1
        # A repair puts back what someone else took away or changed (by hand, or another
        # node from an older view): a statement this node had left there, or one it never
        # wrote. A pass started by a change can find one too (alice's PutBucketPolicy is
        # also an import observation, which wakes the export).
        repair = reason == "poll" or (
            prev is not None
            and (bool(set(change.added) & prev) or bool(set(change.removed) - prev))
        )
        state.repairs += repair
        event(
            log,
            "object-acl-repair" if repair else "object-acl-export",
            severity=logging.WARNING if repair else logging.INFO,
            bucket=bucket,
            added=",".join(change.added) or None,
            removed=",".join(change.removed) or None,
            statements=len(fitted.statements),
            bytes=fitted.size,
            msg=(
                "the bucket policy did not hold the statements fedfs's grants imply (changed "
                "by hand, or written from an older view); restored them, other statements kept"
                if repair
                else None
            ),
        )

    def _failed(self, bucket: str, state: BucketState, error: str, retry: bool) -> None:
        if error != state.error:
            event(
                log,
                "object-acl-export-failed",
                severity=logging.WARNING,
                bucket=bucket,
                error=error,
                msg="grants are not mirrored to this bucket's policy until this is fixed; "
                + ("retrying" if retry else f"checking again every {self.poll_interval:g} s"),
            )
        state.error = error
        if retry:
            state.retry = min(self.poll_interval, max(MIN_RETRY, state.retry * 2))

    def _say_left_out(self, bucket: str, state: BucketState, fitted: budget.Fitted) -> None:
        state.fitted = fitted
        out = state.left_out()
        state.full_said &= set(out)  # one exported again is logged again if it drops out
        for key, g in sorted(out.items()):
            if key in state.full_said:
                continue
            state.full_said.add(key)
            event(
                log,
                "object-acl-not-exported",
                severity=logging.WARNING,
                bucket=bucket,
                path=g.path,
                principal=g.principal,
                granted_by=g.granted_by,
                msg=f"in force through the mount, not in the bucket policy: {fitted.reason(bucket)}"
                "; remove grants with `fedfs unshare` or raise max_policy_bytes",
            )

    def _say_skipped(
        self, bucket: str, state: BucketState, skipped: Iterable[export.Skipped]
    ) -> None:
        for s in skipped:
            key = f"{s.grant.path}\0{s.grant.principal}\0{s.user}\0{s.reason}"
            if key in state.said:
                continue
            state.said.add(key)
            event(
                log,
                "object-acl-not-exported",
                severity=logging.WARNING,
                bucket=bucket,
                path=s.grant.path,
                principal=s.grant.principal,
                user=s.user,
                msg=f"not mirrored to the bucket policy: {s.reason}",
            )


def grant_key(grant: Grant) -> dict[str, object]:
    """A grant as the fields that name it in status."""
    return {"path": grant.path, "principal": str(grant.principal), "level": str(grant.level)}
