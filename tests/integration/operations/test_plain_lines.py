"""Lines an admin reads: `fedfs status` counts, and the demo's hints work as typed."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from tests.support import FEDFS, REPO, Mount


def cli(*args: str | Path, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FEDFS, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def test_status_does_not_count_not_found_as_errors(fs: Path, mount: Mount) -> None:
    for i in range(5):
        assert not (fs / f"missing-{i}").exists()
    text = cli("status", mount.mountpoint).stdout
    line = next(x for x in text.splitlines() if "requests," in x)
    assert re.fullmatch(
        r" {11}\d+ requests, 0 errors, latency p50 [\d.]+ ms, p99 [\d.]+ ms \(latest requests\)",
        line,
    ), line


def test_demo_hints_work_as_typed(public_dir: Path, tmp_path: Path) -> None:
    from tests.support import free_port

    mnt = public_dir / f"{tmp_path.name}-demo"
    state = tmp_path / "demo-state"
    fedfs_cmd = REPO / ".venv" / "bin" / "fedfs"
    env = {**os.environ, "PATH": "/usr/bin:/bin"}  # no fedfs on PATH
    r = subprocess.run(
        [fedfs_cmd, "demo", "--mountpoint", mnt, "--state", state, "--port", str(free_port())],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    try:
        assert r.returncode == 0, r.stderr
        stop = f"{fedfs_cmd} demo --stop --mountpoint {mnt} --state {state}"
        assert r.stdout.splitlines()[-1] == f"Stop:   {stop}"
        hints = [x.strip() for x in r.stdout.splitlines() if x.startswith("  ")]
        for hint in hints:
            done = subprocess.run(["sh", "-c", hint], capture_output=True, text=True, env=env)
            assert done.returncode == 0, (hint, done.stderr)
        typed = subprocess.run(["sh", "-c", stop], capture_output=True, text=True, env=env)
        assert typed.returncode == 0, typed.stderr
        assert typed.stdout.splitlines()[-1] == "fedfs demo stopped"
        assert not os.path.ismount(mnt)
    finally:
        if os.path.ismount(mnt):
            subprocess.run([*FEDFS, "demo", "--stop", "--mountpoint", mnt, "--state", state])
