"""Export's pure part: the statements grants imply and the merge into a bucket's policy.

What a bucket owner would notice: their own statements are never touched, fedfs's
statements follow the grants exactly, every node writes the same document, and writing
twice changes nothing. Property tests draw random grants and foreign statements.
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedfs.events import iso
from fedfs.policy.model import OBJECT, Grant, Level, Principal, Team
from fedfs.policy.objectacl import export
from fedfs.policy.objectacl.export import UnreadablePolicy, desired, is_owned, merge

B = "runs"
P = "arn:aws:iam:::user/{}"
NOW = 1_800_000_000.0


def principals(*users: str) -> dict[str, str | None]:
    return {u: P.format(u) for u in users}


def grant(path: str, who: str, level: Level = Level.READ, expires: float | None = None) -> Grant:
    return Grant(path, Principal.parse(who), level, "alice", NOW - 10, expires)


def statements_for(*grants: Grant, teams: tuple[Team, ...] = (), **kw: Any) -> list[Any]:
    users = {"bob", "carol", "dave", "erin"}
    return list(desired(B, grants, teams, kw.get("groups", {}), principals(*users), NOW).statements)


def test_a_read_grant_is_get_under_its_path_and_list_with_a_prefix_condition() -> None:
    objects, listing = statements_for(grant("/runs/2024", "user:bob"))
    by_action = {s["Action"][0]: s for s in (objects, listing)}
    get, ls = by_action["s3:GetObject"], by_action["s3:ListBucket"]
    assert get["Action"] == ["s3:GetObject"]
    assert get["Resource"] == ["arn:aws:s3:::runs/2024", "arn:aws:s3:::runs/2024/*"]
    assert get["Principal"] == {"AWS": ["arn:aws:iam:::user/bob"]}
    assert "Condition" not in get
    assert ls["Resource"] == ["arn:aws:s3:::runs"]
    assert ls["Condition"] == {"StringLike": {"s3:prefix": ["2024/", "2024/*"]}}
    assert all(is_owned(s) and s["Sid"].isalnum() for s in (get, ls))


def test_write_and_manage_add_put_delete_and_abort() -> None:
    for level in (Level.WRITE, Level.MANAGE):
        objects = statements_for(grant("/runs/a", "user:bob", level))
        actions = next(s["Action"] for s in objects if "s3:GetObject" in s["Action"])
        assert set(actions) == {
            "s3:GetObject",
            "s3:PutObject",
            "s3:DeleteObject",
            "s3:AbortMultipartUpload",
        }


def test_a_bucket_grant_covers_every_key_and_lists_without_a_condition() -> None:
    get, ls = sorted(statements_for(grant("/runs", "user:bob")), key=lambda s: s["Action"][0])
    assert get["Resource"] == ["arn:aws:s3:::runs/*"]
    assert "Condition" not in ls


def test_an_expiring_grant_carries_its_expiry_and_is_gone_once_expired() -> None:
    g = grant("/runs/a", "user:bob", expires=NOW + 3600)
    for s in statements_for(g):
        assert s["Condition"]["DateLessThan"] == {"aws:CurrentTime": "2027-01-15T09:00:00Z"}
    assert desired(B, [g], [], {}, principals("bob"), NOW + 3600).statements == ()


def test_teams_and_groups_expand_to_their_members_and_members_without_principal_are_skipped() -> (
    None
):
    team = Team("cosmo", 70000, frozenset({"carol", "nobody"}), group="astro")
    groups = {"astro": frozenset({"dave"}), "lab": frozenset({"erin"})}
    found = desired(
        B,
        [grant("/runs/a", "team:cosmo"), grant("/runs/b", "group:lab")],
        [team],
        groups,
        {**principals("carol", "dave", "erin"), "nobody": None},
        NOW,
    )
    who = {s["Resource"][0]: s["Principal"]["AWS"] for s in found.statements}
    assert who["arn:aws:s3:::runs/a"] == [P.format("carol"), P.format("dave")]
    assert who["arn:aws:s3:::runs/b"] == [P.format("erin")]
    assert [(s.user, s.grant.principal.name) for s in found.skipped] == [("nobody", "cosmo")]


def test_a_team_or_group_with_no_one_to_name_is_said_to_be_left_out() -> None:
    """Nothing to write for them, so `fedfs share` and `fedfs grants` must not call the
    grant exported: it is skipped with the reason, and the note says what to do."""
    from fedfs.control.export_notes import _remedy

    empty = Team("void", 70001, frozenset())
    found = desired(
        B,
        [grant("/runs/a", "team:void"), grant("/runs/b", "group:nobody-listed")],
        [empty],
        {"nobody-listed": frozenset()},
        principals("bob"),
        NOW,
    )
    assert found.statements == ()
    reasons = {s.grant.principal.name: s.reason for s in found.skipped}
    assert reasons["void"] == "the team has no members"
    assert reasons["nobody-listed"].startswith("the group lists no members")
    assert "fedfs team add" in _remedy(reasons["void"])
    assert "with the users themselves" in _remedy(reasons["nobody-listed"])


def test_a_path_with_wildcard_characters_is_not_exported() -> None:
    found = desired(B, [grant("/runs/a*b", "user:bob")], [], {}, principals("bob"), NOW)
    assert found.statements == ()
    assert "wildcards" in found.skipped[0].reason


def test_other_buckets_grants_are_left_out() -> None:
    assert statements_for(grant("/other/a", "user:bob")) == []


def test_merge_keeps_foreign_statements_and_returns_none_when_nothing_changes() -> None:
    alice = {"Sid": "carol-shared", "Effect": "Allow", "Principal": {"AWS": "x"}, "Action": "*"}
    doc = json.dumps({"Version": "2012-10-17", "Id": "mine", "Statement": [alice]})
    ours = statements_for(grant("/runs/a", "user:bob"))
    change = merge(B, doc, ours)
    assert change is not None and change.document is not None
    written = json.loads(change.document)
    assert written["Id"] == "mine" and written["Statement"][0] == alice
    assert set(change.added) == {s["Sid"] for s in ours} and change.removed == ()
    assert merge(B, change.document, ours) is None
    back = merge(B, change.document, [])
    assert back is not None and back.document is not None
    assert json.loads(back.document)["Statement"] == [alice]


def test_merge_deletes_the_policy_when_only_fedfs_statements_were_in_it() -> None:
    ours = statements_for(grant("/runs/a", "user:bob"))
    change = merge(B, None, ours)
    assert change is not None and change.document is not None
    gone = merge(B, change.document, [])
    assert gone is not None and gone.document is None and len(gone.removed) == 2
    assert merge(B, None, []) is None


def test_a_fedfs_statement_changed_by_hand_is_restored() -> None:
    ours = statements_for(grant("/runs/a", "user:bob"))
    change = merge(B, None, ours)
    assert change is not None and change.document is not None
    doc = json.loads(change.document)
    doc["Statement"][0]["Resource"] = ["arn:aws:s3:::runs/*"]
    fixed = merge(B, json.dumps(doc), ours)
    assert fixed is not None and fixed.added == fixed.removed == (doc["Statement"][0]["Sid"],)


@pytest.mark.parametrize(
    "document", ["{not json", "[]", '"text"', '{"Statement": 3}', "[" * 100_000]
)
def test_an_unreadable_policy_is_left_alone_with_a_reason(document: str) -> None:
    with pytest.raises(UnreadablePolicy, match="leaves it as it is"):
        merge(B, document, statements_for(grant("/runs/a", "user:bob")))


def test_a_single_statement_object_is_read_as_a_list() -> None:
    alice = {"Sid": "one", "Effect": "Deny", "Principal": "*", "Action": "s3:*"}
    change = merge(B, json.dumps({"Statement": alice}), [])
    assert change is None


# -- properties -------------------------------------------------------------------------

USERS = ["bob", "carol", "dave"]
names = st.sampled_from(["a", "b", "a/x", "a/x/y", "c d", "é"])
grants_st = st.lists(
    st.builds(
        lambda path, who, level, expires: Grant(
            f"/{B}/{path}" if path else f"/{B}",
            Principal.parse(who),
            level,
            "alice",
            NOW - 10,
            expires,
        ),
        st.one_of(st.just(""), names),
        st.sampled_from([f"user:{u}" for u in USERS] + ["team:t", "group:g", "user:ghost"]),
        st.sampled_from(list(Level)),
        st.one_of(st.none(), st.sampled_from([NOW - 5, NOW + 60, NOW + 86400])),
    ),
    max_size=8,
    unique_by=lambda g: (g.path, g.principal),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)
foreign_st = st.lists(
    st.dictionaries(st.text(max_size=6), json_values, max_size=4).map(
        lambda d: {
            **d,
            "Sid": f"fedfs{d['Sid']}" if isinstance(d.get("Sid"), str) else d.get("Sid"),
        }
    )
    | st.dictionaries(st.sampled_from(["Sid", "Effect", "Action"]), st.text(max_size=30)),
    max_size=4,
)
TEAMS = [Team("t", 70000, frozenset({"carol", "ghost"}))]
GROUPS = {"g": frozenset({"dave", "bob"})}
MAP = {**principals(*USERS), "ghost": None}


def _desired(grants: list[Grant]) -> list[Any]:
    return list(desired(B, grants, TEAMS, GROUPS, MAP, NOW).statements)


@settings(max_examples=200, deadline=None)
@given(grants_st, grants_st, foreign_st)
def test_merging_is_idempotent_and_never_touches_foreign_statements(
    before: list[Grant], after: list[Grant], foreign: list[Any]
) -> None:
    foreign = [s for s in foreign if not is_owned(s)]
    doc = json.dumps({"Version": "2012-10-17", "Statement": foreign}) if foreign else None
    for grants in (before, after):
        change = merge(B, doc, _desired(grants))
        if change is not None:
            doc = change.document
        assert merge(B, doc, _desired(grants)) is None  # idempotent
        kept = json.loads(doc)["Statement"] if doc else []
        assert [s for s in kept if not is_owned(s)] == foreign  # foreign: same, same order
        assert sorted(s["Sid"] for s in kept if is_owned(s)) == sorted(
            s["Sid"] for s in _desired(grants)
        )


@settings(max_examples=200, deadline=None)
@given(grants_st, st.randoms(use_true_random=False))
def test_sids_and_documents_are_the_same_on_every_node_whatever_the_order(
    grants: list[Grant], rnd: random.Random
) -> None:
    shuffled = list(grants)
    rnd.shuffle(shuffled)
    a, b = merge(B, None, _desired(grants)), merge(B, None, _desired(shuffled))
    assert (a and a.document) == (b and b.document)
    for s in _desired(grants):
        assert s["Sid"] == export.sid_of(s) and s["Sid"].isalnum() and is_owned(s)
        for arn in s["Principal"]["AWS"]:
            assert arn in MAP.values()


@settings(max_examples=200, deadline=None)
@given(grants_st)
def test_statements_grant_nothing_beyond_the_grants(grants: list[Grant]) -> None:
    """Every (principal, resource, action) allowed is one some active grant gives."""
    allowed = set()
    for g in grants:
        if not g.active(NOW):
            continue
        users = export.users_of(g, {t.name: t for t in TEAMS}, GROUPS)
        key = g.path.split("/", 2)[2] if g.path.count("/") >= 2 else ""
        actions = export.WRITE_ACTIONS if g.level >= Level.WRITE else export.READ_ACTIONS
        for u in users:
            if MAP.get(u):
                for a in actions:
                    allowed.add((MAP[u], key, a))
                allowed.add((MAP[u], key, "s3:ListBucket"))
    for s in _desired(grants):
        res = s["Resource"][0].removeprefix(f"arn:aws:s3:::{B}").lstrip("/").removesuffix("*")
        key = res.removesuffix("/")
        for who in s["Principal"]["AWS"]:
            for a in s["Action"]:
                if a == "s3:ListBucket":
                    prefixes = s.get("Condition", {}).get("StringLike", {}).get("s3:prefix")
                    key = prefixes[0].removesuffix("/") if prefixes else ""
                assert (who, key, a) in allowed


hostile_docs = st.one_of(
    st.text(max_size=200),
    json_values.map(json.dumps),
    st.lists(json_values, max_size=5).map(lambda s: json.dumps({"Statement": s})),
    st.dictionaries(st.text(max_size=6), json_values, max_size=4).map(
        lambda top: json.dumps({**top, "Statement": top.get("Statement", [])})
    ),
)


@settings(max_examples=300, deadline=None)
@given(hostile_docs, grants_st)
def test_any_document_is_either_left_alone_or_merged_keeping_what_is_not_ours(
    document: str, grants: list[Grant]
) -> None:
    try:
        change = merge(B, document, _desired(grants))
    except UnreadablePolicy:
        return
    top = json.loads(document) if document.strip() else {}  # blank: no policy
    before = top.get("Statement", [])
    before = [before] if isinstance(before, dict) else before
    if change is None:
        return
    after = json.loads(change.document)["Statement"] if change.document else []
    assert [s for s in after if not is_owned(s)] == [s for s in before if not is_owned(s)]
    if change.document:
        kept = json.loads(change.document)
        assert {k: v for k, v in kept.items() if k not in ("Statement", "Version")} == {
            k: v for k, v in top.items() if k not in ("Statement", "Version")
        }


def test_an_owners_limit_under_a_grant_becomes_a_deny_for_its_principals() -> None:
    from fedfs.policy.model import Grant, Level, Principal
    from fedfs.policy.objectacl.export import Limit, desired

    grant = Grant("/b/runs", Principal("user", "bob"), Level.WRITE, "alice", 0.0)
    bob = {"bob": "arn:aws:iam:::user/bob"}
    private = desired("b", [grant], [], {}, bob, 1.0, [Limit("/b/runs/mine.txt", 0, False)])
    denies = [s for s in private.statements if s["Effect"] == "Deny"]
    assert [(d["Action"], d["Resource"]) for d in denies] == [
        (
            ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"],
            ["arn:aws:s3:::b/runs/mine.txt"],
        )
    ]
    assert denies[0]["Principal"] == {"AWS": ["arn:aws:iam:::user/bob"]}
    read_only = desired("b", [grant], [], {}, bob, 1.0, [Limit("/b/runs/mine.txt", 4, False)])
    assert [s["Action"] for s in read_only.statements if s["Effect"] == "Deny"] == [
        ["s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
    ]
    closed_dir = desired("b", [grant], [], {}, bob, 1.0, [Limit("/b/runs/sub", 0, True)])
    resources = [s["Resource"] for s in closed_dir.statements if s["Effect"] == "Deny"]
    assert ["arn:aws:s3:::b/runs/sub/*"] in resources and ["arn:aws:s3:::b"] in resources
    # a limit that takes nothing away, or one outside every grant, denies nothing
    for limit in (Limit("/b/runs/mine.txt", 6, False), Limit("/b/other/x", 0, False)):
        found = desired("b", [grant], [], {}, bob, 1.0, [limit])
        assert all(s["Effect"] == "Allow" for s in found.statements)


def test_a_sid_shaped_like_fedfss_over_other_content_is_the_owners() -> None:
    """The owner's statement named like fedfs's stays where no grant of fedfs's has that
    Sid; a fedfs statement edited by hand (its Sid still one fedfs writes) is restored."""
    ours = statements_for(grant("/runs/a", "user:bob"))
    alices = {
        "Sid": "fedfs" + "0" * 24,
        "Effect": "Deny",
        "Principal": {"AWS": "arn:aws:iam:::user/bob"},
        "Action": "s3:GetObject",
        "Resource": "arn:aws:s3:::runs/a/secret/*",
    }
    assert not is_owned(alices) and all(is_owned(s) for s in ours)
    doc = json.dumps({"Version": "2012-10-17", "Statement": [alices]})
    change = merge(B, doc, ours)
    assert change is not None and change.document is not None
    kept = json.loads(change.document)["Statement"]
    assert kept[0] == alices and [s["Sid"] for s in kept[1:]] == sorted(s["Sid"] for s in ours)
    assert merge(B, change.document, ours) is None  # and it stays so
    gone = merge(B, change.document, [])
    assert gone is not None and json.loads(gone.document or "{}")["Statement"] == [alices]


def file_grant(
    path: str, who: str, level: Level = Level.READ, expires: float | None = None
) -> Grant:
    return Grant(path, Principal.parse(who), level, "alice", NOW - 10, expires, OBJECT)


def test_a_file_grant_is_one_statement_on_its_key_and_no_listing() -> None:
    (read,) = statements_for(file_grant("/runs/d3/rep", "user:bob"))
    assert read["Action"] == ["s3:GetObject"]
    assert read["Resource"] == ["arn:aws:s3:::runs/d3/rep"]
    (write,) = statements_for(file_grant("/runs/d4/w.txt", "user:bob", Level.WRITE, NOW + 60))
    assert set(write["Action"]) == {
        "s3:GetObject",
        "s3:PutObject",
        "s3:DeleteObject",
        "s3:AbortMultipartUpload",
    }
    assert write["Resource"] == ["arn:aws:s3:::runs/d4/w.txt"]
    assert write["Condition"] == {"DateLessThan": {"aws:CurrentTime": iso(NOW + 60)}}
    assert all(is_owned(s) for s in (read, write))


def test_a_file_grant_and_a_directory_grant_on_the_same_path_keep_their_own_statements() -> None:
    found = statements_for(grant("/runs/x", "user:carol"), file_grant("/runs/x", "user:bob"))
    bob = [s for s in found if "arn:aws:iam:::user/bob" in s["Principal"]["AWS"]]
    carol = [s for s in found if "arn:aws:iam:::user/carol" in s["Principal"]["AWS"]]
    assert [s["Resource"] for s in bob] == [["arn:aws:s3:::runs/x"]]
    assert sorted(str(s["Resource"]) for s in carol) == sorted(
        [str(["arn:aws:s3:::runs/x", "arn:aws:s3:::runs/x/*"]), str(["arn:aws:s3:::runs"])]
    )


def test_the_owners_limit_on_a_shared_file_denies_its_key_only() -> None:
    limit = export.Limit("/runs/d/f", 0o0, is_dir=False)
    got = desired(
        B, [file_grant("/runs/d/f", "user:bob")], [], {}, principals("bob"), NOW, [limit]
    ).statements
    denies = [s for s in got if s["Effect"] == "Deny"]
    assert [s["Resource"] for s in denies] == [["arn:aws:s3:::runs/d/f"]]
    # a limit below a file's name (a directory a prefix made there) is nothing of its grant's
    below = export.Limit("/runs/d/f/sub", 0o0, is_dir=True)
    got = desired(
        B, [file_grant("/runs/d/f", "user:bob")], [], {}, principals("bob"), NOW, [below]
    ).statements
    assert [s for s in got if s["Effect"] == "Deny"] == []
