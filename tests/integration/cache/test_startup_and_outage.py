"""What a user sees when the config, the endpoint or a bucket is wrong, and when S3 dies."""

from __future__ import annotations

import errno
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support import FEDFS, REPO, MotoServer, Mount, TcpProxy, free_port, write_config


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


def sync(m: Mount, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FEDFS, "sync", str(m.mountpoint), "--timeout", str(timeout)],
        capture_output=True,
        text=True,
        timeout=timeout + 60,
        cwd=REPO,
    )


def test_outage_keeps_cached_reads_and_new_writes_then_uploads_them(
    make_mount: Any, moto: MotoServer, bucket: str
) -> None:
    proxy = TcpProxy(moto.port).start()
    s3 = moto.client()
    try:
        m: Mount = make_mount([(bucket, "user:root")], endpoint=proxy.url)
        root = m.path(bucket)
        (root / "before").write_text("kept")
        s3.put_object(Bucket=bucket, Key="unlisted/x", Body=b"")
        assert sync(m).returncode == 0
        assert sorted(os.listdir(root)) == ["before", "unlisted"]
        fd = os.open(root / "open-across", os.O_CREAT | os.O_WRONLY, 0o644)
        proxy.cut()

        # A name in a directory never listed fails with EIO in bounded time, never a
        # hang; names in listed directories are answered from the last listing.
        started = time.monotonic()
        probe = f"import os\ntry:\n    os.stat({str(root / 'unlisted' / 'x')!r})\nexcept OSError as e:\n    print(e.errno)\n"
        r = subprocess.run(["python3", "-c", probe], capture_output=True, text=True, timeout=120)
        assert r.stdout.strip() == str(errno.EIO), r
        print(
            f"stat of an unknown name on a dead endpoint: EIO after {time.monotonic() - started:.1f}s"
        )
        assert not (root / "never-seen").exists()  # from the last listing
        # cached data stays readable; new files and writes land in the cache
        assert (root / "before").read_text() == "kept"
        (root / "during").write_text("written during the outage")
        os.write(fd, b"across the outage")
        os.close(fd)  # close succeeds: the data is in the cache and the journal
        r = sync(m, timeout=5)
        assert r.returncode == 1 and "not uploaded yet" in r.stderr and "kept in" in r.stderr, (
            r.stderr
        )
        # keep the store away for 30 s in all, reading and writing all along
        during: list[str] = []
        while time.monotonic() - started < 30:
            name = f"during-{len(during):03d}"
            (root / name).write_bytes(name.encode() * 100)
            during.append(name)
            assert (root / "before").read_text() == "kept"
            time.sleep(0.5)

        proxy.restore()
        r = sync(m, timeout=120)  # uploads retry with backoff and complete
        assert r.returncode == 0, r.stderr
        body = lambda k: s3.get_object(Bucket=bucket, Key=k)["Body"].read()  # noqa: E731
        assert body("during") == b"written during the outage"
        assert body("open-across") == b"across the outage"
        for name in during:
            assert body(name) == name.encode() * 100
        assert "upload of /" in m.log_text() and "retrying" in m.log_text()
        assert m.stop() == 0
    finally:
        proxy.stop()


def test_write_through_mode_reports_failed_upload_at_close(
    make_mount: Any, moto: MotoServer, bucket: str
) -> None:
    proxy = TcpProxy(moto.port).start()
    try:
        m: Mount = make_mount(
            [(bucket, "user:root")], endpoint=proxy.url, extra="write_back = false"
        )
        root = m.path(bucket)
        fd = os.open(root / "f", os.O_CREAT | os.O_WRONLY, 0o644)
        os.write(fd, b"data")
        proxy.cut()
        with pytest.raises(OSError) as e:
            os.close(fd)  # close must not report success for data that was not kept
        assert e.value.errno == errno.EIO
        proxy.restore()
    finally:
        proxy.stop()
