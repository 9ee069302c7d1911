"""`fedfs fsck`: repair the write-back journal and the policy database of a stopped mount.

The daemon refuses to start with a damaged journal (cache dir `journal.db`) or
policy database (state dir `policy.db`) and names this command. fsck keeps the
damaged file (moved aside beside it), salvages what can still be read, and
rebuilds a fresh one: journal rows are read table-scan forwards, backwards and
by rowid, so only rows on unreadable pages are lost; the policy is replayed
from this node's own signed audit chain (fedfs/policy/replay.py). Staging
files that no salvaged row names may hold data that never reached the object
store; fsck moves them into `lost+found/` in the cache directory (root only),
where the next mount does not delete them, and lists them.

Exit status: 0 nothing was wrong, 1 repaired (what was lost is listed),
2 could not repair. It never runs beside a daemon of the same config.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedfs.audit.chain import AuditChain, AuditRecord
from fedfs.config import Config, format_size
from fedfs.errors import AuditError, FedfsError
from fedfs.events import printable

OK, REPAIRED, FAILED = 0, 1, 2

JOURNAL_COLUMNS = (
    "bucket",
    "key",
    "staging",
    "metadata",
    "base_etag",
    "state",
    "queued_at",
    "attempts",
    "last_error",
)
# Probing rowids one by one is cheap (a b-tree search each); this bounds the work on
# a file whose largest rowid cannot be read.
_MAX_PROBES = 200_000


@dataclass
class Report:
    """What fsck found and did: one line per fact, for the person running it."""

    status: int = OK
    lines: list[str] = field(default_factory=list)
    refused: int = 0  # files the store refused for good, waiting in lost+found

    def say(self, line: str) -> None:
        self.lines.append(line)

    def worse(self, status: int) -> None:
        self.status = max(self.status, status)


# -- the daemon must not run --------------------------------------------------------------


def check_stopped(cfg: Config) -> None:
    """Refuse to touch the files of a config whose daemon is running."""
    from fedfs.control.client import ControlClient

    sock = cfg.control.socket
    if sock.exists():
        try:
            with ControlClient(sock, timeout=5) as c:
                status = c.call("status")
        except (FedfsError, OSError):
            pass  # a socket left by a daemon that died: nobody answers
        else:
            where = status.get("mountpoint", "?") if isinstance(status, dict) else "?"
            raise FedfsError(
                f"{cfg.path} is mounted on {where} (its control socket {sock} answers); "
                f"fsck repairs a stopped mount only: run `fedfs umount {where}` first"
            )
    pid = _daemon_pid(cfg.path)
    if pid is not None:
        raise FedfsError(
            f"a fedfs mount of {cfg.path} is running (pid {pid}) but its control socket does "
            f"not answer; stop it (kill {pid}) before running fsck"
        )


def _daemon_pid(config: Path) -> int | None:
    wanted = {str(config).encode(), str(config.resolve()).encode()}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ours = b"mount" in argv and any(b"fedfs" in a for a in argv[:3])
        if ours and any(a in wanted or a.endswith(b"=" + c) for a in argv for c in wanted):
            return int(entry)
    return None


# -- moving damaged files aside ---------------------------------------------------------------


def _sqlite_files(db: Path) -> list[Path]:
    return [p for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")) if p.exists()]


def move_aside(db: Path, stamp: str) -> Path:
    """Rename the database (and its -wal/-shm) to DB.damaged-STAMP; the new main file's path."""
    aside = db.with_name(f"{db.name}.damaged-{stamp}")
    for p in _sqlite_files(db):
        os.replace(p, aside.with_name(aside.name + p.name[len(db.name) :]))
    return aside


@contextlib.contextmanager
def _working_copy(db: Path) -> Iterator[Path]:
    """A private copy of a database and its WAL, so reading never changes the kept file."""
    with tempfile.TemporaryDirectory(prefix="fedfs-fsck-") as tmp:
        copy = Path(tmp) / "copy.db"
        for p in _sqlite_files(db):
            if not p.name.endswith("-shm"):
                shutil.copyfile(p, copy.with_name(copy.name + p.name[len(db.name) :]))
        yield copy


# -- salvaging rows ---------------------------------------------------------------------------


def salvage_rows(
    db: Path, table: str, columns: tuple[str, ...]
) -> tuple[list[dict[str, Any]], str]:
    """Every row of `table` that can still be read, and how the read went ("" if whole).

    A damaged page stops a table scan; scanning from both ends and then probing
    the rowids in between recovers every row not stored on a damaged page.
    """
    with _working_copy(db) as copy:
        try:
            conn = sqlite3.connect(copy, isolation_level=None)
        except sqlite3.DatabaseError as e:
            return [], str(e)
        try:
            return _salvage(conn, table, columns)
        finally:
            conn.close()


