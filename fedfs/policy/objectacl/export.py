"""Export: the bucket-policy statements that grants imply, merged into a bucket's policy.

Owns the statement shape of a grant (read = get and list under its path, write and
manage = also put, delete and abort uploads; a grant on a file (shape OBJECT) names
that one key and no listing; expiry as a time condition the store
enforces), the Sid that marks a statement as fedfs's (`is_owned`: "fedfs" and 24 hex
digits of a hash of the statement's meaning, so every node names the same statement the
same), and the merge that replaces fedfs's statements and keeps every other statement as
it was. Pure: no I/O, no clock but the `now` it is given; safe from any thread.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fedfs.errors import PolicyError
from fedfs.events import iso
from fedfs.policy.in_force import team_members
from fedfs.policy.model import OBJECT, TREE, Grant, Level, Shape, Team

OWNED_SID_PREFIX = "fedfs"
_OWNED_SID = re.compile(OWNED_SID_PREFIX + r"[0-9a-f]{24}")
VERSION = "2012-10-17"
READ_ACTIONS = ("s3:GetObject",)
WRITE_ACTIONS = ("s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload")
# Characters a Resource ARN or an s3:prefix StringLike reads as wildcards: a grant on a
# path holding them would reach objects it does not name, so it is not exported.
_WILDCARDS = re.compile(r"[*?]|\$\{")

Statement = dict[str, Any]


def is_owned(statement: object) -> bool:
    """True for a statement fedfs wrote: its Sid is "fedfs" and the first 24 hex digits
    of the SHA-256 of the rest of the statement (`sid_of`).

    The Sid's shape alone is not enough: a bucket owner may write a statement with a Sid
    like "fedfs000...", and fedfs must neither delete it nor leave it out of the import.
    A statement whose Sid is the hash of its own content says exactly what fedfs would
    write for some grant, so treating it as fedfs's changes nothing the store allows.
    """
    if not isinstance(statement, dict):
        return False
    sid = statement.get("Sid")
    if not isinstance(sid, str) or _OWNED_SID.fullmatch(sid) is None:
        return False
    try:
        return sid_of(statement) == sid
    except (TypeError, ValueError):  # content json cannot encode: not one of ours
        return False


def sid_of(statement: Statement) -> str:
    """The Sid of a statement's meaning (everything but its Sid): the same on every node."""
    meaning = {k: v for k, v in statement.items() if k != "Sid"}
    digest = hashlib.sha256(_canonical(meaning).encode()).hexdigest()
    return OWNED_SID_PREFIX + digest[:24]


def _canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class Skipped:
    """A grant, or a member of one, that export leaves out, and why (for one log line)."""

    grant: Grant
    reason: str
    user: str | None = None


@dataclass(frozen=True)
class Desired:
    """The statements a bucket's policy should hold for fedfs, and what was left out.

    reaches: each grant exported and the principals it reaches there (budget.py drops
    grants from it when the statements do not all fit in the policy)."""

    statements: tuple[Statement, ...]
    skipped: tuple[Skipped, ...] = ()
    reaches: tuple[tuple[Grant, tuple[str, ...]], ...] = ()


def users_of(
    grant: Grant, teams: Mapping[str, Team], groups: Mapping[str, frozenset[str]]
) -> list[str]:
    """The user names a grant reaches: the user, a group's listed members, a team's members.

    A group's members are the names its entry lists (users whose primary group it is
    are not listed there, and so are not reached: the store has no group to name).
    """
    kind, name = grant.principal.kind, grant.principal.name
    if kind == "user":
        return [name]
    if kind == "group":
        return sorted(groups.get(name, frozenset()))
    team = teams.get(name)
    return sorted(team_members(team, groups)) if team is not None else []


@dataclass(frozen=True)
class Limit:
    """An owner's limit on grants at one path (chmod, setfacl -m m::): the ACL mask."""

    path: str
    mask: int  # rwx bits grants may not exceed there
    is_dir: bool


