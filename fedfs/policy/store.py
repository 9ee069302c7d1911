"""The local policy database: grants, teams, team gids and the policy version, in SQLite.

This is the only code that touches SQLite for policy. It stores and returns the model
types and enforces what must hold on disk (one grant per path and principal, a team
always has an owner, a team gid is never handed out twice); who may change what is
decided elsewhere. A damaged file is refused with a PolicyError, never recreated.

Concurrency: a PolicyStore wraps one SQLite connection and is used from the thread
that opened it. Several processes may open the same file (WAL mode); each change is
committed and fsync'd before the call returns, so it survives kill -9 and power loss.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import sqlite_utils

from fedfs.errors import PolicyError
from fedfs.policy.model import (
    TREE,
    Grant,
    Level,
    Principal,
    Team,
    check_shape,
    normalize_path,
    validate_name,
)

SCHEMA_VERSION = 4
_SQLITE_MAGIC = b"SQLite format 3\x00"
_BUSY_TIMEOUT = 10.0  # seconds to wait for another process's write to finish
_REPAIR = (
    "run `fedfs fsck --config CONFIG --policy` (CONFIG: this mount's config file) or restore "
    "it from a backup; fedfs will not start with it"
)

# One statement list per schema version; opening an older file applies the rest in order.
_MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE schema_version (
        version    INTEGER PRIMARY KEY,
        applied_at REAL NOT NULL
    );
    -- One row; readers compare it to notice that policy changed.
    CREATE TABLE policy_version (
        id      INTEGER PRIMARY KEY CHECK (id = 1),
        version INTEGER NOT NULL
    );
    INSERT INTO policy_version (id, version) VALUES (1, 0);
    CREATE TABLE grants (
        path       TEXT NOT NULL,
        principal  TEXT NOT NULL,  -- "user:NAME", "group:NAME" or "team:NAME"
        level      TEXT NOT NULL CHECK (level IN ('read', 'write', 'manage')),
        granted_by TEXT NOT NULL,
        granted_at REAL NOT NULL,
        expires    REAL,
        PRIMARY KEY (path, principal)
    );
    CREATE INDEX grants_by_principal ON grants (principal);
    CREATE INDEX grants_by_expiry ON grants (expires) WHERE expires IS NOT NULL;
    -- Every gid ever given to a team, kept after the team is deleted: files in the
    -- object store and on Lustre still carry it, so a new team must never inherit them.
    CREATE TABLE team_gids (
        gid          INTEGER PRIMARY KEY,
        first_team   TEXT NOT NULL,
        allocated_at REAL NOT NULL
    );
    CREATE TABLE teams (
        name          TEXT PRIMARY KEY,
        gid           INTEGER NOT NULL UNIQUE REFERENCES team_gids (gid),
        backing_group TEXT,
        created_at    REAL NOT NULL
    );
    -- Owners are members with owner = 1, so an owner is always a member too.
    CREATE TABLE team_members (
        team  TEXT NOT NULL REFERENCES teams (name) ON DELETE CASCADE,
        user  TEXT NOT NULL,
        owner INTEGER NOT NULL DEFAULT 0 CHECK (owner IN (0, 1)),
        PRIMARY KEY (team, user)
    );
    """,
    # Several nodes (fedfs/policy/log.py): last-writer-wins stamps and the log's state.
    2: """
    -- The newest change applied to each item (a grant, a team, a membership), as its
    -- sortable stamp "HLC-NODE"; deletions keep their stamp, so an older change that
    -- arrives late cannot bring the item back.
    CREATE TABLE stamps (
        item  TEXT PRIMARY KEY,
        stamp TEXT NOT NULL
    );
    -- Per node: the last record of its chain applied here (chains apply in order).
    CREATE TABLE log_heads (
        node TEXT PRIMARY KEY,
        seq  INTEGER NOT NULL,
        hash TEXT NOT NULL,
        key  TEXT NOT NULL
    );
    -- Other nodes' records as applied, so `fedfs audit` shows and verifies every chain.
    CREATE TABLE log_records (
        node   TEXT NOT NULL,
        seq    INTEGER NOT NULL,
        key    TEXT NOT NULL,
        record BLOB NOT NULL,
        PRIMARY KEY (node, seq)
    );
    CREATE TABLE log_meta (
        name  TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    # What watcher nodes observed outside fedfs (policy/replay.py, "observe" records).
    3: """
    -- The newest observation of each (kind, key), e.g. one bucket's rights as its bucket
    -- policy and ACL state them: the whole state each time, so applying it is idempotent.
    CREATE TABLE observations (
        kind    TEXT NOT NULL,
        key     TEXT NOT NULL,
        stamp   TEXT NOT NULL,
        payload TEXT NOT NULL,  -- canonical JSON
        PRIMARY KEY (kind, key)
    );
    """,
    # What a grant covers (model.Shape): "object" for one made on a file; older grants
    # were all made as "tree".
    4: """
    ALTER TABLE grants ADD COLUMN shape TEXT NOT NULL DEFAULT 'tree'
        CHECK (shape IN ('tree', 'object'));
    """,
}


_TABLES = {
    "schema_version",
    "policy_version",
    "grants",
    "team_gids",
    "teams",
    "team_members",
    "stamps",
    "log_heads",
    "log_records",
    "log_meta",
    "observations",
}


def _damaged(path: Path, why: object) -> PolicyError:
    return PolicyError(f"policy database {path} is damaged ({why}); {_REPAIR}")


def _sqlite_failure(path: Path, e: sqlite3.DatabaseError) -> PolicyError:
    """Say what an SQLite error means for the person: damage, a busy file, or another fault."""
    name = getattr(e, "sqlite_errorname", "") or ""
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")):
        return _damaged(path, e)
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return PolicyError(
            f"policy database {path} stayed locked by another process for over "
            f"{_BUSY_TIMEOUT:.0f} s ({e}); retry, or look for a stuck fedfs process"
        )
    return PolicyError(f"policy database {path} could not be used: {e}")


class PolicyStore:
    """Grants and teams kept in one SQLite file; every method commits before it returns.

    Use `transaction()` to make several changes atomically. `version` grows with
    every change, including changes made by other processes on the same file.
    """

    def __init__(self, path: Path, team_gids: tuple[int, int]) -> None:
        low, high = team_gids
        if not 0 < low <= high:
            raise PolicyError(f"team gid range {low}-{high} is empty or not positive")
        self.path = Path(path)
        self.team_gids = (low, high)
        if not self.path.exists():
            _create(self.path)
        self.db = _open(self.path)

    # -- life cycle ---------------------------------------------------------------

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> PolicyStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[PolicyStore]:
        """Make every change inside the block together, or none if the block raises.

        Blocks may nest (SQLite savepoints); only the outermost one commits.
        """
        with self._guard(), self.db.atomic():
            yield self

    @property
    def version(self) -> int:
        """A number that grows on every change; equal numbers mean the same policy."""
        with self._guard():
            row = self.db.execute("SELECT version FROM policy_version WHERE id = 1").fetchone()
        if row is None:
            raise _damaged(self.path, "the policy_version row is missing")
        return int(row[0])

    # -- grants -------------------------------------------------------------------

    def grants(self) -> list[Grant]:
        """Every stored grant, expired ones included, ordered by path and principal."""
        return self._grants_where("1", [])

    def grants_under(self, path: str) -> list[Grant]:
        """Grants on path or below it: "/b/x" covers "/b/x/y" but not "/b/xy"."""
        path = normalize_path(path)
        if path == "/":
            return self.grants()
        # A range on the primary key instead of LIKE: LIKE ignores ASCII case and treats
        # "_" and "%" in names as wildcards. "0" is the character right after "/".
        return self._grants_where(
            "path = ? OR (path >= ? AND path < ?)", [path, path + "/", path + "0"]
        )

    def grant(self, path: str, principal: Principal) -> Grant | None:
        found = self._grants_where(
            "path = ? AND principal = ?", [normalize_path(path), str(principal)]
        )
        return found[0] if found else None

    def put_grant(self, grant: Grant) -> Grant | None:
        """Store grant, replacing the one for the same path and principal; return that one."""
        with self.transaction():
            if grant.principal.kind == "team" and self.team(grant.principal.name) is None:
                raise PolicyError(
                    f"cannot share {grant.path} with {grant.principal}: there is no team "
                    f"{grant.principal.name!r}; create it first with `fedfs team create`"
                )
            previous = self.grant(grant.path, grant.principal)
            if previous == grant:
                return previous
            self.db.table("grants").insert(grant_row(grant), replace=True)
            self._bump()
        return previous

    def delete_grant(self, path: str, principal: Principal) -> Grant | None:
        """Remove the grant and return it, or return None if there was none."""
        with self.transaction():
            previous = self.grant(path, principal)
            if previous is not None:
                self.db.execute(
                    "DELETE FROM grants WHERE path = ? AND principal = ?",
                    [previous.path, str(previous.principal)],
                )
                self._bump()
        return previous

    def expired(self, now: float) -> list[Grant]:
        """Grants whose expiry is at or before now (they no longer apply at their expiry)."""
        return self._grants_where("expires IS NOT NULL AND expires <= ?", [now])

    def next_expiry(self) -> float | None:
        """The earliest expiry of any stored grant (possibly already past), or None."""
        with self._guard():
            row = self.db.execute("SELECT min(expires) FROM grants").fetchone()
        return None if row is None or row[0] is None else float(row[0])

    # -- teams --------------------------------------------------------------------

    def teams(self) -> list[Team]:
        """Every team, ordered by name."""
        return self._teams_where("1", [])

    def team(self, name: str) -> Team | None:
        found = self._teams_where("name = ?", [name])
        return found[0] if found else None

    def create_team(
        self,
        name: str,
        owners: set[str],
        members: set[str],
        group: str | None,
        gid: int | None = None,
    ) -> Team:
        """Create a team with the lowest gid of the site range that no team ever had.

        Owners become members too. A team needs at least one owner, since only owners
        (and site admins) may change it. `gid` is given when the team was created on
        another node, which chose it.
        """
        validate_name(name, "team")
        _validate_users(owners | members)
        if not owners:
            raise PolicyError(f"team {name!r} needs at least one owner who may manage it")
        with self.transaction():
            if self.team(name) is not None:
                raise PolicyError(f"team {name!r} already exists; pick another name")
            gid = self._allocate_gid(name) if gid is None else self._reserve_gid(name, gid)
            team = Team(name, gid, frozenset(owners | members), frozenset(owners), group)
            self.db.table("teams").insert(
                {"name": name, "gid": gid, "backing_group": group, "created_at": time.time()}
            )
            self._write_members(team)
            self._bump()
        return team

    def add_members(self, name: str, users: Iterable[str], owners: bool = False) -> Team:
        """Add users as members, or as owners and members; existing owners stay owners."""
        users = set(users)
        _validate_users(users)
        with self.transaction():
            team = self._existing_team(name)
            members = team.members | users
            new_owners = team.owners | users if owners else team.owners
            updated = Team(team.name, team.gid, members, new_owners, team.group)
            if updated != team:
                self._write_members(updated)
                self._bump()
        return updated

    def remove_members(self, name: str, users: Iterable[str]) -> Team:
        """Remove users from the team (membership and ownership); keep at least one owner."""
        users = set(users)
        with self.transaction():
            team = self._existing_team(name)
            if not users:
                return team
            strangers = sorted(users - team.members)
            if strangers:
                # Refuse rather than ignore: a mistyped name would otherwise look like a
                # successful revoke while the intended person keeps access.
                raise PolicyError(
                    f"{_names(strangers)} {'is' if len(strangers) == 1 else 'are'} not "
                    f"in team {name!r}; its members are {_names(sorted(team.members))}"
                )
            owners = team.owners - users
            if not owners:
                raise PolicyError(
                    f"cannot remove {_names(sorted(users & team.owners))} from team {name!r}: "
                    "a team must keep at least one owner; add another owner first "
                    f"(`fedfs team add {name} --owner USER`) or delete the team"
                )
            updated = Team(team.name, team.gid, team.members - users, owners, team.group)
            self.db.execute(
                f"DELETE FROM team_members WHERE team = ? AND user IN ({_marks(users)})",
                [name, *sorted(users)],
            )
            self._bump()
        return updated

    def delete_team(self, name: str) -> Team:
        """Delete a team that no grant names; its gid stays reserved for ever."""
        with self.transaction():
            team = self._existing_team(name)
            # Deleting the grants too would silently revoke access; make the person
            # unshare first so they see exactly what goes away.
            named = self._grants_where("principal = ?", [str(Principal("team", name))])
            if named:
                listing = "; ".join(f"{g.level} on {g.path}" for g in named)
                raise PolicyError(
                    f"cannot delete team {name!r}: {len(named)} grant(s) still name it "
                    f"({listing}); unshare them first with `fedfs unshare PATH --with team:{name}`"
                )
            self.db.execute("DELETE FROM teams WHERE name = ?", [name])
            self._bump()
        return team

    def set_member(self, name: str, user: str, owner: bool) -> None:
        """One membership as another node decided it (no owner rules: that node checked)."""
        validate_name(user, "user")
        with self.transaction():
            self._existing_team(name)
            self.db.execute(
                "INSERT OR REPLACE INTO team_members (team, user, owner) VALUES (?, ?, ?)",
                [name, user, int(owner)],
            )
            self._bump()

    def drop_member(self, name: str, user: str) -> None:
        with self.transaction():
            self.db.execute("DELETE FROM team_members WHERE team = ? AND user = ?", [name, user])
            self._bump()

    def drop_team(self, name: str) -> None:
        """Remove a team and its memberships whatever names it (a lost creation race)."""
        with self.transaction():
            self.db.execute("DELETE FROM teams WHERE name = ?", [name])
            self._bump()

    # -- several nodes: stamps and the log's state ---------------------------------

    def stamp(self, item: str) -> str | None:
        with self._guard():
            row = self.db.execute("SELECT stamp FROM stamps WHERE item = ?", [item]).fetchone()
        return None if row is None else str(row[0])

    def set_stamp(self, item: str, stamp: str) -> None:
        with self._guard():
            self.db.execute(
                "INSERT OR REPLACE INTO stamps (item, stamp) VALUES (?, ?)", [item, stamp]
            )

    def stamps(self) -> dict[str, str]:
        with self._guard():
            return {str(r[0]): str(r[1]) for r in self.db.execute("SELECT item, stamp FROM stamps")}

    def heads(self) -> dict[str, tuple[int, str, str]]:
        """node -> (seq, hash, key) of the last record of its chain applied here."""
        with self._guard():
            rows = self.db.execute("SELECT node, seq, hash, key FROM log_heads").fetchall()
        return {str(n): (int(s), str(h), str(k)) for n, s, h, k in rows}

    def set_head(self, node: str, seq: int, hash_: str, key: str) -> None:
        with self._guard():
            self.db.execute(
                "INSERT OR REPLACE INTO log_heads (node, seq, hash, key) VALUES (?, ?, ?, ?)",
                [node, seq, hash_, key],
            )

    def keep_record(self, node: str, seq: int, key: str, raw: bytes) -> None:
        with self._guard():
            self.db.execute(
                "INSERT OR REPLACE INTO log_records (node, seq, key, record) VALUES (?, ?, ?, ?)",
                [node, seq, key, raw],
            )

    def applied_key(self, node: str, seq: int) -> str | None:
        """The log object record `seq` of `node` was applied from (None: not kept here)."""
        with self._guard():
            row = self.db.execute(
                "SELECT key FROM log_records WHERE node = ? AND seq = ?", [node, seq]
            ).fetchone()
        return None if row is None else str(row[0])

    def kept_records(self, node: str | None = None) -> list[bytes]:
        """Other nodes' records applied here, per node in chain order."""
        where, params = ("WHERE node = ?", [node]) if node else ("", [])
        with self._guard():
            rows = self.db.execute(
                f"SELECT record FROM log_records {where} ORDER BY node, seq", params
            ).fetchall()
        return [bytes(r[0]) for r in rows]

    def meta(self, name: str) -> str | None:
        with self._guard():
            row = self.db.execute("SELECT value FROM log_meta WHERE name = ?", [name]).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, name: str, value: str) -> None:
        with self._guard():
            self.db.execute(
                "INSERT OR REPLACE INTO log_meta (name, value) VALUES (?, ?)", [name, value]
            )

    # -- observations (policy/replay.py) -------------------------------------------

    def observation(self, kind: str, key: str) -> tuple[str, str] | None:
        """(stamp, payload JSON) of the newest observation of (kind, key), or None."""
        with self._guard():
            row = self.db.execute(
                "SELECT stamp, payload FROM observations WHERE kind = ? AND key = ?", [kind, key]
            ).fetchone()
        return None if row is None else (str(row[0]), str(row[1]))

    def put_observation(self, kind: str, key: str, stamp: str, payload: str) -> None:
        with self._guard():
            self.db.execute(
                "INSERT OR REPLACE INTO observations (kind, key, stamp, payload) "
                "VALUES (?, ?, ?, ?)",
                [kind, key, stamp, payload],
            )
            self._bump()

    def observations(self, kind: str | None = None) -> list[tuple[str, str, str, str]]:
        """(kind, key, stamp, payload JSON) of every observation kept, or of one kind."""
        where, params = ("WHERE kind = ?", [kind]) if kind else ("", [])
        with self._guard():
            rows = self.db.execute(
                f"SELECT kind, key, stamp, payload FROM observations {where} ORDER BY kind, key",
                params,
            ).fetchall()
        return [(str(k), str(n), str(s), str(p)) for k, n, s, p in rows]

    # -- internals ----------------------------------------------------------------

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        """Turn SQLite's corruption errors into a PolicyError that names the file."""
        try:
            yield
        except sqlite3.DatabaseError as e:
            raise _sqlite_failure(self.path, e) from e

    def _bump(self) -> None:
        self.db.execute("UPDATE policy_version SET version = version + 1 WHERE id = 1")

    def _grants_where(self, where: str, params: list[Any]) -> list[Grant]:
        with self._guard():
            rows = list(
                self.db.query(
                    f"SELECT * FROM grants WHERE {where} ORDER BY path, principal", params
                )
            )
        return [self._decode(_grant_from_row, row) for row in rows]

    def _teams_where(self, where: str, params: list[Any]) -> list[Team]:
        with self._guard():
            teams = list(self.db.query(f"SELECT * FROM teams WHERE {where} ORDER BY name", params))
            members: dict[str, list[dict[str, Any]]] = {t["name"]: [] for t in teams}
            if teams:
                for row in self.db.query(
                    f"SELECT * FROM team_members WHERE team IN ({_marks(members)})",
                    list(members),
                ):
                    members[row["team"]].append(row)
        return [self._decode(_team_from_row, t, members[t["name"]]) for t in teams]

    def _decode(self, make: Any, *rows: Any) -> Any:
        """Build a model value from rows; a row the model refuses means a damaged file."""
        try:
            return make(*rows)
        except (PolicyError, KeyError, TypeError, ValueError) as e:
            raise _damaged(self.path, f"a stored row is invalid: {e}") from e

    def _existing_team(self, name: str) -> Team:
        team = self.team(name)
        if team is None:
            known = ", ".join(t.name for t in self.teams()) or "none yet"
            raise PolicyError(f"there is no team {name!r} (teams: {known})")
        return team

    def _allocate_gid(self, team: str) -> int:
        low, high = self.team_gids
        # The lowest gid in range that was never allocated: either `low` itself or the
        # successor of an allocated gid whose successor is free.
        row = self.db.execute(
            """
            SELECT candidate FROM (
                SELECT :low AS candidate
                WHERE NOT EXISTS (SELECT 1 FROM team_gids WHERE gid = :low)
                UNION ALL
                SELECT gid + 1 FROM team_gids AS t
                WHERE gid >= :low AND gid < :high
                  AND NOT EXISTS (SELECT 1 FROM team_gids WHERE gid = t.gid + 1)
            ) ORDER BY candidate LIMIT 1
            """,
            {"low": low, "high": high},
        ).fetchone()
        if row is None:
            raise PolicyError(
                f"cannot create team {team!r}: every gid of the team range {low}-{high} "
                f"({high - low + 1} gids) has been given to a team already (gids are never "
                "reused); widen team_gids in the site policy"
            )
        gid = int(row[0])
        self.db.table("team_gids").insert(
            {"gid": gid, "first_team": team, "allocated_at": time.time()}
        )
        return gid

    def _reserve_gid(self, team: str, gid: int) -> int:
        """Record a gid another node gave to `team` (also outside our range: that node decided)."""
        holder = self.db.execute("SELECT name FROM teams WHERE gid = ?", [gid]).fetchone()
        if holder is not None:
            raise PolicyError(f"gid {gid} of team {team!r} belongs to team {holder[0]!r} here")
        self.db.execute(
            "INSERT OR IGNORE INTO team_gids (gid, first_team, allocated_at) VALUES (?, ?, ?)",
            [gid, team, time.time()],
        )
        return gid

    def _write_members(self, team: Team) -> None:
        rows = [
            {"team": team.name, "user": user, "owner": int(user in team.owners)}
            for user in sorted(team.members)
        ]
        self.db.table("team_members").insert_all(rows, replace=True)