def _salvage(
    conn: sqlite3.Connection, table: str, columns: tuple[str, ...]
) -> tuple[list[dict[str, Any]], str]:
    conn.execute("PRAGMA cell_size_check = ON")
    # Lets SQLite read a file shorter than its header says (a truncated copy) instead of
    # refusing it whole, as the sqlite3 shell's .recover does.
    conn.execute("PRAGMA writable_schema = ON")
    select = f"SELECT rowid, {', '.join(columns)} FROM {table}"
    rows: dict[int, dict[str, Any]] = {}
    errors: list[str] = []

    def scan(sql: str, args: tuple[Any, ...] = ()) -> None:
        try:
            for row in conn.execute(sql, args):
                rows[int(row[0])] = dict(zip(columns, row[1:], strict=True))
        except sqlite3.DatabaseError as e:
            errors.append(str(e))

    scan(select)
    if not errors:
        return [rows[k] for k in sorted(rows)], ""
    scan(select + " ORDER BY rowid DESC")
    top = max(rows, default=0)
    with contextlib.suppress(sqlite3.DatabaseError):
        top = max(top, int(conn.execute(f"SELECT max(rowid) FROM {table}").fetchone()[0] or 0))
    for rowid in range(1, min(top + 1000, _MAX_PROBES)):
        if rowid not in rows:
            scan(select + " WHERE rowid = ?", (rowid,))
    return [rows[k] for k in sorted(rows)], errors[0]


def _without_advice(problem: str) -> str:
    """An open error without its advice to run fsck: that is what is running."""
    for advice in ("; it lists files not yet uploaded", "; run `fedfs fsck"):
        problem = problem.split(advice, 1)[0]
    return problem


def database_problem(db: Path, probe: Callable[[Path], None]) -> str | None:
    """Why `probe` cannot use the database at `db` (None: it can)."""
    try:
        probe(db)
    except FedfsError as e:
        return str(e)
    return None


# -- the write-back journal -------------------------------------------------------------------


def _open_journal(db: Path) -> None:
    from fedfs.data.journal import Journal

    Journal(db).close()


def _dirty_file(row: dict[str, Any]) -> Any:
    """A salvaged row as a DirtyFile; ValueError/TypeError if it is not one."""
    from fedfs.data.journal import DirtyFile

    for name in ("bucket", "key", "staging", "state"):
        if not isinstance(row[name], str) or not row[name]:
            raise ValueError(f"{name} is {row[name]!r}")
    if "/" in row["staging"] or row["staging"] in (".", ".."):
        raise ValueError(f"staging is {row['staging']!r}")
    metadata = json.loads(row["metadata"])
    if not isinstance(metadata, dict):
        raise ValueError("metadata is not an object")
    return DirtyFile(
        bucket=row["bucket"],
        key=row["key"],
        staging=row["staging"],
        metadata={str(k): str(v) for k, v in metadata.items()},
        base_etag=row["base_etag"] if isinstance(row["base_etag"], str) else None,
        state=row["state"],
        queued_at=float(row["queued_at"] or time.time()),
        attempts=int(row["attempts"] or 0),
        last_error=row["last_error"] if isinstance(row["last_error"], str) else None,
    )