def desired(
    bucket: str,
    grants: Iterable[Grant],
    teams: Iterable[Team],
    groups: Mapping[str, frozenset[str]],
    principals: Mapping[str, str | None],
    now: float,
    limits: Iterable[Limit] = (),
) -> Desired:
    """The statements the grants in force on `bucket` imply.

    principals: user name -> object-store principal (None: the user has none); a user
    missing from it is treated as having none. Grants that have expired by `now` give
    nothing. Grants with the same path, level and expiry share statements. Each owner's
    limit under a grant becomes a Deny for that grant's principals (limit_statements), so
    a file made private with chmod stays private to their own keys too.
    """
    by_team = {t.name: t for t in teams}
    skipped: list[Skipped] = []
    reaches: list[tuple[Grant, tuple[str, ...]]] = []
    for grant in grants:
        if _bucket_of(grant.path) != bucket or not grant.active(now):
            continue
        if _WILDCARDS.search(grant.path):
            skipped.append(
                Skipped(grant, "its path holds * ? or ${, which a bucket policy reads as wildcards")
            )
            continue
        members = users_of(grant, by_team, groups)
        if not members:  # nothing to name yet: said, so no one reads it as exported
            kind = grant.principal.kind
            skipped.append(
                Skipped(
                    grant,
                    "the team has no members"
                    if kind == "team"
                    else "the group lists no members (the store cannot name users whose "
                    "primary group it is)",
                )
            )
            continue
        found: set[str] = set()
        for user in members:
            principal = principals.get(user)
            if principal is None:
                skipped.append(Skipped(grant, "the user has no object-store principal", user))
            else:
                found.add(principal)
        if found:
            reaches.append((grant, tuple(sorted(found))))
    reaches.sort(key=lambda r: grant_order(r[0]))
    shared = shared_principals(reaches)
    statements = {s["Sid"]: s for s in allow_statements(bucket, shared)}
    for limit in limits:
        if _bucket_of(limit.path) != bucket or _WILDCARDS.search(limit.path):
            continue
        denied: dict[tuple[str, ...], set[str]] = {}
        for (path, level, _, shape), who in shared.items():
            if shape == OBJECT:
                covered = limit.path == path and not limit.is_dir
            else:
                covered = limit.path == path or limit.path.startswith(path.rstrip("/") + "/")
            if who and covered:
                actions = limited_actions(limit, level)
                if actions:
                    denied.setdefault(actions, set()).update(who)
        for actions, who in denied.items():
            for statement in limit_statements(bucket, limit, actions, sorted(who)):
                statements[statement["Sid"]] = statement
    return Desired(
        tuple(statements[sid] for sid in sorted(statements)), tuple(skipped), tuple(reaches)
    )


def grant_order(grant: Grant) -> tuple[float, str, str, int, float]:
    """Oldest first, then by path and principal: the same order on every node."""
    expires = -1.0 if grant.expires is None else grant.expires
    return (grant.granted_at, grant.path, str(grant.principal), int(grant.level), expires)


Shared = dict[tuple[str, Level, float | None, Shape], set[str]]


def shared_principals(reaches: Iterable[tuple[Grant, Sequence[str]]]) -> Shared:
    """The principals of each (path, level, expiry, shape): grants alike share statements."""
    shared: Shared = {}
    for grant, who in reaches:
        key = (grant.path, grant.level, grant.expires, grant.shape)
        shared.setdefault(key, set()).update(who)
    return shared


def allow_statements(bucket: str, shared: Shared) -> list[Statement]:
    """The Allow statements of every (path, level, expiry, shape) that reaches someone."""
    found: list[Statement] = []
    for (path, level, expires, shape), who in shared.items():
        if who:
            found.extend(grant_statements(bucket, path, level, expires, sorted(who), shape))
    return found


_WRITES = ("s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload")


