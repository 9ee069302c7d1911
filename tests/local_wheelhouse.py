"""A wheelhouse for the RPM tests, made offline from the distributions installed here.

packaging/make-wheelhouse downloads from the package index; the RPM tests must
not need the network, so they repack what this interpreter has installed
(fedfs's runtime dependencies, pip, and setuptools to build fedfs) back into
wheels, from each distribution's RECORD, into the tarball layout
make-wheelhouse writes. Pure functions on files; no threads.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import importlib.metadata as metadata
import io
import re
import tarfile
import zipfile
from pathlib import Path

from packaging.requirements import Requirement

# What the installer added to dist-info; a wheel does not carry these.
INSTALLER_FILES = {"INSTALLER", "REQUESTED", "RECORD", "direct_url.json"}


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(names: list[str]) -> list[metadata.Distribution]:
    """The installed distributions `names` need at run time, themselves included."""
    seen: dict[str, metadata.Distribution] = {}
    todo = list(names)
    while todo:
        name = normalize(todo.pop())
        if name in seen:
            continue
        dist = metadata.distribution(name)
        seen[name] = dist
        for spec in dist.requires or []:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return sorted(seen.values(), key=lambda d: normalize(d.metadata["Name"]))


def repack(dist: metadata.Distribution, into: Path) -> Path:
    """Write the wheel `dist` was installed from (as far as its RECORD tells) into `into`."""
    files = [f for f in dist.files or [] if not f.parts[0].startswith("..")]
    files = [f for f in files if "__pycache__" not in f.parts and f.name not in INSTALLER_FILES]
    distinfo = next(f.parts[0] for f in files if f.parts[0].endswith(".dist-info"))
    wheel_meta = (Path(str(dist.locate_file(distinfo))) / "WHEEL").read_text()
    tags = [
        line.split(":", 1)[1].strip() for line in wheel_meta.splitlines() if line.startswith("Tag:")
    ]
    # A wheel's file name carries its tags compressed: cp311-abi3-manylinux_2_17_x86_64.manylinux2014_x86_64
    py, abi, plat = [
        ".".join(sorted(set(p))) for p in zip(*(t.split("-") for t in tags), strict=True)
    ]
    name = re.sub(r"[-_.]+", "_", dist.metadata["Name"]).lower()
    path = into / f"{name}-{dist.version}-{py}-{abi}-{plat}.whl"
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as whl:
        for f in files:
            data = Path(str(dist.locate_file(f))).read_bytes()
            whl.writestr(f.as_posix(), data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            writer.writerow([f.as_posix(), f"sha256={digest}", len(data)])
        writer.writerow([f"{distinfo}/RECORD", "", ""])
        whl.writestr(f"{distinfo}/RECORD", record.getvalue())
    return path


def build(requirements: list[str], out: Path) -> Path:
    """Write `out` (a make-wheelhouse tarball) with wheels of `requirements` and their closure."""
    house = out.parent / "wheelhouse"
    house.mkdir()
    for dist in closure(requirements):
        repack(dist, house)
    with tarfile.open(out, "w:gz") as tar:
        tar.add(house, arcname="wheelhouse")
    return out
