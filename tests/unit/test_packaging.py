"""packaging/: the RPM spec and the Spack recipe say the same version and dependencies as pyproject.

Spack is not installable here, so its recipe is read with Python's ast; the RPM
is built for real in tests/integration/test_rpm.py.
"""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import fedfs

REPO = Path(__file__).resolve().parents[2]
SPEC = REPO / "packaging" / "fedfs.spec"
SPACK = REPO / "packaging" / "spack" / "package.py"
FIX = "keep packaging/fedfs.spec and packaging/spack/package.py in step with pyproject.toml"


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pyproject_minimums() -> dict[str, str]:
    """Each runtime dependency's name and lower bound, e.g. {'trio': '0.24'}."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    out = {}
    for dep in project["dependencies"]:
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[[^]]*\])?>=([0-9.]+)(?:,<[0-9.]+)?", dep)
        assert m, f"{dep!r}: the packaging tests understand NAME>=X[,<Y] only"
        out[normalize(m[1])] = m[2]
    return out


def spack_calls(name: str) -> list[list[object]]:
    """The literal arguments of every `name(...)` call in the Fedfs class body."""
    tree = ast.parse(SPACK.read_text())
    (cls,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Fedfs"]
    assert [b.id for b in cls.bases if isinstance(b, ast.Name)] == ["PythonPackage"]
    return [
        [ast.literal_eval(a) for a in stmt.value.args]
        for stmt in cls.body
        if isinstance(stmt, ast.Expr)
        and isinstance(stmt.value, ast.Call)
        and isinstance(stmt.value.func, ast.Name)
        and stmt.value.func.id == name
    ]


def test_spec_version_and_requires_match_pyproject() -> None:
    spec = SPEC.read_text()
    version = re.search(r"^Version:\s+(\S+)$", spec, re.M)
    assert version and version[1] == fedfs.__version__
    requires = {
        normalize(m[1]): m[2]
        for m in re.finditer(r"^Requires:\s+python3dist\(([^)]+)\) >= (\S+)$", spec, re.M)
    }
    assert requires == pyproject_minimums(), FIX
    python = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert f"Requires:       python3 {python.replace('>=', '>= ')}" in spec


def test_spack_recipe_version_and_dependencies_match_pyproject() -> None:
    assert spack_calls("version") == [[fedfs.__version__]]
    depends = [str(args[0]) for args in spack_calls("depends_on")]
    python_deps = {
        normalize(d.split("@")[0].removeprefix("py-")): d.split("@")[1].split(":")[0]
        for d in depends
        if d.startswith("py-") and d != "py-setuptools@77:"
    }
    assert python_deps == pyproject_minimums(), FIX
    python = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert f"python@{python.removeprefix('>=')}:" in depends


def test_spack_recipe_is_valid_python_that_names_its_limits() -> None:
    source = SPACK.read_text()
    compile(source, str(SPACK), "exec")
    doc = ast.get_docstring(ast.parse(source)) or ""
    assert "not built" in doc and "spack develop" in doc
