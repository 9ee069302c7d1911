# ruff: noqa: F403, F405  (the directives come from spack.package's star import)
try:  # Spack >= 1.0: build systems live in the builtin package repository
    from spack_repo.builtin.build_systems.python import PythonPackage
except ImportError:  # Spack 0.x
    from spack.package import PythonPackage

from spack.package import *


class PyTrio(PythonPackage):
    """A friendly Python library for async concurrency and I/O."""

    homepage = "https://github.com/python-trio/trio"
    pypi = "trio/trio-0.35.0.tar.gz"

    license("MIT OR Apache-2.0")

    version(
        "0.35.0",
        sha256="7efb295c78a0ecd1235c5759e620b5da564ca80d2efcb0055423588547248b96",
        url="https://files.pythonhosted.org/packages/9c/e2/1db4e79abb730bbf048c1024a622b0e1e895f5b0e18c59f3f6b3e4b296ef/trio-0.35.0.tar.gz",
    )

    depends_on("python@3.10:", type=("build", "run"))
    depends_on("py-setuptools@77:", type="build")
    depends_on("py-attrs@23.2:", type=("build", "run"))
    depends_on("py-sortedcontainers", type=("build", "run"))
    depends_on("py-idna", type=("build", "run"))
    depends_on("py-outcome", type=("build", "run"))
    depends_on("py-sniffio@1.3:", type=("build", "run"))
    depends_on("py-exceptiongroup", type=("build", "run"), when="^python@:3.10")
