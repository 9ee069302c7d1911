"""ObjectStore.move_each, the copies and deletes of a directory move, against moto in-process
(boto3's path; RGW checks the lean CopyObject in tests/integration/cache/): every key ends at
its new name, and a copy that fails loses nothing (each key at its old name, its new one or
both).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from moto import mock_aws

from fedfs.config import StoreConfig
from fedfs.errors import NotFound
from fedfs.store.s3 import ObjectStore


@pytest.fixture
def store() -> Iterator[ObjectStore]:
    with mock_aws():
        s = ObjectStore(StoreConfig(access_key="k", secret_key="s", lean=False))
        s.create_bucket("moves")
        yield s


def keys(store: ObjectStore, prefix: str) -> set[str]:
    return {o.key for page in store.list_all("moves", prefix, None) for o in page.objects}


def put(store: ObjectStore, n: int) -> dict[str, bytes]:
    bodies = {f"f{i:04d}": f"file {i}".encode() * (i % 7 + 1) for i in range(n)}
    for name, body in bodies.items():
        store.put_bytes("moves", f"src/{name}", body, {"mode": "33188"}, None)
    return bodies


def test_every_key_moves_with_its_bytes_and_metadata(store: ObjectStore) -> None:
    bodies = put(store, 250)  # batches of 100, 100 and 50 deleted
    moves = [(f"src/{n}", f"dst/{n}", len(b)) for n, b in bodies.items()]
    store.move_each("moves", moves, workers=8, batch=100)
    assert keys(store, "src/") == set()
    assert keys(store, "dst/") == {f"dst/{n}" for n in bodies}
    for name, body in bodies.items():
        assert store.get_bytes("moves", f"dst/{name}") == body
        info = store.head("moves", f"dst/{name}")
        assert info is not None and info.metadata == {"mode": "33188"}


def test_a_copy_that_fails_leaves_every_key_somewhere(store: ObjectStore) -> None:
    bodies = put(store, 120)
    moves = [(f"src/{n}", f"dst/{n}", len(b)) for n, b in bodies.items()]
    moves.insert(60, ("src/gone-meanwhile", "dst/gone-meanwhile", 1))
    with pytest.raises(NotFound):
        store.move_each("moves", moves, workers=4, batch=20)
    for name, body in bodies.items():
        there = [k for k in (f"src/{name}", f"dst/{name}") if k in keys(store, k)]
        assert there, f"{name} is in neither place"
        assert all(store.get_bytes("moves", k) == body for k in there)
    assert len(keys(store, "src/")) < len(bodies)  # batches went while copies went on
