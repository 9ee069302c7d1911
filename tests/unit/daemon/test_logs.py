"""The daemon's log file and directory are private whatever made them (fedfs.daemon.logs)."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedfs.daemon import logs
from fedfs.errors import FedfsError


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """A umask that would make world-readable files; the root logger restored afterwards."""
    old, handlers = os.umask(0), logging.getLogger().handlers[:]
    yield
    os.umask(old)
    for h in logging.getLogger().handlers:
        h.close()
    logging.getLogger().handlers[:] = handlers


def test_the_default_log_directory_is_closed_to_others_without_tmpfiles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loose_umask: None
) -> None:
    default = tmp_path / "var-log-fedfs"
    default.mkdir(mode=0o755)  # made by hand, or by an older version: not by tmpfiles
    monkeypatch.setattr(logs, "DEFAULT_LOG_DIR", default)
    logs.setup_logging("INFO", default / "mnt-fedfs.log")
    logging.getLogger("fedfs.test").warning("path=/climate/private/sub/f.txt")
    assert mode(default) == 0o750
    assert mode(default / "mnt-fedfs.log") == 0o600


def test_a_directory_the_admin_chose_is_left_alone_but_the_file_is_private(
    tmp_path: Path, loose_umask: None
) -> None:
    chosen = tmp_path / "shared-logs"
    chosen.mkdir(mode=0o755)
    chosen.chmod(0o755)
    logs.setup_logging("INFO", chosen / "climate.log")
    logging.getLogger("fedfs.test").warning("a line")
    assert mode(chosen) == 0o755
    assert mode(chosen / "climate.log") == 0o600
    # a directory fedfs creates itself is 0750, even below a missing parent
    logs.setup_logging("INFO", tmp_path / "new" / "logs" / "climate.log")
    assert mode(tmp_path / "new" / "logs") == 0o750


def test_a_log_file_another_user_owns_is_refused(tmp_path: Path, loose_umask: None) -> None:
    """A user who planted the log file (0666, their own) must not read the daemon's log."""
    planted = tmp_path / "fedfs.log"
    planted.write_text("")
    os.chmod(planted, 0o666)
    os.chown(planted, 65534, 65534)
    with pytest.raises(FedfsError, match="belongs to uid 65534, so its owner could read the log"):
        logs.setup_logging("INFO", planted)
    assert planted.read_text() == ""


def test_a_log_file_that_is_a_link_is_refused_in_one_line(
    tmp_path: Path, loose_umask: None
) -> None:
    (tmp_path / "elsewhere").write_text("")
    (tmp_path / "fedfs.log").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(FedfsError, match="is a symbolic link; fedfs does not follow links"):
        logs.setup_logging("INFO", tmp_path / "fedfs.log")
    assert (tmp_path / "elsewhere").read_text() == ""


def test_a_file_planted_after_rotation_sends_records_to_stderr_never_raising(
    tmp_path: Path, loose_umask: None, capsys: pytest.CaptureFixture[str]
) -> None:
    shared = tmp_path / "logs"
    shared.mkdir(mode=0o1777)
    log_file = shared / "fedfs.log"
    logs.setup_logging("INFO", log_file)
    log = logging.getLogger("fedfs.test")
    log.warning("line 1 before rotation")
    log_file.rename(shared / "fedfs.log.1")  # logrotate
    log_file.touch()
    os.chown(log_file, 2969, 2969)  # another user plants the new file
    log.warning("line 2 path=/climate/private/x")  # must not raise, must not go there
    log.warning("line 3")
    assert log_file.read_text() == ""
    err = capsys.readouterr().err
    assert err.count("cannot reopen the log file after it was moved") == 1, err
    assert "line 2 path=/climate/private/x" in err and "line 3" in err
    # once the name is ours again, the file is used again
    log_file.unlink()
    log.warning("line 4")
    assert "line 4" in log_file.read_text()
    assert mode(log_file) == 0o600
