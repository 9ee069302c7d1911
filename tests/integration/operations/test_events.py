"""Structured log lines: the events an admin filters on carry their fields, from a real mount."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path
from typing import Any

from tests.support import FEDFS, REPO, MotoServer, Mount, TcpProxy, UnixUser, wait_for


def events(log: str, name: str) -> list[dict[str, str]]:
    """The fields of every `event=NAME` line (logfmt after the logger's name)."""
    found = []
    for line in log.splitlines():
        _, _, body = line.partition(": event=")
        if not body:
            continue
        fields = dict(
            part.split("=", 1) for part in shlex.split("event=" + body, posix=True) if "=" in part
        )
        if fields["event"] == name:
            found.append(fields)
    return found


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FEDFS, *map(str, args)], capture_output=True, text=True, cwd=REPO, timeout=120
    )


def test_share_upload_failure_hidden_key_mount_and_unmount_are_events(
    make_mount: Any, moto: MotoServer, bucket: str, s3: Any, alice: UnixUser
) -> None:
    s3.put_object(Bucket=bucket, Key="bad//key", Body=b"1")
    proxy = TcpProxy(moto.port).start()
    try:
        m: Mount = make_mount([(bucket, "user:root")], endpoint=proxy.url, name="ev")
        (m.path(bucket, "runs")).mkdir()
        r = cli("share", m.path(bucket, "runs"), "--with", f"user:{alice.name}", "--expires", "7d")
        assert r.returncode == 0, r.stderr
        (share,) = events(m.log_text(), "share")
        assert share["mount"] == "ev"
        assert share["path"] == f"/{bucket}/runs"
        assert share["principal"] == f"user:{alice.name}"
        assert share["level"] == "read"
        assert share["actor"] == "root"
        assert share["expires"].endswith("Z")

        os.listdir(m.path(bucket, "bad"))  # lists the prefix holding the hidden key
        (hidden,) = events(m.log_text(), "hidden-key")
        assert hidden["bucket"] == bucket and hidden["key"] == "bad//"
        assert hidden["reason"] == "empty component"

        proxy.cut()
        (m.path(bucket, "runs", "out.txt")).write_text("kept while the store is away")
        failed = wait_for(
            lambda: events(m.log_text(), "upload-failed"), "an upload-failed event", timeout=60
        )[0]
        assert failed["path"] == f"/{bucket}/runs/out.txt"
        assert failed["attempt"] == "1"
        assert failed["error"] and failed["retry_in"].endswith("s")
        assert failed["kept_in"].startswith(str(m.config.parent / "cache-ev"))
        assert " WARNING " in next(ln for ln in m.log_text().splitlines() if "upload-failed" in ln)
        proxy.restore()
        assert cli("sync", m.mountpoint).returncode == 0
        (resumed,) = events(m.log_text(), "upload-resumed")
        assert resumed["path"] == f"/{bucket}/runs/out.txt"
        assert m.stop() == 0
    finally:
        proxy.stop()
    log = m.log_text()
    (mount,) = events(log, "mount")
    assert mount["mountpoint"] == str(m.mountpoint) and mount["buckets"] == bucket
    (unmount,) = events(log, "unmount")
    assert unmount["not_uploaded"] == "0"
