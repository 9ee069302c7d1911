"""The policy database: grants and teams survive reopening, crashes and mistakes.

Every test uses a real SQLite file under tmp_path; crash tests kill a real child process.
"""

from __future__ import annotations

import random
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedfs.errors import PolicyError
from fedfs.policy.model import OBJECT, TREE, Grant, Level, Principal, Team
from fedfs.policy.store import SCHEMA_VERSION, PolicyStore

GIDS = (600000, 699999)
ROOT = Path(__file__).resolve().parents[3]

ALICE = Principal("user", "alice")
BOB = Principal("user", "bob")
COSMO = Principal("team", "cosmo")


def grant(path: str, who: Principal = ALICE, level: Level = Level.READ, **kw: float) -> Grant:
    return Grant(path, who, level, granted_by="carol", granted_at=1000.0, **kw)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "policy.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[PolicyStore]:
    s = PolicyStore(db_path, GIDS)
    yield s
    s.close()


# -- files on disk --------------------------------------------------------------------


def test_new_database_is_readable_only_by_its_owner(db_path: Path) -> None:
    with PolicyStore(db_path, GIDS) as s:
        s.put_grant(grant("/b/x"))
        wal = db_path.with_name(db_path.name + "-wal")
        assert stat.S_IMODE(wal.stat().st_mode) == 0o600
    assert stat.S_IMODE(db_path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(db_path.stat().st_mode) == 0o600
    # Nothing but the database is left behind (no temporary file from creating it).
    assert sorted(p.name for p in db_path.parent.iterdir()) == ["policy.db"]


def test_database_is_in_wal_mode_with_full_sync(store: PolicyStore) -> None:
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert store.db.execute("PRAGMA foreign_keys").fetchone()[0] == 1


def test_grants_and_teams_are_there_after_reopening(db_path: Path) -> None:
    with PolicyStore(db_path, GIDS) as s:
        s.create_team("cosmo", {"alice"}, {"bob"}, group="cosmo-ldap")
        s.put_grant(grant("/b/x", COSMO, Level.WRITE, expires=5000.0))
        version = s.version
    with PolicyStore(db_path, GIDS) as s:
        assert s.grants() == [grant("/b/x", COSMO, Level.WRITE, expires=5000.0)]
        assert s.team("cosmo") == Team(
            "cosmo", 600000, frozenset({"alice", "bob"}), frozenset({"alice"}), "cosmo-ldap"
        )
        assert s.version == version


# -- grants ---------------------------------------------------------------------------


def test_put_grant_returns_the_grant_it_replaced(store: PolicyStore) -> None:
    assert store.put_grant(grant("/b/x", level=Level.READ)) is None
    previous = store.put_grant(grant("/b/x", level=Level.MANAGE))
    assert previous == grant("/b/x", level=Level.READ)
    assert store.grant("/b/x", ALICE) == grant("/b/x", level=Level.MANAGE)
    assert len(store.grants()) == 1  # replaced, not added


def test_grant_lookup_uses_the_canonical_path(store: PolicyStore) -> None:
    store.put_grant(grant("/b/x"))
    assert store.grant("b//x/", ALICE) == grant("/b/x")
    assert store.grant("/b/x", BOB) is None


def test_delete_grant_returns_what_it_removed(store: PolicyStore) -> None:
    store.put_grant(grant("/b/x"))
    store.put_grant(grant("/b/x", BOB))
    assert store.delete_grant("/b/x", ALICE) == grant("/b/x")
    assert store.delete_grant("/b/x", ALICE) is None
    assert store.grants() == [grant("/b/x", BOB)]


def test_grants_under_matches_whole_path_components(store: PolicyStore) -> None:
    for path in ["/b/x", "/b/x/y", "/b/x/y/z", "/b/xy", "/b/x-1", "/b/X/y", "/c/x"]:
        store.put_grant(grant(path))
    assert [g.path for g in store.grants_under("/b/x")] == ["/b/x", "/b/x/y", "/b/x/y/z"]
    assert [g.path for g in store.grants_under("/b/x/y/")] == ["/b/x/y", "/b/x/y/z"]
    assert len(store.grants_under("/")) == 7


def test_grants_under_treats_sql_wildcards_as_plain_characters(store: PolicyStore) -> None:
    store.put_grant(grant("/b/run_1/out"))
    store.put_grant(grant("/b/runX1/out"))
    store.put_grant(grant("/b/100%/out"))
    store.put_grant(grant("/b/1000/out"))
    assert [g.path for g in store.grants_under("/b/run_1")] == ["/b/run_1/out"]
    assert [g.path for g in store.grants_under("/b/100%")] == ["/b/100%/out"]


def test_expired_and_next_expiry(store: PolicyStore) -> None:
    assert store.next_expiry() is None
    store.put_grant(grant("/b/forever"))
    store.put_grant(grant("/b/soon", expires=2000.0))
    store.put_grant(grant("/b/later", expires=3000.0))
    assert store.next_expiry() == 2000.0
    assert store.expired(1999.0) == []
    # A grant expiring at t no longer applies at t.
    assert [g.path for g in store.expired(2000.0)] == ["/b/soon"]
    assert [g.path for g in store.expired(10_000.0)] == ["/b/later", "/b/soon"]
    store.delete_grant("/b/soon", ALICE)
    assert store.next_expiry() == 3000.0


def test_a_grant_cannot_name_a_team_that_does_not_exist(store: PolicyStore) -> None:
    with pytest.raises(PolicyError, match=r"there is no team 'cosmo'.*fedfs team create"):
        store.put_grant(grant("/b/x", COSMO))
    assert store.grants() == []


# -- teams ----------------------------------------------------------------------------


def test_create_team_makes_owners_members(store: PolicyStore) -> None:
    team = store.create_team("cosmo", {"alice"}, {"bob", "dan"}, group=None)
    assert team.members == {"alice", "bob", "dan"}
    assert team.owners == {"alice"}
    assert store.teams() == [team]
    assert store.team("nope") is None


def test_create_team_refuses_a_taken_name_and_a_team_without_owner(store: PolicyStore) -> None:
    store.create_team("cosmo", {"alice"}, set(), None)
    with pytest.raises(PolicyError, match="team 'cosmo' already exists"):
        store.create_team("cosmo", {"bob"}, set(), None)
    with pytest.raises(PolicyError, match="needs at least one owner"):
        store.create_team("empty", set(), {"bob"}, None)
    with pytest.raises(PolicyError, match="invalid user name"):
        store.create_team("bad", {"-rf"}, set(), None)
    assert [t.name for t in store.teams()] == ["cosmo"]


def test_add_members_as_members_or_owners(store: PolicyStore) -> None:
    store.create_team("cosmo", {"alice"}, set(), None)
    team = store.add_members("cosmo", ["bob"])
    assert (team.members, team.owners) == ({"alice", "bob"}, {"alice"})
    team = store.add_members("cosmo", ["carol"], owners=True)
    assert (team.members, team.owners) == ({"alice", "bob", "carol"}, {"alice", "carol"})
    # Adding an owner again as a plain member does not demote them.
    team = store.add_members("cosmo", ["alice"])
    assert team.owners == {"alice", "carol"}
    assert store.team("cosmo") == team
    with pytest.raises(PolicyError, match="there is no team 'nope' \\(teams: cosmo\\)"):
        store.add_members("nope", ["bob"])


def test_remove_members_removes_membership_and_ownership(store: PolicyStore) -> None:
    store.create_team("cosmo", {"alice", "carol"}, {"bob"}, None)
    team = store.remove_members("cosmo", ["carol", "bob"])
    assert (team.members, team.owners) == ({"alice"}, {"alice"})
    assert store.team("cosmo") == team


def test_the_last_owner_cannot_be_removed(store: PolicyStore) -> None:
    store.create_team("cosmo", {"alice"}, {"bob"}, None)
    with pytest.raises(PolicyError) as e:
        store.remove_members("cosmo", ["alice", "bob"])
    assert "cannot remove alice from team 'cosmo'" in str(e.value)
    assert "at least one owner" in str(e.value)
    # Refused as a whole: bob is still a member too.
    assert store.team("cosmo").members == {"alice", "bob"}  # type: ignore[union-attr]


def test_removing_someone_not_in_the_team_is_refused(store: PolicyStore) -> None:
    store.create_team("cosmo", {"alice"}, {"bob"}, None)
    version = store.version
    with pytest.raises(
        PolicyError, match="bobb is not in team 'cosmo'; its members are alice, bob"
    ):
        store.remove_members("cosmo", ["bob", "bobb"])
    assert store.team("cosmo").members == {"alice", "bob"}  # type: ignore[union-attr]
    assert store.version == version


def test_delete_team_is_refused_while_grants_name_it(store: PolicyStore) -> None:
    store.create_team("cosmo", {"alice"}, set(), None)
    store.put_grant(grant("/b/x", COSMO, Level.READ))
    store.put_grant(grant("/b/y", COSMO, Level.WRITE))
    with pytest.raises(PolicyError) as e:
        store.delete_team("cosmo")
    assert "2 grant(s) still name it (read on /b/x; write on /b/y)" in str(e.value)
    assert store.team("cosmo") is not None
    store.delete_grant("/b/x", COSMO)
    store.delete_grant("/b/y", COSMO)
    deleted = store.delete_team("cosmo")
    assert deleted.name == "cosmo"
    assert store.teams() == []
    # Its members went with it: a new team of the same name starts empty.
    assert store.create_team("cosmo", {"dan"}, set(), None).members == {"dan"}


# -- team gids ------------------------------------------------------------------------


def test_teams_get_the_lowest_gid_never_used(store: PolicyStore) -> None:
    gids = [store.create_team(f"t{i}", {"alice"}, set(), None).gid for i in range(3)]
    assert gids == [600000, 600001, 600002]


def test_a_deleted_teams_gid_is_never_given_out_again(db_path: Path) -> None:
    with PolicyStore(db_path, GIDS) as s:
        s.create_team("a", {"alice"}, set(), None)
        s.create_team("b", {"alice"}, set(), None)
        s.delete_team("a")
        assert s.create_team("c", {"alice"}, set(), None).gid == 600002
        s.delete_team("c")
    with PolicyStore(db_path, GIDS) as s:
        # Same name as before, still a new gid, also after reopening.
        assert s.create_team("a", {"alice"}, set(), None).gid == 600003


def test_a_new_range_fills_from_its_own_start(db_path: Path) -> None:
    with PolicyStore(db_path, (600000, 600009)) as s:
        s.create_team("a", {"alice"}, set(), None)
    with PolicyStore(db_path, (599998, 600009)) as s:
        assert [s.create_team(n, {"alice"}, set(), None).gid for n in "bcd"] == [
            599998,
            599999,
            600001,
        ]


def test_an_exhausted_gid_range_is_a_clear_error(db_path: Path) -> None:
    with PolicyStore(db_path, (700000, 700001)) as s:
        s.create_team("a", {"alice"}, set(), None)
        s.create_team("b", {"alice"}, set(), None)
        s.delete_team("a")
        with pytest.raises(PolicyError) as e:
            s.create_team("c", {"alice"}, set(), None)
        assert "every gid of the team range 700000-700001 (2 gids)" in str(e.value)
        assert "widen team_gids in the site policy" in str(e.value)
        assert s.team("c") is None


# -- transactions and the version -----------------------------------------------------


def test_a_failed_transaction_changes_nothing(store: PolicyStore) -> None:
    store.put_grant(grant("/b/keep"))
    version = store.version
    with pytest.raises(RuntimeError), store.transaction():
        store.create_team("cosmo", {"alice"}, set(), None)
        store.put_grant(grant("/b/x", COSMO))
        store.delete_grant("/b/keep", ALICE)
        raise RuntimeError("the caller changed its mind")
    assert store.grants() == [grant("/b/keep")]
    assert store.teams() == []
    assert store.version == version
    # The gid the rolled-back team took is still free.
    assert store.create_team("other", {"alice"}, set(), None).gid == 600000


def test_a_refused_change_inside_a_transaction_rolls_back_the_rest(store: PolicyStore) -> None:
    store.create_team("cosmo", {"alice"}, set(), None)
    with pytest.raises(PolicyError), store.transaction():
        store.add_members("cosmo", ["bob"])
        store.remove_members("cosmo", ["alice"])  # the last owner: refused
    assert store.team("cosmo").members == {"alice"}  # type: ignore[union-attr]


def test_a_transaction_is_invisible_to_others_until_it_commits(db_path: Path) -> None:
    with PolicyStore(db_path, GIDS) as writer, PolicyStore(db_path, GIDS) as reader:
        with writer.transaction():
            writer.put_grant(grant("/b/x"))
            writer.put_grant(grant("/b/y"))
            assert reader.grants() == []
        assert len(reader.grants()) == 2


def test_version_grows_on_every_change_and_only_then(db_path: Path) -> None:
    with PolicyStore(db_path, GIDS) as s, PolicyStore(db_path, GIDS) as other:
        seen = [s.version]

        def changed() -> bool:
            seen.append(s.version)
            return seen[-1] > seen[-2]

        s.put_grant(grant("/b/x"))
        assert changed()
        s.put_grant(grant("/b/x"))  # identical: nothing changed
        assert not changed()
        s.create_team("cosmo", {"alice"}, set(), None)
        assert changed()
        s.add_members("cosmo", ["bob"])
        assert changed()
        s.add_members("cosmo", ["bob"])
        assert not changed()
        s.remove_members("cosmo", ["bob"])
        assert changed()
        assert s.delete_grant("/b/nothing", ALICE) is None
        assert not changed()
        s.delete_grant("/b/x", ALICE)
        assert changed()
        s.grants(), s.teams(), s.expired(0), s.next_expiry()
        assert not changed()
        # Another process (here: connection) on the same file sees the same number.
        assert other.version == s.version
        other.delete_team("cosmo")
        assert changed()


# -- crashes --------------------------------------------------------------------------


def run_and_kill(db_path: Path, body: str) -> None:
    """Run body with `store` open in a child that SIGKILLs itself where body says kill()."""
    script = textwrap.dedent(
        f"""
        import os, signal
        from pathlib import Path
        from fedfs.policy.model import Grant, Level, Principal
        from fedfs.policy.store import PolicyStore
        store = PolicyStore(Path({str(db_path)!r}), {GIDS!r})
        def kill():
            os.kill(os.getpid(), signal.SIGKILL)
        """
    ) + textwrap.dedent(body)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, timeout=60)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()


