"""systemd/: the fedfs@.service template and the tmpfiles entry, checked by systemd's own tools.

`systemd-analyze verify` runs against a throw-away root holding the unit, the
host's own units (for the targets it orders against), an executable
/usr/bin/fedfs and the generated man pages, so it checks everything a real
install would have, and must print nothing at all.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from fedfs.cli.main import parser
from fedfs.ops import manual as manpage

REPO = Path(__file__).resolve().parents[3]
UNIT = REPO / "systemd" / "fedfs@.service"
TMPFILES = REPO / "systemd" / "fedfs.conf"


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is missing: it comes with Debian's systemd package (scripts/install)"
    return path


def settings(unit: Path) -> dict[str, list[str]]:
    """Every Key=value of a unit file (keys may repeat)."""
    out: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            out.setdefault(key.strip(), []).append(value.strip())
    return out


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A root with the host's units, the fedfs unit, /usr/bin/fedfs, /bin/mkdir and /bin/kill."""
    root = tmp_path / "root"
    units = root / "usr/lib/systemd/system"
    shutil.copytree("/usr/lib/systemd/system", units, symlinks=True)
    shutil.copy(UNIT, units / UNIT.name)
    (root / "usr/bin").mkdir(parents=True)
    (root / "bin").symlink_to("usr/bin")
    shutil.copy(tool("mkdir"), root / "usr/bin/mkdir")
    shutil.copy(tool("kill"), root / "usr/bin/kill")
    fedfs = root / "usr/bin/fedfs"
    fedfs.write_text(
        "#!/usr/bin/python3 -s\nimport sys\nfrom fedfs.cli.main import main\nsys.exit(main())\n"
    )
    fedfs.chmod(0o755)
    return root


def test_unit_passes_systemd_analyze_verify(root: Path, tmp_path: Path) -> None:
    manpage.write(tmp_path / "man", parser())
    r = subprocess.run(
        [tool("systemd-analyze"), "verify", f"--root={root}", "fedfs@climate.service"],
        capture_output=True,
        text=True,
        env={**os.environ, "MANPATH": str(tmp_path / "man")},
    )
    assert (r.returncode, r.stdout + r.stderr) == (0, "")


def test_verify_would_catch_a_mistake(root: Path, tmp_path: Path) -> None:
    """The check above is not vacuous: a typo or a missing man page is reported."""
    unit = root / "usr/lib/systemd/system" / UNIT.name
    unit.write_text(unit.read_text().replace("WatchdogSec=", "WatchdogSecs="))
    r = subprocess.run(
        [tool("systemd-analyze"), "verify", f"--root={root}", "fedfs@climate.service"],
        capture_output=True,
        text=True,
        env={**os.environ, "MANPATH": str(tmp_path / "no-man")},
    )
    assert "WatchdogSecs" in r.stderr and "man fedfs(1)" in r.stderr, r.stderr


def test_unit_runs_one_notify_mount_per_config() -> None:
    s = settings(UNIT)
    assert s["Type"] == ["notify"]
    assert s["ExecStart"] == [
        "/usr/bin/fedfs mount --foreground --config /etc/fedfs/%i.toml ${MOUNTPOINT}"
    ]
    assert s["Environment"] == ["MOUNTPOINT=/mnt/fedfs/%i"]
    assert s["EnvironmentFile"] == ["-/etc/fedfs/%i.env"]
    assert s["ExecStop"] == ["/usr/bin/fedfs umount --wait 900 ${MOUNTPOINT}"]
    assert s["Restart"] == ["on-failure"]
    assert s["WatchdogSec"] and s["DeviceAllow"] == ["/dev/fuse rw"]


def test_unit_hardening_leaves_the_mount_visible_to_the_node() -> None:
    """A private mount namespace would hide the FUSE mount from every other process."""
    namespaced = {
        "ProtectSystem",
        "ProtectHome",
        "PrivateTmp",
        "PrivateDevices",
        "PrivateMounts",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectKernelLogs",
        "ProtectControlGroups",
        "ProtectProc",
        "ProcSubset",
        "ReadWritePaths",
        "ReadOnlyPaths",
        "InaccessiblePaths",
        "TemporaryFileSystem",
        "BindPaths",
        "BindReadOnlyPaths",
        "RootDirectory",
        "MountFlags",
    }
    s = settings(UNIT)
    assert namespaced.isdisjoint(s), namespaced & set(s)
    assert s["NoNewPrivileges"] == ["yes"]
    assert "CAP_SYS_ADMIN" in s["CapabilityBoundingSet"][0].split()


def test_tmpfiles_entry_creates_the_socket_directory(tmp_path: Path) -> None:
    conf = tmp_path / "usr/lib/tmpfiles.d" / TMPFILES.name
    conf.parent.mkdir(parents=True)
    shutil.copy(TMPFILES, conf)
    r = subprocess.run(
        [tool("systemd-tmpfiles"), f"--root={tmp_path}", "--create", TMPFILES.name],
        capture_output=True,
        text=True,
    )
    assert (r.returncode, r.stderr) == (0, "")
    run = tmp_path / "run/fedfs"
    assert run.is_dir() and run.stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "var/lib/fedfs").stat().st_mode & 0o777 == 0o700
