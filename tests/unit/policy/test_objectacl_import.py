"""The import mapping: what a bucket policy and ACL give in POSIX, checked against a
reference evaluator of the store's own rules, on chosen and on random (hostile) input."""

from __future__ import annotations

import json
import re
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedfs.config import ObjectAclConfig
from fedfs.identity.source import User
from fedfs.policy.acl import R, W, permits
from fedfs.policy.engine import ObjectMeta, PolicyEngine
from fedfs.policy.model import Denial, Grant, Identities, Level, Opening, Principal
from fedfs.policy.objectacl import imported
from fedfs.policy.objectacl.export import is_owned
from fedfs.policy.objectacl.imported import EVERYONE, Observed, observe
from fedfs.policy.objectacl.principals import PrincipalMap

NOW = 1_800_000_000.0
BUCKET = "b"
USERS = {"alice", "bob", "carol"}


class Known:
    """The identity source as far as the mapping asks: does this user exist here."""

    def user(self, name: str) -> User | None:
        return User(name, 1000, 1000, frozenset()) if name in USERS else None


MAP = PrincipalMap(ObjectAclConfig(principal="arn:aws:iam:::user/{user}"), Known())  # type: ignore[arg-type]


def local_user(principal: str) -> str | None:
    return MAP.user_of(principal)


def arn(user: str) -> str:
    return f"arn:aws:iam:::user/{user}"


def see(statements: list[Any], acl: Any = None) -> Observed:
    doc = json.dumps({"Version": "2012-10-17", "Statement": statements})
    return observe(BUCKET, doc, acl, local_user, NOW, is_owned)


def allow(sid: str, who: Any, action: Any, resource: Any, **more: Any) -> dict[str, Any]:
    return {
        "Sid": sid,
        "Effect": "Allow",
        "Principal": who,
        "Action": action,
        "Resource": resource,
        **more,
    }


def rights(found: Observed) -> set[tuple[str, str, int, str]]:
    return {(r.path, r.who, r.level, r.source) for r in found.rights}


def test_get_under_a_prefix_gives_read_below_it_and_the_usual_listing_lists_there() -> None:
    found = see(
        [
            allow("CarolReads", {"AWS": arn("carol")}, "s3:GetObject", "arn:aws:s3:::b/shared/*"),
            allow(
                "CarolLists",
                {"AWS": [arn("carol")]},
                "s3:ListBucket",
                "arn:aws:s3:::b",
                Condition={"StringLike": {"s3:prefix": ["shared/*", "shared/"]}},
            ),
        ]
    )
    assert shapes(found) == {
        ("/b/shared", "carol", "below", "bucket-policy:CarolReads"),
        ("/b/shared", "carol", "list", "bucket-policy:CarolLists"),
        ("/b/shared", "carol", "list-one", "bucket-policy:CarolLists"),
    }
    assert found.unmapped == ()


def shapes(found: Observed) -> set[tuple[str, str, str, str]]:
    return {(r.path, r.who, r.shape, r.source) for r in found.rights}


def lister(sid: str, who: str, condition: Any = None) -> dict[str, Any]:
    more = {} if condition is None else {"Condition": condition}
    return allow(sid, {"AWS": arn(who)}, "s3:ListBucket", "arn:aws:s3:::b", **more)


def test_a_prefix_without_slash_maps_the_object_and_what_is_under_it_and_says_the_rest() -> None:
    found = see([allow("Data", {"AWS": arn("bob")}, "s3:GetObject", "arn:aws:s3:::b/d/data*")])
    assert shapes(found) == {("/b/d/data", "bob", "prefix", "bucket-policy:Data")}
    # keys such as d/data2/x or d/datafile are the store's, not the mount's: said once
    assert [u.sid for u in found.unmapped] == ["Data"]
    assert "'d/data2/x'" in found.unmapped[0].reason


