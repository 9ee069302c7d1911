"""`fedfs fsck` on real files without a mount: salvaging journal rows, rebuilding policy."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from fedfs import config
from fedfs.audit.chain import AuditTrail, SigningKey
from fedfs.data.journal import DirtyFile, Journal
from fedfs.errors import FedfsError
from fedfs.ops import fsck
from fedfs.policy.hlc import HybridClock
from fedfs.policy.model import Grant, Level, Principal
from fedfs.policy.site import load_site_policy
from fedfs.policy.store import PolicyStore
from tests.support import write_config

TEAM_GIDS = load_site_policy([]).team_gids  # the built-in default, as fsck finds it here


def corrupt(path: Path, how: str) -> None:
    """Damage a database file the three ways disks and people do."""
    data = bytearray(path.read_bytes())
    if how == "middle":  # one page in the middle overwritten
        page = len(data) // 4096 // 2
        data[page * 4096 : (page + 1) * 4096] = os.urandom(4096)
    elif how == "half":
        del data[len(data) // 2 :]
    else:  # the whole file is garbage
        data = bytearray(os.urandom(len(data)))
    path.write_bytes(bytes(data))


@pytest.fixture
def cfg(tmp_path: Path) -> config.Config:
    c = config.load(
        write_config(
            tmp_path / "c.toml",
            "http://127.0.0.1:9",
            [("bkt", "user:root")],
            tmp_path / "cache",
            socket=tmp_path / "no-daemon.sock",
        )
    )
    for sub in ("staging", "clean"):
        (c.cache.dir / sub).mkdir(parents=True, exist_ok=True)
    return c


def dirty(i: int) -> DirtyFile:
    return DirtyFile(
        "bkt",
        f"runs/2026/output-{i:04d}-" + "x" * 40,
        f"{i:024x}",
        {"mode": "33188", "uid": "0"},
        None,
        "queued",
        1_700_000_000.0 + i,
    )


def journal_with(cfg: config.Config, n: int) -> list[DirtyFile]:
    rows = [dirty(i) for i in range(n)]
    j = Journal(cfg.cache.dir / "journal.db")
    for row in rows:
        j.record(row)
        (cfg.cache.dir / "staging" / row.staging).write_bytes(f"data of {row.key}".encode())
    j.close()
    return rows


@pytest.mark.parametrize("how", ["middle", "half", "garbage"])
def test_salvage_reads_every_row_not_on_a_damaged_page(cfg: config.Config, how: str) -> None:
    rows = journal_with(cfg, 400)
    db = cfg.cache.dir / "journal.db"
    corrupt(db, how)
    salvaged, why = fsck.salvage_rows(db, "dirty", fsck.JOURNAL_COLUMNS)
    originals = {(r.bucket, r.key): r for r in rows}
    for row in salvaged:  # whatever is salvaged is exactly what was written
        f = fsck._dirty_file(row)
        assert originals[(f.bucket, f.key)] == f
    if how == "half":
        assert 0 < len(salvaged) < 400 and why
    elif how == "garbage":
        assert salvaged == [] and "not a database" in why
    else:
        assert len(salvaged) >= 300


@pytest.mark.parametrize("how", ["middle", "half", "garbage"])
def test_damaged_journal_is_kept_rebuilt_and_unnamed_staging_files_moved_to_lost_found(
    cfg: config.Config, how: str
) -> None:
    rows = journal_with(cfg, 400)
    db = cfg.cache.dir / "journal.db"
    corrupt(db, how)
    with pytest.raises(FedfsError, match="fedfs fsck"):
        Journal(db)
    report = fsck.run(cfg, policy=False)
    text = "\n".join(report.lines)
    assert report.status == fsck.REPAIRED, text
    kept = [p for p in cfg.cache.dir.glob("journal.db.damaged-*") if p.name[-4:] != "-wal"]
    assert len(kept) == 1 and f"kept the damaged file as {kept[0]}" in text
    j = Journal(db)  # opens again, holding exactly the salvaged rows
    recovered = {r.staging: r for r in j.all()}
    j.close()
    lost = list((cfg.cache.dir / "lost+found").glob("fsck-*"))
    in_lost = {p.name for p in lost[0].iterdir()} - {"MANIFEST"} if lost else set()
    for row in rows:  # every staging file is in exactly one place, its content intact
        staged = cfg.cache.dir / "staging" / row.staging
        if row.staging in recovered:
            assert recovered[row.staging] == row and staged.exists()
            assert f"recovered /bkt/{row.key}" in text
        else:
            assert row.staging in in_lost and not staged.exists()
            assert (lost[0] / row.staging).read_bytes() == f"data of {row.key}".encode()
            assert str(lost[0] / row.staging) in text
    assert len(recovered) + len(in_lost) == 400
    if in_lost:
        manifest = (lost[0] / "MANIFEST").read_text()
        assert all(name in manifest for name in in_lost)
        assert oct(lost[0].stat().st_mode & 0o777) == "0o700"
    # a second run finds nothing wrong
    again = fsck.run(cfg, policy=False)
    assert again.status == fsck.OK, again.lines


def test_an_unfinished_directory_rename_survives_the_rebuild(cfg: config.Config) -> None:
    journal_with(cfg, 3)
    db = cfg.cache.dir / "journal.db"
    j = Journal(db)
    j.begin_move("bkt", "src/", "dst/")
    j.close()
    data = bytearray(db.read_bytes())
    data[2 * 4096 : 3 * 4096] = os.urandom(4096)  # page 3: the index of the dirty table
    db.write_bytes(bytes(data))
    report = fsck.run(cfg, policy=False)
    assert report.status == fsck.REPAIRED, report.lines
    assert any("unfinished rename of /bkt/src to /bkt/dst" in line for line in report.lines)
    j = Journal(db)
    assert j.moves() == [("bkt", "src/", "dst/")]
    assert len(j.all()) == 3
    j.close()


def test_healthy_files_are_left_alone(cfg: config.Config) -> None:
    journal_with(cfg, 3)
    PolicyStore(cfg.policy.state_dir / "policy.db", TEAM_GIDS).close()
    before = sorted(p.name for p in cfg.cache.dir.rglob("*"))
    report = fsck.run(cfg)
    assert report.status == fsck.OK, report.lines
    assert any("OK, 3 file(s) waiting for upload" in line for line in report.lines)
    assert sorted(p.name for p in cfg.cache.dir.rglob("*")) == before


def policy_history(cfg: config.Config) -> AuditTrail:
    """Shares, an unshare and a team, each stored and recorded as the daemon does."""
    state = cfg.policy.state_dir
    state.mkdir(parents=True, exist_ok=True)
    key = SigningKey.generate()
    key.save(state / "node.key")
    trail = AuditTrail(state / "audit", cfg.policy.node, key)
    clock = HybridClock()
    store = PolicyStore(state / "policy.db", TEAM_GIDS)
    bob, carol = Principal.parse("user:bob"), Principal.parse("user:carol")

    def record(**fields: Any) -> None:
        detail = {**fields.pop("detail", {}), "hlc": clock.now()}
        trail.append(actor_uid=2901, actor="alice", detail=detail, **fields)

    for who, path in ((bob, "/b/d"), (carol, "/b/d"), (bob, "/b/e")):
        store.put_grant(Grant(path, who, Level.READ, "alice", 1_700_000_000.0))
        record(
            action="share",
            principal=str(who),
            path=path,
            level="read",
            detail={"granted_at_ms": 1_700_000_000_000},
        )
    store.delete_grant("/b/d", carol)
    record(action="unshare", principal="user:carol", path="/b/d", level="read")
    team = store.create_team("cosmo", {"alice"}, {"alice", "bob"}, None)
    record(
        action="team-create",
        principal="team:cosmo",
        detail={"gid": team.gid, "owners": "alice", "members": "alice,bob"},
    )
    store.close()
    return trail


@pytest.mark.parametrize("how", ["middle", "half", "garbage"])
def test_damaged_policy_database_is_rebuilt_from_the_audit_chain(
    cfg: config.Config, how: str
) -> None:
    policy_history(cfg)
    db = cfg.policy.state_dir / "policy.db"
    corrupt(db, how)
    with pytest.raises(FedfsError, match="fedfs fsck --config CONFIG --policy"):
        PolicyStore(db, TEAM_GIDS).close()
    report = fsck.run(cfg, journal=False)
    text = "\n".join(report.lines)
    assert report.status == fsck.REPAIRED, text
    assert "rebuilt" in text and "other nodes" in text and "log_bucket" in text
    assert len(list(cfg.policy.state_dir.glob("policy.db.damaged-*"))) == 1
    with PolicyStore(db, TEAM_GIDS) as store:
        grants = {(g.path, str(g.principal), str(g.level)) for g in store.grants()}
        assert grants == {("/b/d", "user:bob", "read"), ("/b/e", "user:bob", "read")}
        team = store.team("cosmo")
        assert team is not None and team.members == {"alice", "bob"}
        assert team.owners == {"alice"}


def test_policy_rebuild_stops_at_the_first_altered_record_and_says_so(
    cfg: config.Config,
) -> None:
    trail = policy_history(cfg)
    lines = trail.log_path.read_bytes().split(b"\n")
    # record 3 is the share to bob on /b/e (0: site-policy-free history starts at share 1)
    rec = json.loads(lines[2])
    assert rec["path"] == "/b/e"
    lines[2] = lines[2].replace(b"/b/e", b"/b/f")
    trail.log_path.write_bytes(b"\n".join(lines))
    corrupt(cfg.policy.state_dir / "policy.db", "garbage")
    report = fsck.run(cfg, journal=False)
    text = "\n".join(report.lines)
    assert report.status == fsck.FAILED, text
    assert "fails verification (record 2 was altered" in text and "only the records before" in text
    with PolicyStore(cfg.policy.state_dir / "policy.db", TEAM_GIDS) as store:
        grants = {(g.path, str(g.principal)) for g in store.grants()}
    assert grants == {("/b/d", "user:bob"), ("/b/d", "user:carol")}  # records 0 and 1 only


def test_a_damaged_database_without_any_audit_chain_is_left_for_a_backup(
    cfg: config.Config,
) -> None:
    cfg.policy.state_dir.mkdir(parents=True)
    db = cfg.policy.state_dir / "policy.db"
    PolicyStore(db, TEAM_GIDS).close()
    corrupt(db, "garbage")
    damaged = db.read_bytes()
    report = fsck.run(cfg, journal=False)
    assert report.status == fsck.FAILED
    assert any("restore" in line and "backup" in line for line in report.lines), report.lines
    assert db.read_bytes() == damaged
