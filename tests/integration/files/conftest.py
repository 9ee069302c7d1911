"""Fixtures of the file tests: a real s3fs mount of the test's bucket, for interop checks."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support import KEY, wait_for


@pytest.fixture
def s3fs_mount(moto: Any, bucket: str, public_dir: Path, tmp_path: Path) -> Any:
    """A real s3fs mount of the same bucket, made on demand (after the writes to inspect)."""
    if not shutil.which("s3fs"):
        pytest.skip("s3fs is not installed (scripts/install installs it)")
    made: list[Path] = []

    def mount() -> Path:
        mnt = public_dir / f"{tmp_path.name}-s3fs{len(made)}"
        mnt.mkdir()
        pw = tmp_path / "s3fs.passwd"
        pw.write_text(f"{KEY}:{KEY}\n")
        pw.chmod(0o600)
        subprocess.run(
            [
                "s3fs",
                bucket,
                str(mnt),
                "-o",
                f"url={moto.url}",
                "-o",
                "use_path_request_style",
                "-o",
                f"passwd_file={pw}",
                "-o",
                "endpoint=us-east-1",
            ],
            check=True,
        )
        wait_for(lambda: os.path.ismount(mnt), "s3fs mount")
        made.append(mnt)
        return mnt

    yield mount
    for mnt in made:
        subprocess.run(["fusermount3", "-u", str(mnt)], check=False)
