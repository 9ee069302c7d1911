"""The RPM, built for real with rpmbuild (scripts/rpm), then installed into a scratch root.

One target is built here: EL9's python3.11 stack (`python3_pkgversion 3.11`),
the only one whose Python (/usr/bin/python3.11) this machine has, from a
wheelhouse repacked offline from the installed distributions
(tests/local_wheelhouse.py). The installed package mounts a bucket with the
venv's own fedfs, pyfuse3 and libfuse. EL9's python3.12 stack and EL10 (3.12)
are checked through what rpmspec makes of the spec: Requires, BuildRequires,
sources and paths. packaging/make-wheelhouse is run against the package index
for EL9/EL10's Python 3.12.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
import tarfile
import tomllib
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement

import fedfs
from fedfs.cli.main import parser
from fedfs.ops import manual as manpage
from tests import local_wheelhouse
from tests.support import write_config

REPO = Path(__file__).resolve().parents[3]
SPEC = REPO / "packaging" / "fedfs.spec"
VERSION = fedfs.__version__
# EL9 with its python3.11 stack, as this machine's /usr/bin/python3.11 stands in for it.
EL9_PY311 = {"python3_pkgversion": "3.11", "__python3": "/usr/bin/python3.11"}
# What each target's macros say (rpm --eval on EL9 and EL10): the Python is absent here.
TARGETS = {
    "el9-python3.12": ({"dist": ".el9", "python3_pkgversion": "3.12"}, "3.12", "python3.12"),
    "el9-python3.11": ({"dist": ".el9", "python3_pkgversion": "3.11"}, "3.11", "python3.11"),
    "el10": ({"dist": ".el10", "python3_version": "3.12"}, "3.12", "python3"),
}
# Shared objects the venv's extension modules may link: glibc, libgcc and libfuse3.
SYSTEM_LIBS = re.compile(
    r"(ld-linux-[\w-]+\.so\.2|lib(c|m|dl|rt|pthread|util|gcc_s|fuse3)\.so\.\d+)(\(.*\))?(\(64bit\))?"
)


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is missing: it comes with Debian's rpm package (scripts/install)"
    return path


def defines(macros: dict[str, str]) -> list[str]:
    return [arg for name, value in macros.items() for arg in ("--define", f"{name} {value}")]


def rpmspec(macros: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("rpmspec"), *defines(macros), *args, str(SPEC)], capture_output=True, text=True
    )


def query(rpm: Path, *what: str) -> list[str]:
    r = subprocess.run(
        [tool("rpm"), "-qp", *what, str(rpm)], capture_output=True, text=True, check=True
    )
    return r.stdout.splitlines()


@pytest.fixture(scope="module")
def rpm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    top = tmp_path_factory.mktemp("rpmbuild")
    (top / "SOURCES").mkdir()
    runtime = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    local_wheelhouse.build(
        [Requirement(r).name for r in runtime] + ["pip", "setuptools"],
        top / "SOURCES" / f"fedfs-wheelhouse-{VERSION}-cp311-{os.uname().machine}.tar.gz",
    )
    tool("rpmbuild")
    r = subprocess.run(
        ["bash", str(REPO / "scripts/rpm"), *defines(EL9_PY311)],
        capture_output=True,
        text=True,
        env={**os.environ, "RPM_TOPDIR": str(top)},
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    assert r.stderr == "", f"rpmbuild complained:\n{r.stderr}"
    path = Path(r.stdout.strip())
    assert path.name == f"fedfs-{VERSION}-1.{os.uname().machine}.rpm" and path.is_file()
    return path


@pytest.fixture(scope="module")
def installed(rpm: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("root")
    r = subprocess.run(
        [tool("rpm"), "--root", str(root), "-i", "--nodeps", "--noscripts", str(rpm)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    return root


def as_installed(root: Path, script: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    """Run `script` where /opt/fedfs is the RPM's (a private mount namespace over /opt)."""
    setup = f"mount -t tmpfs fedfs-rpm-test /opt && mkdir /opt/fedfs && mount --bind {root}/opt/fedfs /opt/fedfs"
    return subprocess.run(
        ["unshare", "--mount", "sh", "-ec", f"{setup}\n{script}"],
        capture_output=True,
        text=True,
        timeout=180,
        **kw,
    )


def test_rpm_requires_only_the_distributions_python_and_fuse3(rpm: Path) -> None:
    requires = query(rpm, "--requires")
    packages = {r for r in requires if not r.startswith(("rpmlib(", "rtld(")) and ".so" not in r}
    assert packages == {"/bin/sh", "python3.11", "python(abi) = 3.11", "fuse3", "fuse3-libs"}
    libraries = [r for r in requires if ".so" in r]
    assert any(r.startswith("libfuse3.so.3") for r in libraries), "pyfuse3 links libfuse3"
    assert [r for r in libraries if not SYSTEM_LIBS.fullmatch(r)] == [], "bundled libraries"
    assert query(rpm, "--provides") == [
        f"fedfs = {VERSION}-1",
        f"fedfs({os.uname().machine.replace('_', '-')}) = {VERSION}-1",
    ]