def test_a_change_survives_kill_9_right_after_it_returns(db_path: Path) -> None:
    PolicyStore(db_path, GIDS).close()
    run_and_kill(
        db_path,
        """
        store.create_team("cosmo", {"alice"}, {"bob"}, None)
        store.put_grant(Grant("/b/x", Principal("team", "cosmo"), Level.WRITE, "alice", 1.0))
        kill()
        """,
    )
    with PolicyStore(db_path, GIDS) as s:
        assert s.grants() == [Grant("/b/x", COSMO, Level.WRITE, "alice", 1.0)]
        assert s.team("cosmo").members == {"alice", "bob"}  # type: ignore[union-attr]
        assert s.version == 2


def test_a_transaction_killed_before_it_ends_leaves_nothing(db_path: Path) -> None:
    with PolicyStore(db_path, GIDS) as s:
        s.put_grant(grant("/b/keep"))
    run_and_kill(
        db_path,
        """
        with store.transaction():
            store.put_grant(Grant("/b/x", Principal("user", "bob"), Level.READ, "alice", 1.0))
            store.delete_grant("/b/keep", Principal("user", "alice"))
            kill()
        """,
    )
    with PolicyStore(db_path, GIDS) as s:
        assert s.grants() == [grant("/b/keep")]


# -- damaged files --------------------------------------------------------------------