def test_write_needs_put_get_and_delete_on_the_same_keys() -> None:
    object_too = see(
        [
            allow(
                "Put", {"AWS": arn("bob")}, ["s3:PutObject", "s3:DeleteObject"], "arn:aws:s3:::b/w*"
            ),
            allow("Get", {"AWS": arn("bob")}, "s3:GetObject", "arn:aws:s3:::b/w/*"),
        ]
    )
    # GetObject on w/* does not cover the key w, which PutObject on w* does: no write
    assert {(r.level, r.shape) for r in object_too.rights} == {(Level.READ, "below")}
    assert any("not mapped as write" in u.reason for u in object_too.unmapped if u.sid == "Put")
    wider = see(
        [
            allow(
                "Put",
                {"AWS": arn("bob")},
                ["s3:PutObject", "s3:DeleteObject"],
                "arn:aws:s3:::b/w/*",
            ),
            allow("Get", {"AWS": arn("bob")}, "s3:GetObject", "arn:aws:s3:::b/w*"),
        ]
    )
    assert ("/b/w", "bob", Level.WRITE, "bucket-policy:Put") in rights(wider)


def test_listing_rights_follow_the_prefix_condition_exactly() -> None:
    cases: list[tuple[Any, set[tuple[str, str]]]] = [
        (None, {("/b", "list")}),
        ({"StringEquals": {"s3:prefix": "runs/"}}, {("/b/runs", "list-one")}),
        ({"StringLike": {"s3:prefix": "runs/"}}, {("/b/runs", "list-one")}),
        ({"StringEquals": {"s3:prefix": "runs/*"}}, set()),  # a literal "*": no directory
        ({"StringLike": {"s3:prefix": "runs/*"}}, {("/b/runs", "list")}),
        ({"StringLike": {"s3:prefix": "runs*"}}, {("/b/runs", "list")}),
        ({"StringLike": {"s3:prefix": "r?ns/"}}, set()),
        ({"StringLike": {"s3:prefix": "runs/*/out/"}}, set()),
        ({"StringEquals": {"s3:prefix": "runs"}}, set()),  # the mount never lists "runs"
        ({"StringEquals": {"s3:prefix": ""}}, {("/b", "list-one")}),
        ({"StringLike": {"s3:prefix": "*"}}, {("/b", "list")}),
    ]
    for condition, want in cases:
        found = see([lister("L", "carol", condition)])
        assert {(r.path, r.shape) for r in found.rights} == want, condition
        assert all(r.level == Level.READ for r in found.rights)


def test_write_needs_get_put_and_delete() -> None:
    both = see([allow("W", {"AWS": arn("bob")}, "s3:*", "arn:aws:s3:::b/w/*")])
    assert ("/b/w", "bob", Level.WRITE, "bucket-policy:W") in rights(both)
    put_only = see(
        [allow("P", {"AWS": arn("bob")}, ["s3:GetObject", "s3:PutObject"], "arn:aws:s3:::b/w/*")]
    )
    assert rights(put_only) == {("/b/w", "bob", Level.READ, "bucket-policy:P")}
    assert [u.sid for u in put_only.unmapped] == ["P"]


def test_public_statements_are_other_access_and_bucket_acl_grants_give_nothing() -> None:
    acl = {
        "Owner": {"ID": "alice"},
        "Grants": [
            {"Grantee": {"Type": "CanonicalUser", "ID": "alice"}, "Permission": "FULL_CONTROL"},
            {"Grantee": {"Type": "CanonicalUser", "ID": "carol"}, "Permission": "READ"},
            {"Grantee": {"Type": "CanonicalUser", "ID": "zed"}, "Permission": "WRITE"},
            {
                "Grantee": {
                    "Type": "Group",
                    "URI": "http://acs.amazonaws.com/groups/global/AllUsers",
                },
                "Permission": "READ",
            },
        ],
    }
    found = see([allow("Pub", "*", "s3:GetObject", "arn:aws:s3:::b/public/*")], acl)
    assert rights(found) == {("/b/public", EVERYONE, Level.READ, "bucket-policy:Pub")}
    # a bucket ACL lists or puts on the store, never reads objects: reported, not mapped
    assert [u.sid for u in found.unmapped] == [
        "acl:'carol'",
        "acl:'zed'",
        f"acl:{imported._short(imported.ALL_USERS)}",
    ]
    assert "not read objects" in found.unmapped[0].reason