def grant_row(grant: Grant) -> dict[str, Any]:
    """A grant as plain fields (the table's row; also snapshots and `fedfs grants`)."""
    return {
        "path": grant.path,
        "principal": str(grant.principal),
        "level": str(grant.level),
        "granted_by": grant.granted_by,
        "granted_at": grant.granted_at,
        "expires": grant.expires,
        "shape": grant.shape,
    }


def _grant_from_row(row: dict[str, Any]) -> Grant:
    return Grant(
        path=row["path"],
        principal=Principal.parse(row["principal"]),
        level=Level.parse(row["level"]),
        granted_by=row["granted_by"],
        granted_at=float(row["granted_at"]),
        expires=None if row["expires"] is None else float(row["expires"]),
        shape=check_shape(row.get("shape") or TREE),
    )


def _team_from_row(row: dict[str, Any], member_rows: list[dict[str, Any]]) -> Team:
    return Team(
        name=row["name"],
        gid=int(row["gid"]),
        members=frozenset(m["user"] for m in member_rows),
        owners=frozenset(m["user"] for m in member_rows if m["owner"]),
        group=row["backing_group"],
    )


def _validate_users(users: Iterable[str]) -> None:
    for user in users:
        validate_name(user, "user")


def _names(names: Iterable[str]) -> str:
    return ", ".join(names)


