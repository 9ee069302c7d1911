"""The size budget of a bucket policy (budget.py): the document stays under the limit,
the owner's statements and every Deny stay, the sharer using the most bytes loses grants
first (newest first), and every node chooses the same whatever the order it sees."""

from __future__ import annotations

import json
import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from fedfs.policy.model import Grant, Level, Principal
from fedfs.policy.objectacl import budget, export

B = "runs"
NOW = 1_800_000_000.0
USERS = ["bob", "carol", "dave", "erin"]
MAP: dict[str, str | None] = {u: f"arn:aws:iam:::user/{u}" for u in USERS}
OWNER_DENY = {
    "Sid": "OwnerKeepsSecrets",
    "Effect": "Deny",
    "Principal": "*",
    "Action": "s3:*",
    "Resource": "arn:aws:s3:::runs/secret/*",
}


def grant(path: str, who: str, by: str, at: float, level: Level = Level.READ) -> Grant:
    return Grant(f"/{B}/{path}", Principal.parse(who), level, by, at)


def written(
    grants: list[Grant],
    limit: int,
    foreign: list[Any] | None = None,
    limits: list[export.Limit] | None = None,
) -> tuple[budget.Fitted, str | None]:
    foreign = [OWNER_DENY] if foreign is None else foreign
    wanted = export.desired(B, grants, [], {}, MAP, NOW, limits or [])
    fitted = budget.fit({}, foreign, wanted, limit)
    return fitted, export.document_of({}, foreign, fitted.statements)


def many(by: str, n: int, start: float = 0.0, who: str = "user:bob") -> list[Grant]:
    """n grants by one sharer on long, distinct paths, one second apart."""
    return [
        grant(f"{by}/project-{i:03d}/" + "x" * 60, who, by, NOW - 1000 + start + i)
        for i in range(n)
    ]


def test_everything_fits_under_a_roomy_limit() -> None:
    grants = many("alice", 5)
    fitted, doc = written(grants, budget.DEFAULT_MAX_BYTES)
    assert fitted.left_out == () and fitted.size == fitted.needed == export.size_of(doc)


def test_one_sharers_hundreds_of_grants_do_not_push_out_anothers_few() -> None:
    alice, carol = many("alice", 200), many("carol", 3, start=500.0, who="user:dave")
    fitted, doc = written(alice + carol, 20_000)
    assert export.size_of(doc) == fitted.size <= 20_000 < fitted.needed
    out = set(fitted.left_out)
    assert not out & set(carol)  # carol's three are newer than all of alice's, and kept
    # alice's oldest stay, her newest go
    kept = [g for g in alice if g not in out]
    assert kept and kept == alice[: len(kept)]
    assert OWNER_DENY in json.loads(doc or "{}")["Statement"]


def test_when_both_sharers_are_over_their_share_both_lose_their_newest() -> None:
    alice, carol = many("alice", 40), many("carol", 40, start=100.0, who="user:dave")
    fitted, _ = written(alice + carol, 12_000)
    out = set(fitted.left_out)
    for mine in (alice, carol):
        kept = [g for g in mine if g not in out]
        assert 0 < len(kept) < len(mine) and kept == mine[: len(kept)]
    per = [sum(g.granted_by == s for g in fitted.left_out) for s in ("alice", "carol")]
    assert abs(per[0] - per[1]) <= 2  # the same share each (their grants cost the same)


def test_denies_are_kept_even_when_nothing_else_fits() -> None:
    grants = many("alice", 10)
    limit = export.Limit(grants[0].path + "/private", 0, True)
    big_owner = [{**OWNER_DENY, "Sid": f"Owner{i}"} for i in range(40)]
    fitted, doc = written(grants, 2_000, foreign=big_owner, limits=[limit])
    assert set(fitted.left_out) == set(grants)
    statements = json.loads(doc or "{}")["Statement"]
    assert statements[:40] == big_owner  # the owner's, untouched and in order
    ours = [s for s in statements if export.is_owned(s)]
    assert ours and all(s["Effect"] == "Deny" for s in ours)  # the owner's limit stays


