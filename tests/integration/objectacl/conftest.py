"""Fixtures for the object-side access control tests: a real Ceph RGW (moto stores
bucket policies but does not enforce them), RGW users with their own keys, and mounts
whose daemon uses a service user's keys.

One cluster per session (bring-up about 20 s). RGW users are named like the test's
Unix users, so `[object_acl] principal = "arn:aws:iam:::user/{user}"` maps them.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.backends.ceph_rgw import CephRgw
from tests.support import Mount, UnixUser

PRINCIPAL = "arn:aws:iam:::user/{user}"
SERVICE = "fedfs-svc"


@dataclass
class Rgw:
    """The running gateway, its users' keys and a client per user."""

    cluster: CephRgw
    keys: dict[str, tuple[str, str]]

    @property
    def url(self) -> str:
        return self.cluster.url

    def client(self, user: str) -> Any:
        access, secret = self.keys[user]
        return self.cluster.client(access, secret)

    def user(self, name: str) -> tuple[str, str]:
        """Create (once) an RGW user with this name; its keys."""
        if name not in self.keys:
            self.keys[name] = self.cluster.create_user(name)
        return self.keys[name]


@pytest.fixture(scope="session")
def rgw(alice: UnixUser, bob: UnixUser, carol: UnixUser) -> Iterator[Rgw]:
    if shutil.which("radosgw") is None:
        pytest.fail("radosgw is not installed: run scripts/ceph-rgw-install (scripts/test does)")
    workdir = Path(tempfile.mkdtemp(prefix="fedfs-rgw-"))
    cluster = CephRgw(workdir / "ceph").start()
    try:
        keys = {SERVICE: cluster.create_user(SERVICE, system=True)}
        for user in (alice, bob, carol):
            keys[user.name] = cluster.create_user(user.name)
        yield Rgw(cluster, keys)
    finally:
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def rgw_bucket(rgw: Rgw, alice: UnixUser) -> str:
    """A fresh bucket that alice created with her own keys: she owns it on the object side."""
    name = f"oa-{uuid.uuid4().hex[:12]}"
    rgw.client(alice.name).create_bucket(Bucket=name)
    return name


def object_acl_section(**settings: object) -> str:
    """An [object_acl] table mapping Unix users to RGW users of the same name."""
    values = {"principal": PRINCIPAL, "poll_interval": 2.0, **settings}
    lines = ["[object_acl]"]
    for key, value in values.items():
        if isinstance(value, bool):
            lines.append(f"{key} = {'true' if value else 'false'}")
        elif isinstance(value, str):
            lines.append(f'{key} = "{value}"')
        else:
            lines.append(f"{key} = {value}")
    return "\n".join(lines) + "\n"


@pytest.fixture
def make_rgw_mount(make_mount: Any, rgw: Rgw) -> Any:
    """make_mount against RGW with the service user's keys and an [object_acl] table;
    object_acl: keyword settings for it (None: no table, fedfs as before)."""

    def make(
        buckets: list[tuple[str, str]], object_acl: dict[str, object] | None = None, **kw: Any
    ) -> Mount:
        top = kw.pop("top", "")
        if object_acl is not None:
            top = top + "\n" + object_acl_section(**object_acl)
        return make_mount(buckets, endpoint=rgw.url, keys=rgw.keys[SERVICE], top=top, **kw)

    return make
