"""Deployment keys: 32 characters, stored hashed, matched in constant time."""

from __future__ import annotations

import pytest

from llamafoundry.platform.keys import (
    StoredKey,
    check_importable,
    check_slot,
    generate_key,
    hash_key,
    key_id_of,
    match_key,
)


def test_generated_keys_are_32_hex_characters_and_unique() -> None:
    keys = {generate_key() for _ in range(200)}
    assert len(keys) == 200
    assert all(len(k) == 32 and all(c in "0123456789abcdef" for c in k) for k in keys)


def test_only_the_hash_is_kept_and_the_id_does_not_reveal_the_key() -> None:
    key = generate_key()
    stored = StoredKey("primary", hash_key(key), 0.0)
    assert key not in stored.key_hash and len(stored.key_hash) == 64
    assert stored.key_id == key_id_of(stored.key_hash) and key[:12] not in stored.key_id


def test_match_finds_the_presented_key() -> None:
    primary, secondary = generate_key(), generate_key()
    stored = [StoredKey("primary", hash_key(primary), 0.0), StoredKey("secondary", hash_key(secondary), 0.0)]
    assert match_key([secondary], stored).slot == "secondary"  # type: ignore[union-attr]
    assert match_key(["wrong", primary], stored).slot == "primary"  # type: ignore[union-attr]
    assert match_key(["wrong", "", primary[:-1]], stored) is None
    assert match_key([], stored) is None


def test_importable_keys_are_32_letters_or_digits() -> None:
    assert check_importable("A" * 32) == "A" * 32
    for bad in ("A" * 31, "A" * 33, "-" * 32, "é" * 32):
        with pytest.raises(ValueError, match="32 characters"):
            check_importable(bad)


def test_slots() -> None:
    assert check_slot("Primary") == "primary"
    with pytest.raises(ValueError, match="primary or secondary"):
        check_slot("tertiary")