def populated(db_path: Path) -> bytes:
    """A database with enough rows to span many pages; returns its bytes once closed."""
    with PolicyStore(db_path, GIDS) as s, s.transaction():
        s.create_team("cosmo", {"alice"}, {f"member{i}" for i in range(200)}, None)
        for i in range(2000):
            s.put_grant(grant(f"/b/run{i:05d}/output", Principal("user", f"user{i % 97}")))
    return db_path.read_bytes()


def refusal(db_path: Path) -> str:
    """Open a damaged file: it must be refused, and left exactly as it was for repair."""
    before = db_path.read_bytes()
    with pytest.raises(PolicyError) as e:
        PolicyStore(db_path, GIDS)
    assert db_path.read_bytes() == before, "the damaged file was changed"
    message = str(e.value)
    assert str(db_path) in message
    return message


def test_a_truncated_database_is_refused(db_path: Path) -> None:
    data = populated(db_path)
    db_path.write_bytes(data[: len(data) // 2])
    message = refusal(db_path)
    assert message.startswith(f"policy database {db_path} is damaged (")
    assert (
        "run `fedfs fsck --config CONFIG --policy` (CONFIG: this mount's config file) or restore it"
        in message
    )
    assert "fedfs will not start with it" in message


def test_overwritten_pages_in_the_middle_are_refused(db_path: Path) -> None:
    data = bytearray(populated(db_path))
    page = 4096
    middle = (len(data) // 2) // page * page
    data[middle : middle + 3 * page] = random.Random(1).randbytes(3 * page)
    db_path.write_bytes(bytes(data))
    message = refusal(db_path)
    assert f"policy database {db_path} is damaged (" in message
    assert "fedfs fsck --config CONFIG --policy" in message


def test_a_few_random_bytes_inside_a_page_are_refused(db_path: Path) -> None:
    data = bytearray(populated(db_path))
    # Just past a b-tree page header, over its cell pointers: quick_check must notice.
    at = (len(data) // 2) // 4096 * 4096 + 8
    data[at : at + 32] = random.Random(2).randbytes(32)
    db_path.write_bytes(bytes(data))
    assert "is damaged" in refusal(db_path)


def test_a_file_that_is_not_sqlite_is_refused(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    db_path.write_text("[store]\nendpoint = 'http://s3'\n")
    message = refusal(db_path)
    assert "is damaged (it is not an SQLite database)" in message


def test_an_empty_file_is_refused_not_filled(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    db_path.write_bytes(b"")
    assert "is damaged (it is empty)" in refusal(db_path)


def test_another_programs_sqlite_database_is_refused(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    with sqlite3.connect(db_path) as conn:
        conn.execute("CREATE TABLE jobs (id INTEGER PRIMARY KEY)")
    conn.close()
    message = refusal(db_path)
    assert "is an SQLite database but not a fedfs policy database" in message


def test_a_database_from_a_newer_fedfs_is_refused(db_path: Path) -> None:
    PolicyStore(db_path, GIDS).close()
    with sqlite3.connect(db_path) as conn:
        conn.execute("INSERT INTO schema_version VALUES (99, 0)")
    conn.close()
    assert f"has schema version 99, but this fedfs knows only up to {SCHEMA_VERSION}" in refusal(
        db_path
    )


def test_a_row_the_model_refuses_is_reported_as_damage(store: PolicyStore) -> None:
    store.put_grant(grant("/b/x"))
    store.db.execute("UPDATE grants SET principal = 'robot:r2d2'")
    with pytest.raises(PolicyError, match="is damaged \\(a stored row is invalid: unknown"):
        store.grants()


def test_a_database_missing_a_table_is_refused_not_patched(db_path: Path) -> None:
    with PolicyStore(db_path, GIDS) as s:
        s.put_grant(grant("/b/x"))
    with sqlite3.connect(db_path) as conn:
        conn.execute("DROP TABLE grants")
    conn.close()
    assert "is damaged (table(s) grants are missing)" in refusal(db_path)


def test_a_file_grant_keeps_its_shape_and_older_grants_read_as_tree(db_path: Path) -> None:
    s = PolicyStore(db_path, GIDS)
    s.put_grant(Grant("/b/f", ALICE, Level.READ, "carol", 1000.0, shape=OBJECT))
    s.put_grant(grant("/b/d", BOB))
    s.close()
    with sqlite3.connect(db_path) as conn:  # as a database from before shapes left it
        conn.execute("DELETE FROM schema_version WHERE version = 4")
        conn.execute("ALTER TABLE grants DROP COLUMN shape")
        conn.execute("UPDATE grants SET path = '/b/old' WHERE path = '/b/f'")
    conn.close()
    s = PolicyStore(db_path, GIDS)
    s.put_grant(Grant("/b/f", ALICE, Level.READ, "carol", 1000.0, shape=OBJECT))
    assert {(g.path, g.shape) for g in s.grants()} == {
        ("/b/old", TREE),
        ("/b/d", TREE),
        ("/b/f", OBJECT),
    }
    s.close()