def test_rpm_holds_the_venv_command_unit_tmpfiles_policy_man_and_completion(rpm: Path) -> None:
    files = query(rpm, "--qf", "[%{FILENAMES} -> %{FILELINKTOS}\n]")
    links = {f.split(" -> ")[0]: f.split(" -> ")[1] for f in files}
    site = "/opt/fedfs/lib/python3.11/site-packages"
    expected = {
        "/usr/bin/fedfs",
        "/opt/fedfs/pyvenv.cfg",
        "/opt/fedfs/bin/fedfs",
        f"{site}/fedfs/cli/main.py",
        f"{site}/fedfs/cli/__pycache__/main.cpython-311.pyc",
        f"{site}/fedfs/daemon/__init__.py",
        f"{site}/fedfs/policy/engine.py",
        f"{site}/fedfs-{VERSION}.dist-info/METADATA",
        f"{site}/pyfuse3/__init__.cpython-311-{os.uname().machine}-linux-gnu.so",
        "/usr/lib/systemd/system/fedfs@.service",
        "/usr/lib/tmpfiles.d/fedfs.conf",
        "/usr/share/fedfs/policy/default.toml",
        "/etc/fedfs/policy.d",
        "/usr/share/man/man1/fedfs.1.gz",
        "/usr/share/man/man1/fedfs-mount.1.gz",
        "/usr/share/man/man1/fedfs-share.1.gz",
        "/usr/share/bash-completion/completions/fedfs",
        f"/usr/share/doc/fedfs-{VERSION}/bundled.txt",
    }
    assert expected <= links.keys(), expected - links.keys()
    assert links["/usr/bin/fedfs"] == "../../opt/fedfs/bin/fedfs"
    python = "/opt/fedfs/bin/python"
    while links.get(python):  # the venv's python, link by link, out of the package
        python = os.path.normpath(os.path.join(os.path.dirname(python), links[python]))
    assert python == "/usr/bin/python3.11"
    outside = {
        f
        for f in links
        if not f.startswith(("/opt/fedfs/", "/usr/share/", "/usr/lib/systemd/", "/etc/fedfs"))
    }
    assert outside == {"/opt/fedfs", "/usr/bin/fedfs", "/usr/lib/tmpfiles.d/fedfs.conf"}, (
        "nothing in the system Python's site-packages, no /usr/lib/.build-id links"
    )
    assert not any("/etc/fedfs/policy.d/" in f for f in links), "policy.d is for the admin"


