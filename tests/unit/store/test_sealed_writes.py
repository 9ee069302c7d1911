"""The store seals every write for the key it writes (moto: pure mapping of requests);
a copy that keeps the source's metadata carries it sealed again for its new key."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from moto import mock_aws

from fedfs.config import StoreConfig
from fedfs.meta.seal import KEY_PURPOSE, SEAL_META_KEY, MetadataSeal
from fedfs.store.s3 import ObjectStore

META = {"mode": str(0o100640), "uid": "1001", "gid": "1001", "mtime": "1500000000"}


@pytest.fixture
def store() -> Iterator[ObjectStore]:
    with mock_aws():
        s = ObjectStore(StoreConfig(access_key="k", secret_key="s", lean=False))
        s.create_bucket("bkt")
        s.seal = MetadataSeal(s.derived_key(KEY_PURPOSE), required=True)
        yield s


def _meta(store: ObjectStore, key: str) -> dict[str, str]:
    info = store.head("bkt", key)
    assert info is not None and info.metadata is not None
    return info.metadata


def test_each_write_is_sealed_for_its_own_key(store: ObjectStore) -> None:
    assert store.seal is not None
    store.put_bytes("bkt", "d/f", b"x", META)
    store.put_bytes("bkt", "d/", b"", META)
    for key in ("d/f", "d/"):
        assert store.seal.valid("bkt", key, _meta(store, key))
    store.copy("bkt", "d/f", "d/f", 1, {**META, "mode": str(0o100600)})  # chmod
    assert store.seal.valid("bkt", "d/f", _meta(store, "d/f"))
    assert _meta(store, "d/f")["mode"] == str(0o100600)


def test_a_rename_seals_the_copy_for_its_new_key_and_leaves_unsealed_ones_unsealed(
    store: ObjectStore,
) -> None:
    assert store.seal is not None
    store.put_bytes("bkt", "d/f", b"x", META)
    store.copy("bkt", "d/f", "e/f", 1)
    moved = _meta(store, "e/f")
    assert store.seal.valid("bkt", "e/f", moved) and moved["uid"] == "1001"
    store.client.put_object(Bucket="bkt", Key="d/bobs", Body=b"x", Metadata=META)  # no seal
    store.copy("bkt", "d/bobs", "e/bobs", 1)
    assert SEAL_META_KEY not in _meta(store, "e/bobs")


def test_writes_without_ownership_fields_are_left_alone(store: ObjectStore) -> None:
    store.put_bytes("bkt", ".fedfs-index/x", b"{}", {})
    assert _meta(store, ".fedfs-index/x") == {}
