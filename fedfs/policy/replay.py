"""Applying audit records to a policy store: how every node reaches the same policy.

Each change to policy is an audit record (fedfs/audit.py) that carries what is
needed to redo it. Applying records is last-writer-wins per item — a grant
(path, principal), a team, a membership (team, user) — by the record's stamp
"HLC-NODE": the change with the later hybrid-clock stamp wins, ties broken by the
node name. Deletions keep their stamp, so an older change that arrives later does
nothing. Hence any order of application gives the same policy, which is what lets
nodes apply other nodes' records as they find them, and rebuild a lost database
from the records alone (`fedfs fsck --policy`).

One exception: when two nodes create a team of the same name, the earlier creation
wins (its gid is the one files carry); the later one's team is replaced. "expire" records are not applied either way (see below).

Observations ("observe" records) carry what a watcher node saw outside fedfs, e.g. one
bucket's rights as its bucket policy and ACL state them (docs/OPERATIONS.md,
"Watchers"). Each holds the whole state of its item (kind, key), so the newest one wins
like any other item; it is kept in the policy database and handed to the Observer
registered for its kind (Sharing.on_observation; Sharing.publish_observation makes them), which says which paths changed.
Observers run in the caller's thread inside the store transaction: no awaits, no I/O.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from fedfs.audit.chain import AuditRecord
from fedfs.errors import PolicyError
from fedfs.policy.hlc import format_hlc
from fedfs.policy.model import TREE, Grant, Level, Principal, check_shape
from fedfs.policy.store import PolicyStore

log = logging.getLogger(__name__)

# "expire" records are not applied: every node drops a grant when its time comes, by
# its own clock, from the grant's `expires` (an expiry stamped later than a renewal
# made elsewhere would otherwise undo the renewal).
GRANT_ACTIONS = frozenset({"share", "unshare"})
TEAM_ACTIONS = frozenset({"team-create", "team-add", "team-remove"})
OBSERVE = "observe"
LIMIT = "limit"  # an owner's limit on grants at a path, kept as an observation of this kind
OBSERVATION_LIMIT = 200_000  # characters of payload JSON; a log record is at most 512 KiB

# (store, key, payload) -> the paths whose policy the observation changed.
Observer = Callable[[PolicyStore, str, Any], list[str]]


def hlc_of(record: AuditRecord) -> str:
    hlc = record.detail.get("hlc")
    if isinstance(hlc, str):
        return hlc
    return format_hlc(int(record.time * 1000), 0)  # records made before stamps existed


def stamp_of(record: AuditRecord) -> str:
    return f"{hlc_of(record)}-{record.node}"


def grant_item(path: str, principal: str) -> str:
    return f"grant\0{path}\0{principal}"


def team_item(name: str) -> str:
    return f"team\0{name}"


def member_item(team: str, user: str) -> str:
    return f"member\0{team}\0{user}"


def observation_item(kind: str, key: str) -> str:
    return f"observation\0{kind}\0{key}"


def observation_of(record: AuditRecord) -> tuple[str, str, Any]:
    """(kind, key, payload) of an "observe" record; PolicyError if it is not well formed."""
    kind, key, text = (record.detail.get(f) for f in ("kind", "key", "payload"))
    if not isinstance(kind, str) or not isinstance(key, str) or not isinstance(text, str):
        raise PolicyError("an observe record without kind, key or payload")
    try:
        return kind, key, json.loads(text)
    except ValueError as e:
        raise PolicyError(f"the payload of an observe record is not JSON ({e})") from None


def _users(record: AuditRecord, key: str) -> list[str]:
    value = record.detail.get(key)
    return [u for u in value.split(",") if u] if isinstance(value, str) else []


def _team_name(record: AuditRecord) -> str:
    p = Principal.parse(record.principal or "")
    if p.kind != "team":
        raise PolicyError(f"a {record.action} record names {p}, not a team")
    return p.name


def items(record: AuditRecord) -> list[str]:
    """The items a record changes (none for records that are not policy changes)."""
    if record.action in GRANT_ACTIONS:
        return [grant_item(record.path or "", record.principal or "")]
    if record.action == "team-create":
        name = _team_name(record)
        members = set(_users(record, "members")) | set(_users(record, "owners"))
        return [team_item(name)] + [member_item(name, u) for u in sorted(members)]
    if record.action in ("team-add", "team-remove"):
        name = _team_name(record)
        return [member_item(name, u) for u in _users(record, "users")]
    if record.action == OBSERVE:
        kind, key, _ = observation_of(record)
        return [observation_item(kind, key)]
    if record.action == LIMIT and record.path:
        return [observation_item(LIMIT, record.path)]
    return []


def mark(store: PolicyStore, record: AuditRecord) -> None:
    """A change this node made and applied itself: remember its stamps (same transaction)."""
    stamp = stamp_of(record)
    for item in items(record):
        current = store.stamp(item)
        if current is None or stamp > current:
            store.set_stamp(item, stamp)


def apply(
    store: PolicyStore, record: AuditRecord, observers: Mapping[str, Observer] | None = None
) -> list[str] | None:
    """Apply another node's record; returns the paths whose policy changed.

    None means the record changed nothing here (not a policy change, or older than
    what is applied for its items). Raises PolicyError for a record that cannot be
    applied (it is reported, and the chain goes on). `observers` handle "observe"
    records by kind; without one the observation is only kept.
    """
    stamp = stamp_of(record)
    with store.transaction():
        if record.action == OBSERVE:
            return apply_observation(store, *observation_of(record), stamp, observers or {})
        if record.action in GRANT_ACTIONS:
            return _apply_grant(store, record, stamp)
        if record.action == "team-create":
            return _apply_team_create(store, record, stamp)
        if record.action in ("team-add", "team-remove"):
            return _apply_members(store, record, stamp)
        if record.action == LIMIT:
            return _apply_limit(store, record, stamp)
    return None


def limit_payload(mask: int | None, is_dir: bool) -> str:
    """How an owner's limit is kept (observations of kind LIMIT, keyed by path)."""
    return canonical({"mask": mask, "dir": is_dir})