def limited_actions(limit: Limit, level: Level) -> tuple[str, ...]:
    """What a grant of `level` may not do under an owner's limit, as S3 actions.

    A file: no r in the mask takes reading (and writing) away, no w writing. A directory:
    no r or no x closes everything below it (in POSIX nothing below is reachable through
    it), no w takes writing below away (wider than POSIX, which keeps writes in
    subdirectories: the store's prefixes cannot say "direct children only").
    """
    if not limit.mask & 4 or (limit.is_dir and not limit.mask & 1):
        return ("s3:GetObject", *_WRITES, *(("s3:ListBucket",) if limit.is_dir else ()))
    if level >= Level.WRITE and not limit.mask & 2:
        return _WRITES
    return ()


def limit_statements(
    bucket: str, limit: Limit, actions: Sequence[str], principals: Sequence[str]
) -> list[Statement]:
    """Deny statements for an owner's limit: objects at (and below) its path, and listing."""
    key = limit.path.split("/", 2)[2] if limit.path.count("/") >= 2 else ""
    who = {"AWS": list(principals)}
    object_actions = [a for a in actions if a != "s3:ListBucket"]
    if not key:
        objects = [f"arn:aws:s3:::{bucket}/*"]
    elif limit.is_dir:
        objects = [f"arn:aws:s3:::{bucket}/{key}/*"]
    else:
        objects = [f"arn:aws:s3:::{bucket}/{key}"]
    found: list[Statement] = [
        {"Effect": "Deny", "Principal": who, "Action": object_actions, "Resource": objects}
    ]
    if "s3:ListBucket" in actions:
        listing: Statement = {
            "Effect": "Deny",
            "Principal": who,
            "Action": ["s3:ListBucket"],
            "Resource": [f"arn:aws:s3:::{bucket}"],
        }
        if key:
            listing["Condition"] = {"StringLike": {"s3:prefix": [f"{key}/", f"{key}/*"]}}
        found.append(listing)
    return [{"Sid": sid_of(s), **s} for s in found]


def grant_statements(
    bucket: str,
    path: str,
    level: Level,
    expires: float | None,
    principals: Sequence[str],
    shape: Shape = TREE,
) -> list[Statement]:
    """The statements of one grant.

    A directory grant (TREE): objects at and under its path, and listing there (the
    object statement names the key itself too: grants made before fedfs told files
    from directories are all TREE). A file grant (OBJECT): the one key `B/P`, and no
    listing, so nobody's own keys reach `P/...` through it (docs/OBJECT_ACL.md).
    """
    key = path.split("/", 2)[2] if path.count("/") >= 2 else ""
    who = {"AWS": list(principals)}
    actions = WRITE_ACTIONS if level >= Level.WRITE else READ_ACTIONS
    when: dict[str, Any] = (
        {"DateLessThan": {"aws:CurrentTime": iso(expires)}} if expires is not None else {}
    )
    if key and shape == OBJECT:
        statement = {"Effect": "Allow", "Principal": who, "Action": list(actions)}
        statement["Resource"] = [f"arn:aws:s3:::{bucket}/{key}"]
        if when:
            statement["Condition"] = when
        return [{"Sid": sid_of(statement), **statement}]
    if key:
        objects = [f"arn:aws:s3:::{bucket}/{key}", f"arn:aws:s3:::{bucket}/{key}/*"]
        listing = {"StringLike": {"s3:prefix": [f"{key}/", f"{key}/*"]}}
    else:
        objects, listing = [f"arn:aws:s3:::{bucket}/*"], dict[str, Any]()
    found: list[Statement] = [
        {"Effect": "Allow", "Principal": who, "Action": list(actions), "Resource": objects},
        {
            "Effect": "Allow",
            "Principal": who,
            "Action": ["s3:ListBucket"],
            "Resource": [f"arn:aws:s3:::{bucket}"],
        },
    ]
    conditions = [when, {**listing, **when}]
    for statement, condition in zip(found, conditions, strict=True):
        if condition:
            statement["Condition"] = condition
    return [{"Sid": sid_of(s), **s} for s in found]


def _bucket_of(path: str) -> str:
    return path.split("/", 2)[1]


class UnreadablePolicy(PolicyError):
    """A bucket policy fedfs cannot read as a policy document: left as it is."""


