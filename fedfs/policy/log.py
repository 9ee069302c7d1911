"""The shared policy log: how a change made on one node reaches every node.

Every policy change is already a signed audit record (fedfs/audit.py) that carries
what is needed to redo it (fedfs/policy/replay.py). With `[policy] log_bucket`
set, each node also publishes its audit chain, record by record, to the object
store, and reads every other node's records back:

  PREFIX/events/HLC-NODE-SEQ     one record (canonical JSON); HLC is the node's
                                 hybrid clock when it published, so keys sort by
                                 time and two nodes never write the same key
  PREFIX/nodes/KEYID.json        a node key enrolled (or revoked) by an admin key
  PREFIX/snapshots/HLC-NODE.json the whole policy as one node saw it, signed
  PREFIX/changed                 the change marker: rewritten after each publication
  PREFIX/watchers/NODE           a watcher node's heartbeat, every `list_interval`

Tailing: every `poll_interval` a node reads the change marker with one conditional
GET (If-None-Match its last ETag: 304 while nothing changed). Only when the marker
changed, and every `list_interval` anyway (with jitter), does it list the events
after its cursor minus `lookback` seconds (so an event whose upload finished a
little late is still seen). A writer rewrites the marker after its events are
stored, with contents no other write has (the newest key, node and clock), so
two writers at once still change its ETag, and the reader that sees either
change lists both events; the marker is read before the LIST and its ETag kept
only once the LIST succeeded. An event whose marker write was lost (a crash
between the two) is found by the safety LIST: the cursor does not move without
a LIST, so it is still inside the window. The node checks each new event —
enrolled and unrevoked key, valid signature, the next record of that node's
chain — and applies it in one SQLite transaction
with the node's new chain head, so each record is applied exactly once. A
record that fails a check is rejected, reported once (log line, status,
metric) and never applied; a record that arrives before its predecessor waits
for it. Because records apply last-writer-wins per item, nodes that saw records
in different orders still agree.

A node publishes only once its key is enrolled, and refuses policy changes
before that (they would be rejected everywhere else). A new node starts from the
newest valid snapshot and the tail after it; snapshots are written by whichever
node has seen `snapshot_every` records since the newest one. Enrolments are read
again when the marker says an admin changed one (`fedfs admin enroll-node` and
`revoke-node` rewrite it), every `list_interval`, and at once for a key not seen
before: a revocation takes effect within one poll interval, or `list_interval`
if a publication overwrote the admin's marker before a node read it.

"observe" records (policy/replay.py) are carried like any other record: they are
what watcher nodes saw in the object store, applied on every node. Watchers
([object_acl] watcher) also rewrite a heartbeat object, so `fedfs doctor` can say
when no watcher is up (docs/OPERATIONS.md, "Watchers").

The object store is trusted to keep objects, not to say what policy is: every
record and snapshot is verified against keys an admin enrolled.
"""

from __future__ import annotations

import json
import logging
import random
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import trio
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fedfs.audit.chain import (
    GENESIS_HASH,
    AuditRecord,
    AuditTrail,
    KeyEntry,
    KeyRing,
    SigningKey,
    VerifyReport,
    canonical_json,
    check_next,
    key_id_of,
    verify,
)
from fedfs.config import PolicyConfig
from fedfs.errors import (
    AuditError,
    FedfsError,
    NotFound,
    PolicyError,
    StoreError,
    StoreRefused,
    TooLarge,
)
from fedfs.events import event
from fedfs.policy import replay
from fedfs.policy.hlc import format_hlc, parse_hlc
from fedfs.policy.model import TREE, Grant, Level, Principal, check_shape
from fedfs.policy.sharing import Refused, Sharing
from fedfs.policy.store import grant_row
from fedfs.store.s3 import ObjectStore

log = logging.getLogger(__name__)

EVENTS, NODES, SNAPSHOTS, MARKER = "events/", "nodes/", "snapshots/", "changed"
WATCHERS = "watchers/"
FORMAT = 1
_EVENT_RE = re.compile(r"(\d{13}\.\d{5})-([A-Za-z0-9][A-Za-z0-9._-]{0,63})-(\d{10})")
_SNAPSHOT_RE = re.compile(r"(\d{13}\.\d{5})-([A-Za-z0-9][A-Za-z0-9._-]{0,63})\.json")
_RECORD_LIMIT = 512 * 1024  # a record is a few hundred bytes; an observation may be far more
_SNAPSHOT_LIMIT = 512 * 1024 * 1024
_KEEP_SNAPSHOTS = 3
_REJECTED_KEPT = 1000
_MARKER_NODES = b"nodes "  # the marker's first word when an enrolment changed


