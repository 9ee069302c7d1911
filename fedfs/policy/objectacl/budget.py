"""The size budget of a bucket policy: which of fedfs's statements are written when not
all of them fit under `[object_acl] max_policy_bytes`.

Owns the rule (docs/OBJECT_ACL.md "Policy size"): the owner's statements are never
touched, fedfs's Deny statements (owners' limits: they only take access away) are always
written, and when the Allows do not all fit, grants are left out one at a time: the
newest grant of the sharer whose grants use the most bytes (each grant counted as its two
statements alone), until the document fits. So one sharer's hundreds of grants cannot
push out another sharer's few. The choice depends only on the grants, the principals and
the owner's statements, so every node writes the same document. Pure: no I/O, no clock;
safe from any thread. Calls export.py only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fedfs.policy.model import Grant
from fedfs.policy.objectacl import export

DEFAULT_MAX_BYTES = 512 * 1024  # RGW takes about 1 MB; the rest is the owner's room
AWS_MAX_BYTES = 20_000  # AWS refuses a bucket policy over 20 KB


@dataclass(frozen=True)
class Fitted:
    """fedfs's statements that fit, the grants left out, and the document's sizes in bytes:
    `size` as written, `needed` with every grant exported, `limit` the budget."""

    statements: tuple[export.Statement, ...]
    left_out: tuple[Grant, ...]
    size: int
    needed: int
    limit: int

    def reason(self, bucket: str) -> str:
        """Why the grants left out are not in the policy, for messages and the log."""
        return (
            f"the bucket policy of {bucket} is full: every grant would take {self.needed} "
            f"bytes, over the limit of {self.limit} ([object_acl] max_policy_bytes); "
            f"{len(self.left_out)} grant(s) are left out"
        )


def fit(
    top: Mapping[str, Any],
    foreign: Sequence[Any],
    wanted: export.Desired,
    limit: int,
) -> Fitted:
    """fedfs's statements for a policy whose other fields are `top` and whose owner's
    statements are `foreign`, kept to `limit` bytes by leaving grants out (module doc).

    If the owner's statements and the Denies alone exceed the limit, every Allow is left
    out and the document is written anyway (it may be refused by the store, and status
    says so): a Deny is never dropped to make room.
    """
    needed = export.size_of(export.document_of(top, foreign, wanted.statements))
    if needed <= limit or not wanted.reaches:
        return Fitted(wanted.statements, (), needed, needed, limit)
    denies = [s for s in wanted.statements if s.get("Effect") == "Deny"]
    if foreign or denies:
        base, first = export.size_of(export.document_of(top, foreign, denies)), 0
    else:  # an empty list, and its first statement has no ", " before it
        empty = {"Version": top.get("Version", export.VERSION), **top, "Statement": []}
        base, first = len(json.dumps(empty, ensure_ascii=False).encode()), 2

    groups: dict[tuple[Any, ...], list[tuple[Grant, tuple[str, ...]]]] = {}
    mine: dict[str, list[Grant]] = {}
    for grant, who in wanted.reaches:  # oldest first (export.grant_order)
        groups.setdefault(_key(grant), []).append((grant, who))
        mine.setdefault(grant.granted_by, []).append(grant)
    bucket = _bucket(wanted.reaches[0][0])
    cost = {g: _bytes(bucket, {_key(g): set(who)}) for g, who in wanted.reaches}
    used = {sharer: sum(cost[g] for g in grants) for sharer, grants in mine.items()}
    sizes = {k: _bytes(bucket, export.shared_principals(v)) for k, v in groups.items()}
    left_out: list[Grant] = []

    def total() -> int:
        allows = sum(sizes.values())
        return base + allows - (first if allows else 0)

    while mine:
        if total() <= limit:
            statements = _statements(bucket, denies, groups)
            size = export.size_of(export.document_of(top, foreign, statements))
            if size <= limit:
                return Fitted(tuple(statements), tuple(left_out), size, needed, limit)
        sharer = max(mine, key=lambda s: (used[s], s))
        grant = mine[sharer].pop()  # the newest
        if not mine[sharer]:
            del mine[sharer]
        used[sharer] -= cost[grant]
        left_out.append(grant)
        key = _key(grant)
        groups[key] = [(g, w) for g, w in groups[key] if g != grant]
        sizes[key] = _bytes(bucket, export.shared_principals(groups[key]))
    size = export.size_of(export.document_of(top, foreign, denies))
    return Fitted(tuple(export.by_sid(denies)), tuple(left_out), size, needed, limit)


def _key(grant: Grant) -> tuple[Any, ...]:
    return (grant.path, grant.level, grant.expires, grant.shape)


def _bucket(grant: Grant) -> str:
    return grant.path.split("/", 2)[1]


def _bytes(bucket: str, shared: export.Shared) -> int:
    """What these Allow statements add to a document: each, and the ", " before it."""
    return sum(
        len(json.dumps(s, ensure_ascii=False).encode()) + 2
        for s in export.allow_statements(bucket, shared)
    )


def _statements(
    bucket: str,
    denies: list[export.Statement],
    groups: Mapping[tuple[Any, ...], list[tuple[Grant, tuple[str, ...]]]],
) -> list[export.Statement]:
    reaches = [r for found in groups.values() for r in found]
    allows = export.allow_statements(bucket, export.shared_principals(reaches))
    return export.by_sid([*denies, *allows])
