# ruff: noqa: F403, F405  (the directives come from spack.package's star import)
try:  # Spack >= 1.0: build systems live in the builtin package repository
    from spack_repo.builtin.build_systems.python import PythonPackage
except ImportError:  # Spack 0.x
    from spack.package import PythonPackage

from spack.package import *


class PyShtab(PythonPackage):
    """Automagic shell tab completion for Python CLI applications.

    Spack's builtin py-shtab stops at 1.3.4 and fedfs needs 1.5 or newer: this
    recipe shadows it while this repository comes first (spack repo list).
    """

    homepage = "https://github.com/tqdm/shtab"
    pypi = "shtab/shtab-1.13.0.tar.gz"

    license("MPL-2.0")

    version(
        "1.13.0",
        sha256="0a5be9d7ab2b4549e9a38252abcd5ecf5ec6813ecd80c6b06fa851bff55a5085",
        url="https://files.pythonhosted.org/packages/ff/dd/e58588cf2d02266d504f4399979740b8b2b61fbd7719a89578afaa6558a3/shtab-1.13.0.tar.gz",
    )

    depends_on("python@3.9:", type=("build", "run"))
    depends_on("py-setuptools@77:", type="build")
    depends_on("py-setuptools-scm@3.4:+toml", type="build")
