"""The data integrity exerciser (tests/exerciser.py) against a real fedfs mount.

CI runs a fixed seed with 20,000 operations: one file first, then several,
with two unmount/mount checks of the whole tree. The long run is marked slow;
`python -m tests.exerciser --ops 200000` does the same from the command line.
"""

from __future__ import annotations

import os
import shutil
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.exerciser import (
    EXERCISER_MOUNT_OPTIONS,
    Exerciser,
    Miscompare,
    Settings,
    first_difference,
    probe_fallocate,
    short_diff,
)
from tests.support import Mount

CI_SEED = 20260417


def run_on_fedfs(make_mount: Any, bucket: str, settings: Settings) -> None:
    m: Mount = make_mount([(bucket, "user:root")], extra=EXERCISER_MOUNT_OPTIONS)

    clean = Path(tomllib.loads(m.config.read_text())["cache"]["dir"]) / "clean"

    def remount() -> None:
        assert m.stop() == 0, f"fedfs exited non-zero on unmount:\n{m.log_text()}"
        # Forget the clean cache too, so the checks after the mount read from S3
        # (ranged GETs of 1 MiB blocks), not from what the last run kept.
        shutil.rmtree(clean)
        m.start()

    report = Exerciser(m.path(bucket), settings, remount).run()
    assert report.ops == settings.ops
    assert report.remounts == settings.remounts
    # fedfs has no fallocate request: the kernel says EOPNOTSUPP, and the exerciser
    # used posix_fallocate's emulation instead (counted under "fallocate").
    assert report.fallocate == "EOPNOTSUPP"
    assert report.counts["fallocate"] > 0 and report.counts["mmap_write"] > 0


def test_exerciser_20000_ops_on_fedfs(make_mount: Any, bucket: str) -> None:
    seed = int(os.environ.get("FEDFS_SEED", CI_SEED))
    ops = int(os.environ.get("FEDFS_EXERCISER_OPS", 20_000))
    run_on_fedfs(make_mount, bucket, Settings(seed=seed, ops=ops, files=6, remounts=2))


@pytest.mark.slow
@pytest.mark.timeout(6 * 3600)
def test_exerciser_200000_ops_on_fedfs(make_mount: Any, bucket: str) -> None:
    seed = int(os.environ.get("FEDFS_SEED", 7))
    settings = Settings(seed=seed, ops=200_000, files=16, remounts=10, verify_every=5000)
    run_on_fedfs(make_mount, bucket, settings)


# -- the exerciser checks itself: it must be able to fail ------------------------


def test_exerciser_is_exact_on_a_local_directory(tmp_path: Path) -> None:
    """A local disk agrees with the model (fallocate(2) there is real: all its modes run)."""
    report = Exerciser(tmp_path, Settings(seed=3, ops=3000, files=4, remounts=1)).run()
    assert report.ops == 3000 and report.bytes_checked > 0
    if report.fallocate == "supported":
        assert report.counts["fallocate"] > 0


def test_a_changed_byte_is_reported_with_seed_op_file_offset_and_diff(tmp_path: Path) -> None:
    changed = ("", 0)

    def corrupt() -> None:  # flip one bit in the middle of the largest file
        nonlocal changed
        victim = max(sorted(tmp_path.iterdir()), key=lambda p: p.stat().st_size)
        data = bytearray(victim.read_bytes())
        data[len(data) // 2] ^= 0x40
        changed = (victim.name, len(data) // 2)
        victim.write_bytes(bytes(data))

    with pytest.raises(Miscompare) as e:
        Exerciser(tmp_path, Settings(seed=5, ops=400, files=3, remounts=1), corrupt).run()
    text = str(e.value)
    name, offset = changed
    assert f"seed=5 op=400 file={name} offset={offset}:" in text
    assert f"first difference at file offset {offset}" in text
    assert "expected [" in text and "actual   [" in text
    assert "replay: python -m tests.exerciser --seed 5 --ops 400" in text


def test_a_failing_operation_is_reported(tmp_path: Path) -> None:
    ex = Exerciser(tmp_path, Settings(seed=1, ops=10, files=1))
    ex.model["f000"] = bytearray(b"abc")  # the model believes in a file that is not there
    with pytest.raises(Miscompare, match="open f000 O_RDWR failed with ENOENT"):
        ex.op_read("f000")


def test_diff_helpers() -> None:
    assert first_difference(b"abc", b"abc") is None
    assert first_difference(b"abcd", b"abXd") == 2
    assert first_difference(b"ab", b"abc") == 2
    assert first_difference(bytes(10000) + b"x", bytes(10001)) == 10000
    text = short_diff(b"\x00\x01\x02", b"\x00\xff\x02", 1, 100)
    assert "file offset 101" in text and "01" in text and "ff" in text


def test_fallocate_probe_on_fedfs_says_eopnotsupp(fs: Path) -> None:
    assert probe_fallocate(fs) == "EOPNOTSUPP"
    assert os.listdir(fs) == []
