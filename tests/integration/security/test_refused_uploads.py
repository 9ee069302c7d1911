"""One file the object store will not take never stops the mount for everyone.

mallory's names the store refuses (a newline: moto answers 404 to its PUT) and
keys over S3's 1,024 bytes are refused at create/mkdir/symlink/rename time; an
upload the store refuses for good (400 InvalidArgument, injected by a proxy) is
kept aside, named to its owner and root, and every other upload, the unmount,
the next mount and its recovery go on; SIGTERM or an unmount with an upload
stuck in the network ends after the configured drain.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from fedfs.data.journal import DirtyFile, Journal
from tests.support import (
    FEDFS,
    REPO,
    MotoServer,
    Mount,
    TcpProxy,
    ThrottlingProxy,
    UnixUser,
    ensure_user,
    wait_for,
)


@pytest.fixture(scope="session")
def mallory() -> UnixUser:
    return ensure_user("fedfs-mallory", 2904)


def cli(*args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FEDFS, *map(str, args)], capture_output=True, text=True, cwd=REPO, timeout=timeout
    )


def keys(s3: Any, bucket: str, prefix: str = "") -> list[str]:
    out = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return [o["Key"] for o in out]


def shared_dir(m: Mount, bucket: str) -> Path:
    proj = m.path(bucket, "proj")
    proj.mkdir()
    proj.chmod(0o1777)
    return proj


ERRNO_OF = """
import errno, os, sys
def attempt(fn, *args):
    try:
        fn(*args)
        return "ok"
    except OSError as e:
        return errno.errorcode[e.errno]
"""


def test_a_name_the_store_refuses_fails_at_create_and_the_mount_goes_on(
    make_mount: Any, bucket: str, s3: Any, alice: UnixUser, mallory: UnixUser
) -> None:
    m: Mount = make_mount([(bucket, "user:root")])
    proj = shared_dir(m, bucket)
    r = mallory.python(
        ERRNO_OF
        + f"""
d = {str(proj)!r}
os.mkdir(d + "/names")
open(d + "/names/plain", "w").close()
print(attempt(lambda: os.close(os.open(d + "/names/nl\\nname", os.O_CREAT | os.O_WRONLY))))
print(attempt(os.mkdir, d + "/names/dir\\nname"))
print(attempt(os.symlink, "plain", d + "/names/link\\nname"))
print(attempt(os.rename, d + "/names/plain", d + "/names/cr\\rname"))
print(sorted(os.listdir(d + "/names")))
"""
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().splitlines() == ["EINVAL"] * 4 + ["['plain']"]
    # everyone else's work goes on: alice's file uploads, sync, unmount and mount succeed
    r = alice.run("sh", "-c", f"echo hello > {proj}/alice.txt")
    assert r.returncode == 0, r.stderr
    r = cli("sync", m.mountpoint)
    assert r.returncode == 0, r.stderr
    assert "proj/alice.txt" in keys(s3, bucket, "proj/")
    assert m.stop() == 0
    m.start()
    assert (proj / "alice.txt").read_text() == "hello\n"


def test_a_key_over_1024_bytes_is_enametoolong(
    make_mount: Any, bucket: str, s3: Any, alice: UnixUser
) -> None:
    m: Mount = make_mount([(bucket, "user:root")])
    proj = shared_dir(m, bucket)
    # proj/ + four 200-byte directories: the fifth directory's key is 1,009 bytes (its
    # marker "KEY/" 1,010); a 14-byte name inside makes a 1,024-byte key, the limit.
    deep = "/".join(["d" * 200] * 5)
    r = alice.python(
        ERRNO_OF
        + f"""