def test_a_deny_is_a_denial_and_takes_away_imported_access_it_covers() -> None:
    found = see(
        [
            allow("BobReads", {"AWS": arn("bob")}, "s3:GetObject", "arn:aws:s3:::b/runs/*"),
            {
                "Sid": "NoSecret",
                "Effect": "Deny",
                "Principal": {"AWS": arn("bob")},
                "Action": "s3:GetObject",
                "Resource": "arn:aws:s3:::b/runs/secret/*",
            },
            {
                "Sid": "NoneAtAll",
                "Effect": "Deny",
                "Principal": {"AWS": arn("carol")},
                "Action": "s3:*",
                "Resource": "arn:aws:s3:::b/*",
            },
            allow("CarolReads", {"AWS": arn("carol")}, "s3:GetObject", "arn:aws:s3:::b/runs/*"),
        ]
    )
    assert rights(found) == {("/b/runs", "bob", Level.READ, "bucket-policy:BobReads")}
    assert {(d.path, d.who) for d in found.denials} == {("/b/runs/secret", "bob"), ("/b", "carol")}


def test_unmappable_statements_give_nothing_and_are_each_reported_once() -> None:
    found = see(
        [
            {
                "Sid": "Not",
                "Effect": "Allow",
                "NotPrincipal": {"AWS": arn("bob")},
                "Action": "s3:GetObject",
                "Resource": "arn:aws:s3:::b/*",
            },
            allow(
                "Ip",
                "*",
                "s3:GetObject",
                "arn:aws:s3:::b/*",
                Condition={"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}},
            ),
            allow("Stranger", {"AWS": arn("mallory")}, "s3:GetObject", "arn:aws:s3:::b/*"),
            allow("Mid", {"AWS": arn("bob")}, "s3:GetObject", "arn:aws:s3:::b/run*"),
            allow("Exact", {"AWS": arn("bob")}, "s3:GetObject", "arn:aws:s3:::b/a.txt"),
            allow("Unknown", {"AWS": arn("bob")}, "s3:GetBucketTagging", "arn:aws:s3:::b"),
            allow("fedfs" + "0a" * 12, {"AWS": arn("bob")}, "s3:GetObject", "arn:aws:s3:::b/*"),
        ]
    )
    # b/run* maps what the mount can show as one path: run and what is under run/; a Sid
    # shaped like fedfs's over content fedfs did not write is the owner's, and imported
    forged = "bucket-policy:fedfs" + "0a" * 12
    assert shapes(found) == {
        ("/b/run", "bob", "prefix", "bucket-policy:Mid"),
        ("/b", "bob", "below", forged),
    }
    assert sorted(u.sid for u in found.unmapped) == sorted(
        ["Not", "Ip", "Stranger", "Mid", "Exact", "Unknown"]
    )


def test_time_conditions_carry_an_expiry_or_keep_a_statement_out_until_it_starts() -> None:
    found = see(
        [
            allow(
                "Until",
                {"AWS": arn("bob")},
                "s3:GetObject",
                "arn:aws:s3:::b/a/*",
                Condition={"DateLessThan": {"aws:CurrentTime": "2030-01-01T00:00:00Z"}},
            ),
            allow(
                "Later",
                {"AWS": arn("carol")},
                "s3:GetObject",
                "arn:aws:s3:::b/a/*",
                Condition={"DateGreaterThan": {"aws:CurrentTime": "2031-01-01T00:00:00Z"}},
            ),
        ]
    )
    assert [(r.who, r.expires) for r in found.rights] == [("bob", 1893456000.0)]


def test_the_observation_reads_back_as_itself() -> None:
    found = see([allow("R", {"AWS": arn("bob")}, "s3:*", "arn:aws:s3:::b/w/*")])
    assert Observed.from_json(found.to_json()) == found


# -- random and hostile documents ------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=30,
)