def test_installed_rpm_mounts_a_bucket_with_its_own_fedfs(
    installed: Path, s3: Any, moto: Any, bucket: str, tmp_path: Path
) -> None:
    config = write_config(
        tmp_path / "rpm.toml", moto.url, [(bucket, "user:root")], tmp_path / "cache"
    )
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    fedfs_cmd = f"{installed}/usr/bin/fedfs"
    r = as_installed(
        installed,
        f"""
        {fedfs_cmd} --version
        {fedfs_cmd} mount --config {config} --log-file {tmp_path}/mount.log {mnt}
        trap '{fedfs_cmd} umount {mnt}' EXIT
        echo 'written through the RPM' > {mnt}/{bucket}/hello.txt
        {fedfs_cmd} sync {mnt}/{bucket}
        /opt/fedfs/bin/python -c 'import pyfuse3, sys; print(pyfuse3.__file__, sys.prefix)'
        """,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stdout + r.stderr + (tmp_path / "mount.log").read_text()
    lines = r.stdout.splitlines()
    assert lines[0] == f"fedfs {VERSION}"
    pyfuse3 = next(line for line in lines if "pyfuse3" in line)
    assert pyfuse3.startswith("/opt/fedfs/lib/python3.11/site-packages/pyfuse3/")
    assert pyfuse3.endswith(" /opt/fedfs"), "the venv's python runs in the venv"
    body = s3.get_object(Bucket=bucket, Key="hello.txt")["Body"].read()
    assert body == b"written through the RPM\n"


def test_installed_rpm_files_match_the_source(installed: Path) -> None:
    root = installed
    for path, source in (
        ("usr/lib/systemd/system/fedfs@.service", "systemd/fedfs@.service"),
        ("usr/lib/tmpfiles.d/fedfs.conf", "systemd/fedfs.conf"),
        ("usr/share/fedfs/policy/default.toml", "policy/default.toml"),
    ):
        assert (root / path).read_bytes() == (REPO / source).read_bytes(), path
    pages = manpage.pages(parser())
    for name in ("fedfs.1", "fedfs-mount.1", "fedfs-audit.1"):
        page = gzip.decompress((root / "usr/share/man/man1" / f"{name}.gz").read_bytes())
        assert page.decode() == pages[name], name
    completion = (root / "usr/share/bash-completion/completions/fedfs").read_text()
    assert "complete -o bashdefault -F _shtab_fedfs fedfs" in completion
    venv = (root / "opt/fedfs/pyvenv.cfg").read_text()
    assert "home = /usr/bin\n" in venv and "include-system-site-packages = false" in venv
    build_root = [
        p for p in (root / "opt/fedfs").rglob("*") if p.is_file() and b"BUILDROOT" in p.read_bytes()
    ]
    assert build_root == [], "files still name the build root"
    bundled = (root / f"usr/share/doc/fedfs-{VERSION}/bundled.txt").read_text()
    assert re.search(r"^pyfuse3\t3\.\d+\.\d+\tLGPL-2\.1-or-later$", bundled, re.M), bundled


@pytest.mark.parametrize("target", TARGETS)
def test_spec_for_each_target_requires_its_python(target: str) -> None:
    macros, pyver, package = TARGETS[target]
    requires = rpmspec(macros, "-q", "--requires")
    assert requires.returncode == 0, requires.stderr
    assert set(requires.stdout.splitlines()) == {
        "/bin/sh",  # the scriptlets
        package,
        f"python(abi) = {pyver}",
        "fuse3",
        "fuse3-libs",
    }
    build = rpmspec(macros, "-q", "--buildrequires")
    assert set(build.stdout.splitlines()) == {
        f"{package}-devel",
        "gcc",
        "pkgconfig",
        "pkgconfig(fuse3)",
    }, build.stderr
    sources = rpmspec(macros, "-q", "--srpm", "--qf", "[%{SOURCE}\n]")
    tag = "cp" + pyver.replace(".", "")
    assert f"fedfs-wheelhouse-{VERSION}-{tag}-{os.uname().machine}.tar.gz" in sources.stdout
    release = rpmspec(macros, "-q", "--qf", "%{release}")
    assert release.stdout == f"1{macros['dist']}"
    expanded = rpmspec(macros, "-P").stdout
    python = f"/usr/bin/python{pyver}" if package != "python3" else "/usr/bin/python3"
    assert f"{python} -m venv --without-pip " in expanded
    assert f"/opt/fedfs/lib/python{pyver}/site-packages" in expanded


def test_spec_refuses_el9s_default_python39_and_says_what_to_define() -> None:
    r = rpmspec({"dist": ".el9", "python3_version": "3.9"}, "-q", "--requires")
    assert r.returncode != 0
    assert "fedfs needs Python 3.11 or newer" in r.stderr
    assert "--define 'python3_pkgversion 3.12'" in r.stderr


def test_make_wheelhouse_for_python312_from_the_package_index(tmp_path: Path) -> None:
    """EL9's python3.12 stack and EL10: wheels for cp312 and glibc 2.34, pyfuse3 as an sdist."""
    r = subprocess.run(
        [
            *(str(REPO / "packaging/make-wheelhouse"), "--python-version", "3.12"),
            *("--glibc", "2.34", "--arch", "x86_64", "--output", str(tmp_path)),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    tarball = Path(r.stdout.strip())
    assert tarball.name == f"fedfs-wheelhouse-{VERSION}-cp312-x86_64.tar.gz"
    with tarfile.open(tarball) as tar:
        names = [Path(n).name for n in tar.getnames() if n != "wheelhouse"]
        pinned = tar.extractfile("wheelhouse/requirements.txt").read().decode()  # type: ignore[union-attr]
    wheels = [n for n in names if n.endswith(".whl")]
    for wheel in wheels:
        _, _, _, abi, plat = wheel.removesuffix(".whl").rsplit("-", 4)
        assert plat == "any" or (abi in ("cp312", "abi3") and "x86_64" in plat), wheel
        for minor in re.findall(r"manylinux_2_(\d+)", plat):
            assert int(minor) <= 34, f"{wheel} needs a newer glibc than EL9's 2.34"
    assert [n for n in names if n.endswith(".tar.gz")] == [
        next(n for n in names if n.startswith("pyfuse3-"))
    ], "only pyfuse3 is compiled by rpmbuild"
    for needed in ("pip-", "setuptools-", "cython-", "cryptography-", "cffi-", "sdnotify-"):
        assert any(n.startswith(needed) for n in wheels), needed
    runtime = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    for req in runtime:
        name = re.sub(r"[-_.]+", "-", Requirement(req).name).lower()
        assert re.search(rf"^{name}==", pinned, re.M), name
