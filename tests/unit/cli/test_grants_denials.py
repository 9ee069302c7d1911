"""`fedfs grants PATH` says plainly when a bucket policy's Deny overrides the rows above."""

from __future__ import annotations

from typing import Any

from fedfs.cli.scientists import denied_lines, limit_lines


def row(principal: str, level: str, by: str, path: str = "/b/runs", inherited: bool = True) -> Any:
    return {
        "principal": principal,
        "level": level,
        "granted_by": by,
        "path": path,
        "inherited": inherited,
    }


def test_a_deny_names_its_statement_and_overrides_the_grants_of_that_user() -> None:
    rows = [
        row("user:bob", "read", "alice"),
        row("user:carol", "read", "bucket-policy:CarolReads"),
        row("user:bob", "none", "bucket-policy:DenyBob", "/b/runs/secret", inherited=False),
        row("user:dave", "none", "bucket-policy:#3", "/b/runs"),
        row("other", "none", "bucket-policy:Hide", "/b"),
    ]
    assert denied_lines(rows) == [
        "bob: denied here by bucket policy statement 'DenyBob' - overrides the grants above",
        "dave: denied here by bucket policy statement #3 (the Deny is on /b/runs) - no grant, "
        "mode bit or group gives them access here",
        "everyone else (other): denied here by bucket policy statement 'Hide' (the Deny is on "
        "/b) - everyone without a grant of their own is refused",
    ]
    assert denied_lines(rows[:2]) == []


def test_an_owners_limit_that_leaves_a_grant_nothing_says_it_denies() -> None:
    limited = {
        **row("user:bob", "read", "alice"),
        "effective": "---",
        "mask": "---",
        "limited_by": "rx",
        "mask_by": "chmod",
    }
    narrowed = {**limited, "principal": "user:carol", "effective": "r--", "mask": "r--"}
    narrowed["limited_by"] = "x"
    assert limit_lines([limited, narrowed], "runs/a.nc") == [
        "bob: denied here by the owner's limit (set by chmod), the ACL mask of runs/a.nc "
        "being --- - overrides the read grant above; chmod g+rx lifts the limit",
        "note: the ACL mask of runs/a.nc is r-- (set by chmod), so user:carol read works as "
        "r-- here; chmod g+x lifts the limit",
    ]


def test_a_listing_right_reads_as_list_and_its_two_prefixes_show_once() -> None:
    from fedfs.cli.scientists import _one_row_each

    row = {
        "principal": "user:dave",
        "level": "read",
        "path": "/b/old",
        "granted_by": "bucket-policy:DaveListOld",
        "effective": "---",
        "inherited": True,
    }
    rows = [{**row, "shape": "list-one"}, {**row, "shape": "list"}, {**row, "shape": "below"}]
    shown = _one_row_each(rows)
    assert [r["level"] for r in shown] == ["list", "read (under it)"]