PRINCIPALS = [arn(u) for u in sorted(USERS)] + [arn("mallory"), "*", "arn:aws:iam:::root"]
ACTIONS = [
    "s3:GetObject",
    "s3:PutObject",
    "s3:DeleteObject",
    "s3:ListBucket",
    "s3:*",
    "*",
    "s3:Get*",
    "s3:GetObjectAcl",
    "s3:?etObject",
    "S3:GETOBJECT",
    "iam:*",
    "s3:*Object",
]
RESOURCES = [
    "arn:aws:s3:::b/*",
    "arn:aws:s3:::b/a/*",
    "arn:aws:s3:::b/a/b/*",
    "arn:aws:s3:::b",
    "arn:aws:s3:::b/a*",
    "arn:aws:s3:::b/a/x*",
    "arn:aws:s3:::b/a/",
    "arn:aws:s3:::b/a/x",
    "*",
    "arn:aws:s3:::*",
    "arn:aws:s3:::other/*",
    "arn:aws:s3:::b/*/b/*",
    "arn:aws:s3:::b/a/?/*",
    "arn:aws:s3:::b//*",
    "arn:aws:s3:::b/../*",
    "arn:aws:s3:::b?/*",
]
MAPPABLE = [
    {"DateLessThan": {"aws:CurrentTime": "2030-01-01T00:00:00Z"}},
    {"DateLessThan": {"aws:CurrentTime": "2020-01-01T00:00:00Z"}},
    {"DateGreaterThan": {"aws:CurrentTime": "2040-01-01T00:00:00Z"}},
    {"DateGreaterThan": {"aws:CurrentTime": "2020-01-01T00:00:00Z"}},
    {"StringLike": {"s3:prefix": ["a/*"]}},
    {"StringLike": {"s3:prefix": ["a/*", "a/"]}},
    {"StringEquals": {"s3:prefix": ["a/"]}},
    {"StringEquals": {"s3:prefix": "a/*"}},
    {"StringEquals": {"s3:prefix": ""}},
    {"StringLike": {"s3:prefix": "a*"}},
    {"StringLike": {"s3:prefix": ["a?/", "*/b/"]}},
    {"StringLike": {"s3:prefix": "*"}},
]
CONDITIONS = [
    *MAPPABLE,
    {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}},
    {"StringEquals": {"aws:username": "bob"}},
    {"DateLessThan": {"aws:CurrentTime": "not a date"}},
]


def one_or_list(options: list[Any]) -> st.SearchStrategy[Any]:
    pick = st.sampled_from(options)
    return pick | st.lists(pick, min_size=1, max_size=3)


@st.composite
def statements(draw: st.DrawFn, index: int) -> dict[str, Any]:
    s: dict[str, Any] = {"Sid": f"s{index}"}
    s["Effect"] = draw(st.sampled_from(["Allow", "Allow", "Deny", "allow", 1]))
    who = draw(st.sampled_from(["Principal", "Principal", "Principal", "NotPrincipal"]))
    s[who] = draw(
        st.just("*") | st.fixed_dictionaries({"AWS": one_or_list(PRINCIPALS)}) | json_values
    )
    what = draw(st.sampled_from(["Action", "Action", "Action", "NotAction"]))
    s[what] = draw(one_or_list(ACTIONS) | json_values)
    where = draw(st.sampled_from(["Resource", "Resource", "Resource", "NotResource"]))
    s[where] = draw(one_or_list(RESOURCES))
    if draw(st.booleans()):
        s["Condition"] = draw(st.sampled_from(CONDITIONS) | json_values)
    return s


@st.composite
def documents(draw: st.DrawFn) -> list[dict[str, Any]]:
    count = draw(st.integers(min_value=1, max_value=6))
    return [draw(statements(i)) for i in range(count)]


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _matches(patterns: Any, value: str, fold: bool) -> bool:
    for p in _list(patterns):
        if not isinstance(p, str):
            continue
        regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in p)
        if re.fullmatch(regex, value, re.IGNORECASE if fold else 0):
            return True
    return False


