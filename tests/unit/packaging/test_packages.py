"""packaging/: the RPM spec and the Spack recipes agree with pyproject.toml and pin real sources.

Spack is not installable here (its installer and the builtin repository come
from outside the package registries), so every recipe in packaging/spack/packages
is imported with a small stand-in for `spack.package` that records the
directives (version, depends_on, ...). The RPM is built for real in
tests/integration/operations/test_rpm.py.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import tomllib
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import fedfs

REPO = Path(__file__).resolve().parents[3]
SPEC = REPO / "packaging" / "fedfs.spec"
SPACK = REPO / "packaging" / "spack"
FIX = "keep packaging/spack/packages/py-fedfs/package.py in step with pyproject.toml"


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


@dataclass
class Recipe:
    """What a package.py declared, as the stand-in for spack.package recorded it."""

    name: str
    cls: type
    versions: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    depends: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def directive(self, name: str) -> Any:
        def record(*args: Any, **kwargs: Any) -> None:
            self.calls.append((name, args, kwargs))

        return record


def spack_stub(recorder: _Recorder) -> types.ModuleType:
    """The part of Spack's package API the recipes use."""
    package = types.ModuleType("spack.package")

    class PythonPackage:
        pypi: str | None = None

    names = ["version", "depends_on", "license", "maintainers", "variant", "conflicts"]
    for name in names:
        setattr(package, name, recorder.directive(name))
    package.PythonPackage = PythonPackage  # type: ignore[attr-defined]
    package.__all__ = [*names, "PythonPackage"]  # type: ignore[attr-defined]
    return package


def load_recipes() -> Iterator[Recipe]:
    recorder = _Recorder()
    spack = types.ModuleType("spack")
    spack.package = spack_stub(recorder)  # type: ignore[attr-defined]
    saved = {k: sys.modules.get(k) for k in ("spack", "spack.package")}
    sys.modules.update({"spack": spack, "spack.package": spack.package})  # type: ignore[attr-defined]
    try:
        for path in sorted((SPACK / "packages").glob("*/package.py")):
            name = path.parent.name
            spec = importlib.util.spec_from_file_location(f"fedfs_spack_{name}", path)
            assert spec and spec.loader
            module = importlib.util.module_from_spec(spec)
            recorder.calls.clear()
            spec.loader.exec_module(module)
            # Spack's naming rule: py-sqlite-fts4 -> PySqliteFts4
            cls = getattr(module, name.title().replace("-", ""))
            recipe = Recipe(name, cls)
            for directive, args, kwargs in recorder.calls:
                if directive == "version":
                    recipe.versions.append((args[0], kwargs))
                elif directive == "depends_on":
                    recipe.depends.append((args[0], kwargs))
            yield recipe
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


RECIPES = {r.name: r for r in load_recipes()}


def builtin_packages() -> dict[str, str]:
    """packaging/spack/builtin.txt: builtin name -> newest version there ('virtual' for virtuals)."""
    lines = (SPACK / "builtin.txt").read_text().splitlines()
    return dict(line.split() for line in lines if line.strip() and not line.startswith("#"))


def parse_spec(spec: str) -> tuple[str, str]:
    """'py-trio@0.24:' -> ('py-trio', '0.24:'); variants after the range are dropped."""
    m = re.fullmatch(r"([a-z0-9-]+)(?:@([^+~ ]+))?(?:[+~].*)?", spec)
    assert m, f"{spec!r}: the packaging tests do not understand this dependency"
    return m[1], m[2] or ":"


def numbers(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version.split(".post")[0]))


def satisfies(version: str, ranges: str) -> bool:
    """Spack's version ranges: 'A:B' holds A <= v and v's first len(B) parts <= B."""
    v = numbers(version)
    for r in ranges.split(","):
        low, _, high = r.partition(":") if ":" in r else (r, "", r)
        if low and v < numbers(low):
            continue
        if high and v[: len(numbers(high))] > numbers(high):
            continue
        return True
    return False