class LogError(FedfsError):
    """The shared policy log cannot be used as configured."""


# -- admin keys and enrolment ----------------------------------------------------


def load_public_key(path: Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as e:
        raise LogError(f"{path}: not a readable PEM public key ({e})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise LogError(f"{path}: not an Ed25519 public key")
    return key


def load_admin_keys(paths: Iterable[Path]) -> dict[str, Ed25519PublicKey]:
    return {key_id_of(k): k for k in (load_public_key(p) for p in paths)}


@dataclass(frozen=True)
class Enrollment:
    """An admin's signed statement: this public key speaks for this node (until revoked)."""

    node: str
    key_id: str
    public_pem: str
    enrolled_at: float
    admin_key_id: str
    revoked_at: float | None = None
    signature: str = ""

    def _body(self) -> bytes:
        body = asdict(self)
        del body["signature"]
        return canonical_json({"v": FORMAT, **body})

    @classmethod
    def make(
        cls,
        admin: SigningKey,
        node: str,
        public_pem: str,
        enrolled_at: float | None = None,
        revoked_at: float | None = None,
    ) -> Enrollment:
        pub = serialization.load_pem_public_key(public_pem.encode())
        if not isinstance(pub, Ed25519PublicKey):
            raise LogError("the node key is not an Ed25519 public key")
        unsigned = cls(
            node,
            key_id_of(pub),
            public_pem,
            time.time() if enrolled_at is None else enrolled_at,
            admin.key_id,
            revoked_at,
        )
        signature = admin.private_key.sign(unsigned._body()).hex()
        return cls(**{**asdict(unsigned), "signature": signature})

    def encode(self) -> bytes:
        return canonical_json({"v": FORMAT, **asdict(self)})

    @classmethod
    def decode(cls, data: bytes) -> Enrollment:
        try:
            obj = json.loads(data)
            if obj.pop("v") != FORMAT:
                raise ValueError("unknown format version")
            return cls(**obj)
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise LogError(f"not an enrolment record ({e})") from None

    def check(self, admins: dict[str, Ed25519PublicKey]) -> str | None:
        """Why this enrolment cannot be trusted, or None."""
        admin = admins.get(self.admin_key_id)
        if admin is None:
            return f"signed by admin key {self.admin_key_id}, which is not in [policy] admin_keys"
        try:
            admin.verify(bytes.fromhex(self.signature), self._body())
            pub = serialization.load_pem_public_key(self.public_pem.encode())
        except (InvalidSignature, ValueError):
            return "its signature does not match its contents"
        if not isinstance(pub, Ed25519PublicKey) or key_id_of(pub) != self.key_id:
            return "its key id does not match its public key"
        return None

    @property
    def public_key(self) -> Ed25519PublicKey:
        pub = serialization.load_pem_public_key(self.public_pem.encode())
        assert isinstance(pub, Ed25519PublicKey)
        return pub


class LogStore:
    """The log's objects in the control bucket (blocking; call from worker threads)."""

    def __init__(self, store: ObjectStore, bucket: str, prefix: str) -> None:
        self.store, self.bucket, self.prefix = store, bucket, prefix

    def where(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def put_enrollment(self, e: Enrollment) -> None:
        self.store.put_bytes(self.bucket, f"{self.prefix}{NODES}{e.key_id}.json", e.encode(), {})
        self.put_marker(f"nodes {e.key_id} {time.time():.6f}")

    def put_marker(self, text: str) -> None:
        """Rewrite the change marker; `text` must differ from every earlier one."""
        self.store.put_bytes(self.bucket, self.prefix + MARKER, text.encode() + b"\n", {})

    def marker(self, etag: str | None) -> tuple[str, bytes] | None:
        """(ETag, contents) of the change marker, ("", b"") when there is none, or None
        while its ETag is still `etag` (one conditional GET)."""
        try:
            return self.store.get_if_changed(self.bucket, self.prefix + MARKER, etag)
        except NotFound:
            return None if etag == "" else ("", b"")

    def enrollment_keys(self) -> list[tuple[str, str]]:
        """(key, ETag) of every enrolment object."""
        return [
            (o.key, o.etag)
            for page in self.store.list_all(self.bucket, self.prefix + NODES, delimiter=None)
            for o in page.objects
        ]

    def enrollments(self) -> list[tuple[str, bytes]]:
        return [(k, self.store.get_bytes(self.bucket, k)) for k, _ in self.enrollment_keys()]

    def put_event(self, hlc: str, record: AuditRecord) -> str:
        key = f"{self.prefix}{EVENTS}{hlc}-{record.node}-{record.seq:010d}"
        self.store.put_bytes(self.bucket, key, record.encode(), {})
        return key

    def put_watcher(self, node: str) -> None:
        body = canonical_json({"node": node, "time": round(time.time(), 3)})
        self.store.put_bytes(self.bucket, f"{self.prefix}{WATCHERS}{node}", body, {})

    def watchers(self) -> dict[str, float]:
        """node -> when the object store last received its heartbeat (epoch seconds)."""
        return {
            o.key.rsplit("/", 1)[-1]: o.last_modified
            for page in self.store.list_all(self.bucket, self.prefix + WATCHERS, delimiter=None)
            for o in page.objects
        }

    def event_keys(self, start_after: str) -> list[str]:
        return [
            o.key
            for page in self.store.list_all(
                self.bucket, self.prefix + EVENTS, delimiter=None, start_after=start_after
            )
            for o in page.objects
        ]

    def get(self, key: str, limit: int = _RECORD_LIMIT) -> bytes:
        return self.store.get_bytes(self.bucket, key, limit)

    def snapshot_keys(self) -> list[str]:
        return sorted(
            o.key
            for page in self.store.list_all(self.bucket, self.prefix + SNAPSHOTS, delimiter=None)
            for o in page.objects
        )

    def put_snapshot(self, hlc: str, node: str, data: bytes) -> str:
        key = f"{self.prefix}{SNAPSHOTS}{hlc}-{node}.json"
        self.store.put_bytes(self.bucket, key, data, {})
        return key

    def delete(self, keys: list[str]) -> None:
        if keys:
            self.store.delete_many(self.bucket, keys)


def event_name(key: str, prefix: str) -> tuple[str, str, int] | None:
    """(hlc, node, seq) from an event's object key, or None if it is not one."""
    m = _EVENT_RE.fullmatch(key[len(prefix + EVENTS) :])
    return (m[1], m[2], int(m[3])) if m else None


def _start_after(prefix: str, hlc: str, seconds: float) -> str:
    millis, _ = parse_hlc(hlc)
    return f"{prefix}{EVENTS}{format_hlc(max(0, millis - int(seconds * 1000)), 0)}"


def _hlc_of_key(key: str) -> str:
    return key.rsplit("/", 1)[-1][:19]


# -- snapshots -------------------------------------------------------------------


def snapshot_body(
    sharing: Sharing, heads: dict[str, tuple[int, str, str]], hlc: str
) -> dict[str, Any]:
    store = sharing.store
    return {
        "v": FORMAT,
        "hlc": hlc,
        "heads": {n: list(h) for n, h in sorted(heads.items())},
        "grants": [grant_row(g) for g in store.grants()],
        "teams": [
            {
                "name": t.name,
                "gid": t.gid,
                "group": t.group,
                "owners": sorted(t.owners),
                "members": sorted(t.members),
            }
            for t in store.teams()
        ],
        "stamps": store.stamps(),
        "observations": [list(o) for o in store.observations()],
    }


def sign_snapshot(body: dict[str, Any], node: str, key: SigningKey) -> bytes:
    signed = {**body, "node": node, "key_id": key.key_id}
    signature = key.private_key.sign(canonical_json(signed)).hex()
    return canonical_json({**signed, "signature": signature})


def open_snapshot(data: bytes, keys: dict[str, Enrollment]) -> dict[str, Any]:
    """A snapshot's contents once its signature checks out; LogError saying why not."""
    try:
        obj = json.loads(data)
        signature = bytes.fromhex(obj.pop("signature"))
        enrolled = keys.get(obj["key_id"])
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise LogError(f"not a snapshot ({e})") from None
    if enrolled is None or enrolled.node != obj.get("node"):
        raise LogError(f"signed by key {obj.get('key_id')}, not enrolled for {obj.get('node')}")
    if enrolled.revoked_at is not None:
        raise LogError(f"signed by revoked key {enrolled.key_id}")
    try:
        enrolled.public_key.verify(signature, canonical_json(obj))
    except InvalidSignature:
        raise LogError("its signature does not match its contents") from None
    if obj.get("v") != FORMAT:
        raise LogError(f"format version {obj.get('v')!r}")
    return dict(obj)


def import_snapshot(sharing: Sharing, snap: dict[str, Any]) -> None:
    """Load a verified snapshot into an empty store (one transaction)."""
    store = sharing.store
    with store.transaction():
        for t in snap["teams"]:
            store.create_team(t["name"], set(t["owners"]), set(t["members"]), t["group"], t["gid"])
        for g in snap["grants"]:
            store.put_grant(
                Grant(
                    g["path"],
                    Principal.parse(g["principal"]),
                    Level.parse(g["level"]),
                    g["granted_by"],
                    float(g["granted_at"]),
                    None if g["expires"] is None else float(g["expires"]),
                    check_shape(g.get("shape", TREE)),  # older snapshots: all "tree"
                )
            )
        for item, stamp in snap["stamps"].items():
            store.set_stamp(item, stamp)
        for kind, key, stamp, payload in snap.get("observations", []):
            replay.keep_observation(store, kind, key, json.loads(payload), stamp, sharing.observers)
        for node, (seq, hash_, key) in snap["heads"].items():
            store.set_head(node, int(seq), hash_, key)


# -- the running log ---------------------------------------------------------------


@dataclass
class Rejected:
    key: str
    reason: str
    at: float


class PolicyLog:
    """Publishes this node's records and applies every other node's (runs in the trio thread)."""

    def __init__(
        self,
        cfg: PolicyConfig,
        store: ObjectStore,
        sharing: Sharing,
        trail: AuditTrail,
        key: SigningKey,
        limiter: trio.CapacityLimiter,
        watcher: bool = False,
    ) -> None:
        """`watcher`: this node reads bucket policies for everyone ([object_acl] watcher)."""
        assert cfg.log_bucket is not None
        self.cfg = cfg
        self.node = cfg.node
        self.objects = LogStore(store, cfg.log_bucket, cfg.log_prefix)
        self.sharing = sharing
        self.trail = trail
        self.key = key
        self.limiter = limiter
        self.admins = load_admin_keys(cfg.admin_keys)
        self.enrolled: dict[str, Enrollment] = {}
        self.rejected: dict[str, Rejected] = {}
        self.rejected_total = 0
        self.applied_total = 0
        self.published_total = 0
        self.held: dict[str, int] = {}  # node -> seq waiting for its predecessor
        self.last_poll: float | None = None
        self.last_error: str | None = None  # reading the log
        self.publish_error: str | None = None  # writing to it
        self.newest_seen: str | None = None  # newest event key listed
        self.pending_since: float | None = None  # oldest unapplied, unrejected event seen
        self._wake = trio.Event()
        self._trail_offset = 0
        self._since_snapshot = 0
        self._own_head: tuple[int, str, str] | None = None
        self._snapshot_seen: str | None = None
        self._enrollment_cache: dict[str, tuple[str, Enrollment | None]] = {}
        self._publish_lock = trio.Lock()
        self._done: set[str] = set()  # event keys this process applied or found applied
        self._progress = trio.Event()  # set after every publishing attempt
        self._last_local_seq: int | None = None
        self._marker_etag: str | None = None  # the change marker as of the last LIST
        self._marker_due = False  # published events the marker does not announce yet
        self.marker_reads = 0
        self.lists = 0  # LISTs of the events (marker changes, safety LISTs, waits)
        self.watcher = watcher

    async def _io(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await trio.to_thread.run_sync(fn, *args, limiter=self.limiter)

    # -- enrolment ---------------------------------------------------------------

    async def refresh_enrollments(self) -> None:
        """Read the enrolments again: one LIST, and a GET only for objects that changed."""
        found: dict[str, Enrollment] = {}
        seen: dict[str, tuple[str, Enrollment | None]] = {}
        for key, etag in await self._io(self.objects.enrollment_keys):
            cached = self._enrollment_cache.get(key)
            if cached is not None and cached[0] == etag:
                seen[key] = cached
            else:
                seen[key] = (etag, self._trusted(key, await self._io(self.objects.get, key)))
            e = seen[key][1]
            if e is not None:
                found[e.key_id] = e
        self._enrollment_cache = seen
        self.enrolled = found

    def _trusted(self, key: str, data: bytes) -> Enrollment | None:
        try:
            e = Enrollment.decode(data)
        except LogError as err:
            self._reject(key, str(err))
            return None
        why = e.check(self.admins)
        if why is not None:
            self._reject(key, f"enrolment of node {e.node} refused: {why}")
            return None
        return e

    def enrollment(self) -> Enrollment | None:
        return self.enrolled.get(self.key.key_id)

    def enrollment_text(self) -> str:
        mine = self.enrollment()
        if mine is None:
            return (
                f"not enrolled: key {self.key.key_id} is not enrolled in {self.objects.where()}; "
                f"an admin runs `fedfs admin enroll-node --node {self.node} ...` "
                "(`fedfs admin node-key` prints this node's public key)"
            )
        if mine.node != self.node:
            return f"key {mine.key_id} is enrolled for node {mine.node}, not {self.node}"
        if mine.revoked_at is not None:
            return f"revoked: key {mine.key_id} was revoked at {_iso(mine.revoked_at)}"
        return f"enrolled: key {mine.key_id} since {_iso(mine.enrolled_at)}"

    def usable(self) -> bool:
        mine = self.enrollment()
        return mine is not None and mine.node == self.node and mine.revoked_at is None

    def check_may_change(self) -> None:
        """Sharing calls this before a change: unenrolled nodes' changes would be rejected."""
        if not self.usable():
            raise Refused(
                f"this node cannot change shared policy: {self.enrollment_text()}; "
                "changes made here would be rejected by the other nodes"
            )

    # -- start-up ----------------------------------------------------------------

    async def start(self) -> None:
        """Enrolments, the newest snapshot for a new node, then everything up to now."""
        store = self.sharing.store
        await self.refresh_enrollments()
        self._trail_offset = 0
        if store.meta("cursor") is None and not store.grants() and not store.teams():
            await self._bootstrap()
        stamps = store.stamps().values()
        if stamps:
            self.sharing.clock.observe(max(stamps)[:19])
        seen = await self._read_marker()
        while await self.poll():
            pass
        if seen is not None:
            self._marker_etag = seen[0]
        if self.watcher:
            try:
                await self._io(self.objects.put_watcher, self.node)
            except StoreError as e:
                log.warning(
                    "policy log %s: watcher heartbeat: %s; retrying", self.objects.where(), e
                )
        log.info(
            "policy log %s: %s; %d records applied at start",
            self.objects.where(),
            self.enrollment_text(),
            self.applied_total,
        )

    async def _bootstrap(self) -> None:
        keys = await self._io(self.objects.snapshot_keys)
        for key in reversed(keys):
            try:
                snap = open_snapshot(
                    await self._io(self.objects.get, key, _SNAPSHOT_LIMIT), self.enrolled
                )
            except (LogError, StoreError) as e:
                self._reject(key, f"snapshot not used: {e}")
                continue
            import_snapshot(self.sharing, snap)
            self.sharing.store.set_meta("cursor", f"{self.cfg.log_prefix}{EVENTS}{snap['hlc']}")
            self._snapshot_seen = snap["hlc"]
            event(log, "policy-snapshot-loaded", key=key, grants=len(snap["grants"]))
            return
        self.sharing.store.set_meta("cursor", f"{self.cfg.log_prefix}{EVENTS}")

    # -- running -----------------------------------------------------------------

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._tail_loop)
            nursery.start_soon(self._publish_loop)
            nursery.start_soon(self._snapshot_loop)

    def wake(self, record: AuditRecord | None = None) -> None:
        """Sharing made a record: publish it now."""
        if record is not None:
            self._last_local_seq = record.seq
        self._wake.set()

    def _published_seq(self) -> int:
        return int(self.sharing.store.meta("published_seq") or -1)

    async def confirm(self, timeout: float = 3.0) -> str | None:
        """After a change on this node: None once it is in the log, else what to tell the user.

        The change is in force here either way (it is in the policy database and the
        audit chain); this only says whether the other nodes can see it yet.
        """
        want = self._last_local_seq
        if want is None:
            return None
        with trio.move_on_after(timeout):
            while not self._announced(want):
                progress = self._progress
                await progress.wait()
                if not self._announced(want) and self.publish_error is not None:
                    break  # an attempt failed after the change was made
        if self._announced(want):
            return None
        why = self.publish_error or "the object store did not answer in time"
        if self._published_seq() >= want:
            return (
                f"in force on this node and in the shared policy log, but the log's change "
                f"marker could not be updated ({why}); the other nodes apply it within "
                f"[policy] list_interval ({self.cfg.list_interval:g} s), or sooner once this "
                "node updates the marker"
            )
        return (
            f"in force on this node, but not yet in the shared policy log ({why}); "
            "the other nodes keep the previous policy until the object store answers and "
            "this node publishes it (`fedfs status` shows what is waiting)"
        )

    def _announced(self, seq: int) -> bool:
        """Record `seq` of this node is in the log and the change marker says so."""
        return self._published_seq() >= seq and not self._marker_due

    def _next_safety_list(self) -> float:
        return trio.current_time() + self.cfg.list_interval * random.uniform(0.8, 1.0)

    async def _read_marker(self) -> tuple[str, bytes] | None:
        self.marker_reads += 1
        seen: tuple[str, bytes] | None = await self._io(self.objects.marker, self._marker_etag)
        self.last_poll = time.time()
        return seen

    async def _tail_loop(self) -> None:
        safety_list_at = self._next_safety_list()
        while True:
            await trio.sleep(self.cfg.poll_interval)
            try:
                seen = await self._read_marker()  # before the LIST: a later change reads as new
                safety = trio.current_time() >= safety_list_at
                if seen is None and not safety and not self.held:
                    self.last_error = None
                    continue  # nothing published since the last LIST: no LIST now
                if safety or (seen is not None and seen[1].startswith(_MARKER_NODES)):
                    await self.refresh_enrollments()
                while await self.poll():
                    pass
                if seen is not None:
                    self._marker_etag = seen[0]
                if safety:
                    safety_list_at = self._next_safety_list()
                    if self.watcher:
                        await self._io(self.objects.put_watcher, self.node)
                self.last_error = None
            except (StoreError, PolicyError) as e:
                if self.last_error is None:
                    log.warning("policy log %s: %s; retrying", self.objects.where(), e)
                self.last_error = str(e)

    async def _publish_loop(self) -> None:
        while True:
            with trio.move_on_after(self.cfg.poll_interval):
                await self._wake.wait()
            self._wake = trio.Event()
            if not self.usable():
                continue
            try:
                await self.publish()
                self.publish_error = None
            except StoreError as e:
                if self.publish_error is None:
                    log.warning("policy log %s: publishing: %s; retrying", self.objects.where(), e)
                self.publish_error = str(e)
            finally:
                self._progress.set()
                self._progress = trio.Event()

    def _unpublished(self) -> list[AuditRecord]:
        """This node's records not yet in the log, read on from where the last call stopped."""
        published = int(self.sharing.store.meta("published_seq") or -1)
        try:
            with open(self.trail.log_path, "rb") as f:
                f.seek(self._trail_offset)
                data = f.read()
        except FileNotFoundError:
            return []
        cut = data.rfind(b"\n") + 1
        self._trail_offset += cut
        records = [AuditRecord.decode(line) for line in data[:cut].split(b"\n") if line]
        return [r for r in records if r.seq > published]

    async def publish(self) -> int:
        """Upload this node's new records in chain order; returns how many."""
        async with self._publish_lock:  # two at once would upload a record twice
            return await self._publish()

    async def _publish(self) -> int:
        store = self.sharing.store
        backlog = self._unpublished()
        done = 0
        for i, record in enumerate(backlog):
            hlc = self.sharing.clock.now()
            try:
                key = await self._io(self.objects.put_event, hlc, record)
            except BaseException:
                # Read these again next time: rewind to the first record not uploaded.
                self._trail_offset = 0
                raise
            store.set_meta("published_seq", str(record.seq))
            self._own_head = (record.seq, record.hash, key)
            self._since_snapshot += 1
            self.published_total += 1
            self._marker_due = True
            done += 1
            if i == len(backlog) - 1:
                log.debug("published %d records up to %s", done, key)
        if self._marker_due and self._own_head is not None:
            # Unique contents, so the ETag changes even if another node writes at once.
            newest = self._own_head[2]
            await self._io(
                self.objects.put_marker, f"events {newest} {self.node} {self.sharing.clock.now()}"
            )
            self._marker_due = False
        return done

    def _cursor(self) -> str:
        store = self.sharing.store
        base = store.meta("cursor") or f"{self.cfg.log_prefix}{EVENTS}"
        heads = store.heads()
        # A node whose next record is late: read again from just before its head.
        for node in self.held:
            if node in heads and heads[node][2] < base:
                base = heads[node][2]
        hlc = _hlc_of_key(base)
        if not re.fullmatch(r"\d{13}\.\d{5}", hlc):
            return base
        return _start_after(self.cfg.log_prefix, hlc, self.cfg.lookback)

    async def poll(self) -> bool:
        """Read the log once and apply what is new; True when it is worth reading again at once."""
        keys = await self._io(self.objects.event_keys, self._cursor())
        self.lists += 1
        self.last_poll = time.time()
        store = self.sharing.store
        changed: set[str] = set()
        applied = 0
        self.held.clear()
        pending_since: float | None = None
        if len(self._done) > 100_000:  # keys behind the lookback window are not listed again
            self._done.clear()
        for key in keys:
            if key in self._done:  # applied or skipped on an earlier poll: nothing to do
                continue
            outcome = await self._consider(key)
            if isinstance(outcome, list) or outcome in ("own", "done"):
                self._done.add(key)
            if isinstance(outcome, list):
                changed.update(outcome)
                applied += 1
            elif outcome == "held":
                name = event_name(key, self.cfg.log_prefix)
                if name:
                    pending_since = pending_since or parse_hlc(name[0])[0] / 1000
        if keys:
            newest = keys[-1]
            self.newest_seen = max(self.newest_seen or newest, newest)
            if newest > (store.meta("cursor") or ""):
                store.set_meta("cursor", newest)
        self.pending_since = pending_since
        if applied:
            self.applied_total += applied
            self._since_snapshot += applied
            await self.sharing.changed(sorted(changed))
        return bool(applied) and bool(self.held)  # a late predecessor may have arrived

    async def _consider(self, key: str) -> list[str] | str:
        """One listed event: a list of changed paths once applied, else what happened."""
        if key in self.rejected:
            return "rejected"
        name = event_name(key, self.cfg.log_prefix)
        if name is None:
            self._reject(key, "not a policy event name (HLC-NODE-SEQ)")
            return "rejected"
        hlc, node, seq = name
        if node == self.node:
            return "own"
        store = self.sharing.store
        head_seq, head_hash, head_key = store.heads().get(node, (-1, GENESIS_HASH, ""))
        if seq <= head_seq:
            applied_as = store.applied_key(node, seq)
            if applied_as is not None and applied_as != key:
                self._reject(
                    key,
                    f"replayed: record {seq} of node {node} was applied already (as {applied_as})",
                )
                return "rejected"
            if applied_as is None and key > head_key:
                self._reject(key, f"replayed: node {node} is at record {head_seq} already")
                return "rejected"
            return "done"
        if seq > head_seq + 1:
            self.held[node] = seq
            return "held"
        try:
            data = await self._io(self.objects.get, key)
        except NotFound:
            return "gone"
        except (TooLarge, StoreRefused) as e:  # never stall every node on it
            self._reject(key, f"not read: {e}")
            return "rejected"
        try:
            record = AuditRecord.decode(data)
        except AuditError as e:
            self._reject(key, f"not a valid record: {e}")
            return "rejected"
        why = self._check(key, hlc, node, seq, data, record, head_hash)
        if why and "unknown key" in why:
            await self.refresh_enrollments()  # enrolled since we last looked?
            why = self._check(key, hlc, node, seq, data, record, head_hash)
        if why:
            self._reject(key, why)
            return "rejected"
        paths: list[str] = []
        with store.transaction():
            try:
                paths = replay.apply(store, record, self.sharing.observers) or []
            except PolicyError as e:
                # Authentic but not applicable here (e.g. a gid clash): the chain goes on.
                log.error("policy record %s of node %s not applied: %s", seq, node, e)
            store.set_head(node, seq, record.hash, key)
            store.keep_record(node, seq, key, data)
        self.sharing.clock.observe(replay.hlc_of(record))
        if record.action in replay.GRANT_ACTIONS | replay.TEAM_ACTIONS:
            event(
                log,
                "policy-applied",
                node=node,
                seq=seq,
                action=record.action,
                path=record.path,
                principal=record.principal,
            )
        return paths

    def keyring(self) -> KeyRing:
        return KeyRing(
            KeyEntry(e.key_id, e.public_key, e.node, 0.0, None) for e in self.enrolled.values()
        )

    def _check(
        self,
        key: str,
        hlc: str,
        node: str,
        seq: int,
        data: bytes,
        record: AuditRecord,
        prev_hash: str,
    ) -> str | None:
        why = check_next(seq, data, record, prev_hash, node, self.keyring())
        if why:
            return why
        enrolled = self.enrolled[record.key_id]
        if enrolled.revoked_at is not None:
            return f"signed by key {record.key_id} of node {node}, revoked at {_iso(enrolled.revoked_at)}"
        if replay.hlc_of(record) > hlc:
            return "its name is older than the record it holds (renamed or replayed)"
        return None

    def _reject(self, key: str, reason: str) -> None:
        if key in self.rejected:
            return
        self.rejected[key] = Rejected(key, reason, time.time())
        self.rejected_total += 1
        while len(self.rejected) > _REJECTED_KEPT:
            del self.rejected[next(iter(self.rejected))]
        event(log, "policy-event-rejected", severity=logging.WARNING, key=key, reason=reason)

    # -- snapshots ---------------------------------------------------------------

    async def _snapshot_loop(self) -> None:
        """Apart from tailing, so a snapshot's wait and upload never delay a revocation."""
        while True:
            await trio.sleep(self.cfg.poll_interval)
            try:
                await self._maybe_snapshot()
            except (StoreError, PolicyError) as e:
                log.warning("policy log %s: snapshot: %s; trying later", self.objects.where(), e)

    async def _maybe_snapshot(self) -> None:
        if self._since_snapshot < self.cfg.snapshot_every or not self.usable():
            return
        # Many nodes cross the threshold together: wait a little, then look again.
        await trio.sleep(random.uniform(0, 5 * self.cfg.poll_interval))
        keys = await self._io(self.objects.snapshot_keys)
        newest = _hlc_of_key(keys[-1]) if keys else None
        if newest and self._snapshot_seen != newest and newest > (self._snapshot_seen or ""):
            self._snapshot_seen = newest
            self._since_snapshot = 0
            return
        await self.write_snapshot(keys)

    async def write_snapshot(self, existing: list[str] | None = None) -> str:
        heads = self.sharing.store.heads()
        if self._own_head is not None:
            heads[self.node] = self._own_head
        hlc = self.sharing.clock.now()
        data = sign_snapshot(snapshot_body(self.sharing, heads, hlc), self.node, self.key)
        key = await self._io(self.objects.put_snapshot, hlc, self.node, data)
        self._snapshot_seen = hlc
        self._since_snapshot = 0
        old = sorted(
            existing if existing is not None else await self._io(self.objects.snapshot_keys)
        )
        await self._io(
            self.objects.delete, [k for k in old if k != key][: max(0, len(old) - _KEEP_SNAPSHOTS)]
        )
        event(log, "policy-snapshot", key=key, bytes=len(data))
        return key

    # -- questions ---------------------------------------------------------------

    def lag(self) -> float:
        """Seconds the oldest event seen but not yet applied has waited (0 when none)."""
        if self.pending_since is None:
            return 0.0
        return max(0.0, time.time() - self.pending_since)

    def status(self) -> dict[str, Any]:
        last = list(self.rejected.values())[-1] if self.rejected else None
        return {
            "log": self.objects.where(),
            "node": self.node,
            "enrolment": self.enrollment_text(),
            "lag": self.lag(),
            "last_poll_age": None if self.last_poll is None else time.time() - self.last_poll,
            "newest_event": self.newest_seen,
            "applied": self.applied_total,
            "published": self.published_total,
            "waiting": len(self.held),
            "watcher": self.watcher,
            "marker_reads": self.marker_reads,
            "lists": self.lists,
            "rejected": self.rejected_total,
            "last_rejected": None if last is None else f"{last.key}: {last.reason}",
            "error": self.publish_error or self.last_error,
            "unpublished": max(0, self.trail.writer.length - 1 - self._published_seq()),
            "nodes": sorted({e.node for e in self.enrolled.values() if e.revoked_at is None}),
            "revoked_keys": sorted(
                f"{e.node}:{e.key_id}" for e in self.enrolled.values() if e.revoked_at is not None
            ),
        }

    async def verify_all(self) -> dict[str, VerifyReport]:
        """Every node's chain as the log holds it, verified with the enrolled keys."""
        await self.refresh_enrollments()
        keys = await self._io(self.objects.event_keys, f"{self.cfg.log_prefix}{EVENTS}")
        chains: dict[str, list[tuple[int, bytes]]] = {}
        for key in keys:
            name = event_name(key, self.cfg.log_prefix)
            if name is None:
                continue
            data = await self._io(self.objects.get, key)
            chains.setdefault(name[1], []).append((name[2], data))
        ring = self.keyring()
        return {
            node: verify([d for _, d in sorted(items, key=lambda x: x[0])], ring, node=node)
            for node, items in sorted(chains.items())
        }


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