def _condition_holds(condition: Any, effect: str, now: float, prefix: str | None = None) -> bool:
    """The store's verdict where it can be worked out here; unknown: the unsafe answer.
    prefix: the s3:prefix of a listing (None: an object request, which has none)."""
    if condition is None:
        return True
    unknown = effect == "Deny"  # a Deny that may apply counts; an Allow that may not, not
    if not isinstance(condition, dict):
        return unknown
    for op, body in condition.items():
        if not isinstance(body, dict):
            return unknown
        for key, values in body.items():
            if key == "aws:CurrentTime" and op in ("DateLessThan", "DateGreaterThan"):
                from datetime import datetime

                try:
                    times = [datetime.fromisoformat(v).timestamp() for v in _list(values)]
                except (TypeError, ValueError):
                    return unknown
                if op == "DateLessThan" and not any(now < t for t in times):
                    return False
                if op == "DateGreaterThan" and not any(now > t for t in times):
                    return False
            elif key == "s3:prefix":
                if prefix is None:
                    return effect != "Allow"  # absent in object requests
                if op == "StringLike" and not _matches(values, prefix, False):
                    return False
                if op == "StringEquals" and prefix not in _list(values):
                    return False
                if op not in ("StringLike", "StringEquals"):
                    return unknown
            else:
                return unknown
    return True


def store_allows(
    doc: list[Any], principal: str, action: str, key: str, prefix: str | None = None
) -> bool:
    """What the store decides for a request: an explicit Deny wins, then an Allow.
    An object request names key; a listing (s3:ListBucket) names its prefix."""
    listing = action == "s3:ListBucket"
    resource = f"arn:aws:s3:::{BUCKET}" if listing else f"arn:aws:s3:::{BUCKET}/{key}"
    allowed = False
    for s in doc:
        effect = s.get("Effect")
        if effect not in ("Allow", "Deny"):
            continue
        if "Principal" in s:
            p = s["Principal"]
            hit = p == "*" or (
                isinstance(p, dict) and any(v in ("*", principal) for v in _list(p.get("AWS", [])))
            )
        else:
            p = s.get("NotPrincipal")
            hit = not (isinstance(p, dict) and principal in _list(p.get("AWS", [])))
        if "Action" in s:
            hit = hit and _matches(s["Action"], action, True)
        else:
            hit = hit and not _matches(s.get("NotAction"), action, True)
        if "Resource" in s:
            hit = hit and _matches(s["Resource"], resource, False)
        else:
            hit = hit and not _matches(s.get("NotResource"), resource, False)
        hit = hit and _condition_holds(s.get("Condition"), effect, NOW, prefix)
        if hit and effect == "Deny":
            return False
        allowed = allowed or hit
    return allowed


def _effective(found: Observed, who: str, path: str) -> bool:
    return not any(
        d.who == who and (path == d.path or path.startswith(d.path + "/")) for d in found.denials
    )


