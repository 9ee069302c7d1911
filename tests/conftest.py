"""Fixtures: one moto S3 server per session, a fresh bucket and mount per test.

Mount points live under a world-traversable directory (not pytest's 0700
tmp dir) so processes of other uids can reach them.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support import MotoServer, Mount, UnixUser, ensure_user, write_config


@pytest.fixture(scope="session")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    server = MotoServer(log=tmp_path_factory.mktemp("moto") / "moto.log").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3(moto: MotoServer) -> Any:
    return moto.client()


@pytest.fixture(scope="session")
def public_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="fedfs-test-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def bucket(s3: Any) -> str:
    name = f"t-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def alice() -> UnixUser:
    return ensure_user("fedfs-alice", 2901)


@pytest.fixture(scope="session")
def bob() -> UnixUser:
    return ensure_user("fedfs-bob", 2902)


@pytest.fixture(scope="session")
def carol() -> UnixUser:
    return ensure_user("fedfs-carol", 2903)


@pytest.fixture(scope="session")
def mallory() -> UnixUser:
    return ensure_user("fedfs-mallory", 2914)


MountFactory = Callable[..., Mount]


@pytest.fixture
def make_mount(moto: MotoServer, public_dir: Path, tmp_path: Path) -> Iterator[MountFactory]:
    """Build and start mounts; every one is unmounted at the end of the test."""
    mounts: list[Mount] = []

    def make(
        buckets: list[tuple[str, str]],
        endpoint: str | None = None,
        extra: str = "",
        store_extra: str = "",
        name: str | None = None,
        start: bool = True,
        top: str = "",
        policy_extra: str = "",
        keys: tuple[str, str] | None = None,
    ) -> Mount:
        name = name or f"m{len(mounts)}"
        base = public_dir / f"{tmp_path.name}-{name}"
        base.mkdir(exist_ok=True)
        cfg = write_config(
            tmp_path / f"{name}.toml",
            endpoint or moto.url,
            buckets,
            tmp_path / f"cache-{name}",
            extra,
            store_extra,
            top=top,
            policy_extra=policy_extra,
            **({"keys": keys} if keys else {}),
        )
        m = Mount(cfg, base / "mnt", tmp_path / f"{name}.log")
        mounts.append(m)
        return m.start() if start else m

    yield make
    for m in mounts:
        if m.proc is not None:
            m.stop()
        assert "Traceback" not in m.log_text(), f"the daemon logged a traceback:\n{m.log_text()}"


@pytest.fixture
def mount(make_mount: MountFactory, bucket: str) -> Mount:
    """A mount of one fresh bucket owned by root, at mount.path(bucket)."""
    return make_mount([(bucket, "user:root")])


@pytest.fixture
def fs(mount: Mount, bucket: str) -> Path:
    """The bucket's directory inside the mount."""
    p = mount.path(bucket)
    assert p.is_dir()
    return p