def check_journal(cfg: Config, report: Report, stamp: str) -> None:
    from fedfs.data.journal import Journal

    cache = cfg.cache.dir
    db = cache / "journal.db"
    staging = cache / "staging"
    if not db.exists():
        report.say(f"journal {db}: none yet (nothing was ever written through this cache)")
        return
    problem = database_problem(db, _open_journal)
    if problem is None:
        with contextlib.closing(Journal(db)) as journal:
            rows = journal.all()
            check_refused(journal, report)
        report.say(f"journal {db}: OK, {len(rows)} file(s) waiting for upload")
        for r in rows:
            problem = _store_refuses(r.bucket, r.key)
            if problem:
                report.say(
                    f"  /{r.bucket}/{printable(r.key)}: {problem}; the next mount keeps it aside "
                    f"in {cache / 'lost+found'} instead of uploading it"
                )
        missing = [r for r in rows if not (staging / r.staging).exists()]
        for r in missing:
            report.say(
                f"  /{r.bucket}/{r.key}: its staging file {staging / r.staging} is gone; "
                "the next mount reports it and drops the row"
            )
        return

    report.worse(REPAIRED)
    report.say(f"journal: {_without_advice(problem)}")
    aside = move_aside(db, stamp)
    report.say(f"  kept the damaged file as {aside}")
    raw, how = salvage_rows(aside, "dirty", JOURNAL_COLUMNS)
    if how:
        report.say(
            f"  reading it stopped at damage ({how}); salvaged the rows around it"
            if raw
            else f"  no row could be read from it ({how})"
        )
    good: list[Any] = []
    unreadable = 0
    for row in raw:
        try:
            good.append(_dirty_file(row))
        except (ValueError, TypeError, KeyError) as e:
            unreadable += 1
            report.say(f"  dropped a salvaged row that is not a valid entry ({e})")
    present = [f for f in good if (staging / f.staging).exists()]
    for f in good:
        if f not in present:
            report.say(
                f"  /{f.bucket}/{f.key}: its staging file {f.staging} is gone; nothing to upload"
            )
    moves = [
        (m["bucket"], m["old"], m["new"])
        for m in salvage_rows(aside, "moves", ("bucket", "old", "new"))[0]
        if all(isinstance(m[k], str) and m[k] for k in ("bucket", "old", "new"))
    ]
    rebuild_journal(db, present, moves)
    for bucket, old, new in moves:
        report.say(
            f"  recovered the unfinished rename of /{bucket}/{old.rstrip('/')} to "
            f"/{bucket}/{new.rstrip('/')} (the next mount finishes it)"
        )
    report.say(
        f"  rebuilt {db} with {len(present)} recovered file(s) waiting for upload "
        f"(the next mount uploads them)"
    )
    for f in present:
        report.say(
            f"    recovered /{f.bucket}/{f.key} ({format_size((staging / f.staging).stat().st_size)})"
        )
    adopt_orphans(cache, {f.staging for f in present}, report, stamp)


def check_refused(journal: Any, report: Report) -> None:
    """Name the files the store refused for good; drop those an admin has handed back."""
    for r in journal.refused():
        if not Path(r.kept).exists():
            journal.forget_refused(r.bucket, r.key)
            report.worse(REPAIRED)
            report.say(
                f"  /{r.bucket}/{printable(r.key)}: its kept copy {r.kept} is gone (handed back); "
                "dropped its entry"
            )
            continue
        report.say(
            f"  /{r.bucket}/{printable(r.key)} (owner {_owner(r.uid)}, {r.size} bytes): refused by "
            f"the object store for good ({printable(r.error)}); its data is kept in {r.kept}. "
            "Hand it back under a name the store accepts, delete the kept copy, run fsck again "
            "(docs/OPERATIONS.md)"
        )
        report.refused += 1


def _store_refuses(bucket: str, key: str) -> str | None:
    from fedfs.tree.names import BadName, check_key_length, new_name

    try:
        check_key_length(bucket, key)
        for part in key.split("/"):
            new_name(part.encode("utf-8", "surrogateescape"))
    except BadName as e:
        return str(e)
    return None


def _owner(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def rebuild_journal(
    db: Path, rows: list[Any], moves: list[tuple[str, str, str]] | None = None
) -> None:
    """A fresh journal at `db` holding `rows` and `moves`, put in place only once complete."""
    from fedfs.data.journal import Journal

    tmp = db.with_name(f".{db.name}.fsck-{os.getpid()}")
    for p in _sqlite_files(tmp):
        p.unlink()
    journal = Journal(tmp)
    try:
        for row in rows:
            journal.record(row, durable=True)
        for bucket, old, new in moves or []:
            journal.begin_move(bucket, old, new)
    finally:
        journal.close()
    os.replace(tmp, db)


def adopt_orphans(cache: Path, named: set[str], report: Report, stamp: str) -> None:
    """Move staging files no journal row names into lost+found: the next mount would delete them."""
    staging = cache / "staging"
    orphans = sorted(
        p for p in staging.iterdir() if p.name not in named and p.is_file() and not p.is_symlink()
    )
    if not orphans:
        report.say("  every staging file is named by a recovered row: no data is unaccounted for")
        return
    found = cache / "lost+found" / f"fsck-{stamp}"
    found.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(found.parent, 0o700)
    lines = []
    for p in orphans:
        st = p.stat()
        os.replace(p, found / p.name)
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(st.st_mtime))
        lines.append(f"{p.name}\t{st.st_size}\t{when}")
        report.say(f"    {found / p.name}: {format_size(st.st_size)}, last written {when}")
    (found / "MANIFEST").write_text(
        "# staging files no readable journal row named (name, bytes, last written)\n"
        + "\n".join(lines)
        + "\n"
    )
    report.say(
        f"  {len(orphans)} staging file(s) that no readable row names may hold data that is not "
        f"in the object store; they are above, moved to {found} (root only; the next mount "
        "would have deleted them). Their names are lost: look at each (file, head), then "
        "copy the ones still wanted into the mount where they belong; delete the directory when done"
    )


