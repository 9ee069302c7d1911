"""Answers to admins' questions about policy: who can access a path, what can a user access.

Pure functions over the policy in force (engine, grants, teams) and names already
resolved by the caller, so every answer is computed the way the kernel will see it
and can be tested without a mount. Rows are plain dicts for tables, JSON and CSV.
"""

from __future__ import annotations

import time
from typing import Any

from fedfs.audit.chain import AuditRecord
from fedfs.policy.engine import PolicyEngine
from fedfs.policy.model import Grant, Principal, Team

Row = dict[str, Any]


def rwx(perm: int) -> str:
    """Permission bits as ls and getfacl print them: 6 -> "rw-"."""
    return "".join(c if perm & bit else "-" for c, bit in (("r", 4), ("w", 2), ("x", 1)))


def _until(g: Grant) -> float | None:
    return g.expires


def who(
    engine: PolicyEngine, teams: dict[str, Team], owner: Principal, path: str, now: float
) -> list[Row]:
    """Every principal with access to path: the bucket owner, then each grant (teams expanded)."""
    rows: list[Row] = [
        {"principal": str(owner), "level": "owner", "via": "bucket owner (config)", "until": None}
    ]
    if owner.kind == "team" and owner.name in teams:
        for member in sorted(teams[owner.name].owners):
            rows.append(
                {
                    "principal": f"user:{member}",
                    "level": "manage",
                    "via": f"owner of {owner}",
                    "until": None,
                }
            )
    for grant, origin in engine.grants_at(path, now):
        via = f"grant on {origin} by {grant.granted_by}"
        rows.append(
            {
                "principal": str(grant.principal),
                "level": str(grant.level),
                "via": via,
                "until": _until(grant),
            }
        )
        if grant.principal.kind == "team" and grant.principal.name in teams:
            team = teams[grant.principal.name]
            for member in sorted(team.members):
                rows.append(
                    {
                        "principal": f"user:{member}",
                        "level": str(grant.level),
                        "via": f"member of {grant.principal}; {via}",
                        "until": _until(grant),
                    }
                )
    return rows


def user_access(
    grants: list[Grant],
    teams: dict[str, Team],
    user: str,
    groups: set[str],
    owned_buckets: list[str],
    now: float,
) -> list[Row]:
    """Everything user can access: owned buckets, then grants to the user, their groups and teams."""
    rows: list[Row] = [
        {"path": f"/{b}", "level": "owner", "via": "bucket owner (config)", "until": None}
        for b in owned_buckets
    ]
    for g in sorted(grants, key=lambda g: (g.path, str(g.principal))):
        if not g.active(now):
            continue
        p = g.principal
        via = None
        if p.kind == "user" and p.name == user:
            via = "direct grant"
        elif p.kind == "group" and p.name in groups:
            via = f"member of group {p.name}"
        elif p.kind == "team" and p.name in teams:
            team = teams[p.name]
            if user in team.members or (team.group is not None and team.group in groups):
                via = f"member of team {p.name}"
        if via:
            rows.append(
                {"path": g.path, "level": str(g.level), "via": f"{via} ({p})", "until": g.expires}
            )
    return rows


def expiring(grants: list[Grant], within: float, now: float) -> list[Row]:
    soon = [g for g in grants if g.expires is not None and now <= g.expires <= now + within]
    return [
        {
            "path": g.path,
            "principal": str(g.principal),
            "level": str(g.level),
            "until": g.expires,
            "granted_by": g.granted_by,
        }
        for g in sorted(soon, key=lambda g: g.expires or 0)
    ]


def record_row(r: AuditRecord) -> Row:
    return {
        "seq": r.seq,
        "time": r.time,
        "node": r.node,
        "actor": r.actor,
        "actor_uid": r.actor_uid,
        "action": r.action,
        "principal": r.principal,
        "path": r.path,
        "level": r.level,
        "before": r.before,
        "after": r.after,
        "detail": dict(r.detail),
    }


def history(
    records: list[AuditRecord],
    since: float | None = None,
    path: str | None = None,
    actor: str | None = None,
) -> list[Row]:
    out = []
    for r in records:
        if r.action == "checkpoint":
            continue
        if since is not None and r.time < since:
            continue
        if path is not None and not (
            r.path == path
            or (r.path or "").startswith(path.rstrip("/") + "/")
            or path.startswith((r.path or "\0") + "/")
        ):
            continue
        if actor is not None and r.actor != actor:
            continue
        out.append(record_row(r))
    return out


def now() -> float:
    return time.time()
