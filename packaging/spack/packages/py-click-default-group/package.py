# ruff: noqa: F403, F405  (the directives come from spack.package's star import)
try:  # Spack >= 1.0: build systems live in the builtin package repository
    from spack_repo.builtin.build_systems.python import PythonPackage
except ImportError:  # Spack 0.x
    from spack.package import PythonPackage

from spack.package import *


class PyClickDefaultGroup(PythonPackage):
    """click.Group that invokes a default subcommand (a dependency of sqlite-utils)."""

    homepage = "https://github.com/click-contrib/click-default-group"
    pypi = "click-default-group/click_default_group-1.2.4.tar.gz"

    license("BSD-3-Clause")

    version(
        "1.2.4",
        sha256="eb3f3c99ec0d456ca6cd2a7f08f7d4e91771bef51b01bdd9580cc6450fe1251e",
        url="https://files.pythonhosted.org/packages/1d/ce/edb087fb53de63dad3b36408ca30368f438738098e668b78c87f93cd41df/click_default_group-1.2.4.tar.gz",
    )

    depends_on("py-flit-core@3.2:3", type="build")
    depends_on("py-click", type=("build", "run"))