def _marks(values: Iterable[object]) -> str:
    return ", ".join("?" for _ in values)


def _connect(path: Path) -> sqlite_utils.Database:
    # check_same_thread stays on: the store belongs to the thread that opened it.
    db = sqlite_utils.Database(sqlite3.connect(path, timeout=_BUSY_TIMEOUT))
    db.execute("PRAGMA foreign_keys = ON")
    # Reject malformed records as soon as they are read instead of misreading them.
    db.execute("PRAGMA cell_size_check = ON")
    return db


def _create(path: Path) -> None:
    """Build a new, empty database under a temporary name and link it into place.

    Because a file only ever appears at `path` complete, anything there that is not a
    valid database is damage, never a half-made new one, and is refused on open.
    """
    parent = path.parent
    if not parent.exists():
        parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        parent.chmod(0o700)  # mkdir's mode is filtered by the umask
    temp = parent / f".{path.name}.creating-{os.getpid()}"
    temp.unlink(missing_ok=True)
    os.close(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    try:
        db = _connect(temp)
        try:
            db.enable_wal()  # recorded in the file header, so every later open is WAL too
            db.execute("PRAGMA synchronous = FULL")
            _migrate(db, 0)
        finally:
            db.close()  # the last connection checkpoints and removes the -wal file
        fd = os.open(temp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        # Unlike rename, link never replaces a file another process made meanwhile;
        # if one did, we open theirs.
        with contextlib.suppress(FileExistsError):
            os.link(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    _fsync_dir(parent)


def _open(path: Path) -> sqlite_utils.Database:
    """Open an existing policy database, refusing anything damaged or foreign."""
    try:
        with path.open("rb") as f:
            header = f.read(len(_SQLITE_MAGIC))
    except OSError as e:
        raise PolicyError(f"cannot read policy database {path}: {e.strerror}") from e
    if header != _SQLITE_MAGIC:
        what = "it is empty" if not header else "it is not an SQLite database"
        raise _damaged(path, what)
    db = _connect(path)
    try:
        # FULL fsyncs the WAL on every commit: an acknowledged change survives a crash.
        db.execute("PRAGMA synchronous = FULL")
        # quick_check reports several findings per row, one per line; keep the message one line.
        rows = db.execute("PRAGMA quick_check(5)").fetchall()
        problems = [line.strip() for row in rows for line in str(row[0]).splitlines()]
        problems = [p for p in problems if p and not p.startswith("***")]
        if problems != ["ok"]:
            raise _damaged(path, "; ".join(problems))
        tables = set(db.table_names())
        if "schema_version" not in tables:
            raise PolicyError(
                f"{path} is an SQLite database but not a fedfs policy database "
                "(it has no schema_version table); point fedfs at another file or move it away"
            )
        row = db.execute("SELECT max(version) FROM schema_version").fetchone()
        found = int(row[0] or 0)
        if found > SCHEMA_VERSION:
            raise PolicyError(
                f"policy database {path} has schema version {found}, but this fedfs knows "
                f"only up to {SCHEMA_VERSION}; upgrade fedfs on this node"
            )
        db.enable_wal()  # after the checks, so a foreign file is left as it was
        _migrate(db, found)
        # sqlite-utils would quietly create a missing table on insert; refuse instead.
        missing = sorted(_TABLES - set(db.table_names()))
        if missing:
            raise _damaged(path, f"table(s) {', '.join(missing)} are missing")
    except sqlite3.DatabaseError as e:
        db.close()
        raise _sqlite_failure(path, e) from e
    except BaseException:
        db.close()
        raise
    return db


def _migrate(db: sqlite_utils.Database, current: int) -> None:
    for version in range(current + 1, SCHEMA_VERSION + 1):
        with db.atomic():
            db.executescript(_MIGRATIONS[version])
            db.execute(
                "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                [version, time.time()],
            )


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