def test_a_revocation_frees_room_for_a_grant_left_out() -> None:
    grants = many("alice", 30)
    fitted, _ = written(grants, 8_000)
    assert fitted.left_out
    exported = [g for g in grants if g not in fitted.left_out]
    again, _ = written([g for g in grants if g != exported[0]], 8_000)
    assert len(again.left_out) == len(fitted.left_out) - 1


# -- properties -------------------------------------------------------------------------

grants_st = st.lists(
    st.builds(
        lambda path, who, by, at, level: grant(path, who, by, NOW - at, level),
        st.sampled_from(["a", "a/x", "b", "c/long/" + "y" * 40, "d", "e/f", "g", "é"]),
        st.sampled_from([f"user:{u}" for u in USERS]),
        st.sampled_from(["alice", "carol", "frank"]),
        st.integers(1, 50).map(float),
        st.sampled_from(list(Level)),
    ),
    max_size=25,
    unique_by=lambda g: (g.path, g.principal),
)
limits_st = st.lists(
    st.builds(
        lambda path, mask, is_dir: export.Limit(f"/{B}/{path}", mask, is_dir),
        st.sampled_from(["a/x", "b", "e/f/z", "c/long"]),
        st.integers(0, 7),
        st.booleans(),
    ),
    max_size=3,
)


@settings(max_examples=200, deadline=None)
@given(grants_st, limits_st, st.integers(300, 12_000), st.randoms(use_true_random=False))
def test_bound_respected_denies_kept_and_the_same_on_every_node(
    grants: list[Grant], limits: list[export.Limit], limit: int, rnd: random.Random
) -> None:
    fitted, doc = written(grants, limit, limits=limits)
    everything = export.desired(B, grants, [], {}, MAP, NOW, limits).statements
    denies = [s for s in everything if s["Effect"] == "Deny"]
    statements = json.loads(doc)["Statement"] if doc else []
    assert statements[0] == OWNER_DENY  # the owner's statement, first and untouched
    for s in denies:  # every Deny is written, whatever the size
        assert s in statements
    base = export.size_of(export.document_of({}, [OWNER_DENY], denies))
    if base <= limit:
        assert export.size_of(doc) <= limit
    else:
        assert not any(s["Effect"] == "Allow" for s in statements if export.is_owned(s))
    # what is written is exactly the statements of the grants not left out
    kept = [g for g in grants if g not in set(fitted.left_out)]
    again = export.desired(B, kept, [], {}, MAP, NOW, limits)
    allows = [s for s in again.statements if s["Effect"] == "Allow"]
    assert sorted(s["Sid"] for s in statements if export.is_owned(s)) == sorted(
        {s["Sid"] for s in [*denies, *allows]}
    )
    # another node, seeing the grants in another order, writes the same document
    shuffled = list(grants)
    rnd.shuffle(shuffled)
    _, other = written(shuffled, limit, limits=list(reversed(limits)))
    assert other == doc


@settings(max_examples=100, deadline=None)
@given(grants_st, st.integers(300, 12_000))
def test_a_sharer_under_the_fair_share_is_left_out_only_once_every_other_is_down_to_it(
    grants: list[Grant], limit: int
) -> None:
    """When a sharer loses a grant, no other sharer was using more bytes at that moment."""
    fitted, _ = written(grants, limit)
    wanted = export.desired(B, grants, [], {}, MAP, NOW)
    cost = {
        g: sum(
            len(json.dumps(s, ensure_ascii=False).encode()) + 2
            for s in export.grant_statements(B, g.path, g.level, g.expires, list(who))
        )
        for g, who in wanted.reaches
    }
    used: dict[str, int] = {}
    for g in cost:
        used[g.granted_by] = used.get(g.granted_by, 0) + cost[g]
    for g in fitted.left_out:
        assert used[g.granted_by] == max(used.values())
        mine = [h for h in cost if h.granted_by == g.granted_by and h not in fitted.left_out]
        assert all(export.grant_order(h) < export.grant_order(g) for h in mine)  # newest first
        used[g.granted_by] -= cost[g]