# -- the policy database ----------------------------------------------------------------------


def check_policy(cfg: Config, report: Report, stamp: str) -> None:
    from fedfs.policy.replay import replay
    from fedfs.policy.site import load_site_policy, policy_files
    from fedfs.policy.store import PolicyStore

    gids = load_site_policy(policy_files(cfg.policy.site_dir)).team_gids
    db = cfg.policy.state_dir / "policy.db"
    chain = AuditChain(cfg.policy.state_dir / "audit", cfg.policy.node)
    if not db.exists():
        report.say(f"policy database {db}: none yet (the next mount creates it)")
        return

    def open_store(path: Path) -> None:
        PolicyStore(path, gids).close()

    problem = database_problem(db, open_store)
    if problem is None:
        with PolicyStore(db, gids) as store:
            report.say(
                f"policy database {db}: OK, {len(store.grants())} grants, {len(store.teams())} teams"
            )
        return

    report.say(f"policy: {_without_advice(problem)}")
    records, chain_problem = intact_records(chain)
    if chain_problem and not records:
        report.worse(FAILED)
        report.say(
            f"  cannot rebuild it: {chain_problem}; restore {db} from a backup (it was left as it is)"
        )
        return
    report.worse(REPAIRED)
    aside = move_aside(db, stamp)
    report.say(f"  kept the damaged file as {aside}")
    with PolicyStore(db, gids) as store:
        applied, problems = replay(store, records)
        grants, teams = len(store.grants()), len(store.teams())
    report.say(
        f"  rebuilt {db} from {len(records)} record(s) of this node's audit chain "
        f"{chain.log_path}: {applied} change(s) applied; now {grants} grants, {teams} teams"
    )
    for p in problems:
        report.say(f"  not applied: {p}")
    if chain_problem:
        report.worse(FAILED)
        report.say(
            f"  the audit chain fails verification ({chain_problem}): only the records before "
            "that were replayed, later changes are lost; the mount refuses to append to that "
            "chain: keep it for investigation, move it aside, then mount"
        )
    report.say(
        "  changes made on other nodes were kept only in the damaged database and are lost here; "
        "a node with a shared policy log ([policy] log_bucket) fetches them again at its next start"
    )


def intact_records(chain: AuditChain) -> tuple[list[AuditRecord], str]:
    """The records of `chain` up to its first bad one, and why it stopped ("" if intact)."""
    try:
        verdict = chain.verify()
    except (FedfsError, OSError, ValueError, KeyError) as e:
        return [], f"cannot read the audit chain {chain.log_path}: {e}"
    try:
        lines = chain.log_path.read_bytes().split(b"\n")
    except FileNotFoundError:
        return [], f"no audit chain at {chain.log_path}"
    good = len(lines) if verdict.ok or verdict.first_bad is None else verdict.first_bad
    records = []
    for line in [x for x in lines if x][:good]:
        try:
            records.append(AuditRecord.decode(line))
        except AuditError:
            break
    return records, "" if verdict.ok else str(verdict.reason)


# -- the command --------------------------------------------------------------------------------


def run(cfg: Config, journal: bool = True, policy: bool = True) -> Report:
    check_stopped(cfg)
    report = Report()
    stamp = time.strftime("%Y%m%dT%H%M%S")
    if journal:
        check_journal(cfg, report, stamp)
    if policy:
        check_policy(cfg, report, stamp)
    return report


def main(config_path: Path, journal: bool = True, policy: bool = True) -> int:
    """Print what was found and done; the exit status (0 fine, 1 repaired, 2 not repaired)."""
    from fedfs import config

    cfg = config.load(config_path)
    report = run(cfg, journal, policy)
    for line in report.lines:
        print(line)
    verdict = {
        OK: "nothing to repair"
        + (
            f"; {report.refused} file(s) the object store refused wait in lost+found (above)"
            if report.refused
            else ""
        ),
        REPAIRED: "repaired; the lines above say what could not be recovered; mount again",
        FAILED: "could not repair everything; see the lines above",
    }[report.status]
    print(f"fsck: {verdict}")
    return report.status
