"""New names the store will keep: no control characters, keys of at most 1,024 bytes."""

from __future__ import annotations

import pytest

from fedfs.tree.names import KEY_MAX, BadName, check_key_length, new_name


@pytest.mark.parametrize("name", [b"nl\nname", b"tab\tx", b"cr\r", b"del\x7f", b"\x01"])
def test_control_characters_are_einval(name: bytes) -> None:
    with pytest.raises(BadName) as e:
        new_name(name)
    assert not e.value.too_long


@pytest.mark.parametrize("name", ["plain", "é ü", "sp ace", "a\\b", "x" * 255])
def test_ordinary_names_pass(name: str) -> None:
    assert new_name(name.encode()) == name


def test_key_length_counts_utf8_bytes_and_a_directory_marker() -> None:
    check_key_length("b", "k" * KEY_MAX)
    with pytest.raises(BadName) as e:
        check_key_length("b", "k" * KEY_MAX, is_dir=True)
    assert e.value.too_long
    with pytest.raises(BadName):
        check_key_length("b", "é" * 513)  # 1,026 bytes in 513 characters
