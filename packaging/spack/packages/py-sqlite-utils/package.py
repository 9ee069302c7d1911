# ruff: noqa: F403, F405  (the directives come from spack.package's star import)
try:  # Spack >= 1.0: build systems live in the builtin package repository
    from spack_repo.builtin.build_systems.python import PythonPackage
except ImportError:  # Spack 0.x
    from spack.package import PythonPackage

from spack.package import *


class PySqliteUtils(PythonPackage):
    """CLI tool and Python library for manipulating SQLite databases."""

    homepage = "https://github.com/simonw/sqlite-utils"
    pypi = "sqlite-utils/sqlite_utils-4.2.1.tar.gz"

    license("Apache-2.0")

    version(
        "4.2.1",
        sha256="76114b6a5414714e6c70e5fa5c4781b301b590f6951b5da39c8cc60c21382ba1",
        url="https://files.pythonhosted.org/packages/7e/6b/4a7b3d20c92e6c7acedc96ef620df8e1ea8f94a26a41ab788c1c08055815/sqlite_utils-4.2.1.tar.gz",
    )

    depends_on("python@3.10:", type=("build", "run"))
    depends_on("py-setuptools@77:", type="build")
    depends_on("py-click@8.3.1:", type=("build", "run"))
    depends_on("py-click-default-group@1.2.3:", type=("build", "run"))
    depends_on("py-pluggy", type=("build", "run"))
    depends_on("py-python-dateutil", type=("build", "run"))
    depends_on("py-sqlite-fts4", type=("build", "run"))
    depends_on("py-tabulate", type=("build", "run"))
    # `sqlite-utils install` runs pip
    depends_on("py-pip", type=("build", "run"))
