# ruff: noqa: F403, F405  (the directives come from spack.package's star import)
try:  # Spack >= 1.0: build systems live in the builtin package repository
    from spack_repo.builtin.build_systems.python import PythonPackage
except ImportError:  # Spack 0.x
    from spack.package import PythonPackage

from spack.package import *


class PySqliteFts4(PythonPackage):
    """Python functions for working with SQLite FTS4 search (a dependency of sqlite-utils)."""

    homepage = "https://github.com/simonw/sqlite-fts4"
    pypi = "sqlite-fts4/sqlite-fts4-1.0.3.tar.gz"

    license("Apache-2.0")

    version(
        "1.0.3",
        sha256="78b05eeaf6680e9dbed8986bde011e9c086a06cb0c931b3cf7da94c214e8930c",
        url="https://files.pythonhosted.org/packages/c2/6d/9dad6c3b433ab8912ace969c66abd595f8e0a2ccccdb73602b1291dbda29/sqlite-fts4-1.0.3.tar.gz",
    )

    depends_on("py-setuptools", type="build")