def _apply_limit(store: PolicyStore, record: AuditRecord, stamp: str) -> list[str] | None:
    """Another node's owner set, moved or lifted a limit: keep it for export (the mask
    itself lives in the object's metadata, which that node wrote)."""
    if not record.path:
        raise PolicyError("a limit record without a path")
    if not _newer(store, observation_item(LIMIT, record.path), stamp):
        return None
    after = record.after or "none"
    mask = None if after == "none" else _mask_of(after)
    store.put_observation(
        LIMIT, record.path, stamp, limit_payload(mask, record.detail.get("dir") == 1)
    )
    return [record.path]


def _mask_of(text: str) -> int:
    if len(text) != 3 or any(c not in f"{r}-" for c, r in zip(text, "rwx", strict=True)):
        raise PolicyError(f"a limit record with the mask {text!r}")
    return sum(bit for c, bit in zip(text, (4, 2, 1), strict=True) if c != "-")


def _newer(store: PolicyStore, item: str, stamp: str) -> bool:
    current = store.stamp(item)
    if current is not None and current >= stamp:
        return False
    store.set_stamp(item, stamp)
    return True


def _apply_grant(store: PolicyStore, record: AuditRecord, stamp: str) -> list[str] | None:
    now = time.time()
    if not record.path or not record.principal:
        raise PolicyError(f"a {record.action} record without path or principal")
    principal = Principal.parse(record.principal)
    if not _newer(store, grant_item(record.path, record.principal), stamp):
        return None
    expires = record.detail.get("expires_ms")
    if record.action == "share" and not (isinstance(expires, int) and expires <= now * 1000):
        granted_at = record.detail.get("granted_at_ms")
        store.put_grant(
            Grant(
                record.path,
                principal,
                Level.parse(record.level or ""),
                record.actor,
                granted_at / 1000 if isinstance(granted_at, int) else record.time,
                expires / 1000 if isinstance(expires, int) else None,
                # older records carry no shape: every grant was "tree" then
                check_shape(str(record.detail.get("shape", TREE))),
            )
        )
    else:
        store.delete_grant(record.path, principal)
    return [record.path]


def apply_observation(
    store: PolicyStore,
    kind: str,
    key: str,
    payload: Any,
    stamp: str,
    observers: Mapping[str, Observer],
) -> list[str] | None:
    """Keep an observation newer than the one kept, and hand it to its kind's observer."""
    if not _newer(store, observation_item(kind, key), stamp):
        return None
    return keep_observation(store, kind, key, payload, stamp, observers)


def keep_observation(
    store: PolicyStore,
    kind: str,
    key: str,
    payload: Any,
    stamp: str,
    observers: Mapping[str, Observer],
) -> list[str]:
    """Store an observation as the current one and tell its observer (stamp checked already)."""
    store.put_observation(kind, key, stamp, canonical(payload))
    observer = observers.get(kind)
    return observer(store, key, payload) if observer is not None else []


def canonical(payload: Any) -> str:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _team_paths(store: PolicyStore, name: str) -> list[str]:
    principal = Principal("team", name)
    return sorted({g.path for g in store.grants() if g.principal == principal})


def _apply_team_create(store: PolicyStore, record: AuditRecord, stamp: str) -> list[str] | None:
    name = _team_name(record)
    gid = record.detail.get("gid")
    if not isinstance(gid, int):
        raise PolicyError(f"the team-create record of team {name} has no gid")
    owners = set(_users(record, "owners")) or {record.actor}
    members = set(_users(record, "members")) | owners
    group = record.detail.get("group")
    existing = store.team(name)
    current = store.stamp(team_item(name))
    if existing is not None:
        if existing.gid == gid or (current is not None and current <= stamp):
            return None  # the same creation, or an earlier one that wins
        log.warning(
            "team %s was created on two nodes; the earlier creation (gid %d, %s) replaces gid %d",
            name,
            gid,
            record.node,
            existing.gid,
        )
        store.drop_team(name)
    store.create_team(name, owners, members, group if isinstance(group, str) else None, gid)
    store.set_stamp(team_item(name), stamp)
    for user in members:
        store.set_stamp(member_item(name, user), stamp)
    return _team_paths(store, name)


def _apply_members(store: PolicyStore, record: AuditRecord, stamp: str) -> list[str] | None:
    name = _team_name(record)
    team = store.team(name)
    if team is None:
        raise PolicyError(f"a {record.action} record for team {name}, which does not exist here")
    changed = False
    owners = record.detail.get("owners") == 1
    for user in _users(record, "users"):
        if not _newer(store, member_item(name, user), stamp):
            continue
        changed = True
        if record.action == "team-add":
            store.set_member(name, user, owners or user in team.owners)
        else:
            store.drop_member(name, user)
    return _team_paths(store, name) if changed else None


def replay(store: PolicyStore, records: Iterable[AuditRecord]) -> tuple[int, list[str]]:
    """Apply records in stamp order (a rebuild); returns (applied, problems)."""
    applied = 0
    problems: list[str] = []
    for record in sorted(records, key=stamp_of):
        try:
            if apply(store, record) is not None:
                applied += 1
        except PolicyError as e:
            problems.append(f"{record.node} #{record.seq} ({record.action}): {e}")
    return applied, problems
