"""A directory that exists only as a prefix of other keys shows a real date."""

from __future__ import annotations

import os
import subprocess
import time
from typing import Any

from tests.support import Mount


def test_a_directory_that_is_only_a_prefix_shows_a_real_date(
    make_mount: Any, bucket: str, s3: Any
) -> None:
    s3.put_object(Bucket=bucket, Key="in/deeper/x.txt", Body=b"x")
    s3.put_object(Bucket=bucket, Key="in/a.txt", Body=b"a")
    newest = s3.head_object(Bucket=bucket, Key="in/a.txt")["LastModified"].timestamp()
    before = time.time()
    m: Mount = make_mount([(bucket, "user:root")])
    root = m.path(bucket)
    # before its own listing: the time the mount started
    started = os.stat(root / "in").st_mtime
    assert before - 2 <= started <= time.time(), started
    # once listed: the newest object the listing returned
    assert sorted(os.listdir(root / "in")) == ["a.txt", "deeper"]
    assert os.stat(root / "in").st_mtime == int(newest)
    day = time.strftime("%Y-%m-%d", time.localtime(int(newest)))
    r = subprocess.run(
        ["ls", "-ld", "--time-style=+%Y-%m-%d", root / "in"], capture_output=True, text=True
    )
    assert r.stdout.split()[-2:] == [day, str(root / "in")], r.stdout
    deeper = os.stat(root / "in" / "deeper").st_mtime  # not listed yet: the mount's start
    assert deeper == started, (deeper, started)
