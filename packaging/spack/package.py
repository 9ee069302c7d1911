"""Spack recipe for fedfs: S3 buckets as POSIX trees, with kernel-enforced share grants.

Copy this file into a Spack package repository as packages/fedfs/package.py
(`spack repo create`, then `spack repo add`). fedfs has no public release
archive yet, so build from a checkout:

    spack env create fedfs && spack env activate fedfs
    spack develop --path /path/to/fedfs fedfs@0.1.0
    spack add fedfs@0.1.0 && spack install

Spack cannot be installed in fedfs's CI (no network beyond package registries),
so this recipe is not built there: tests/unit/test_packaging.py parses it and
checks that its version and dependencies match pyproject.toml. Spack's builtin
repository may lack recipes for some dependencies (py-pyfuse3, py-sdnotify,
py-sqlite-utils); a site adds them beside this one. The systemd unit, tmpfiles
entry and man pages come with the RPM (packaging/fedfs.spec), not with Spack:
Spack installs the `fedfs` command for use with `fedfs mount --foreground`.
"""

# ruff: noqa: F405  (the directives come from spack.package's star import)

try:  # Spack >= 1.0: build systems live in the builtin package repository
    from spack_repo.builtin.build_systems.python import PythonPackage
except ImportError:  # older Spack
    from spack.package import PythonPackage

from spack.package import *  # noqa: F403


class Fedfs(PythonPackage):
    """Team-controlled S3 buckets as POSIX trees on HPC nodes, with kernel-enforced
    share grants (pyfuse3 + trio + boto3)."""

    license("Apache-2.0")

    version("0.1.0")

    depends_on("python@3.11:", type=("build", "run"))
    depends_on("py-setuptools@77:", type="build")
    depends_on("libfuse@3:", type="run")  # fusermount3, for fedfs umount

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
