"""`fedfs grants PATH` says plainly when a bucket policy's Deny overrides the rows above."""

from __future__ import annotations

from typing import Any

from fedfs.cli.scientists import denied_lines


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
