"""Spack recipe for fedfs: S3 buckets as POSIX trees, with kernel-enforced share grants.

fedfs has no public download site: this recipe fetches it with git from the
checkout it lives in (packaging/spack/packages/py-fedfs/ of a fedfs clone), at
the release tag, or at the main branch. A site that copies this repository
elsewhere points `git` at its fedfs clone in packages.yaml:

    packages:
      py-fedfs:
        package_attributes:
          git: https://git.example.org/hpc/fedfs.git

The systemd unit, tmpfiles entry and man pages come with the RPM
(packaging/fedfs.spec), not with Spack: Spack installs the `fedfs` command.
docs/PACKAGING.md says how to add this repository and what a site must check.
"""

# ruff: noqa: F403, F405  (the directives come from spack.package's star import)
from pathlib import Path

try:  # Spack >= 1.0: build systems live in the builtin package repository
    from spack_repo.builtin.build_systems.python import PythonPackage
except ImportError:  # Spack 0.x
    from spack.package import PythonPackage

from spack.package import *

# packaging/spack/packages/py-fedfs/package.py -> the top of the fedfs checkout
CHECKOUT = Path(__file__).resolve().parents[4]


class PyFedfs(PythonPackage):
    """Team-controlled S3 buckets as POSIX trees on HPC nodes, with kernel-enforced
    share grants (pyfuse3 + trio + boto3)."""

    homepage = CHECKOUT.as_uri()
    git = CHECKOUT.as_uri()

    license("Apache-2.0")

    # A release is the tag vVERSION; at release time add commit="<git rev-parse vVERSION>".
    version("0.1.0", tag="v0.1.0")
    version("main", branch="main")

    depends_on("python@3.11:", type=("build", "run"))
    depends_on("py-setuptools@77:", type="build")
    # fusermount3, for `fedfs umount`: the system's setuid one (spack external find libfuse)
    depends_on("libfuse@3:", type="run")

    # The same as pyproject.toml's [project] dependencies.
    depends_on("py-pyfuse3@3.4:3", type=("build", "run"))
    depends_on("py-trio@0.24:", type=("build", "run"))
    depends_on("py-boto3@1.34:", type=("build", "run"))
    depends_on("py-rich@13:", type=("build", "run"))
    depends_on("py-sqlite-utils@3.36:", type=("build", "run"))
    depends_on("py-cryptography@42:", type=("build", "run"))
    depends_on("py-ldap3@2.9:", type=("build", "run"))
    depends_on("py-sdnotify@0.3:", type=("build", "run"))
    depends_on("py-shtab@1.5:", type=("build", "run"))
    depends_on("py-prometheus-client@0.20:", type=("build", "run"))
