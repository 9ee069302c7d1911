"""Doctor's checks of the cache directory: it is root's and private (or can be made),
nothing in it is a link or someone else's, and its disk has room for [cache] size;
and the files the object store refused for good, kept in its lost+found.

Reads the filesystem only (never creates the directory); runs in the doctor's
only thread. Imports config and the doctor's findings.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

from fedfs.config import CacheConfig, format_size
from fedfs.events import printable
from fedfs.ops.doctor.finding import FAIL, OK, SKIP, WARN, Finding, owner


def _existing_ancestor(path: Path) -> Path:
    while not os.path.lexists(path) and path.parent != path:
        path = path.parent
    return path


def check_cache(cfg: CacheConfig, owner_uid: int = 0) -> list[Finding]:
    """The cache directory as the daemon (root) will use it, and room on its disk."""
    d = cfg.dir
    fix_perm = f"chown root:root {d} && chmod 700 {d}"
    try:
        st = d.lstat()
    except FileNotFoundError:
        parent = _existing_ancestor(d)
        if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
            dir_finding = Finding(
                "cache dir",
                FAIL,
                f"{d} does not exist and cannot be created under {parent}",
                f"mkdir -p -m 700 {d} as root, or point [cache] dir elsewhere",
            )
        else:
            dir_finding = Finding("cache dir", OK, f"{d} does not exist yet; mount creates it 0700")
        return [dir_finding, check_cache_space(cfg, parent)]
    except OSError as e:
        return [Finding("cache dir", FAIL, f"{d}: {e.strerror}", "check [cache] dir")]
    if stat.S_ISLNK(st.st_mode):
        return [
            Finding(
                "cache dir",
                FAIL,
                f"{d} is a symbolic link (to {os.readlink(d)}); fedfs refuses it, since a link "
                "can redirect cached data",
                f"set [cache] dir to the real directory ({d.resolve()}) or replace the link",
            )
        ]
    if not stat.S_ISDIR(st.st_mode):
        return [
            Finding(
                "cache dir", FAIL, f"{d} is not a directory", "point [cache] dir at a directory"
            )
        ]
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid != owner_uid:
        dir_finding = Finding(
            "cache dir",
            FAIL,
            f"{d} is owned by {owner(st.st_uid)}, not root: its owner could read every "
            "cached file past the share grants, and fedfs mount refuses it",
            f"{fix_perm}, or use a directory only fedfs writes to",
        )
    elif mode & 0o022:
        dir_finding = Finding(
            "cache dir",
            FAIL,
            f"{d} has mode {mode:04o}: others may plant or remove files in it",
            fix_perm,
        )
    elif mode & 0o077:
        dir_finding = Finding(
            "cache dir",
            WARN,
            f"{d} has mode {mode:04o}, not 0700: others can list it (mount resets it to 0700)",
            f"chmod 700 {d}",
        )
    else:
        dir_finding = Finding("cache dir", OK, f"{d}: a directory of root's, mode 0700")
    found = [dir_finding]
    for sub in ("staging", "clean"):
        p = d / sub
        if os.path.lexists(p):
            sst = p.lstat()
            if not stat.S_ISDIR(sst.st_mode) or sst.st_uid != owner_uid:
                what = "a link" if stat.S_ISLNK(sst.st_mode) else "not a directory"
                if stat.S_ISDIR(sst.st_mode):
                    what = f"owned by {owner(sst.st_uid)}"
                found.append(
                    Finding(
                        "cache dir",
                        FAIL,
                        f"{p} is {what}; fedfs needs a directory of root's there",
                        f"remove {p}; fedfs mount creates it",
                    )
                )
    found.append(check_cache_space(cfg, d))
    return found


def _bytes_below(d: Path, limit: int = 1_000_000) -> int:
    """Bytes in the cache's files (staging and clean), from at most `limit` entries."""
    total, count = 0, 0
    for sub in ("staging", "clean"):
        stack = [d / sub]
        while stack and count < limit:
            try:
                with os.scandir(stack.pop()) as it:
                    for e in it:
                        count += 1
                        if e.is_dir(follow_symlinks=False):
                            stack.append(Path(e.path))
                        elif e.is_file(follow_symlinks=False):
                            total += e.stat(follow_symlinks=False).st_size
            except OSError:
                continue
    return total


def check_cache_space(cfg: CacheConfig, where: Path) -> Finding:
    """Free space plus what the cache already holds must fit [cache] size."""
    try:
        vfs = os.statvfs(where)
    except OSError as e:
        return Finding("cache space", FAIL, f"cannot read {where}'s filesystem: {e.strerror}")
    free = vfs.f_bavail * vfs.f_frsize
    used = _bytes_below(cfg.dir) if where == cfg.dir else 0
    room = free + used
    text = (
        f"{format_size(free)} free on the disk of {where}"
        + (f" plus {format_size(used)} already cached" if used else "")
        + f", for a [cache] size of {format_size(cfg.size)}"
    )
    if room < cfg.size:
        return Finding(
            "cache space",
            FAIL,
            f"{text}: writers get ENOSPC before the cache is full",
            f'lower [cache] size to at most "{int(room * 0.9) // 1024**2}MiB", or free space '
            f"on that filesystem (df -h {where})",
        )
    return Finding("cache space", OK, text)


def check_refused(cfg: CacheConfig) -> Finding:
    """Files the object store refused for good: kept in lost+found until an admin acts.

    Reads the journal's `refused` table read-only (a running daemon keeps writing it).
    """
    db = cfg.dir / "journal.db"
    if not db.exists():
        return Finding("refused uploads", OK, "none (no journal yet)")
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            rows = conn.execute(
                "select bucket, key, kept, uid, error from refused order by at"
            ).fetchall()
        finally:
            conn.close()
    except sqlite3.Error as e:
        if "no such table" in str(e):
            return Finding("refused uploads", OK, "none")
        return Finding("refused uploads", SKIP, f"cannot read {db}: {e}")
    if not rows:
        return Finding("refused uploads", OK, "none: the object store took every file")
    return Finding(
        "refused uploads",
        FAIL,
        f"{len(rows)} file(s) the object store refuses for good (a key it never accepts) "
        f"are not in it; their data is kept in {cfg.dir / 'lost+found'}",
        "hand each back to its owner under a name the store accepts, then delete the kept "
        'copy and run `fedfs fsck` (docs/OPERATIONS.md, "Files the store refused")',
        tuple(
            f"/{b}/{printable(k)} (owner {owner(uid)}): kept in {kept}; {printable(err)}"
            for b, k, kept, uid, err in rows[:100]
        ),
    )
