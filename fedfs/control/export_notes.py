"""What `fedfs share`, `unshare` and `team remove` tell the user about the bucket policy
([object_acl] export, docs/OBJECT_ACL.md "Policy size" and "Revocation on the store").

A change waits (at most WAIT seconds) for the export pass that includes it, so the answer
says what the store now holds: a grant that is in force through the mount but not in the
bucket policy (full, no principal, export failing) is never silent, and a revocation the
store still allows is never reported as done there. Runs in the trio thread, in the
command that asks; calls the exporter (policy/objectacl) only.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fedfs.policy.model import Grant
from fedfs.policy.objectacl.exporter import Exporter

WAIT = 3.0  # seconds a command waits for its change to reach the bucket policy


async def after_share(exporter: Exporter | None, grant: Grant) -> dict[str, Any] | None:
    """{"bucket", "exported": True/False/None (not known yet), "note"} for a new grant."""
    if exporter is None:
        return None
    bucket = _bucket(grant.path)
    caught_up = await exporter.caught_up(WAIT)
    verdict = exporter.verdict(grant)
    if verdict is not None:
        note = (
            f"shared through the mount; NOT exported to the bucket policy of {bucket}, so "
            f"{grant.principal}'s own S3 keys do not reach it: {verdict.detail}. "
            + _remedy(verdict.detail)
        )
        return {"bucket": bucket, "exported": False, "note": note}
    if not caught_up:
        return {"bucket": bucket, "exported": None, "note": _pending(bucket)}
    return {"bucket": bucket, "exported": True, "note": None}


async def after_revocation(
    exporter: Exporter | None, buckets: Iterable[str], what: str
) -> dict[str, Any] | None:
    """{"buckets", "removed": True/False/None, "note"} once a revocation (`what`, e.g.
    "user:bob read on /b/runs") has reached the policies of `buckets`, or why not."""
    if exporter is None:
        return None
    wanted = sorted(set(buckets) & set(exporter.state))
    caught_up = await exporter.caught_up(WAIT)
    failing = {b: exporter.state[b].error for b in wanted if exporter.state[b].error}
    if failing:
        errors = "; ".join(f"{b}: {e}" for b, e in sorted(failing.items()))
        note = (
            f"removed through the mount, but NOT yet from the bucket policy of "
            f"{', '.join(sorted(failing))}: exporting there fails ({errors}). Until it "
            f"succeeds, the store still gives {what} through their own S3 keys. "
            "fedfs retries by itself; fix the cause (`fedfs status` shows it, `fedfs doctor` "
            "checks the permissions), or ask the bucket's owner to remove the statement "
            "naming that user from the bucket policy"
        )
        return {"buckets": wanted, "removed": False, "note": note}
    if not caught_up:
        note = (
            _pending(", ".join(wanted))
            + f"; until it is, the store may still give {what} through their own S3 keys"
        )
        return {"buckets": wanted, "removed": None, "note": note}
    return {"buckets": wanted, "removed": True, "note": None}


async def after_team_add(exporter: Exporter | None, team: str) -> dict[str, Any] | None:
    """{"exported": True/False/None, "note"}: whether the team's grants, which now reach
    its new members too, are all in the bucket policies (a full policy may leave them out)."""
    if exporter is None:
        return None
    caught_up = await exporter.caught_up(WAIT)
    out = sorted(
        (g.path, verdict.detail)
        for st in exporter.state.values()
        for g in st.left_out().values()
        if str(g.principal) == f"team:{team}" and (verdict := exporter.verdict(g)) is not None
    )
    if out:
        paths = ", ".join(path for path, _ in out)
        note = (
            f"team {team}'s grants on {paths} are in force through the mount but NOT exported "
            f"to the bucket policy, so members' own S3 keys do not reach them: {out[0][1]}. "
            + _remedy(out[0][1])
        )
        return {"exported": False, "note": note}
    if not caught_up:
        return {"exported": None, "note": _pending("the buckets")}
    return {"exported": True, "note": None}


def _pending(bucket: str) -> str:
    return (
        f"not yet confirmed in the bucket policy of {bucket} after {WAIT:g} s (the export is "
        "still running); `fedfs status` shows when it is in line"
    )


def _remedy(why: str) -> str:
    if "is full" in why:
        return (
            "Remove grants you no longer need with `fedfs unshare`, or ask an admin to raise "
            "[object_acl] max_policy_bytes (if the store takes it)"
        )
    if "principal" in why:
        return "Ask an admin to give that user an object-store principal"
    if "team has no members" in why:
        return "Its members' own S3 keys reach it once the team has members (`fedfs team add`)"
    if "lists no members" in why:
        return "Share with the users themselves, or with a team (`fedfs team --help`)"
    if "wildcards" in why:
        return "Share a directory above it whose path has none of * ? ${"
    return "fedfs exports it when the bucket policy can be written again (`fedfs status`)"


def _bucket(path: str) -> str:
    return path.split("/", 2)[1]
