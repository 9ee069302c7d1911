"""The audit log: signed, hash-chained records of every share, team and admin change.

This module owns the record format, its one canonical encoding, the signing keys
and the verifier. It does not store anything: a writer hands out records, the
caller keeps their bytes (files, objects) and later feeds them back to `verify`.

Encoding (version 1). A record is one JSON object with every field present
(absent values are ``null``) plus ``"v": 1``, serialized with sorted keys, no
whitespace, ``ensure_ascii=False`` and UTF-8. ``time`` is the shortest decimal
that reads back as the same double (what Python's ``repr`` and ``json`` emit,
e.g. ``1700000000.25``), so decode -> encode is byte-identical; NaN and infinity
are refused. Hashes and ids are lowercase hex. The encoding never contains a
raw newline, so a caller may store records as JSON lines.

A record's hash is SHA-256 over the canonical encoding of every field except
``signature``; the signature is Ed25519 over that 32-byte digest. Each record
carries the hash of the one before it (``"0" * 64`` for the first), so one chain
per node orders everything that node wrote.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import stat
import time as _time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from types import MappingProxyType
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from fedfs.errors import AuditError

FORMAT_VERSION = 1
GENESIS_HASH = "0" * 64
CHECKPOINT = "checkpoint"
DEFAULT_CHECKPOINT_EVERY = 100

# Actions fedfs itself writes; others are allowed so that a newer node's log
# still verifies on an older one.
ACTIONS = (
    "share",
    "unshare",
    "expire",
    "team-create",
    "team-add",
    "team-remove",
    "limit",  # an owner's chmod or setfacl set, moved or lifted an object's explicit mask
    "policy-change",
    "admin",
    CHECKPOINT,
)

_HASH_RE = re.compile(r"[0-9a-f]{64}")
_KEY_ID_RE = re.compile(r"[0-9a-f]{16}")
_SIGNATURE_RE = re.compile(r"[0-9a-f]{128}")
_OPTIONAL_TEXT = ("principal", "path", "level", "before", "after")
_FIELDS = frozenset(
    {
        "v",
        "seq",
        "node",
        "time",
        "actor_uid",
        "actor",
        "action",
        *_OPTIONAL_TEXT,
        "detail",
        "prev_hash",
        "key_id",
        "signature",
    }
)


def key_id_of(public_key: Ed25519PublicKey) -> str:
    """The id records name their key by: 16 hex chars of SHA-256 of the raw public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _canonical(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def canonical_json(obj: Mapping[str, Any]) -> bytes:
    """The one byte encoding that is signed: sorted keys, no whitespace, UTF-8."""
    return _canonical(obj)


def _is_int(value: object) -> bool:
    # bool is an int to Python but `true` to JSON: refusing it keeps one
    # spelling per value, and "1" from reading back as True.
    return isinstance(value, int) and not isinstance(value, bool)


def _check_text(name: str, value: object, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str) or (not optional and not value):
        kind = "text or null" if optional else "non-empty text"
        raise AuditError(f"audit field {name!r} must be {kind}, not {value!r}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise AuditError(f"audit field {name!r} is not valid Unicode text") from None


@dataclass(frozen=True, kw_only=True)
class AuditRecord:
    """One entry of a node's audit chain; construction checks every field."""

    seq: int
    node: str
    time: float
    actor_uid: int
    actor: str
    action: str
    principal: str | None = None
    path: str | None = None
    level: str | None = None
    before: str | None = None
    after: str | None = None
    detail: Mapping[str, str | int] = field(default_factory=dict)
    prev_hash: str
    key_id: str
    signature: str

    def __post_init__(self) -> None:
        if not _is_int(self.seq) or self.seq < 0:
            raise AuditError(f"audit field 'seq' must be a whole number >= 0, not {self.seq!r}")
        _check_text("node", self.node)
        if _is_int(self.time):
            object.__setattr__(self, "time", float(self.time))
        if not isinstance(self.time, float) or not math.isfinite(self.time):
            raise AuditError(
                f"audit field 'time' must be seconds since the epoch, not {self.time!r}"
            )
        if not _is_int(self.actor_uid) or self.actor_uid < 0:
            raise AuditError(f"audit field 'actor_uid' must be a uid >= 0, not {self.actor_uid!r}")
        _check_text("actor", self.actor)
        _check_text("action", self.action)
        for name in _OPTIONAL_TEXT:
            _check_text(name, getattr(self, name), optional=True)
        if not isinstance(self.detail, Mapping):
            raise AuditError(f"audit field 'detail' must be a mapping, not {self.detail!r}")
        for key, value in self.detail.items():
            _check_text("detail key", key)
            if not _is_int(value) and not isinstance(value, str):
                raise AuditError(
                    f"audit detail {key!r} must be text or a whole number, not {value!r}"
                )
            if isinstance(value, str):
                _check_text(f"detail {key!r}", value, optional=True)
        # A private read-only copy: the signature covers detail, so nobody may
        # change it after the record exists.
        object.__setattr__(self, "detail", MappingProxyType(dict(self.detail)))
        for name, pattern, what in (
            ("prev_hash", _HASH_RE, "64 lowercase hex digits"),
            ("key_id", _KEY_ID_RE, "16 lowercase hex digits"),
            ("signature", _SIGNATURE_RE, "128 lowercase hex digits"),
        ):
            value = getattr(self, name)
            if not isinstance(value, str) or not pattern.fullmatch(value):
                raise AuditError(f"audit field {name!r} must be {what}, not {value!r}")

    def _fields(self) -> dict[str, Any]:
        return {
            "v": FORMAT_VERSION,
            "seq": self.seq,
            "node": self.node,
            "time": self.time,
            "actor_uid": self.actor_uid,
            "actor": self.actor,
            "action": self.action,
            "principal": self.principal,
            "path": self.path,
            "level": self.level,
            "before": self.before,
            "after": self.after,
            "detail": dict(self.detail),
            "prev_hash": self.prev_hash,
            "key_id": self.key_id,
            "signature": self.signature,
        }

    @cached_property
    def digest(self) -> bytes:
        """SHA-256 over the canonical encoding of every field but the signature."""
        body = self._fields()
        del body["signature"]
        return hashlib.sha256(_canonical(body)).digest()

    @property
    def hash(self) -> str:
        """The hex hash the next record names as its ``prev_hash``."""
        return self.digest.hex()

    @property
    def checkpoint_length(self) -> int | None:
        """For a checkpoint, the chain length it vouches for (use as `expected_length`)."""
        if self.action != CHECKPOINT:
            return None
        length = self.detail.get("length")
        return length if isinstance(length, int) else None

    def encode(self) -> bytes:
        """The canonical bytes of this record, as stored."""
        return _canonical(self._fields())

    @classmethod
    def decode(cls, data: bytes) -> AuditRecord:
        """Parse stored bytes; raises AuditError saying what is wrong with them."""
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as e:
            raise AuditError(f"not UTF-8 (byte {e.start})") from None
        try:
            obj = json.loads(text, object_pairs_hook=_no_duplicate_keys, parse_constant=_no_nan)
        except (ValueError, RecursionError) as e:
            raise AuditError(f"not JSON ({e})") from None
        if not isinstance(obj, dict):
            raise AuditError("not a JSON object")
        if obj.keys() != _FIELDS:
            missing = sorted(_FIELDS - obj.keys())
            unknown = sorted(obj.keys() - _FIELDS)
            raise AuditError(f"fields missing: {missing}, unknown: {unknown}")
        version = obj.pop("v")
        if version != FORMAT_VERSION or not _is_int(version):
            raise AuditError(f"format version {version!r}, expected {FORMAT_VERSION}")
        if not isinstance(obj["detail"], dict):
            raise AuditError("field 'detail' is not an object")
        return cls(**obj)


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("a key appears twice")
    return obj


def _no_nan(name: str) -> None:
    raise ValueError(f"{name} is not a number")


class SigningKey:
    """An Ed25519 private key a node signs its audit records with."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self.private_key = private_key
        self.public_key = private_key.public_key()
        self.key_id = key_id_of(self.public_key)

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())

    def save(self, path: str | os.PathLike[str], password: bytes | None = None) -> None:
        """Write the key as PKCS#8 PEM, mode 0600; never overwrites an existing file."""
        target = Path(path)
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(password)
            if password
            else serialization.NoEncryption()
        )
        pem = self.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )
        # Write a temporary file and link it into place, so the key file is
        # never seen half-written and an existing key is never replaced.
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                os.fchmod(f.fileno(), 0o600)  # umask must not loosen or tighten it
                f.write(pem)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, target)
            except FileExistsError:
                raise AuditError(
                    f"{target} already exists; refusing to overwrite a signing key"
                ) from None
        finally:
            tmp.unlink(missing_ok=True)

    @classmethod
    def load(cls, path: str | os.PathLike[str], password: bytes | None = None) -> SigningKey:
        """Read a key written by `save`; refuses files others can read."""
        source = Path(path)
        try:
            mode = source.stat().st_mode
            pem = source.read_bytes()
        except OSError as e:
            raise AuditError(f"cannot read signing key {source}: {e.strerror}") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise AuditError(
                f"signing key {source} is accessible to others (mode {stat.S_IMODE(mode):04o}); "
                f"run: chmod 600 {source}"
            )
        try:
            key = serialization.load_pem_private_key(pem, password=password)
        except (ValueError, TypeError) as e:
            raise AuditError(f"{source} is not a readable private key: {e}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise AuditError(f"{source} holds a {type(key).__name__}, not an Ed25519 key")
        return cls(key)

    def public_pem(self) -> bytes:
        """The public half, for enrolling in other nodes' key rings."""
        return self.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


@dataclass(frozen=True)
class KeyEntry:
    """A public key enrolled for one node, valid from `valid_from` until `valid_until`."""

    key_id: str
    public_key: Ed25519PublicKey
    node: str
    valid_from: float
    valid_until: float | None = None

    def covers(self, when: float) -> bool:
        # The end is exclusive: a key retired at T signs nothing dated T.
        return self.valid_from <= when and (self.valid_until is None or when < self.valid_until)


class KeyRing:
    """The public keys `verify` trusts, each bound to one node and a validity window."""

    def __init__(self, entries: Iterable[KeyEntry] = ()) -> None:
        self._entries: dict[str, KeyEntry] = {}
        for entry in entries:
            self._insert(entry)

    def add(
        self,
        public_key: Ed25519PublicKey,
        node: str,
        valid_from: float,
        valid_until: float | None = None,
    ) -> str:
        """Trust `public_key` for `node`'s records dated in [valid_from, valid_until)."""
        entry = KeyEntry(key_id_of(public_key), public_key, node, valid_from, valid_until)
        self._insert(entry)
        return entry.key_id

    def _insert(self, entry: KeyEntry) -> None:
        if entry.valid_until is not None and entry.valid_until <= entry.valid_from:
            raise AuditError(f"key {entry.key_id}: valid_until must be after valid_from")
        if entry.key_id in self._entries:
            enrolled = self._entries[entry.key_id]
            raise AuditError(f"key {entry.key_id} is already enrolled for node {enrolled.node}")
        self._entries[entry.key_id] = entry

    def get(self, key_id: str) -> KeyEntry | None:
        return self._entries.get(key_id)

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._entries

    def __len__(self) -> int:
        return len(self._entries)


class AuditWriter:
    """Appends signed records to one node's chain; one writer per node, one task at a time.

    Records are handed out, not stored: `drain()` returns every record made
    since the last call, in chain order, including automatic checkpoints. The
    caller must store all of them, in that order.
    """

    def __init__(
        self,
        node: str,
        signing_key: Ed25519PrivateKey,
        key_id: str | None = None,
        last: AuditRecord | None = None,
        *,
        checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
        clock: Callable[[], float] = _time.time,
    ) -> None:
        _check_text("node", node)
        actual_id = key_id_of(signing_key.public_key())
        if key_id is not None and key_id != actual_id:
            raise AuditError(
                f"key id {key_id} does not name this signing key (its id is {actual_id})"
            )
        if last is not None and last.node != node:
            raise AuditError(f"cannot continue node {last.node}'s audit chain as node {node}")
        if checkpoint_every < 1:
            raise AuditError(f"checkpoint_every must be at least 1, not {checkpoint_every}")
        self.node = node
        self.key_id = actual_id
        self._key = signing_key
        self._clock = clock
        self._checkpoint_every = checkpoint_every
        self._next_seq = 0 if last is None else last.seq + 1
        self._head = GENESIS_HASH if last is None else last.hash
        # After a restart the count starts again: at worst one interval is
        # longer, never shorter.
        self._since_checkpoint = 0
        self._made: list[AuditRecord] = []

    @property
    def length(self) -> int:
        """Records in the chain so far, including any not yet drained."""
        return self._next_seq

    @property
    def head(self) -> str:
        """Hash of the newest record (``"0" * 64`` for an empty chain)."""
        return self._head

    def append(
        self,
        *,
        actor_uid: int,
        actor: str,
        action: str,
        principal: str | None = None,
        path: str | None = None,
        level: str | None = None,
        before: str | None = None,
        after: str | None = None,
        detail: Mapping[str, str | int] | None = None,
        time: float | None = None,
    ) -> AuditRecord:
        """Sign and chain one record; may also add a checkpoint after it (see `drain`)."""
        if action == CHECKPOINT:
            raise AuditError("checkpoints are written by checkpoint(), not append()")
        record = self._make(
            actor_uid=actor_uid,
            actor=actor,
            action=action,
            principal=principal,
            path=path,
            level=level,
            before=before,
            after=after,
            detail=dict(detail or {}),
            time=self._clock() if time is None else time,
        )
        self._since_checkpoint += 1
        if self._since_checkpoint >= self._checkpoint_every:
            self.checkpoint()
        return record

    def checkpoint(self, *, time: float | None = None) -> AuditRecord:
        """Sign a record vouching for the chain's length; keep the newest one elsewhere too."""
        record = self._make(
            # The daemon itself vouches for a checkpoint, not a person.
            actor_uid=os.getuid(),
            actor="fedfs",
            action=CHECKPOINT,
            # length counts the checkpoint itself, so it can be passed to
            # verify(expected_length=...) as it is.
            detail={"length": self._next_seq + 1, "head": self._head},
            time=self._clock() if time is None else time,
        )
        self._since_checkpoint = 0
        return record

    def drain(self) -> list[AuditRecord]:
        """Every record made since the last drain, oldest first."""
        made, self._made = self._made, []
        return made

    def _make(self, **fields: Any) -> AuditRecord:
        body = {
            "seq": self._next_seq,
            "node": self.node,
            "prev_hash": self._head,
            "key_id": self.key_id,
            **fields,
        }
        # Build it once unsigned so the fields are checked and the digest is
        # computed by the same code verify uses.
        unsigned = AuditRecord(**body, signature="0" * 128)
        record = AuditRecord(**body, signature=self._key.sign(unsigned.digest).hex())
        self._next_seq += 1
        self._head = record.hash
        self._made.append(record)
        return record


@dataclass(frozen=True)
class VerifyReport:
    """What `verify` found: either the whole chain is intact, or the first bad record."""

    ok: bool
    checked: int
    first_bad: int | None = None
    reason: str | None = None
    node: str | None = None
    first_bad_seq: int | None = None

    def __str__(self) -> str:
        chain = f"audit chain of node {self.node}" if self.node else "audit chain"
        if self.ok:
            return f"{chain}: {self.checked} records verified, intact"
        return f"{chain}: FAILED: {self.reason}; the {self.checked} records before that are intact"


def _when(epoch: float) -> str:
    try:
        return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")
    except (OverflowError, OSError, ValueError):
        return repr(epoch)


def _find_seq(raw: list[bytes], start: int, seq: int) -> int | None:
    for j in range(start, len(raw)):
        try:
            if AuditRecord.decode(raw[j]).seq == seq:
                return j
        except AuditError:
            continue
    return None


def _check_record(
    i: int,
    data: bytes,
    record: AuditRecord,
    raw: list[bytes],
    prev_hash: str,
    node: str,
    keyring: KeyRing,
) -> str | None:
    """Why record `i` is bad, or None. Authenticity first, so an edited record is
    called altered rather than blamed on whichever field the edit happened to hit."""
    if record.encode() != data:
        return f"record {i} was altered: its bytes are not the canonical encoding of its contents"
    key = keyring.get(record.key_id)
    if key is None:
        return f"record {i} is signed by unknown key {record.key_id}"
    try:
        key.public_key.verify(bytes.fromhex(record.signature), record.digest)
    except InvalidSignature:
        return f"record {i} was altered or forged: its signature does not match its contents"
    if key.node != record.node:
        return (
            f"record {i} of node {record.node} is signed by key {key.key_id}, "
            f"which belongs to node {key.node}"
        )
    if record.node != node:
        return (
            f"record {i} belongs to node {record.node}, not {node}: "
            "it was copied from another chain"
        )
    if record.seq < i:
        return (
            f"record {i} has seq {record.seq}, which record {record.seq} already holds: "
            "a record was inserted or replayed"
        )
    if record.seq > i:
        moved_to = _find_seq(raw, i + 1, i)
        if moved_to is not None:
            return (
                f"record {i} has seq {record.seq}, expected {i}: records were reordered "
                f"(seq {i} is at position {moved_to})"
            )
        missing = record.seq - i
        span = f"seq {i}" if missing == 1 else f"seq {i}..{record.seq - 1}"
        return (
            f"record {i} has seq {record.seq}, expected {i}: "
            f"gap, {span} missing ({missing} deleted)"
        )
    if record.prev_hash != prev_hash:
        return (
            f"record {i}: previous-hash mismatch — "
            "a record before it was altered, removed or inserted"
        )
    if not key.covers(record.time):
        until = "onwards" if key.valid_until is None else f"until {_when(key.valid_until)}"
        return (
            f"record {i} is dated {_when(record.time)}, but key {key.key_id} is valid "
            f"only from {_when(key.valid_from)} {until}"
        )
    if record.action == CHECKPOINT and dict(record.detail) != {
        "length": record.seq + 1,
        "head": record.prev_hash,
    }:
        return f"record {i} is a checkpoint whose length/head do not match its place in the chain"
    return None


def check_next(
    seq: int, data: bytes, record: AuditRecord, prev_hash: str, node: str, keyring: KeyRing
) -> str | None:
    """Why `record` (stored as `data`) cannot be record `seq` of `node`'s chain, or None.

    For records that arrive one by one (the shared policy log): the same checks
    `verify` makes, against the hash of the record before it.
    """
    return _check_record(seq, data, record, [], prev_hash, node, keyring)


def verify(
    records: Iterable[bytes],
    keyring: KeyRing,
    expected_length: int | None = None,
    *,
    node: str | None = None,
) -> VerifyReport:
    """Check one node's chain and stop at the first bad record.

    `expected_length` is the length from the newest checkpoint known from
    elsewhere (another object, another node's log); with it, a cut-off tail is
    reported. `node` defaults to the node named by the first record.
    """
    raw = [bytes(r) for r in records]
    prev_hash = GENESIS_HASH
    claimed = expected_length or 0
    for i, data in enumerate(raw):
        try:
            record = AuditRecord.decode(data)
        except AuditError as e:
            return VerifyReport(False, i, i, f"record {i} is not a valid audit record: {e}", node)
        if node is None:
            node = record.node
        reason = _check_record(i, data, record, raw, prev_hash, node, keyring)
        if reason is not None:
            return VerifyReport(False, i, i, reason, node, record.seq)
        prev_hash = record.hash
        claimed = max(claimed, record.checkpoint_length or 0)
    if claimed > len(raw):
        reason = (
            f"log truncated: a checkpoint says {claimed} records, only {len(raw)} present "
            f"({claimed - len(raw)} missing from the end)"
        )
        return VerifyReport(False, len(raw), len(raw), reason, node, len(raw))
    return VerifyReport(True, len(raw), node=node)


def verify_chains(
    chains: Mapping[str, Iterable[bytes]],
    keyring: KeyRing,
    expected_lengths: Mapping[str, int] | None = None,
) -> dict[str, VerifyReport]:
    """Verify each node's chain; a node with an expected length but no chain is truncated."""
    expected = dict(expected_lengths or {})
    nodes = sorted(set(chains) | set(expected))
    return {
        node: verify(chains.get(node, ()), keyring, expected.get(node), node=node) for node in nodes
    }


class AuditChain:
    """One node's audit chain on disk, read only: what `fedfs doctor` verifies without a key."""

    def __init__(self, directory: Path, node: str) -> None:
        self.dir = directory
        self.node = node
        self.log_path = self.dir / f"{node}.log"
        self.head_path = self.dir / f"{node}.head"

    def keyring(self) -> KeyRing:
        ring = KeyRing()
        for f in sorted((self.dir / "keys").glob("*.json")):
            data = json.loads(f.read_text())
            pub = serialization.load_pem_public_key(data["public_pem"].encode())
            assert isinstance(pub, Ed25519PublicKey)
            ring.add(pub, data["node"], data["valid_from"], data.get("valid_until"))
        return ring

    def _read_lines(self, repair: bool = False) -> list[bytes]:
        try:
            data = self.log_path.read_bytes()
        except FileNotFoundError:
            return []
        if data and not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            if repair:
                # The tail was being written when the daemon died: it was never acknowledged.
                with open(self.log_path, "r+b") as f:
                    f.truncate(cut)
                    os.fsync(f.fileno())
            data = data[:cut]
        return [line for line in data.split(b"\n") if line]

    def records(self) -> list[AuditRecord]:
        return [AuditRecord.decode(line) for line in self._read_lines()]

    def expected_length(self) -> int | None:
        try:
            return AuditRecord.decode(self.head_path.read_bytes().strip()).checkpoint_length
        except FileNotFoundError:
            return None
        except AuditError:
            return None  # a damaged head file: verify still checks the chain itself

    def verify(self) -> VerifyReport:
        return verify(self._read_lines(), self.keyring(), self.expected_length(), node=self.node)


class AuditTrail(AuditChain):
    """One node's audit chain on disk, appended durably before a change is acknowledged.

    Layout under the state directory's `audit/`:
      NODE.log        one canonical record per line, fsync'd after every append
      NODE.head       the newest checkpoint, kept apart so a cut-off log is caught
      keys/ID.json    the public keys trusted for verification (node, validity window)
    A partial last line (a crash in the middle of an append, never acknowledged) is
    dropped on open; any other damage stops the daemon from appending to the chain.
    """

    def __init__(
        self, directory: Path, node: str, key: SigningKey, checkpoint_every: int = 100
    ) -> None:
        super().__init__(directory, node)
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        (self.dir / "keys").mkdir(mode=0o700, exist_ok=True)
        self._enroll(key)
        records = self._read_lines(repair=True)
        report = self.verify()
        if not report.ok:
            raise AuditError(
                f"audit chain {self.log_path} fails verification ({report.reason}); fedfs will not "
                "append to a damaged chain: keep the file for investigation, move it aside and start again"
            )
        last = AuditRecord.decode(records[-1]) if records else None
        self.writer = AuditWriter(
            node, key.private_key, key.key_id, last, checkpoint_every=checkpoint_every
        )

    def _enroll(self, key: SigningKey) -> None:
        entry = self.dir / "keys" / f"{key.key_id}.json"
        if not entry.exists():
            data = {
                "node": self.node,
                "public_pem": key.public_pem().decode(),
                "valid_from": _time.time() - 1,
            }
            entry.write_text(json.dumps(data, sort_keys=True))

    def append(self, **fields: Any) -> AuditRecord:
        """Sign, chain and durably store one record (and any checkpoint it triggers)."""
        record = self.writer.append(**fields)
        self._store(self.writer.drain())
        return record

    def checkpoint(self) -> AuditRecord:
        record = self.writer.checkpoint()
        self._store(self.writer.drain())
        return record

    def _store(self, made: list[AuditRecord]) -> None:
        fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, b"".join(r.encode() + b"\n" for r in made))
            os.fsync(fd)
        finally:
            os.close(fd)
        checkpoints = [r for r in made if r.action == CHECKPOINT]
        if checkpoints:
            tmp = self.head_path.with_suffix(".tmp")
            tmp.write_bytes(checkpoints[-1].encode() + b"\n")
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, self.head_path)
