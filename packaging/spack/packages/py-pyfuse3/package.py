# ruff: noqa: F403, F405  (the directives come from spack.package's star import)
try:  # Spack >= 1.0: build systems live in the builtin package repository
    from spack_repo.builtin.build_systems.python import PythonPackage
except ImportError:  # Spack 0.x
    from spack.package import PythonPackage

from spack.package import *


class PyPyfuse3(PythonPackage):
    """Python 3 bindings for libfuse 3 with async I/O support (trio)."""

    homepage = "https://github.com/libfuse/pyfuse3"
    pypi = "pyfuse3/pyfuse3-3.5.0.tar.gz"

    license("LGPL-2.1-or-later")

    version(
        "3.5.0",
        sha256="88399a9494b88603230bba300f4ba9ad63fece5ed514ca3633d555a0c6a42b24",
        url="https://files.pythonhosted.org/packages/b9/a9/ce2c0513e9611ee2ffeeb482a33d23a210326801d48866df30a989562d43/pyfuse3-3.5.0.tar.gz",
    )

    depends_on("c", type="build")
    depends_on("pkgconfig", type="build")
    depends_on("python@3.10:", type=("build", "run"))
    depends_on("py-setuptools@78.1.1:", type="build")
    depends_on("py-setuptools-scm@8:", type="build")
    depends_on("py-cython@3:", type="build")
    depends_on("libfuse@3.2:")
    depends_on("py-trio@0.15:", type=("build", "run"))