d = {str(proj)!r}
deep = d + "/" + {deep!r}
os.makedirs(deep)
print(attempt(lambda: open(deep + "/" + "f" * 90, "w").close()))  # a 1,100-byte path
print(attempt(lambda: open(deep + "/" + "e" * 14, "w").close()))  # exactly 1,024 bytes
print(attempt(os.mkdir, deep + "/" + "g" * 14))  # its marker would be 1,025
print(attempt(os.symlink, "x", deep + "/" + "l" * 15))
open(d + "/short", "w").close()
print(attempt(os.rename, d + "/short", deep + "/" + "r" * 15))
# a directory rename that would push a key below it over the limit moves nothing
print(attempt(os.rename, d + "/" + "d" * 200, d + "/" + "d" * 215))
print(sorted(os.listdir(deep)), sorted(os.listdir(d)))
"""
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.decode().splitlines()
    assert lines[:6] == ["ENAMETOOLONG", "ok"] + ["ENAMETOOLONG"] * 4, lines
    assert lines[6] == str(["e" * 14]) + " " + str(["d" * 200, "short"]), lines
    r = cli("sync", m.mountpoint)
    assert r.returncode == 0, r.stderr
    assert f"proj/{deep}/{'e' * 14}" in keys(s3, bucket, "proj/")
    assert max(len(k.encode()) for k in keys(s3, bucket)) == 1024


def test_an_upload_the_store_refuses_is_kept_aside_named_and_others_go_on(
    make_mount: Any,
    moto: MotoServer,
    bucket: str,
    s3: Any,
    alice: UnixUser,
    mallory: UnixUser,
    record_property: Any,
) -> None:
    proxy = ThrottlingProxy(
        moto.port, fraction=0.0, refuse=lambda method, path: method == "PUT" and "poison" in path
    ).start()
    try:
        m: Mount = make_mount([(bucket, "user:root")], endpoint=proxy.url)
        proj = shared_dir(m, bucket)
        r = mallory.run("sh", "-c", f"echo mallory > {proj}/poison.txt")
        assert r.returncode == 0, r.stderr
        r = alice.run("sh", "-c", f"echo alice > {proj}/alice.txt")
        assert r.returncode == 0, r.stderr
        wait_for(lambda: "event=upload-refused" in m.log_text(), "the refusal to be logged")
        started = time.monotonic()
        r = alice.run(*FEDFS, "sync", proj / "alice.txt")
        record_property("alice_sync_s", round(time.monotonic() - started, 3))
        assert r.returncode == 0, r.stderr
        assert "proj/alice.txt" in keys(s3, bucket, "proj/")
        assert "proj/poison.txt" not in keys(s3, bucket, "proj/")

        # the owner is told: the log line names her, and her sync and status name the file
        line = next(x for x in m.log_text().splitlines() if "event=upload-refused" in x)
        assert "owner=fedfs-mallory" in line and f"uid={mallory.uid}" in line, line
        st = json.loads(cli("status", m.mountpoint, "--json").stdout)
        [refused] = st["uploads"]["refused_files"]
        kept = refused["kept_in"]
        assert (
            refused["path"] == f"/{bucket}/proj/poison.txt" and refused["owner"] == "fedfs-mallory"
        )
        assert Path(kept).read_text() == "mallory\n"
        assert Path(kept).parent == m.config.parent / "cache-m0" / "lost+found"
        error = (
            f"s3://{bucket}/proj/poison.txt: the object store refuses it "
            "(InvalidArgument: The object key is not accepted.)"
        )
        r = mallory.run(*FEDFS, "sync", m.mountpoint)
        assert r.returncode == 1
        assert r.stderr.decode().splitlines() == [
            f"fedfs: /{bucket}/proj/poison.txt: the object store refuses it for good ({error}); "
            f"not uploaded, not retried; its data is kept in {kept}. Write it again under a name "
            "the store accepts; an admin finds it with `fedfs fsck`"
        ]
        r = mallory.run(*FEDFS, "status", m.mountpoint)
        assert r.returncode == 0, r.stderr
        out = r.stdout.decode()
        assert f"/{bucket}/proj/poison.txt (owner fedfs-mallory): {error}; kept in {kept}" in out
        # alice's own status says one file is refused but does not name mallory's
        r = alice.run(*FEDFS, "status", m.mountpoint)
        assert "refused    1 file(s)" in r.stdout.decode()
        assert "poison" not in r.stdout.decode()
        # the refused file is not retried: no more PUTs of it after the first refusals
        count = proxy.refused
        assert cli("sync", proj / "alice.txt").returncode == 0
        assert proxy.refused == count

        # unmount goes on; doctor and fsck name the file; the next mount starts
        assert m.stop() == 0
        r = cli("doctor", "--config", m.config, "--json")
        found = {f["check"]: f for f in json.loads(r.stdout)["findings"]}
        assert found["refused uploads"]["status"] == "FAIL"
        assert any("proj/poison.txt" in d for d in found["refused uploads"]["details"])
        r = cli("fsck", "--config", m.config)
        assert f"/{bucket}/proj/poison.txt (owner fedfs-mallory, 8 bytes)" in r.stdout, r.stdout
        assert "refused wait in lost+found" in r.stdout
        m.start()
        r = alice.run("sh", "-c", f"echo again > {proj}/alice2.txt")
        assert cli("sync", proj / "alice2.txt").returncode == 0
        assert "proj/alice2.txt" in keys(s3, bucket, "proj/")
    finally:
        proxy.stop()


def test_restart_with_a_poisoned_journal_entry_mounts_and_uploads_the_rest(
    make_mount: Any, bucket: str, s3: Any, alice: UnixUser, mallory: UnixUser
) -> None:
    m: Mount = make_mount([(bucket, "user:root")])
    shared_dir(m, bucket)
    assert m.stop() == 0
    # What an earlier run left: mallory's file under a key the store refuses (moto: 404
    # to a PUT of a key with a newline) before alice's, both closed, neither uploaded.
    cache = m.config.parent / "cache-m0"
    journal = Journal(cache / "journal.db")
    for key, owner, body in (
        ("proj/names/nl\nname", mallory, b"poison\n"),
        ("proj/alice-pending.txt", alice, b"alice's work\n"),
    ):
        name = secrets.token_hex(12)
        (cache / "staging" / name).write_bytes(body)
        (cache / "staging" / name).chmod(0o600)
        meta = {"mode": "33188", "uid": str(owner.uid), "gid": str(owner.gid), "mtime": "1"}
        journal.record(DirtyFile(bucket, key, name, meta, None, "queued", time.time()))
    journal.close()

    m.start()  # before: `fedfs mount` exited 1 with "...: not found (404)"
    assert "proj/alice-pending.txt" in keys(s3, bucket, "proj/")
    assert (m.path(bucket, "proj", "alice-pending.txt")).read_bytes() == b"alice's work\n"
    line = next(x for x in m.log_text().splitlines() if "event=upload-refused" in x)
    assert "owner=fedfs-mallory" in line, line
    r = alice.run("sh", "-c", f"echo more > {m.path(bucket, 'proj')}/alice3.txt")
    assert r.returncode == 0, r.stderr
    r = alice.run(*FEDFS, "sync", m.path(bucket, "proj", "alice3.txt"))
    assert r.returncode == 0, r.stderr
    r = cli("status", m.mountpoint)
    assert f"/{bucket}/proj/names/nl\\nname (owner fedfs-mallory)" in r.stdout, r.stdout
    assert m.stop() == 0
    m.start()  # and again: the refused entry does not come back as an upload
    assert m.log_text().count("event=upload-refused") == 1


@pytest.mark.parametrize("how", ["sigterm", "umount"])
def test_a_stuck_upload_does_not_keep_the_daemon_past_its_drain(
    make_mount: Any, moto: MotoServer, bucket: str, s3: Any, how: str, record_property: Any
) -> None:
    proxy = TcpProxy(moto.port).start()
    try:
        m: Mount = make_mount(
            [(bucket, "user:root")],
            endpoint=proxy.url,
            extra="flush_delay = 600\ndrain_timeout = 2",
        )
        (m.path(bucket) / "stuck.bin").write_bytes(os.urandom(100_000))
        proxy.delay = 3600  # every byte through the proxy now waits: the upload gets stuck
        assert m.proc is not None
        started = time.monotonic()
        if how == "sigterm":
            m.proc.send_signal(signal.SIGTERM)
        else:
            subprocess.Popen(
                [*FEDFS, "umount", str(m.mountpoint)],
                cwd=REPO,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        proc = m.proc
        wait_for(lambda: proc.poll() is not None, "the daemon to exit after its drain", 90)
        record_property("exit_after_s", round(time.monotonic() - started, 3))
        print(f"daemon exited {time.monotonic() - started:.1f}s after {how} (drain_timeout 2)")
        m.proc = None
        assert proc.returncode == 1
        log = m.log_text()
        assert "gave up waiting for 1 upload(s) after 2s" in log, log
        assert f"not uploaded: /{bucket}/stuck.bin: upload still under way (kept in " in log
        assert not os.path.ismount(m.mountpoint)
        # the next mount uploads it
        proxy.delay = 0
        proxy.cut()
        proxy.restore()
        m.start()
        wait_for(lambda: "stuck.bin" in keys(s3, bucket), "the kept file to be uploaded", 60)
    finally:
        proxy.stop()
