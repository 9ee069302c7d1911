"""audit who/user read access from the views the kernel is given, as acl(5) checks them."""

from __future__ import annotations

from fedfs.policy import reports
from fedfs.policy.acl import X, pack_acl
from fedfs.policy.engine import PosixView
from fedfs.policy.model import Grant, Identities, Level, Opening, Principal, Team

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


def test_access_lasts_while_any_grant_of_each_step_lasts() -> None:
    """Two grants pass carol through /b/runs: access ends only when the last of them ends."""
    soon = Grant("/b/runs/2027", Principal("user", "carol"), Level.READ, "alice", 0.0, 5000.0)
    for second, until in ((None, None), (9000.0, 9000.0), (3000.0, 5000.0)):
        g2 = Grant("/b/runs/2026", Principal("team", "cosmo"), Level.READ, "alice", 0.0, second)
        sources = reports.Sources(
            (soon, g2), SOURCES.teams, SOURCES.identities, SOURCES.group_names
        )
        chain = steps(reports.Step("/b/runs/notes.txt", plain(0o644), False))
        carol = reports.evaluate(chain, user("carol", CAROL), sources)
        assert (carol.perm, carol.until) == (4, until), second


def test_expiring_lists_imported_rights_and_public_access_with_their_statement() -> None:
    now = 1_800_000_000.0
    stored = Grant("/b/a", Principal("user", "bob"), Level.READ, "alice", now, now + 3600)
    imported = Grant(
        "/b/s", Principal("user", "carol"), Level.READ, "bucket-policy:Temp", now, now + 60
    )
    forever = Grant("/b/t", Principal("user", "carol"), Level.READ, "bucket-policy:Keep", now)
    public = Opening("/b/pub", Level.READ, "bucket-policy:Pub", now + 7200, "below")
    rows = reports.expiring([stored, imported, forever], 86400, now, [public])
    assert [(r["principal"], r["granted_by"], r["until"]) for r in rows] == [
        ("user:carol", "bucket-policy:Temp", now + 60),
        ("user:bob", "alice", now + 3600),
        ("other", "bucket-policy:Pub", now + 7200),
    ]
