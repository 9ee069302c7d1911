"""Audit chain: canonical encoding, signing keys, and a verifier that names the first bad record."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st

from fedfs.audit.chain import (
    GENESIS_HASH,
    AuditRecord,
    AuditWriter,
    KeyRing,
    SigningKey,
    key_id_of,
    verify,
    verify_chains,
)
from fedfs.errors import AuditError, FedfsError

T0 = 1_700_000_000.0
NODE = "hpc-login1"


def ticking_clock(start: float = T0, step: float = 1.25) -> Callable[[], float]:
    counter = itertools.count()
    return lambda: start + next(counter) * step


def share(writer: AuditWriter, n: int) -> AuditRecord:
    return writer.append(
        actor_uid=1000 + n % 7,
        actor=f"alice{n % 7}",
        action=("share", "unshare", "expire", "team-add")[n % 4],
        principal=f"bob{n}",
        path=f"/labs/zoë/データ/run-{n:04d}",
        level="read" if n % 2 else "write",
        before=hashlib.sha256(f"before{n}".encode()).hexdigest(),
        after=hashlib.sha256(f"after{n}".encode()).hexdigest(),
        detail={"expires": 86400 * (n % 30), "note": "via fedfs share"},
    )


@functools.cache
def signing_key(name: str) -> SigningKey:
    return SigningKey.generate()


def keyring(*nodes: str) -> KeyRing:
    ring = KeyRing()
    for node in nodes:
        ring.add(signing_key(node).public_key, node, valid_from=T0 - 10)
    return ring


@functools.cache
def log(appends: int = 300, node: str = NODE) -> tuple[bytes, ...]:
    """`appends` share records with automatic checkpoints every 100, then a final checkpoint."""
    key = signing_key(node)
    writer = AuditWriter(node, key.private_key, key.key_id, None, clock=ticking_clock())
    for n in range(appends):
        share(writer, n)
    writer.checkpoint()
    return tuple(r.encode() for r in writer.drain())


def decoded(records: tuple[bytes, ...] | list[bytes]) -> list[AuditRecord]:
    return [AuditRecord.decode(r) for r in records]


def assert_fails_at(
    records: list[bytes], index: int, phrase: str, expected_length: int | None = None
) -> None:
    report = verify(records, keyring(NODE), expected_length)
    assert not report.ok, str(report)
    assert report.first_bad == index, str(report)
    assert report.checked == index
    assert report.reason is not None and phrase in report.reason, report.reason
    assert phrase in str(report)


# -- an untouched log --------------------------------------------------------------------------


def test_untouched_log_with_checkpoints_verifies() -> None:
    records = log()
    report = verify(records, keyring(NODE))
    assert report.ok, str(report)
    assert report.checked == len(records) == 304
    assert (report.first_bad, report.reason) == (None, None)
    assert str(report) == f"audit chain of node {NODE}: 304 records verified, intact"


def test_writer_checkpoints_every_n_records_with_length_and_head() -> None:
    chain = decoded(log())
    checkpoints = [r for r in chain if r.action == "checkpoint"]
    # 100 appends, a checkpoint, 100 more, ... and the final one asked for.
    assert [c.seq for c in checkpoints] == [100, 201, 302, 303]
    for c in checkpoints:
        assert c.checkpoint_length == c.seq + 1
        assert c.detail["head"] == chain[c.seq - 1].hash == c.prev_hash
    assert chain[0].prev_hash == GENESIS_HASH
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(chain))


def test_reencoding_a_decoded_record_is_byte_identical() -> None:
    for data in log():
        record = AuditRecord.decode(data)
        assert record.encode() == data
        assert AuditRecord.decode(record.encode()) == record


def test_encoding_is_sorted_compact_utf8_json_with_time_as_shortest_float() -> None:
    data = log()[3]
    assert b"\n" not in data and b" " not in data.replace(b"via fedfs share", b"")
    obj = json.loads(data)
    assert list(obj) == sorted(obj)
    assert obj["v"] == 1 and obj["time"] == T0 + 3 * 1.25
    assert b'"time":1700000003.75' in data
    assert "zoë/データ".encode() in data  # not \u-escaped


# -- tampering: each case names exactly the first bad record -----------------------------------


def flip(data: bytes, needle: bytes, offset: int, new: bytes) -> bytes:
    at = data.index(needle) + offset
    assert data[at : at + 1] != new
    return data[:at] + new + data[at + 1 :]


def other_hex(data: bytes, needle: bytes, offset: int) -> bytes:
    at = data.index(needle) + offset
    return b"1" if data[at : at + 1] != b"1" else b"2"


FLIPS = {
    # name: (needle, offset into it, replacement or None for "another hex digit", phrase)
    "signature-hex-digit": (b'"signature":"', 40, None, "signature does not match"),
    "signature-not-hex": (b'"signature":"', 20, b"g", "not a valid audit record"),
    "path-value": (b"run-0", 2, b"x", "signature does not match"),
    "actor-value": (b'"actor":"alice', 11, b"A", "signature does not match"),
    "multibyte-utf8": ("データ".encode(), 1, b"\x00", "not a valid audit record"),
    "seq-digit": (b'"seq":', 6, b"9", "signature does not match"),
    "time-digit": (b'"time":', 12, b"9", "signature does not match"),
    "prev-hash-digit": (b'"prev_hash":"', 30, None, "signature does not match"),
    "key-id-digit": (b'"key_id":"', 12, None, "unknown key"),
    "detail-int": (b'"expires":', 10, b"7", "signature does not match"),
    "key-name": (b'"level"', 2, b"E", "not a valid audit record"),
    "json-structure": (b'"node":', 6, b";", "not a valid audit record"),
}


@pytest.mark.parametrize("case", sorted(FLIPS))
@pytest.mark.parametrize("index", [0, 57, 299])
def test_one_flipped_byte_fails_at_that_record(case: str, index: int) -> None:
    needle, offset, new, phrase = FLIPS[case]
    records = list(log())
    new = new if new is not None else other_hex(records[index], needle, offset)
    records[index] = flip(records[index], needle, offset, new)
    assert_fails_at(records, index, phrase)


@pytest.mark.parametrize(
    ("needle", "offset"),
    [(b'"length":', 9), (b'"head":"', 20), (b'"signature":"', 70), (b'"actor":"fedfs', 10)],
)
@pytest.mark.parametrize("index", [100, 303])
def test_one_flipped_byte_in_a_checkpoint_fails_at_that_checkpoint(
    needle: bytes, offset: int, index: int
) -> None:
    records = list(log())
    records[index] = flip(records[index], needle, offset, other_hex(records[index], needle, offset))
    assert_fails_at(records, index, "signature does not match")


@pytest.mark.parametrize("field", [b'"prev_hash":"', b'"key_id":"', b'"signature":"'])
def test_uppercase_hex_is_not_a_valid_record(field: bytes) -> None:
    records = list(log())
    data = records[33]
    start = data.index(field) + len(field)
    at = next(i for i in range(start, len(data)) if data[i : i + 1] in b"abcdef")
    records[33] = data[:at] + data[at : at + 1].upper() + data[at + 1 :]
    assert_fails_at(records, 33, "lowercase hex digits")


def test_non_canonical_bytes_of_an_intact_record_count_as_altered() -> None:
    records = list(log())
    records[12] = json.dumps(json.loads(records[12]), indent=1, ensure_ascii=False).encode()
    assert_fails_at(records, 12, "not the canonical encoding")


@pytest.mark.parametrize("index", [0, 1, 42, 100, 302])
def test_deleted_record_is_reported_as_a_gap(index: int) -> None:
    records = list(log())
    del records[index]
    assert_fails_at(records, index, f"gap, seq {index} missing (1 deleted)")


def test_several_deleted_records_are_one_gap() -> None:
    records = list(log())
    del records[50:53]
    assert_fails_at(records, 50, "gap, seq 50..52 missing (3 deleted)")


@pytest.mark.parametrize("index", [0, 10, 99, 100])
def test_two_swapped_records_are_reported_as_reordered(index: int) -> None:
    records = list(log())
    records[index], records[index + 1] = records[index + 1], records[index]
    assert_fails_at(records, index, f"reordered (seq {index} is at position {index + 1})")


def forged_after(
    previous: AuditRecord, key: SigningKey, node: str = NODE, *, actor: str = "mallory"
) -> bytes:
    writer = AuditWriter(node, key.private_key, key.key_id, previous, clock=lambda: previous.time)
    record = writer.append(actor_uid=666, actor=actor, action="share", principal=actor, path="/x")
    return record.encode()


def test_inserted_record_signed_by_an_unknown_key_is_rejected() -> None:
    records = list(log())
    chain = decoded(records)
    records.insert(40, forged_after(chain[39], SigningKey.generate()))
    assert_fails_at(records, 40, "signed by unknown key")


def test_inserted_record_signed_by_another_nodes_key_is_rejected() -> None:
    records = list(log())
    chain = decoded(records)
    records.insert(40, forged_after(chain[39], signing_key("hpc-login2")))
    report = verify(records, keyring(NODE, "hpc-login2"))
    assert (report.ok, report.first_bad) == (False, 40)
    assert report.reason is not None and "which belongs to node hpc-login2" in report.reason


def test_inserted_record_resigned_with_a_valid_key_but_wrong_prev_hash_is_rejected() -> None:
    records = list(log())
    chain = decoded(records)
    not_the_real_39 = dataclasses.replace(chain[39], actor="mallory")
    records.insert(40, forged_after(not_the_real_39, signing_key(NODE)))
    assert_fails_at(records, 40, "previous-hash mismatch")


def test_inserted_record_with_a_stolen_key_and_right_links_is_caught_at_the_next() -> None:
    records = list(log())
    chain = decoded(records)
    records.insert(40, forged_after(chain[39], signing_key(NODE)))
    assert_fails_at(records, 41, "which record 40 already holds: a record was inserted")


def test_replayed_record_is_rejected() -> None:
    records = list(log())
    records.insert(60, records[57])
    assert_fails_at(records, 60, "has seq 57, which record 57 already holds")


def test_truncated_tail_is_caught_with_the_newest_checkpoint_kept_elsewhere() -> None:
    records = list(log())
    newest = AuditRecord.decode(records[-1]).checkpoint_length
    assert newest == len(records)
    assert verify(records, keyring(NODE), newest).ok
    del records[-30:]
    assert_fails_at(records, 274, "log truncated: a checkpoint says 304 records, only 274", newest)


def test_truncation_to_nothing_is_caught() -> None:
    assert_fails_at([], 0, "only 0 present", expected_length=5)


def test_first_bad_record_wins_over_later_damage_and_truncation() -> None:
    records = list(log())
    del records[-3:]
    del records[200]
    records[20] = flip(records[20], b'"signature":"', 15, b"g")
    assert_fails_at(records, 20, "record 20 is not a valid audit record", expected_length=304)


# -- keys ----------------------------------------------------------------------------------------


def rotated_log(split: int = 20) -> tuple[list[bytes], SigningKey, SigningKey, float]:
    """Records 0..split-1 by an old key, the rest by a new key from time `cutover`."""
    old, new = SigningKey.generate(), SigningKey.generate()
    clock = ticking_clock()
    writer = AuditWriter(NODE, old.private_key, old.key_id, None, clock=clock)
    for n in range(split):
        share(writer, n)
    first = writer.drain()
    writer = AuditWriter(NODE, new.private_key, new.key_id, first[-1], clock=clock)
    for n in range(split, split + 10):
        share(writer, n)
    second = writer.drain()
    return [r.encode() for r in first + second], old, new, second[0].time


def test_key_rotation_within_validity_windows_verifies() -> None:
    records, old, new, cutover = rotated_log()
    ring = KeyRing()
    ring.add(old.public_key, NODE, T0, valid_until=cutover)
    ring.add(new.public_key, NODE, cutover)
    assert verify(records, ring).ok


def test_key_used_after_its_valid_until_is_rejected() -> None:
    records, old, new, cutover = rotated_log()
    ring = KeyRing()
    ring.add(old.public_key, NODE, T0, valid_until=T0 + 10 * 1.25)  # retired at record 10
    ring.add(new.public_key, NODE, cutover)
    report = verify(records, ring)
    assert (report.ok, report.first_bad) == (False, 10)
    assert report.reason is not None
    assert f"key {old.key_id} is valid only from 2023-11-14T22:13:20+00:00" in report.reason


def test_key_used_before_its_valid_from_is_rejected() -> None:
    records, old, new, cutover = rotated_log()
    ring = KeyRing()
    ring.add(old.public_key, NODE, T0, valid_until=cutover)
    ring.add(new.public_key, NODE, cutover + 5 * 1.25)
    report = verify(records, ring)
    assert (report.ok, report.first_bad) == (False, 20)
    assert report.reason is not None and "is valid only from" in report.reason


def test_key_of_node_a_signing_node_bs_chain_is_rejected() -> None:
    key_a = signing_key("node-a")
    writer = AuditWriter("node-b", key_a.private_key, key_a.key_id, None, clock=ticking_clock())
    for n in range(5):
        share(writer, n)
    records = [r.encode() for r in writer.drain()]
    report = verify(records, keyring("node-a", "node-b"))
    assert (report.ok, report.first_bad) == (False, 0)
    assert report.reason is not None
    assert f"of node node-b is signed by key {key_a.key_id}, which belongs to node node-a" in (
        report.reason
    )


def test_key_id_is_sha256_of_the_raw_public_key() -> None:
    key = SigningKey.generate()
    raw = key.public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert key.key_id == key_id_of(key.public_key) == hashlib.sha256(raw).hexdigest()[:16]


def test_signing_key_saves_as_private_pem_and_loads_back(tmp_path: Path) -> None:
    key = SigningKey.generate()
    path = tmp_path / "node.key"
    key.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert SigningKey.load(path).key_id == key.key_id
    assert os.listdir(tmp_path) == ["node.key"]


def test_signing_key_with_password(tmp_path: Path) -> None:
    key = SigningKey.generate()
    key.save(tmp_path / "k", password=b"s3cret")
    assert SigningKey.load(tmp_path / "k", password=b"s3cret").key_id == key.key_id
    with pytest.raises(AuditError, match="not a readable private key"):
        SigningKey.load(tmp_path / "k", password=b"wrong")


def test_saving_never_overwrites_an_existing_key(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    first = SigningKey.generate()
    first.save(path)
    with pytest.raises(AuditError, match="refusing to overwrite"):
        SigningKey.generate().save(path)
    assert SigningKey.load(path).key_id == first.key_id
    assert os.listdir(tmp_path) == ["node.key"]


def test_loading_a_key_others_can_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    SigningKey.generate().save(path)
    path.chmod(0o644)
    with pytest.raises(AuditError, match="chmod 600"):
        SigningKey.load(path)


def test_keyring_refuses_a_key_enrolled_twice_and_an_empty_window() -> None:
    key = SigningKey.generate()
    ring = KeyRing()
    ring.add(key.public_key, NODE, T0)
    assert key.key_id in ring and len(ring) == 1
    with pytest.raises(AuditError, match="already enrolled"):
        ring.add(key.public_key, "elsewhere", T0)
    with pytest.raises(AuditError, match="valid_until must be after valid_from"):
        KeyRing().add(key.public_key, NODE, T0, valid_until=T0)


# -- writer ------------------------------------------------------------------------------------


def test_writer_resumes_a_chain_from_its_last_record() -> None:
    key = signing_key(NODE)
    clock = ticking_clock()
    writer = AuditWriter(NODE, key.private_key, key.key_id, None, clock=clock)
    for n in range(7):
        share(writer, n)
    first = writer.drain()
    resumed = AuditWriter(NODE, key.private_key, key.key_id, first[-1], clock=clock)
    assert (resumed.length, resumed.head) == (7, first[-1].hash)
    share(resumed, 7)
    records = [r.encode() for r in first + resumed.drain()]
    assert verify(records, keyring(NODE)).checked == 8


def test_writer_refuses_mismatched_key_id_foreign_chain_and_manual_checkpoint() -> None:
    key = signing_key(NODE)
    with pytest.raises(AuditError, match="does not name this signing key"):
        AuditWriter(NODE, key.private_key, "0123456789abcdef", None)
    last = AuditRecord.decode(log()[0])
    with pytest.raises(AuditError, match="cannot continue node hpc-login1's audit chain"):
        AuditWriter("other", key.private_key, key.key_id, last)
    writer = AuditWriter(NODE, key.private_key)
    with pytest.raises(AuditError, match="checkpoint"):
        writer.append(actor_uid=0, actor="root", action="checkpoint")
    with pytest.raises(FedfsError, match="detail 'n' must be text or a whole number, not True"):
        writer.append(actor_uid=0, actor="root", action="admin", detail={"n": True})
    assert writer.drain() == []


def test_record_detail_cannot_be_changed_after_signing() -> None:
    record = AuditRecord.decode(log()[5])
    with pytest.raises(TypeError):
        record.detail["note"] = "edited"  # type: ignore[index]


# -- several nodes -----------------------------------------------------------------------------


def test_chains_of_several_nodes_verify_together_and_fail_independently() -> None:
    a, b = log(30, "node-a"), log(40, "node-b")
    ring = keyring("node-a", "node-b")
    reports = verify_chains({"node-a": a, "node-b": b}, ring)
    assert {n: (r.ok, r.checked) for n, r in reports.items()} == {
        "node-a": (True, 31),
        "node-b": (True, 41),
    }
    damaged = list(b)
    del damaged[7]
    reports = verify_chains({"node-a": a, "node-b": damaged}, ring, {"node-c": 3})
    assert reports["node-a"].ok
    assert (reports["node-b"].ok, reports["node-b"].first_bad) == (False, 7)
    assert reports["node-c"].reason is not None and "only 0 present" in reports["node-c"].reason


def test_a_chain_filed_under_another_node_is_rejected() -> None:
    reports = verify_chains({"node-b": log(30, "node-a")}, keyring("node-a", "node-b"))
    assert reports["node-b"].first_bad == 0
    assert reports["node-b"].reason is not None
    assert "belongs to node node-a, not node-b" in reports["node-b"].reason


# -- properties --------------------------------------------------------------------------------

SMALL = log(7, "prop-node")


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_any_single_byte_mutation_anywhere_is_detected_at_that_record(data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(SMALL) - 1), label="record")
    original = SMALL[index]
    at = data.draw(st.integers(0, len(original) - 1), label="byte")
    new = data.draw(st.integers(0, 255).filter(lambda b: b != original[at]), label="value")
    records = list(SMALL)
    records[index] = original[:at] + bytes([new]) + original[at + 1 :]
    report = verify(records, keyring("prop-node"))
    assert not report.ok
    assert report.first_bad == index, str(report)


optional_text = st.none() | st.text(max_size=40)


@settings(max_examples=150, deadline=None)
@given(
    time=st.floats(min_value=0, max_value=4e9, allow_nan=False),
    actor=st.text(min_size=1, max_size=20),
    path=optional_text,
    before=optional_text,
    detail=st.dictionaries(st.text(min_size=1, max_size=10), st.integers() | st.text(max_size=20)),
)
def test_any_record_reencodes_byte_identically(
    time: float, actor: str, path: str | None, before: str | None, detail: dict[str, str | int]
) -> None:
    key = signing_key("prop-node")
    writer = AuditWriter("prop-node", key.private_key, clock=lambda: time)
    record = writer.append(
        actor_uid=0, actor=actor, action="admin", path=path, before=before, detail=detail
    )
    data = record.encode()
    again = AuditRecord.decode(data)
    assert again == record and again.encode() == data and again.time == time
    ring = KeyRing()
    ring.add(key.public_key, "prop-node", valid_from=0)
    assert verify([data], ring).ok


# --- the trail on disk ----------------------------------------------------------------


def test_trail_survives_reopen_drops_a_torn_tail_and_catches_truncation(tmp_path: Path) -> None:
    from fedfs.audit.chain import AuditTrail, SigningKey

    key = SigningKey.generate()
    trail = AuditTrail(tmp_path / "audit", "n1", key, checkpoint_every=3)
    for i in range(7):
        trail.append(
            actor_uid=1000, actor="alice", action="share", path=f"/b/{i}", principal="user:bob"
        )
    assert trail.verify().ok and len(trail.records()) == 9  # 7 + 2 checkpoints
    # a crash in the middle of an append leaves a partial line: dropped on open
    with open(trail.log_path, "ab") as f:
        f.write(b'{"v":1,"seq":9,"node":"n1"')
    reopened = AuditTrail(tmp_path / "audit", "n1", key, checkpoint_every=3)
    assert len(reopened.records()) == 9 and reopened.verify().ok
    reopened.append(
        actor_uid=1000, actor="alice", action="unshare", path="/b/1", principal="user:bob"
    )
    assert reopened.verify().ok
    # cutting whole records off the end is caught through the checkpoint kept beside the log
    lines = reopened.log_path.read_bytes().splitlines(keepends=True)
    reopened.log_path.write_bytes(b"".join(lines[:5]))
    report = reopened.verify()
    assert not report.ok and "truncated" in (report.reason or "")
    with pytest.raises(AuditError, match="fails verification"):
        AuditTrail(tmp_path / "audit", "n1", key)
