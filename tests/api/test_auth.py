"""Which headers carry the key (contract §2)."""

from __future__ import annotations

import pytest
from starlette.datastructures import Headers

from llamafoundry.api.auth import is_authorized

KEY = "s3cret-key"


@pytest.mark.parametrize(
    "headers",
    [
        {"api-key": KEY},
        {"authorization": f"Bearer {KEY}"},
        {"authorization": f"bearer {KEY}"},
        {"authorization": KEY},
        {"api-key": KEY, "authorization": f"Bearer {KEY}"},  # what the Python and JS SDKs send
        {"api-key": "wrong", "authorization": f"Bearer {KEY}"},
    ],
)
def test_accepted(headers: dict[str, str]) -> None:
    assert is_authorized(Headers(headers), KEY)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"api-key": ""},
        {"api-key": "wrong"},
        {"authorization": "Bearer"},
        {"authorization": "Bearer wrong"},
        {"authorization": f"Basic {KEY}"},
        {"api-key": KEY[:-1]},
        {"api-key": KEY + "x"},
    ],
)
def test_refused(headers: dict[str, str]) -> None:
    assert not is_authorized(Headers(headers), KEY)


def test_non_ascii_key_bytes_are_refused_without_error() -> None:
    headers = Headers(raw=[(b"api-key", "ключ".encode())])  # as a server hands them over: latin-1 decoded
    assert not is_authorized(headers, KEY)
