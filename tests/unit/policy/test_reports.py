"""audit who/user read access from the views the kernel is given, as acl(5) checks them."""

from __future__ import annotations

from fedfs.policy import reports
from fedfs.policy.acl import X, pack_acl
from fedfs.policy.engine import PosixView
from fedfs.policy.model import Grant, Identities, Level, Principal, Team

ALICE, BOB, CAROL = 1001, 1002, 1003
TEAM = Team("cosmo", 60001, members=frozenset({"carol"}), owners=frozenset({"alice"}))
GRANT = Grant("/b/runs/2026", Principal("team", "cosmo"), Level.READ, "alice", 0.0)
SOURCES = reports.Sources(
    (GRANT,),
    {"cosmo": TEAM},
    Identities(uids={"alice": ALICE, "bob": BOB, "carol": CAROL}),
    {ALICE: "alice"},
)


def plain(mode: int) -> PosixView:
    return PosixView(ALICE, ALICE, mode, None, None)


def steps(*last: reports.Step) -> list[reports.Step]:
    runs = PosixView(ALICE, ALICE, 0o710, pack_acl(7, {CAROL: X}, 0, {}, X, 0), None)
    return [
        reports.Step("/", plain(0o755), True),
        reports.Step("/b", plain(0o755), True),
        reports.Step("/b/runs", runs, True),
        *last,
    ]


def user(name: str, uid: int) -> reports.Subject:
    return reports.Subject(f"user:{name}", uid, frozenset({uid}))


def test_a_search_right_from_a_grant_below_opens_a_file_readable_by_other() -> None:
    chain = steps(reports.Step("/b/runs/notes.txt", plain(0o644), False))
    carol = reports.evaluate(chain, user("carol", CAROL), SOURCES)
    assert (carol.perm, carol.via) == (
        4,
        "mode bits for other (0644); search on /b/runs by team:cosmo's grant on "
        "/b/runs/2026 (pass-through)",
    )
    bob = reports.evaluate(chain, user("bob", BOB), SOURCES)
    assert (bob.perm, bob.via) == (0, "cannot search /b/runs (mode bits for other (0710))")
    everyone = reports.Subject("everyone else", None, frozenset())
    subjects = [user("alice", ALICE), user("bob", BOB), user("carol", CAROL), everyone]
    rows = reports.who(chain, subjects, SOURCES)
    assert [(r["principal"], r["access"]) for r in rows] == [
        ("user:alice", "rw-"),
        ("user:carol", "r--"),
    ]
