"""The mount's read-ahead: found from mountinfo, and a failure to set it only logs (readahead.py)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from fedfs.daemon import readahead


def test_the_newest_mount_at_a_path_names_the_device(tmp_path: Path) -> None:
    info = tmp_path / "mountinfo"
    info.write_text(
        "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
        "40 22 0:41 / /mnt/with\\040space rw,nosuid - fuse.fedfs fedfs rw,user_id=0\n"
        "41 22 0:42 / /mnt/with\\040space rw,nosuid - fuse.fedfs fedfs rw,user_id=0\n"
    )
    assert readahead.mount_device("/mnt/with space", info) == "0:42"
    assert readahead.mount_device("/elsewhere", info) == ""


def test_a_read_ahead_that_cannot_be_set_is_a_warning_not_a_failure(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        assert readahead.set_read_ahead(tmp_path / "not-mounted", 1024) is None
    (line,) = [r.getMessage() for r in caplog.records]
    assert "event=read-ahead-not-set" in line
    assert "read_ahead_kb = 0" in line  # says how to silence it


def test_zero_leaves_the_kernel_default_without_a_word(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        assert readahead.set_read_ahead(tmp_path, 0) is None
    assert not caplog.records
