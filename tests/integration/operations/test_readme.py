"""The README's examples for scientists, job authors and admins run as written.

Each `sh` block of those sections is read from README.md and run line by line
against a real mount of a bucket named `climate` owned by `alice`, with the
mount point and config path put in place of /mnt/fedfs and /etc/fedfs; every
command must succeed. Lines that manage the service itself (mount, umount,
systemctl, journalctl) are covered by their own tests and skipped here.
"""

from __future__ import annotations

import contextlib
import datetime
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support import REPO, Mount, UnixUser, ensure_user

SKIP = (
    "fedfs mount",
    "fedfs umount",
    "systemctl",
    "journalctl",
    "bash ",
    ".venv",
    "python",
    "FEDFS_",
    "fedfs admin",  # needs a shared policy log: run as written in test_multinode.py's cluster
    "fedfs fsck",  # needs the mount stopped: run as written in test_fsck.py
)


def blocks(section: str) -> list[list[str]]:
    """The sh code blocks under the README heading that starts with `section`."""
    text = (REPO / "README.md").read_text()
    found, current, heading, inside = [], [], "", False
    for line in text.splitlines():
        if line.startswith("## "):
            heading = line[3:]
        elif line.startswith("```sh"):
            inside, current = True, []
        elif line.startswith("```") and inside:
            inside = False
            if heading.startswith(section):
                found.append(current)
        elif inside:
            current.append(line)
    assert found, f"README has no sh block under '## {section}'"
    return found


def run_block(lines: list[str], user: UnixUser, cwd: Path, mount: Mount, config: Path) -> int:
    ran = 0
    future = (datetime.date.today() + datetime.timedelta(days=60)).isoformat()
    for line in lines:
        line = line.replace("/etc/fedfs/climate.toml", str(config)).replace(
            "/mnt/fedfs", str(mount.mountpoint)
        )
        line = re.sub(
            r"\d{4}-\d{2}-\d{2}(?=\s|$)", future, line
        )  # dates in the examples stay ahead
        argv = shlex.split(line, comments=True)
        if not argv or line.strip().startswith(SKIP):
            continue
        if argv[0] == "cd":
            cwd = Path(argv[1])
            continue
        if argv[0] == "fedfs":
            argv = [sys.executable, "-m", "fedfs.cli", *argv[1:]]
        r = subprocess.run(
            argv,
            cwd=cwd,
            user=user.uid,
            group=user.gid,
            extra_groups=[],
            capture_output=True,
            text=True,
            env={"PATH": "/usr/bin:/bin", "HOME": "/tmp", "LC_ALL": "C"},
            timeout=300,
        )
        assert r.returncode == 0, f"README example failed: {line}\n{r.stdout}\n{r.stderr}"
        ran += 1
    return ran


def test_readme_examples_run(make_mount: Any, s3: Any, tmp_path: Path) -> None:
    users = {
        n: ensure_user(n, uid)
        for n, uid in (("alice", 2921), ("bob", 2922), ("carol", 2923), ("dave", 2924))
    }
    subprocess.run(
        ["sh", "-c", "getent group hpc-users || groupadd hpc-users"],
        check=True,
        capture_output=True,
    )
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(Bucket="climate")
    m: Mount = make_mount([("climate", "user:alice")])
    alice, root = users["alice"], m.path("climate")
    prepare = f"mkdir -p {root}/runs/2026 {root}/runs/2026-11 {root}/inputs && echo x > {root}/runs/2026/out.nc"
    prepare += f" && echo y > {root}/runs/out.nc && echo z > {root}/inputs/a.dat"
    assert alice.run("sh", "-c", prepare).returncode == 0
    work = tmp_path / "job"
    work.mkdir()
    (work / "results.nc").write_text("results")
    work.chmod(0o755)
    (work / "results.nc").chmod(0o644)

    team_block, share_block = blocks("For scientists")[1], blocks("For scientists")[0]
    ran = run_block(team_block, alice, work, m, m.config)
    ran += run_block(share_block, alice, work, m, m.config)
    for block in blocks("For job authors"):
        ran += run_block(block, alice, work, m, m.config)
    for block in blocks("For admins"):
        ran += run_block(block, UnixUser("root", 0, 0), work, m, m.config)
    assert ran >= 20, f"only {ran} README commands ran"
    # and they did what the README says
    assert (root / "runs" / "2026-11" / "results.nc").read_text() == "results"
    import json

    grants = json.loads(
        alice.run(
            sys.executable, "-m", "fedfs.cli", "grants", root / "runs" / "2026", "--json"
        ).stdout
    )
    assert {(g["principal"], g["level"]) for g in grants} == {
        ("team:cosmo", "write"),
        ("group:hpc-users", "read"),
    }
    team = json.loads(
        alice.run(
            sys.executable, "-m", "fedfs.cli", "team", "show", "cosmo", "--mount", root, "--json"
        ).stdout
    )
    assert sorted(team["members"]) == ["alice", "bob", "dave"] and team["owners"] == ["alice"]
