"""What a user sees when the config, the endpoint or a bucket is wrong, and when S3 dies."""

from __future__ import annotations

import errno
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support import FEDFS, REPO, MotoServer, Mount, free_port, wait_for, write_config


def mount_cli(config: Path, mountpoint: Path) -> subprocess.CompletedProcess[str]:
    """`fedfs mount` as a user runs it (daemonizing); bounded so a hang fails the test."""
    mountpoint.mkdir(exist_ok=True)
    return subprocess.run(
        [
            *FEDFS,
            "mount",
            "--config",
            str(config),
            "--log-file",
            str(config.with_suffix(".log")),
            str(mountpoint),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )


def assert_one_clear_line(r: subprocess.CompletedProcess[str], *phrases: str) -> None:
    assert r.returncode == 1, r
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    for phrase in phrases:
        assert phrase in lines[0], lines[0]


def test_bad_config_fails_at_start(tmp_path: Path, moto: MotoServer, bucket: str) -> None:
    cfg = write_config(
        tmp_path / "c.toml",
        moto.url,
        [(bucket, "user:root")],
        tmp_path / "cache",
        extra="colour = 1",
    )
    r = mount_cli(cfg, tmp_path / "mnt")
    assert_one_clear_line(r, str(cfg), "[cache] colour: unknown key; valid keys here are")
    assert not os.path.ismount(tmp_path / "mnt")


def test_missing_bucket_and_unknown_owner(tmp_path: Path, moto: MotoServer, bucket: str) -> None:
    cfg = write_config(
        tmp_path / "c.toml", moto.url, [("no-such-bucket", "user:root")], tmp_path / "cache"
    )
    r = mount_cli(cfg, tmp_path / "mnt")
    assert_one_clear_line(r, "bucket 'no-such-bucket' does not exist at", moto.url)
    cfg = write_config(
        tmp_path / "c.toml", moto.url, [(bucket, "user:nobody-here-xyz")], tmp_path / "cache"
    )
    r = mount_cli(cfg, tmp_path / "mnt")
    assert_one_clear_line(r, "[[buckets]] owner: no user 'nobody-here-xyz'")


def test_unreachable_endpoint_fails_at_start(tmp_path: Path, bucket: str) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    cfg = write_config(tmp_path / "c.toml", dead, [(bucket, "user:root")], tmp_path / "cache")
    r = mount_cli(cfg, tmp_path / "mnt")
    assert_one_clear_line(r, "[store]", "did not answer")
    assert not os.path.ismount(tmp_path / "mnt")


def test_bad_mountpoint(tmp_path: Path, moto: MotoServer, bucket: str) -> None:
    cfg = write_config(tmp_path / "c.toml", moto.url, [(bucket, "user:root")], tmp_path / "cache")
    r = subprocess.run(
        [*FEDFS, "mount", "-c", str(cfg), str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert_one_clear_line(r, "is not a directory; create it with mkdir -p")


def test_dead_endpoint_gives_eio_in_bounded_time_and_recovers(
    make_mount: Any, tmp_path: Path
) -> None:
    server = MotoServer(log=tmp_path / "private-moto.log").start()
    try:
        server.client().create_bucket(Bucket="outage")
        m: Mount = make_mount([("outage", "user:root")], endpoint=server.url)
        root = m.path("outage")
        (root / "before").write_text("kept")
        fd = os.open(root / "during-outage", os.O_CREAT | os.O_WRONLY, 0o644)
        server.stop()

        # Each of these would hang forever without timeouts; each must fail with EIO.
        probe = (
            "import os, sys\n"
            "try:\n"
            f"    os.stat({str(root / 'never-seen')!r})\n"
            "except OSError as e:\n"
            "    print(e.errno)\n"
        )
        started = time.monotonic()
        r = subprocess.run(["python3", "-c", probe], capture_output=True, text=True, timeout=120)
        assert r.stdout.strip() == str(errno.EIO), r
        elapsed = time.monotonic() - started
        print(f"stat on a dead endpoint failed after {elapsed:.1f}s")

        os.write(fd, b"not in S3 yet")
        with pytest.raises(OSError) as e:
            os.close(fd)  # close must not report success for data that is not kept
        assert e.value.errno == errno.EIO
        with pytest.raises(OSError) as e:
            os.open(root / "also-during-outage", os.O_CREAT | os.O_WRONLY, 0o644)
        assert e.value.errno == errno.EIO
        assert "the data is kept in" in wait_for(lambda: m.log_text(), "the log")

        server.start()  # same port, empty store: the mount works again
        server.client().create_bucket(Bucket="outage")
        wait_for(
            lambda: (root / "after").write_text("ok") == 2, "writes after the endpoint is back", 60
        )
        assert server.client().get_object(Bucket="outage", Key="after")["Body"].read() == b"ok"
    finally:
        server.stop()
