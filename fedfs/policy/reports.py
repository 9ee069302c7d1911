"""Answers to admins' questions about policy: who can access a path, what can a user access.

Access is read from what the kernel is given, never re-derived from grants: the
PosixView the engine made for each directory on the way and for the object (owner,
mode, ACL), checked as acl(5) does, search on every directory first. Grants only
explain an entry (a grant covering the path, or a pass-through to one below it),
so the reports follow whatever the engine decides. Pure functions over values the
caller resolved (views, names, grants); rows are plain dicts for tables, JSON, CSV.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fedfs.audit.chain import AuditRecord
from fedfs.policy.acl import Acl, AclTag, X
from fedfs.policy.engine import PosixView
from fedfs.policy.model import Grant, Identities, Opening, Team

Row = dict[str, Any]


def rwx(perm: int) -> str:
    """Permission bits as ls and getfacl print them: 6 -> "rw-"."""
    return "".join(c if perm & bit else "-" for c, bit in (("r", 4), ("w", 2), ("x", 1)))


@dataclass(frozen=True, slots=True)
class Step:
    """One path on the way from the mount's root to an object, as the kernel is shown it."""

    path: str
    view: PosixView  # what the engine decided: owner, mode (mask as group bits), ACL
    is_dir: bool


@dataclass(frozen=True, slots=True)
class Subject:
    """Whom the kernel checks: a user (uid and groups), a member of one group, or anyone else."""

    principal: str  # "user:alice", "group:cosmo", "everyone else"
    uid: int | None
    gids: frozenset[int]


