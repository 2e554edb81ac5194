"""Deployment and admin keys: generated, hashed for storage, checked in constant time.

A key is 32 hex characters (`secrets.token_hex(16)`, 128 random bits), as Azure's serverless keys are 32
characters. Only its SHA-256 is stored: a fast hash is enough for a random 128-bit secret (there is no
dictionary to try), and it keeps each request's check cheap. A key is shown in full only when it is created or
regenerated. `key_id` names a key in logs and usage records without revealing it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

PRIMARY = "primary"
SECONDARY = "secondary"
KEY_SLOTS = (PRIMARY, SECONDARY)
KEY_LENGTH = 32
_IMPORTABLE = re.compile(r"^[A-Za-z0-9]{32}$")

DEFAULT_KEY_ID = "default"  # the single key of `serve --api-key` (deployment keys are `primary`/`secondary`)


def generate_key() -> str:
    return secrets.token_hex(KEY_LENGTH // 2)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


def key_id_of(key_hash: str) -> str:
    """A short, non-secret name of a key, derived from its hash."""
    return "key-" + key_hash[:12]


def check_importable(key: str) -> str:
    """A user-chosen key must look like one we generate: 32 letters or digits."""
    if not _IMPORTABLE.match(key):
        raise ValueError("A key must be 32 characters, letters and digits only. Leave the value out to generate one.")
    return key


def check_slot(slot: str) -> str:
    slot = slot.lower()
    if slot not in KEY_SLOTS:
        raise ValueError(f"Key '{slot}' does not exist: choose primary or secondary.")
    return slot


@dataclass(frozen=True)
class StoredKey:
    """One key as the store holds it: never the key itself."""

    slot: str
    key_hash: str
    created_at: float

    @property
    def key_id(self) -> str:
        return key_id_of(self.key_hash)


def match_key(presented: Iterable[str], stored: Iterable[StoredKey]) -> StoredKey | None:
    """The stored key that one of the presented credentials is, or None.

    Every pair is compared, in constant time, so timing says nothing about which part matched.
    """
    hashes = [hash_key(p) for p in presented if p]
    found = None
    for key in stored:
        for presented_hash in hashes:
            if hmac.compare_digest(presented_hash, key.key_hash) and found is None:
                found = key
    return found
