"""The ground the object-side tests stand on: on RGW, a bucket's users are kept apart by
the store itself, and a daemon with a service user's keys serves a bucket it does not own."""

from __future__ import annotations

from typing import Any

import botocore.exceptions
import pytest

from tests.integration.objectacl.conftest import SERVICE as SERVICE_NAME
from tests.integration.objectacl.conftest import Rgw
from tests.support import FEDFS, UnixUser


def test_rgw_keeps_users_apart_and_the_daemon_serves_alices_bucket(
    rgw: Rgw, rgw_bucket: str, make_rgw_mount: Any, alice: UnixUser, bob: UnixUser
) -> None:
    rgw.client(alice.name).put_object(Bucket=rgw_bucket, Key="runs/a.txt", Body=b"alice\n")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        rgw.client(bob.name).get_object(Bucket=rgw_bucket, Key="runs/a.txt")
    assert e.value.response["Error"]["Code"] == "AccessDenied"

    m = make_rgw_mount([(rgw_bucket, f"user:{alice.name}")])
    assert alice.run("cat", m.path(rgw_bucket, "runs", "a.txt")).stdout == b"alice\n"
    r = alice.run("sh", "-c", f"echo from-mount > {m.path(rgw_bucket, 'runs', 'b.txt')}")
    assert r.returncode == 0, r.stderr
    r = alice.run(*FEDFS, "sync", m.mountpoint)
    assert r.returncode == 0, r.stderr
    body = rgw.client(SERVICE_NAME).get_object(Bucket=rgw_bucket, Key="runs/b.txt")["Body"]
    assert body.read() == b"from-mount\n"
