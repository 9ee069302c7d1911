"""Objects written outside fedfs (plain S3 tools, s3fs, a collaborator's own keys).

Their owner, group and mode come from `x-amz-meta-*` as s3fs writes them (interop),
but bits the mount does not honour are never shown: setuid anywhere, setgid and
sticky on files (the mount is nosuid; a directory's setgid and sticky bits are
honoured and stay). A real key with the name fedfs gives a shadowed file is shown
under its own name, and the clash is logged.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from tests.support import Mount

SHADOW = ".fedfs-shadowed-file"


def test_setuid_and_other_unhonoured_bits_from_metadata_are_not_shown(
    mount: Mount, fs: Path, s3: Any, bucket: str
) -> None:
    def put(key: str, mode: int) -> None:
        meta = {"mode": str(mode), "uid": "0", "gid": "0"}
        s3.put_object(Bucket=bucket, Key=key, Body=b"#!/bin/sh\necho hi\n", Metadata=meta)

    put("suid", stat.S_IFREG | 0o4711)
    put("sgid-file", stat.S_IFREG | 0o2755)
    put("sticky-file", stat.S_IFREG | 0o1644)
    put("sgid-dir/", stat.S_IFDIR | 0o2775)
    put("sticky-dir/", stat.S_IFDIR | 0o1777)
    shown = {name: stat.S_IMODE(os.stat(fs / name).st_mode) for name in sorted(os.listdir(fs))}
    assert shown == {
        "suid": 0o711,  # shown as -rwx--x--x root, never -rws--x--x
        "sgid-file": 0o755,
        "sticky-file": 0o644,
        "sgid-dir": 0o2775,  # new files here take the directory's group: honoured
        "sticky-dir": 0o1777,  # only owners may delete here: the kernel honours it
    }
    assert stat.filemode(os.stat(fs / "suid").st_mode) == "-rwx--x--x"
    # chmod u+s through the mount is not kept either
    (fs / "mine").write_text("x")
    os.chmod(fs / "mine", 0o4755)
    assert stat.S_IMODE(os.stat(fs / "mine").st_mode) == 0o755


def test_a_real_key_named_like_the_shadow_entry_is_reachable_and_logged(
    mount: Mount, fs: Path, s3: Any, bucket: str
) -> None:
    s3.put_object(Bucket=bucket, Key="foo", Body=b"the file foo")
    s3.put_object(Bucket=bucket, Key="foo/bar", Body=b"bar")
    s3.put_object(Bucket=bucket, Key=f"foo/{SHADOW}", Body=b"a real key")
    # by lookup before any listing, and after one: the real key, under its own name
    assert (fs / "foo" / SHADOW).read_bytes() == b"a real key"
    assert sorted(os.listdir(fs / "foo")) == [SHADOW, "bar"]
    assert (fs / "foo" / SHADOW).read_bytes() == b"a real key"
    line = next((x for x in mount.log_text().splitlines() if "event=shadow-name-taken" in x), None)
    assert line is not None, mount.log_text()
    assert f"key=foo/{SHADOW}" in line and "shadowed=foo" in line, line
