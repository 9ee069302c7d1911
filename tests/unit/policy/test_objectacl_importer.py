"""The importer between a bucket's policy and the view: a change is applied, recorded in
the signed audit chain with the full observation, and applying it again changes nothing."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import trio

from fedfs.audit.chain import AuditTrail, SigningKey
from fedfs.config import ObjectAclConfig
from fedfs.identity.source import Group, IdentityHealth, User
from fedfs.policy import reports
from fedfs.policy.model import Level, Principal
from fedfs.policy.objectacl.imported import Observed
from fedfs.policy.objectacl.importer import KIND, Importer
from fedfs.policy.replay import OBSERVE
from fedfs.policy.sharing import Sharing
from fedfs.policy.site import load_site_policy
from fedfs.policy.store import PolicyStore

USERS = {
    "alice": User("alice", 1001, 100, frozenset({100})),
    "carol": User("carol", 1003, 100, frozenset({100})),
}


class Names:
    """The identity source: two users, no groups."""

    def user(self, name: str) -> User | None:
        return USERS.get(name)

    def user_by_uid(self, uid: int) -> User | None:
        return next((u for u in USERS.values() if u.uid == uid), None)

    def group(self, name: str) -> Group | None:
        return None

    def group_by_gid(self, gid: int) -> Group | None:
        return None

    def health(self) -> IdentityHealth:
        return IdentityHealth("test", True, None, None)


class Bucket:
    """What GetBucketPolicy and GetBucketAcl answer (the mapping's input, nothing enforced)."""

    def __init__(self) -> None:
        self.policy: str | None = None

    def get_bucket_policy(self, bucket: str) -> str | None:
        return self.policy

    def get_bucket_acl(self, bucket: str) -> dict[str, Any]:
        return {"Owner": {"ID": "alice"}, "Grants": []}


def statement(sid: str, **more: Any) -> dict[str, Any]:
    return {
        "Sid": sid,
        "Effect": "Allow",
        "Principal": {"AWS": "arn:aws:iam:::user/carol"},
        "Action": "s3:GetObject",
        "Resource": "arn:aws:s3:::b/shared/*",
        **more,
    }


def test_a_change_is_applied_recorded_once_and_replaying_it_changes_nothing(tmp_path: Path) -> None:
    sharing, importer, bucket = node(tmp_path)
    trail = sharing.trail
    assert trail is not None

    def carol_level() -> Level | None:
        return sharing.engine.level_of("carol", 1003, frozenset({100}), "/b/shared/a.nc", 0)

    def observations() -> list[Any]:
        return [r for r in trail.records() if r.action == OBSERVE and r.detail.get("kind") == KIND]

    async def main() -> None:
        bucket.policy = json.dumps(
            {
                "Statement": [
                    statement("CarolReads"),
                    statement("FromLab", Condition={"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}),
                ]
            }
        )
        await importer.poll_all()
        assert carol_level() == Level.READ
        await importer.poll_all()
        assert len(observations()) == 1
        assert importer.unmapped_seen == 1
        assert [u["sid"] for u in importer.status()["unmapped"]] == ["FromLab"]  # type: ignore[index]
        payload = Observed.from_json(str(observations()[0].detail["payload"]))
        assert not await importer.apply_observation(payload, 0.0)
        bucket.policy = None
        await importer.poll_all()
        assert carol_level() is None
        assert len(observations()) == 2
        assert "CarolReads" in (observations()[0].after or "")

    trio.run(main)


def test_a_right_keeps_the_time_it_was_first_observed_across_polls_changes_and_restarts(
    tmp_path: Path,
) -> None:
    site = load_site_policy([])
    store = PolicyStore(tmp_path / "policy.db", site.team_gids)
    bucket = Bucket()

    def restarted() -> tuple[Sharing, Importer]:  # a (re)started node on the same state
        sharing, importer, _ = node(tmp_path, store, bucket)
        return sharing, importer

    def since(sharing: Sharing) -> dict[str, float]:
        return {g.granted_by: g.granted_at for g in sharing.imported_grants()}

    later = {"DateLessThan": {"aws:CurrentTime": "2099-01-01T00:00:00Z"}}

    async def main() -> None:
        sharing, importer = restarted()
        bucket.policy = json.dumps({"Statement": [statement("CarolReads")]})
        await importer.poll_all()
        first = since(sharing)["bucket-policy:CarolReads"]
        await importer.poll_all()
        assert since(sharing) == {"bucket-policy:CarolReads": first}
        # another statement arrives: the first keeps its time, the new one has its own
        bucket.policy = json.dumps(
            {"Statement": [statement("CarolReads"), statement("Temp", Condition=later)]}
        )
        await importer.poll_all()
        both = since(sharing)
        assert both["bucket-policy:CarolReads"] == first
        assert both["bucket-policy:Temp"] > first
        # a new daemon on the same policy store: the times read back from the observation
        sharing2, importer2 = restarted()
        await sharing2.rebuild()
        assert sharing2.engine.level_of("carol", 1003, frozenset({100}), "/b/shared/a", 0)
        await importer2.poll_all()
        assert since(sharing2) == both
        rows = reports.expiring(sharing2.imported_grants(), 100 * 365 * 86400, time.time())
        assert [(r["principal"], r["granted_by"]) for r in rows] == [
            ("user:carol", "bucket-policy:Temp")
        ]

    trio.run(main)


def test_a_deny_keeps_the_time_it_was_first_observed_when_the_policy_is_rewritten(
    tmp_path: Path,
) -> None:
    sharing, importer, bucket = node(tmp_path)
    deny = statement("DenyCarol", Effect="Deny", Resource="arn:aws:s3:::b/shared/secret/*")

    def denied_since() -> list[float | None]:
        return [d.since for d in sharing.imported["b"][0].denials]

    async def main() -> None:
        bucket.policy = json.dumps({"Statement": [statement("CarolReads"), deny]})
        await importer.poll_all()
        first = denied_since()
        assert len(first) == 1 and first[0] is not None
        # alice rewrites other parts of her policy: the Deny is the same one
        bucket.policy = json.dumps({"Statement": [deny, statement("Other", Resource="b/x/*")]})
        await importer.poll_all()
        assert denied_since() == first
        rows = sharing._bucket_policy_rows("/b/shared/secret/f", time.time())
        assert [r["granted_at"] for r in rows] == first

    trio.run(main)


def test_setfacl_on_an_imported_entry_says_it_comes_from_the_bucket_policy(
    tmp_path: Path,
) -> None:
    """Removing carol's entry with setfacl is refused; the reason names the statement and
    S3, not a `fedfs unshare` that would itself be refused (there is no fedfs grant)."""
    sharing, importer, bucket = node(tmp_path)

    async def main() -> None:
        bucket.policy = json.dumps({"Statement": [statement("CarolReads")]})
        await importer.poll_all()
        why = sharing._not_here("/b/shared/a.txt", Principal.parse("user:carol"), time.time())
        assert "bucket-policy:CarolReads" in why and "put-bucket-policy" in why, why
        assert "fedfs unshare" not in why, why

    trio.run(main)


def node(
    tmp_path: Path, store: PolicyStore | None = None, bucket: Bucket | None = None
) -> tuple[Sharing, Importer, Bucket]:
    """A node's sharing and importer over one in-memory bucket "b" (given policy state and
    bucket: a node restarted on them)."""
    site = load_site_policy([])
    trail = AuditTrail(tmp_path / "audit", "n1", SigningKey.generate())
    store = PolicyStore(tmp_path / "policy.db", site.team_gids) if store is None else store
    sharing = Sharing(store, site, Names(), {}, trio.CapacityLimiter(2), trail=trail)
    bucket = Bucket() if bucket is None else bucket
    importer = Importer(
        ObjectAclConfig(principal="arn:aws:iam:::user/{user}"),
        ["b"],
        bucket,  # type: ignore[arg-type]
        sharing,
        Names(),
        trail,
        trio.CapacityLimiter(2),
    )
    return sharing, importer, bucket
