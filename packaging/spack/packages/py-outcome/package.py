# ruff: noqa: F403, F405  (the directives come from spack.package's star import)
try:  # Spack >= 1.0: build systems live in the builtin package repository
    from spack_repo.builtin.build_systems.python import PythonPackage
except ImportError:  # Spack 0.x
    from spack.package import PythonPackage

from spack.package import *


class PyOutcome(PythonPackage):
    """Capture the outcome of Python function calls (a dependency of trio)."""

    homepage = "https://github.com/python-trio/outcome"
    pypi = "outcome/outcome-1.3.0.post0.tar.gz"

    license("MIT OR Apache-2.0")

    version(
        "1.3.0.post0",
        sha256="9dcf02e65f2971b80047b377468e72a268e15c0af3cf1238e6ff14f7f91143b8",
        url="https://files.pythonhosted.org/packages/98/df/77698abfac98571e65ffeb0c1fba8ffd692ab8458d617a0eed7d9a8d38f2/outcome-1.3.0.post0.tar.gz",
    )

    depends_on("python@3.7:", type=("build", "run"))
    depends_on("py-setuptools", type="build")
    depends_on("py-attrs@19.2:", type=("build", "run"))
