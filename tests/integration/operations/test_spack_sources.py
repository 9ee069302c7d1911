"""Every sdist the Spack recipes name is on the package index with the recipe's sha256.

Downloads each version's `url` (files.pythonhosted.org, a few MB in all) and
hashes it, as `spack fetch` would before building.
"""

from __future__ import annotations

import hashlib
import urllib.request

import pytest

from tests.unit.packaging.test_packages import RECIPES

SOURCES = [
    (name, version, kw["url"], kw["sha256"])
    for name, recipe in sorted(RECIPES.items())
    for version, kw in recipe.versions
    if "sha256" in kw
]


@pytest.mark.parametrize(("name", "version", "url", "sha256"), SOURCES)
def test_recipe_url_serves_the_sdist_with_its_checksum(
    name: str, version: str, url: str, sha256: str
) -> None:
    with urllib.request.urlopen(url, timeout=60) as r:
        data = r.read()
    assert hashlib.sha256(data).hexdigest() == sha256, f"{name}@{version}: {url}"