@dataclass(frozen=True)
class PolicyChange:
    """What merging changes: the new document (None: delete the bucket's policy, nothing is
    left in it), and the Sids of fedfs statements added and removed (one that changed
    by hand is in both)."""

    document: str | None
    added: tuple[str, ...] = field(default=())
    removed: tuple[str, ...] = field(default=())


def parse(bucket: str, document: str | None) -> tuple[dict[str, Any], list[Any]]:
    """(the document's other top-level fields, its statements) of a stored policy.

    Raises UnreadablePolicy for anything that is not a JSON object whose Statement is
    an object or a list: fedfs would rather not touch it than lose a word of it.
    """
    if document is None or not document.strip():
        return {}, []
    try:
        top = json.loads(document)
    except (ValueError, RecursionError) as e:
        raise UnreadablePolicy(_unreadable(bucket, f"it is not JSON ({e})")) from None
    if not isinstance(top, dict):
        raise UnreadablePolicy(_unreadable(bucket, "it is not a JSON object"))
    statements = top.get("Statement", [])
    if isinstance(statements, dict):
        statements = [statements]
    if not isinstance(statements, list):
        raise UnreadablePolicy(_unreadable(bucket, "its Statement is neither a list nor an object"))
    return {k: v for k, v in top.items() if k != "Statement"}, statements


def _unreadable(bucket: str, why: str) -> str:
    return (
        f"the bucket policy of {bucket!r} cannot be read as a policy document: {why}; "
        "fedfs leaves it as it is and exports no grants there until its owner fixes or "
        "removes it"
    )


def claimed(statement: object, sids: Collection[str]) -> bool:
    """fedfs's to replace: one it wrote (`is_owned`), or one of its statements edited by
    hand, which keeps a Sid fedfs writes now (`sids`) over other content. Any other
    statement is the owner's, whatever its Sid looks like."""
    if is_owned(statement):
        return True
    return isinstance(statement, dict) and statement.get("Sid") in sids


def foreign_of(present: Sequence[Any], sids: Collection[str]) -> list[Any]:
    """The owner's statements of a policy, in order (see `claimed`)."""
    return [s for s in present if not claimed(s, sids)]


def merge(
    bucket: str,
    document: str | None,
    statements: Sequence[Statement],
    claim: Collection[str] = (),
) -> PolicyChange | None:
    """The bucket's policy with fedfs's statements replaced by `statements`; None if it
    already holds exactly those. Every statement fedfs did not write stays, in order,
    with its content unchanged (raises UnreadablePolicy rather than guess); one of
    fedfs's edited by hand (its Sid is in `statements` or `claim`) is restored."""
    top, present = parse(bucket, document)
    wanted = {s["Sid"]: _canonical(s) for s in statements}
    sids = {*wanted, *claim}
    mine = [s for s in present if claimed(s, sids)]
    ours = {s["Sid"]: _canonical(s) for s in mine}
    if ours == wanted and len(mine) == len(ours):
        return None
    added = tuple(sorted(sid for sid, text in wanted.items() if ours.get(sid) != text))
    removed = tuple(sorted(sid for sid, text in ours.items() if wanted.get(sid) != text))
    foreign = foreign_of(present, sids)
    return PolicyChange(document_of(top, foreign, statements), added, removed)


def document_of(
    top: Mapping[str, Any], foreign: Sequence[Any], statements: Sequence[Statement]
) -> str | None:
    """The policy as written: the owner's fields and statements, then fedfs's by Sid (None:
    nothing at all is left, the policy is deleted)."""
    kept = [*foreign, *by_sid(statements)]
    if not kept:
        return None
    new = {"Version": top.get("Version", VERSION), **top, "Statement": kept}
    return json.dumps(new, ensure_ascii=False)


def size_of(document: str | None) -> int:
    """Bytes of a policy document as the store counts them (UTF-8); 0 for none."""
    return 0 if document is None else len(document.encode())


def by_sid(statements: Sequence[Statement]) -> list[Statement]:
    """fedfs's statements in the order they are written: by Sid, each once."""
    unique = {s["Sid"]: s for s in statements}
    return [unique[sid] for sid in sorted(unique)]
