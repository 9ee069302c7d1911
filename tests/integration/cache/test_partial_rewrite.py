"""Partial rewrites: only changed parts travel, and the object is byte for byte what was written.

A file of at least [store] multipart_threshold that fedfs staged from an existing
object goes up as a multipart upload whose unchanged parts the store copies from the
previous version. Checked through boto3 against the moto server: changes at the
start, middle and end, across a part boundary, a grown and a truncated file; another
writer's change through S3 meanwhile is detected and handled as every upload conflict
is; a daemon killed during the upload loses nothing; the store's conditional copy
refuses a base that moved on.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import subprocess
from pathlib import Path
from typing import Any

import pytest

from fedfs.config import StoreConfig
from fedfs.errors import PreconditionFailed
from fedfs.store.s3 import ObjectStore, Part
from tests.support import FEDFS, KEY, REPO, MotoServer, Mount, wait_for

MiB = 1024**2
PART = 5 * MiB
# Parts of 5 MiB (S3's smallest) from 8 MiB on, so a few MiB make several parts.
STORE = 'multipart_threshold = "8MiB"\nmultipart_chunksize = "5MiB"'
BASE_SIZE = 4 * PART + 123_457  # four whole parts and a short last one


def base_bytes(seed: int) -> bytes:
    return random.Random(seed).randbytes(BASE_SIZE)


def sync(m: Mount) -> None:
    r = subprocess.run(
        [*FEDFS, "sync", str(m.mountpoint)], capture_output=True, text=True, cwd=REPO, timeout=300
    )
    assert r.returncode == 0, r.stderr


def status(path: Path) -> dict[str, Any]:
    r = subprocess.run([*FEDFS, "status", "--json", str(path)], capture_output=True, cwd=REPO)
    assert r.returncode == 0, r.stderr.decode()
    return dict(json.loads(r.stdout))


def rewrite(path: Path, offset: int, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, data, offset)
    finally:
        os.close(fd)


def body(s3: Any, bucket: str, key: str) -> bytes:
    return bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


# name -> what to do to the file; each returns the bytes the file must hold afterwards.
def _at(offset: int, data: bytes) -> Any:
    def change(path: Path, old: bytes) -> bytes:
        rewrite(path, offset, data)
        new = bytearray(old)
        if offset > len(new):
            new.extend(bytes(offset - len(new)))
        new[offset : offset + len(data)] = data
        return bytes(new)

    return change


def _truncated(size: int, then: tuple[int, bytes] | None = None) -> Any:
    def change(path: Path, old: bytes) -> bytes:
        os.truncate(path, size)
        new = bytearray(old[:size])
        if then is not None:
            offset, data = then
            rewrite(path, offset, data)
            new.extend(bytes(max(0, offset - len(new))))
            new[offset : offset + len(data)] = data
        return bytes(new)

    return change


CHANGES = {
    "start": _at(0, b"\xff"),
    "middle": _at(2 * PART + 777, b"middle"),
    "end": _at(BASE_SIZE - 1, b"\x00"),
    "across a part boundary": _at(PART - 3000, b"x" * 6000),
    "across two boundaries": _at(2 * PART - 10, b"y" * (PART + 20)),
    "grown": _at(BASE_SIZE - 5, b"z" * (3 * MiB)),
    "grown past a hole": _at(BASE_SIZE + 2 * MiB, b"after the hole"),
    "truncated": _truncated(2 * PART + 4321),
    "truncated then grown": _truncated(PART + 1, then=(3 * PART + 5, b"back")),
}


def test_partial_rewrites_make_byte_identical_objects(
    make_mount: Any, bucket: str, s3: Any
) -> None:
    for n in range(len(CHANGES)):
        s3.put_object(Bucket=bucket, Key=f"f{n}", Body=base_bytes(n))
    m: Mount = make_mount([(bucket, "user:root")], store_extra=STORE)
    expected = {}
    for n, (name, change) in enumerate(CHANGES.items()):
        expected[f"f{n}"] = (name, change(m.path(bucket, f"f{n}"), base_bytes(n)))
    sync(m)
    wrong = [name for key, (name, data) in expected.items() if body(s3, bucket, key) != data]
    assert wrong == [], f"objects differ from what was written after: {wrong}"
    # Every one went up as a partial rewrite (copied parts plus sent ones), none whole.
    partial = m.log_text().count("event=upload-partial")
    assert partial == len(CHANGES), m.log_text()
    uploads = status(m.mountpoint)["uploads"]
    assert uploads["partial"] == len(CHANGES)
    assert uploads["partial_copied_bytes"] >= len(CHANGES) * PART
    # The file reads back the same through the mount, and a second change works from
    # the new version.
    assert m.path(bucket, "f1").read_bytes() == expected["f1"][1]
    rewrite(m.path(bucket, "f1"), 3 * PART, b"again")
    sync(m)
    again = bytearray(expected["f1"][1])
    again[3 * PART : 3 * PART + 5] = b"again"
    assert body(s3, bucket, "f1") == bytes(again)
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_a_change_through_s3_meanwhile_is_kept_and_ours_goes_beside_it(
    make_mount: Any, bucket: str, s3: Any
) -> None:
    s3.put_object(Bucket=bucket, Key="shared.dat", Body=base_bytes(7))
    m: Mount = make_mount([(bucket, "user:root")], extra="flush_delay = 60", store_extra=STORE)
    rewrite(m.path(bucket, "shared.dat"), PART + 10, b"ours")
    theirs = base_bytes(8)
    s3.put_object(Bucket=bucket, Key="shared.dat", Body=theirs)  # another writer, elsewhere
    sync(m)
    assert body(s3, bucket, "shared.dat") == theirs  # never merged, never overwritten
    kept = [
        o["Key"]
        for o in s3.list_objects_v2(Bucket=bucket)["Contents"]
        if o["Key"].startswith("shared.dat.fedfs-conflict-")
    ]
    assert len(kept) == 1
    ours = bytearray(base_bytes(7))
    ours[PART + 10 : PART + 14] = b"ours"
    assert body(s3, bucket, kept[0]) == bytes(ours)
    assert "event=upload-conflict" in m.log_text()


def test_a_crash_during_a_partial_rewrite_loses_nothing(
    make_mount: Any, bucket: str, s3: Any
) -> None:
    s3.put_object(Bucket=bucket, Key="big.dat", Body=base_bytes(9))
    # One connection: the parts go one after another, so the upload is seen under way.
    m: Mount = make_mount([(bucket, "user:root")], store_extra=STORE + "\nmax_connections = 1")
    rewrite(m.path(bucket, "big.dat"), 3 * PART + 1, b"before the crash")
    wait_for(
        lambda: s3.list_multipart_uploads(Bucket=bucket).get("Uploads"),
        "the partial rewrite to start",
        timeout=60,
        interval=0.005,
    )
    m.kill()
    m.start()  # recovery uploads every journaled file before the mount answers
    want = bytearray(base_bytes(9))
    want[3 * PART + 1 : 3 * PART + 17] = b"before the crash"
    assert body(s3, bucket, "big.dat") == bytes(want)
    assert m.path(bucket, "big.dat").read_bytes() == bytes(want)


def test_writes_after_a_close_are_never_copied_from_the_old_version(
    make_mount: Any, bucket: str, s3: Any
) -> None:
    """A file closed (its changed ranges journaled), opened again and written, then a crash."""
    s3.put_object(Bucket=bucket, Key="log.dat", Body=base_bytes(10))
    m: Mount = make_mount([(bucket, "user:root")], extra="flush_delay = 60", store_extra=STORE)
    path = m.path(bucket, "log.dat")
    rewrite(path, 10, b"first")  # closed: the journal row lists [10, 15)
    fd = os.open(path, os.O_WRONLY)
    os.pwrite(fd, b"second", 4 * PART + 7)  # written, never closed
    m.kill()
    with contextlib.suppress(OSError):
        os.close(fd)  # the descriptor died with the mount
    m.start()
    want = bytearray(base_bytes(10))
    want[10:15] = b"first"
    want[4 * PART + 7 : 4 * PART + 13] = b"second"
    assert body(s3, bucket, "log.dat") == bytes(want)


def test_copy_parts_off_uploads_whole_files(make_mount: Any, bucket: str, s3: Any) -> None:
    s3.put_object(Bucket=bucket, Key="whole.dat", Body=base_bytes(13))
    m: Mount = make_mount([(bucket, "user:root")], store_extra=STORE + "\ncopy_parts = false")
    rewrite(m.path(bucket, "whole.dat"), 7, b"seven")
    sync(m)
    want = bytearray(base_bytes(13))
    want[7:12] = b"seven"
    assert body(s3, bucket, "whole.dat") == bytes(want)
    assert "event=upload-partial" not in m.log_text()
    assert status(m.mountpoint)["uploads"]["partial"] == 0


@pytest.mark.parametrize("stale", [True, False])
def test_the_store_copies_parts_only_from_the_version_it_was_told(
    moto: MotoServer, bucket: str, s3: Any, tmp_path: Path, stale: bool
) -> None:
    old, theirs = base_bytes(11), base_bytes(12)
    s3.put_object(Bucket=bucket, Key="k", Body=old)
    base_etag = s3.head_object(Bucket=bucket, Key="k")["ETag"].strip('"')
    if stale:
        s3.put_object(Bucket=bucket, Key="k", Body=theirs)
    local = bytearray(old)
    local[PART : PART + 3] = b"new"
    path = tmp_path / "staged"
    path.write_bytes(local)
    store = ObjectStore(
        StoreConfig(endpoint=moto.url, access_key=KEY, secret_key=KEY, max_connections=4)
    )
    parts = [
        Part(n + 1, n * PART, min(len(local), (n + 1) * PART), n != 1)
        for n in range(-(-len(local) // PART))
    ]
    if stale:
        with pytest.raises(PreconditionFailed):
            store.rewrite(bucket, "k", path, parts, base_etag, {})
        assert body(s3, bucket, "k") == theirs
    else:
        store.rewrite(bucket, "k", path, parts, base_etag, {})
        assert body(s3, bucket, "k") == bytes(local)
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
