"""The write-back journal: which staged files still have to reach the object store.

One SQLite database per node in the cache directory (WAL), so that a file
whose close() returned is recorded before the caller hears success, and a
restarted daemon finds and uploads every one of them. Commits reach the
kernel at once (they survive a killed daemon); fsync() also forces them to
disk (they survive a crashed node).
Files the store refused for good move from `dirty` to `refused` (their data is
in the cache's lost+found). A row of a file staged from an existing object
also says which byte ranges changed since (partial rewrites, parts.py); that
list is exact or NULL, never short: a staging file about to change after the
row was written first sets it NULL (`widen`), and NULL uploads the whole file. Rows are written from the trio thread only (no
database access from threads).
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import sqlite_utils

from fedfs.errors import FedfsError

SCHEMA_VERSION = 1
_UPSERT = """
    INSERT INTO dirty (bucket, key, staging, metadata, base_etag, state, queued_at, attempts,
                       last_error, base_size, changed)
    VALUES (:bucket, :key, :staging, :metadata, :base_etag, :state, :queued_at, :attempts,
            :last_error, :base_size, :changed)
    ON CONFLICT (bucket, key) DO UPDATE SET
        staging = excluded.staging, metadata = excluded.metadata,
        base_etag = excluded.base_etag, state = excluded.state,
        queued_at = excluded.queued_at, attempts = excluded.attempts,
        last_error = excluded.last_error, base_size = excluded.base_size,
        changed = excluded.changed
