"""The RPM, built for real with rpmbuild (scripts/rpm), then installed into a scratch root.

Checks what an admin gets: the command, the unit, the tmpfiles entry, the
default site policy where the docs say, man pages and completion, and a
/usr/bin/fedfs that runs.
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
from pathlib import Path

import pytest

import fedfs
from fedfs.cli.main import parser
from fedfs.ops import manual as manpage

REPO = Path(__file__).resolve().parents[2]


def rpm_tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is missing: it comes with Debian's rpm package (scripts/install)"
    return path


@pytest.fixture(scope="module")
def rpm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    top = tmp_path_factory.mktemp("rpmbuild")
    rpm_tool("rpmbuild")
    r = subprocess.run(
        ["bash", str(REPO / "scripts/rpm")],
        capture_output=True,
        text=True,
        env={**os.environ, "RPM_TOPDIR": str(top)},
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert r.stderr == "", f"rpmbuild complained:\n{r.stderr}"
    path = Path(r.stdout.strip())
    assert path.name == f"fedfs-{fedfs.__version__}-1.noarch.rpm" and path.is_file()
    return path


def query(rpm: Path, *what: str) -> list[str]:
    r = subprocess.run(
        [rpm_tool("rpm"), "-qp", *what, str(rpm)], capture_output=True, text=True, check=True
    )
    return r.stdout.splitlines()


def test_rpm_holds_command_unit_tmpfiles_policy_man_and_completion(rpm: Path) -> None:
    files = set(query(rpm, "--list"))
    site = next(f for f in files if f.endswith("site-packages/fedfs/__init__.py")).rsplit("/", 1)[0]
    expected = {
        "/usr/bin/fedfs",
        "/usr/lib/systemd/system/fedfs@.service",
        "/usr/lib/tmpfiles.d/fedfs.conf",
        "/usr/share/fedfs/policy/default.toml",
        "/etc/fedfs/policy.d",
        "/usr/share/man/man1/fedfs.1.gz",
        "/usr/share/man/man1/fedfs-mount.1.gz",
        "/usr/share/man/man1/fedfs-share.1.gz",
        "/usr/share/bash-completion/completions/fedfs",
        f"{site}/cli/main.py",
        f"{site}/daemon/daemon.py",
        f"{site}/ops/notify.py",
        f"{site}/policy/engine.py",
    }
    assert expected <= files, expected - files
    assert not any("/etc/fedfs/policy.d/" in f for f in files), "policy.d is for the admin"


def test_rpm_requires_what_pyproject_requires(rpm: Path) -> None:
    requires = query(rpm, "--requires")
    for name in ("pyfuse3", "trio", "boto3", "sdnotify", "shtab"):
        assert any(r.startswith(f"python3dist({name}) >= ") for r in requires), name
    assert "fuse3" in requires
    assert f"fedfs = {fedfs.__version__}-1" in query(rpm, "--provides")


def test_installed_rpm_runs_and_matches_the_source(rpm: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    r = subprocess.run(
        [rpm_tool("rpm"), "--root", str(root), "-i", "--nodeps", "--noscripts", str(rpm)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    site = next(root.glob("usr/lib/python3*/site-packages"))
    # /usr/bin/fedfs as installed, run by the system's python3 with the RPM's files.
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = subprocess.run(
        [str(root / "usr/bin/fedfs"), "--version"], capture_output=True, text=True, env=env
    )
    assert out.stdout == f"fedfs {fedfs.__version__}\n", out
    version = subprocess.run(
        ["/usr/bin/python3", "-c", "import importlib.metadata as m; print(m.version('fedfs'))"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert version.stdout.strip() == fedfs.__version__
    for installed, source in (
        ("usr/lib/systemd/system/fedfs@.service", "systemd/fedfs@.service"),
        ("usr/lib/tmpfiles.d/fedfs.conf", "systemd/fedfs.conf"),
        ("usr/share/fedfs/policy/default.toml", "policy/default.toml"),
    ):
        assert (root / installed).read_bytes() == (REPO / source).read_bytes(), installed
    pages = manpage.pages(parser())
    for name in ("fedfs.1", "fedfs-mount.1", "fedfs-audit.1"):
        installed_page = gzip.decompress((root / "usr/share/man/man1" / f"{name}.gz").read_bytes())
        assert installed_page.decode() == pages[name], name
    completion = (root / "usr/share/bash-completion/completions/fedfs").read_text()
    assert "complete -o bashdefault -F _shtab_fedfs fedfs" in completion