def test_spec_version_matches_pyproject() -> None:
    spec = SPEC.read_text()
    version = re.search(r"^Version:\s+(\S+)$", spec, re.M)
    assert version and version[1] == fedfs.__version__
    python = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert python == ">=3.11" and "fedfs needs Python 3.11 or newer" in spec


def test_spack_repo_holds_py_fedfs_and_the_packages_builtin_lacks() -> None:
    assert (SPACK / "repo.yaml").read_text().count("namespace: fedfs") == 1
    assert set(RECIPES) == {
        "py-fedfs",
        "py-pyfuse3",
        "py-trio",
        "py-outcome",
        "py-sqlite-utils",
        "py-sqlite-fts4",
        "py-click-default-group",
        "py-shtab",
    }
    shadowed = set(RECIPES) & set(builtin_packages())
    assert shadowed == set(), "builtin.txt lists what the builtin repository gives us"


def test_every_spack_version_has_a_checksummed_sdist_or_a_git_tag() -> None:
    for recipe in RECIPES.values():
        assert recipe.versions, f"{recipe.name}: no version"
        for version, kw in recipe.versions:
            if "sha256" in kw:
                assert re.fullmatch(r"[0-9a-f]{64}", kw["sha256"]), (recipe.name, version)
                url = kw.get("url", "")
                assert url.startswith("https://files.pythonhosted.org/packages/"), url
                project = recipe.cls.pypi.split("/")[0]  # type: ignore[attr-defined]
                sdist = recipe.cls.pypi.split("/")[1].rsplit("-", 1)[0]  # type: ignore[attr-defined]
                assert url.endswith(f"/{sdist}-{version}.tar.gz"), (recipe.name, url)
                assert normalize(project) == recipe.name.removeprefix("py-"), recipe.name
            else:
                assert recipe.name == "py-fedfs", f"{recipe.name}@{version}: no sha256"
                assert kw in ({"tag": f"v{version}"}, {"branch": version}), kw


def test_py_fedfs_builds_from_this_checkout_at_the_release_tag() -> None:
    recipe = RECIPES["py-fedfs"]
    assert recipe.cls.git == REPO.as_uri()  # type: ignore[attr-defined]
    assert recipe.versions[0] == (fedfs.__version__, {"tag": f"v{fedfs.__version__}"})


def test_py_fedfs_dependencies_match_pyproject() -> None:
    depends = [spec for spec, _ in RECIPES["py-fedfs"].depends]
    python_deps = {
        normalize(name.removeprefix("py-")): ranges.split(":")[0]
        for name, ranges in map(parse_spec, depends)
        if name.startswith("py-") and name != "py-setuptools"
    }
    assert python_deps == pyproject_minimums(), FIX
    assert "python@3.11:" in depends
    assert "py-setuptools@77:" in depends  # pyproject's build-system


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_spack_dependencies_exist_here_or_in_builtin_at_a_fitting_version(recipe: str) -> None:
    builtin = builtin_packages()
    for spec, _ in RECIPES[recipe].depends:
        name, ranges = parse_spec(spec)
        if name in RECIPES:
            versions = [v for v, kw in RECIPES[name].versions if "sha256" in kw or "tag" in kw]
            assert any(satisfies(v, ranges) for v in versions), f"{recipe}: {spec} vs {versions}"
        else:
            assert name in builtin, (
                f"{recipe} depends on {name}, which is neither in packaging/spack/packages "
                "nor in packaging/spack/builtin.txt: add a recipe, or check Spack's builtin "
                "repository has it and list it"
            )
            if builtin[name] != "virtual":
                assert satisfies(builtin[name], ranges), (
                    f"{recipe}: {spec}, but Spack's builtin {name} stops at {builtin[name]}: "
                    "add a recipe with a newer version to packaging/spack/packages"
                )


def test_version_ranges_read_as_spack_reads_them() -> None:
    assert satisfies("3.5.0", "3.4:3") and not satisfies("4.0", "3.4:3")
    assert satisfies("1.3.4", ":") and not satisfies("1.3.4", "1.5:")
    assert satisfies("1.3.0.post0", "1.3:") and satisfies("0.9.0", "0.8:0.9")