"""
# Columns added after the first release: a journal written by an older fedfs gets them.
_ADDED_COLUMNS = {"base_size": "INTEGER", "changed": "TEXT"}


@dataclass(frozen=True)
class DirtyFile:
    """A staged file that is not (all) in the object store yet."""

    bucket: str
    key: str
    staging: str  # file name inside the staging directory
    metadata: dict[str, str]  # the object user metadata to upload with it
    base_etag: str | None  # the version it was staged from (None: a new object)
    state: str  # "open": a writer has it open; "queued": closed, waiting for upload
    queued_at: float
    attempts: int = 0
    last_error: str | None = None
    # Partial rewrites: the base version's size, and the byte ranges changed since it
    # (None: not known, so the whole file goes up).
    base_size: int | None = None
    changed: list[tuple[int, int]] | None = None


@dataclass(frozen=True)
class RefusedFile:
    """A file the object store refused for good, kept aside in the cache's lost+found."""

    bucket: str
    key: str
    kept: str  # its data: a file under CACHE/lost+found
    uid: int  # its owner, who is told
    size: int
    error: str
    at: float


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path
        conn: sqlite3.Connection | None = None
        try:
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            ok = conn.execute("PRAGMA quick_check").fetchone()[0]
        except sqlite3.DatabaseError as e:
            if conn is not None:
                conn.close()  # a refused file is left as it was, for `fedfs fsck`
            raise FedfsError(
                f"write-back journal {path} is damaged ({e}); it lists files not yet uploaded: "
                "run `fedfs fsck --config CONFIG` (it keeps the file, recovers what it can and lists "
                "staging files it cannot match), then mount"
            ) from None
        if ok != "ok":
            conn.close()
            ok = "; ".join(x.strip() for x in ok.splitlines()[:4] if not x.startswith("***"))
            raise FedfsError(
                f"write-back journal {path} failed its integrity check ({ok}); "
                "run `fedfs fsck --config CONFIG`, then mount"
            )
        path.chmod(0o600)
        self.db = sqlite_utils.Database(conn)
        if "dirty" not in self.db.table_names():
            self.db.table("dirty").create(
                {
                    "bucket": str,
                    "key": str,
                    "staging": str,
                    "metadata": str,
                    "base_etag": str,
                    "state": str,
                    "queued_at": float,
                    "attempts": int,
                    "last_error": str,
                    "base_size": int,
                    "changed": str,
                },
                pk=("bucket", "key"),
            )
            self.db.table("meta").insert({"name": "schema", "value": SCHEMA_VERSION}, pk="name")
        have = {c.name for c in self.db["dirty"].columns}
        for name, kind in _ADDED_COLUMNS.items():
            if name not in have:
                self.db.execute(f"ALTER TABLE dirty ADD COLUMN {name} {kind}")
        if "refused" not in self.db.table_names():
            # Files the store refused for good (a key it never accepts): kept aside in the
            # cache's lost+found, never retried; listed by status, sync, doctor and fsck.
            self.db.table("refused").create(
                {
                    "bucket": str,
                    "key": str,
                    "kept": str,
                    "uid": int,
                    "size": int,
                    "error": str,
                    "at": float,
                },
                pk=("bucket", "key"),
            )
        if "moves" not in self.db.table_names():
            # Directory renames under way (copy every key, then delete the old ones): a
            # restart finishes them, so a crash never leaves a tree half in both places.
            self.db.table("moves").create(
                {"bucket": str, "old": str, "new": str}, pk=("bucket", "old")
            )

    def begin_move(self, bucket: str, old: str, new: str) -> None:
        """A directory rename from prefix `old` to `new` starts (durable: it must survive the node)."""
        self.db.execute("PRAGMA synchronous=FULL")
        try:
            self.db.table("moves").upsert(
                {"bucket": bucket, "old": old, "new": new}, pk=("bucket", "old")
            )
        finally:
            self.db.execute("PRAGMA synchronous=NORMAL")

    def end_move(self, bucket: str, old: str) -> None:
        self.db.execute("delete from moves where bucket = ? and old = ?", [bucket, old])

    def moves(self) -> list[tuple[str, str, str]]:
        return [(r["bucket"], r["old"], r["new"]) for r in self.db["moves"].rows]

    def record(self, f: DirtyFile, durable: bool = False) -> None:
        """Insert or replace the row for (bucket, key).

        Every commit reaches the kernel before this returns, so the row survives
        a crash of the daemon; with durable=True it is also on disk (fsync), so
        it survives a crash of the node.
        """
        row = {
            **f.__dict__,
            "metadata": json.dumps(f.metadata, sort_keys=True),
            "changed": None if f.changed is None else json.dumps(f.changed),
        }
        if durable:
            self.db.execute("PRAGMA synchronous=FULL")
        try:
            # One plain statement: sqlite-utils' upsert reads the schema on every call,
            # which was a third of a small file's create (twice per file: open, close).
            self.db.execute(_UPSERT, row)
        finally:
            if durable:
                self.db.execute("PRAGMA synchronous=NORMAL")

    def forget(self, bucket: str, key: str, staging: str | None = None) -> None:
        """Drop the row once the upload is in the store (only if it still names `staging`)."""
        where = "bucket = ? and key = ?"
        args: list[str] = [bucket, key]
        if staging is not None:
            where += " and staging = ?"
            args.append(staging)
        self.db.execute(f"delete from dirty where {where}", args)

    def widen(self, staging: str) -> None:
        """The staging file is about to change: its row no longer knows which ranges changed."""
        self.db.execute("update dirty set changed = NULL where staging = ?", [staging])

    def failed(self, bucket: str, key: str, error: str) -> None:
        self.db.execute(
            "update dirty set attempts = attempts + 1, last_error = ? where bucket = ? and key = ?",
            [error, bucket, key],
        )

    def refuse(self, f: RefusedFile) -> None:
        """The store refused this file for good: keep its row (durable) instead of the dirty one."""
        self.db.execute("PRAGMA synchronous=FULL")
        try:
            self.db.table("refused").upsert(f.__dict__, pk=("bucket", "key"))
            self.db.execute("delete from dirty where bucket = ? and key = ?", [f.bucket, f.key])
        finally:
            self.db.execute("PRAGMA synchronous=NORMAL")

    def refused(self) -> list[RefusedFile]:
        return [RefusedFile(**r) for r in self.db["refused"].rows_where(order_by="at")]

    def forget_refused(self, bucket: str, key: str) -> None:
        self.db.execute("delete from refused where bucket = ? and key = ?", [bucket, key])

    def rename(self, bucket: str, old: str, new: str) -> None:
        self.db.execute("delete from dirty where bucket = ? and key = ?", [bucket, new])
        self.db.execute("update dirty set key = ? where bucket = ? and key = ?", [new, bucket, old])

    def all(self) -> list[DirtyFile]:
        return [
            DirtyFile(
                **{
                    **r,
                    "metadata": json.loads(r["metadata"]),
                    "changed": _ranges(r["changed"]),
                }
            )
            for r in self.db["dirty"].rows_where(order_by="queued_at")
        ]

    def count(self) -> int:
        return int(self.db.execute("select count(*) from dirty").fetchone()[0])

    def close(self) -> None:
        self.db.conn.close()


def _ranges(text: str | None) -> list[tuple[int, int]] | None:
    """The changed ranges of a row; None (upload it whole) if absent or not a valid list."""
    if text is None:
        return None
    try:
        ranges = [(int(lo), int(hi)) for lo, hi in json.loads(text)]
    except (ValueError, TypeError):
        return None
    return ranges if all(0 <= lo < hi for lo, hi in ranges) and ranges == sorted(ranges) else None


def now() -> float:
    return time.time()