@dataclass(frozen=True, slots=True)
class Sources:
    """What explains an ACL entry: the grants in force and how they name kernel ids."""

    grants: tuple[Grant, ...]  # active ones
    teams: dict[str, Team]
    identities: Identities
    group_names: dict[int, str]  # gid -> name, for the owning groups of the steps
    # Denies of the buckets' own policies: (path, uid or None for "other", source)
    denials: tuple[tuple[str, int | None, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Access:
    """What the kernel lets a subject do at the last step, and where each right comes from."""

    perm: int  # rwx bits at the object; 0 when a directory on the way cannot be searched
    via: str
    until: float | None


def _decide(view: PosixView, subject: Subject) -> tuple[int, str, int | None]:
    """The acl(5) check for subject: its rwx bits and the entry class that decides them.

    Classes: owner, user (a named USER entry), group (the owning group's bits),
    group-entry (named GROUP entries, with the first matching gid), other. Group
    entries are unioned bit by bit, which is what the kernel allows for each right.
    """
    mode, uid, gids = view.mode, subject.uid, subject.gids
    if uid is not None and uid == view.uid:
        return (mode >> 6) & 7, "owner", uid
    if view.acl_access is None:
        if view.gid in gids:
            return (mode >> 3) & 7, "group", view.gid
        return mode & 7, "other", None
    entries = Acl.decode(view.acl_access).entries
    mask = next((e.perm for e in entries if e.tag == AclTag.MASK), 7)
    if uid is not None:
        for e in entries:
            if e.tag == AclTag.USER and e.id == uid:
                return e.perm & mask, "user", uid
    got, how, which = 0, "", None
    for e in entries:
        if e.tag == AclTag.GROUP_OBJ and view.gid in gids:
            got |= e.perm & mask
            how, which = how or "group", which if how else view.gid
        elif e.tag == AclTag.GROUP and e.id in gids:
            got |= e.perm & mask
            how, which = how or "group-entry", which if how else e.id
    if how:
        return got, how, which
    return mode & 7, "other", None


def _holds(grant: Grant, sources: Sources, is_user: bool, id_: int) -> bool:
    """Whether grant gives the kernel id (a uid, or a gid) an entry, as the engine expands it."""
    ids, kind, name = sources.identities, grant.principal.kind, grant.principal.name
    if kind == "user":
        return is_user and ids.uid_of(name) == id_
    if kind == "group":
        return not is_user and ids.gid_of(name) == id_
    team = sources.teams.get(name)
    if team is None:
        return False
    if is_user:
        return any(ids.uid_of(member) == id_ for member in team.members)
    return team.group is not None and ids.gid_of(team.group) == id_


def _covers(grant: Grant, path: str) -> bool:
    return path == grant.path or path.startswith(grant.path + "/")


def _entry_sources(
    step: Step, sources: Sources, is_user: bool, id_: int
) -> tuple[list[Grant], list[Grant]]:
    """The grants behind a named entry: those covering the path, else those below it."""
    mine = [g for g in sources.grants if _holds(g, sources, is_user, id_)]
    covering = [g for g in mine if _covers(g, step.path)]
    below = (
        []
        if covering or not step.is_dir
        else [g for g in mine if g.path.startswith(step.path + "/")]
    )
    return covering, below


def _grant_text(grant: Grant) -> str:
    member = "" if grant.principal.kind == "user" else f"member of {grant.principal}: "
    return f"{member}grant {grant.level} on {grant.path} by {grant.granted_by}"


def _explain(
    step: Step, how: str, id_: int | None, perm: int, subject: Subject, sources: Sources
) -> tuple[str, list[Grant]]:
    """Where the rights at one step come from, in words, and the grants they rest on."""
    mode = f"{step.view.mode & 0o7777:04o}"
    if how == "owner":
        return f"owner (mode {mode})", []
    if how == "other":
        return f"mode bits for other ({mode})", []
    if how == "group":
        name = sources.group_names.get(step.view.gid, str(step.view.gid))
        return f"mode bits for group {name} ({mode})", []
    assert id_ is not None
    denied = [
        f"denied by the bucket's own policy ({source}, on {path})"
        for path, uid, source in sources.denials
        if how == "user" and uid == id_ and (step.path + "/").startswith(path + "/")
    ]
    if denied and not perm:
        return denied[0], []
    covering, below = _entry_sources(step, sources, how == "user", id_)
    if covering:
        return "; ".join(_grant_text(g) for g in covering), covering
    if below:
        to = ", ".join(f"{g.principal}'s grant on {g.path}" for g in below)
        return f"pass-through to {to}", below
    return f"an ACL entry {rwx(perm)} that no grant in force explains", []


def evaluate(steps: list[Step], subject: Subject, sources: Sources) -> Access:
    """What the kernel lets subject do at steps[-1]: search on every step above, then its bits."""
    passed: dict[str, list[str]] = {}  # grants passed through to -> the directories searched
    rests_on: list[list[Grant]] = []  # per step, the grants any one of which gives it
    for step in steps[:-1]:
        perm, how, id_ = _decide(step.view, subject)
        if not perm & X:
            name = step.path
            return Access(
                0,
                f"cannot search {name} ({_explain(step, how, id_, perm, subject, sources)[0]})",
                None,
            )
        if how in ("user", "group-entry"):
            assert id_ is not None
            covering, below = _entry_sources(step, sources, how == "user", id_)
            if below and not covering:
                to = ", ".join(f"{g.principal}'s grant on {g.path}" for g in below)
                passed.setdefault(to, []).append(step.path)
                rests_on.append(below)
    last = steps[-1]
    perm, how, id_ = _decide(last.view, subject)
    via, grants = _explain(last, how, id_, perm, subject, sources)
    if grants:
        rests_on.append(grants)
    notes = [
        f"search on {' and '.join(dirs)} by {to} (pass-through)" for to, dirs in passed.items()
    ]
    return Access(perm, "; ".join([via, *notes]), _lasts_until(rests_on))


def _lasts_until(rests_on: list[list[Grant]]) -> float | None:
    """When access ends: every step must hold, and a step holds while any of its grants does."""
    ends = []
    for grants in rests_on:
        if any(g.expires is None for g in grants):
            continue  # one grant that never expires keeps this step open
        ends.append(max(g.expires for g in grants if g.expires is not None))
    return min(ends) if ends else None


def who(steps: list[Step], subjects: list[Subject], sources: Sources) -> list[Row]:
    """Who the kernel lets at steps[-1], each with the rights and where they come from.

    Users are listed by name; then each group as it applies to its other members; then
    everyone else. A user or group with no access is listed only where the row a reader
    would fall back to (their group's, or everyone else's) would wrongly show access.
    """
    found = [(s, evaluate(steps, s, sources)) for s in subjects]
    rest = next((a.perm for s, a in found if s.uid is None and not s.gids), 0)
    by_gid = {next(iter(s.gids)): a.perm for s, a in found if s.uid is None and s.gids}
    rows: list[Row] = []
    for s, a in found:
        if s.uid is not None:
            groups = [by_gid[g] for g in s.gids if g in by_gid]
            fallback = max(groups) if groups else rest
        else:
            fallback = rest if s.gids else 0
        if a.perm or fallback:
            rows.append(
                {
                    "principal": s.principal,
                    "access": rwx(a.perm),
                    "via": a.via,
                    "until": a.until,
                }
            )
    return rows


def reaches(steps: list[Step], subject: Subject) -> bool:
    """Whether subject may search every directory above steps[-1]."""
    return all(_decide(step.view, subject)[0] & X for step in steps[:-1])


def named_by_grants(path: str, subject: Subject, sources: Sources) -> bool:
    """Whether a grant subject holds names path: on the way to the grant, at it, or below it."""
    for grant in sources.grants:
        if not (
            path == grant.path
            or grant.path.startswith(path + "/")
            or path.startswith(grant.path + "/")
        ):
            continue
        if subject.uid is not None and _holds(grant, sources, True, subject.uid):
            return True
        if any(_holds(grant, sources, False, gid) for gid in subject.gids):
            return True
    return False


def expiring(
    grants: list[Grant], within: float, now: float, openings: Sequence[Opening] = ()
) -> list[Row]:
    """Grants (stored, and those imported from bucket policies, whose granted_by is the
    statement: "bucket-policy:SID") and public access (openings, "other") that end
    within `within` seconds, soonest first."""
    rows = [
        {
            "path": g.path,
            "principal": str(g.principal),
            "level": str(g.level),
            "until": g.expires,
            "granted_by": g.granted_by,
        }
        for g in grants
        if g.expires is not None and now <= g.expires <= now + within
    ]
    rows += [
        {
            "path": o.path,
            "principal": "other",
            "level": str(o.level),
            "until": o.expires,
            "granted_by": o.source,
        }
        for o in openings
        if o.expires is not None and now <= o.expires <= now + within
    ]
    return sorted(rows, key=lambda r: (r["until"], r["path"], r["principal"]))


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