@settings(max_examples=200, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(documents())
def test_random_policies_never_give_access_the_store_does_not(doc: list[Any]) -> None:
    found = see(doc)
    for right in found.rights:
        principal = arn("stranger") if right.who == EVERYONE else arn(right.who)
        key = right.path.removeprefix(f"/{BUCKET}").lstrip("/")
        if right.shape in ("list", "list-one"):
            # the listings the mount makes of the directory (and, for "list", below it)
            dirs = [""] if right.shape == "list-one" else ["", "a/", "a/b/"]
            for below in dirs:
                prefix = f"{key}/{below}" if key else below
                if not _effective(found, right.who, f"/{BUCKET}/{prefix}".rstrip("/")):
                    continue
                assert store_allows(doc, principal, "s3:ListBucket", "", prefix), (right, prefix)
            continue
        assert right.shape in ("below", "prefix"), right
        samples = [f"{key}/{below}" if key else below for below in ("f", "a/f", "a/b/f", "")]
        if right.shape == "prefix":
            samples.append(key)  # the object named like the prefix: "below" never has it
        for sample in samples:
            if not _effective(found, right.who, f"/{BUCKET}/{sample}".rstrip("/")):
                continue  # the mount shows a denial there
            actions = ["s3:GetObject"]
            if right.level >= Level.WRITE:
                actions += ["s3:PutObject", "s3:DeleteObject"]
            for action in actions:
                assert store_allows(doc, principal, action, sample), (right, action, sample)


@settings(max_examples=150, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(documents())
def test_each_statement_that_cannot_be_mapped_is_reported(doc: list[Any]) -> None:
    found = see(doc)
    reported = {u.sid for u in found.unmapped}
    for s in doc:
        if s["Effect"] != "Allow":
            continue
        unsafe = {"NotPrincipal", "NotAction", "NotResource"} & set(s)
        condition = s.get("Condition")
        # (an empty Condition is no condition, on the store too)
        odd = condition not in (None, {}) and condition not in MAPPABLE
        if unsafe or odd:
            assert s["Sid"] in reported, s
            assert not any(r.source == f"bucket-policy:{s['Sid']}" for r in found.rights)


@settings(max_examples=150, derandomize=True)
@given(json_values)
def test_any_json_never_raises(value: Any) -> None:
    observe(BUCKET, json.dumps(value), value, local_user, NOW, is_owned)
    observe(BUCKET, json.dumps({"Statement": value}), {"Grants": value}, local_user, NOW)


@settings(max_examples=200, derandomize=True)
@given(st.text(max_size=200))
def test_any_text_never_raises(text: str) -> None:
    found = observe(BUCKET, text, None, local_user, NOW)
    assert found.rights == () or text.lstrip().startswith("{")


def test_huge_and_deep_documents_are_refused_whole() -> None:
    deep = "[" * 100_000 + "]" * 100_000
    assert observe(BUCKET, deep, None, local_user, NOW).unmapped[0].sid == "policy"
    huge = json.dumps({"Statement": [{"Sid": "x" * 2_000_000}]})
    assert observe(BUCKET, huge, None, local_user, NOW).unmapped[0].sid == "policy"
    twice = '{"Statement": [{"Effect": "Deny", "Effect": "Allow"}]}'
    assert observe(BUCKET, twice, None, local_user, NOW).rights == ()


def test_a_statement_multiplying_out_to_millions_is_cut_short() -> None:
    many = [arn(f"u{i}") for i in range(1000)] + [arn("bob")]
    places = [f"arn:aws:s3:::b/p{i}/*" for i in range(1000)]
    users = {arn(f"u{i}"): f"u{i}" for i in range(1000)} | {arn("bob"): "bob"}
    doc = json.dumps(
        {
            "Statement": [
                allow("Wide", {"AWS": many}, "s3:GetObject", places),
                {
                    "Sid": "WideDeny",
                    "Effect": "Deny",
                    "Principal": {"AWS": many},
                    "Action": "s3:GetObject",
                    "Resource": places,
                },
            ]
        }
    )
    found = observe(BUCKET, doc, None, users.get, NOW)
    assert found.rights == ()
    assert [(d.path, d.who) for d in found.denials] == [("/b", EVERYONE)]
    assert {u.sid for u in found.unmapped} == {"Wide", "WideDeny"}


def test_what_the_store_reads_strictly_gives_nothing_and_odd_denies_apply_widely() -> None:
    """Found on RGW 16: it matches condition keys as written and reads only ...Z dates, so
    an Allow written otherwise gives nothing there; a Deny it may read widely is wide here."""
    res = "arn:aws:s3:::b/al/*"
    for key, when in (
        ("aws:currenttime", "2099-01-01T00:00:00Z"),
        ("AWS:CURRENTTIME", "2099-01-01T00:00:00Z"),
        ("aws:CurrentTime", "2099-01-01 00:00:00"),
        ("aws:CurrentTime", "2099-01-01T00:00:00+00:00"),
        ("aws:CurrentTime", "20991231T000000"),
        ("aws:CurrentTime", "2099-01-01T00"),
    ):
        st = allow("A", {"AWS": arn("bob")}, "s3:GetObject", res)
        st["Condition"] = {"DateLessThan": {key: when}}
        found = see([st])
        assert rights(found) == set(), (key, when)
        assert [u.sid for u in found.unmapped] == ["A"], (key, when)
    good = allow("A", {"AWS": arn("bob")}, "s3:GetObject", res)
    good["Condition"] = {"DateLessThan": {"aws:CurrentTime": "2099-01-01T00:00:00Z"}}
    assert rights(see([good])) != set()

    public = allow("Pub", "*", "s3:GetObject", "arn:aws:s3:::b/pub/*")
    for odd in (
        {"Principal": {"AWS": arn("bob")}, "Resource": "arn:*:s3:::b/pub/d2/*"},
        {"Principal": {"AWS": "arn:aws:iam:::root"}, "Resource": "arn:aws:s3:::b/pub/*"},
        {
            "Principal": {"AWS": arn("bob")},
            "Resource": [f"arn:aws:s3:::b/x{i}/*" for i in range(1001)],
        },
    ):
        deny = {"Sid": "D", "Effect": "Deny", "Action": "s3:GetObject", **odd}
        found = see([public, deny])
        assert found.denials, odd
        assert any(d.path == "/b" or d.path == "/b/pub" for d in found.denials), found.denials
    padding = [
        allow(f"P{i}", {"AWS": arn("carol")}, "s3:GetObject", "arn:aws:s3:::b/c/*")
        for i in range(1000)
    ]
    late_deny = {
        "Sid": "Late",
        "Effect": "Deny",
        "Principal": {"AWS": arn("bob")},
        "Action": "s3:GetObject",
        "Resource": "arn:aws:s3:::b/pub/*",
    }
    found = see([*padding, public, late_deny])
    assert [(d.path, d.who) for d in found.denials] == [("/b", EVERYONE)]


# -- through the engine: what the kernel is shown, object by object ---------------------

UIDS = {"alice": 1001, "bob": 1002, "carol": 1003}
STRANGER = 4242
SAMPLE_FILES = ["a", "a/x", "a/f", "a/b/f", "a/x/f", "f", "ab", "a/b"]
SAMPLE_DIRS = ["", "a", "a/b", "a/x", "ab"]


def _engine(found: Observed) -> PolicyEngine:
    grants = [
        Grant(r.path, Principal("user", r.who), Level(r.level), r.source, NOW, r.expires, r.shape)
        for r in found.rights
        if r.who != EVERYONE
    ]
    openings = [
        Opening(r.path, Level(r.level), r.source, r.expires, r.shape)
        for r in found.rights
        if r.who == EVERYONE
    ]
    denials = [
        Denial(d.path, None if d.who == EVERYONE else d.who, d.source) for d in found.denials
    ]
    ids = Identities(uids=UIDS, primary_gids={uid: uid for uid in UIDS.values()})
    return PolicyEngine(grants, [], ids, denials, openings)


@settings(max_examples=150, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(documents())
def test_what_the_kernel_is_shown_never_allows_what_the_store_refuses(doc: list[Any]) -> None:
    """Objects owned by someone else with private modes: every r or w the view gives a user
    on a file (GetObject, PutObject and DeleteObject on its key) or on a directory
    (ListBucket with its prefix; PutObject and DeleteObject under it) the store allows."""
    engine = _engine(see(doc))
    closed_dir = ObjectMeta(uid=999, gid=999, mode=0o700)
    closed_file = ObjectMeta(uid=999, gid=999, mode=0o600)
    people = [(arn(name), uid) for name, uid in UIDS.items()] + [(arn("stranger"), STRANGER)]

    def view(key: str, is_dir: bool) -> Any:
        path = f"/{BUCKET}/{key}" if key else f"/{BUCKET}"
        depth = path.count("/") - 1
        meta = closed_dir if is_dir else closed_file
        return engine.view(path, meta, is_dir, NOW, lambda: [closed_dir] * depth)

    for key in SAMPLE_FILES:
        shown = view(key, False)
        for principal, uid in people:
            gids = frozenset({uid})
            if permits(shown.mode, shown.acl_access, 999, 999, uid, gids, R):
                assert store_allows(doc, principal, "s3:GetObject", key), (principal, key)
            if permits(shown.mode, shown.acl_access, 999, 999, uid, gids, W):
                for action in ("s3:PutObject", "s3:DeleteObject"):
                    assert store_allows(doc, principal, action, key), (principal, action, key)
    for key in SAMPLE_DIRS:
        shown = view(key, True)
        prefix = f"{key}/" if key else ""
        for principal, uid in people:
            gids = frozenset({uid})
            if permits(shown.mode, shown.acl_access, 999, 999, uid, gids, R):
                assert store_allows(doc, principal, "s3:ListBucket", "", prefix), (principal, key)
            if permits(shown.mode, shown.acl_access, 999, 999, uid, gids, W):
                for action in ("s3:PutObject", "s3:DeleteObject"):
                    new = f"{prefix}new"
                    assert store_allows(doc, principal, action, new), (principal, action, key)
