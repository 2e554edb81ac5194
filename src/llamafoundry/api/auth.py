"""API-key authentication, as the Azure SDKs send it.

The Python and JS SDKs send the key twice, as `api-key: <key>` and `Authorization: Bearer <key>`; MaaS also
accepted a bare `Authorization: <key>` (curl examples). Any one of them carrying the key is enough.
"""

from __future__ import annotations

import hmac

from starlette.datastructures import Headers


class AuthError(Exception):
    """Missing or wrong key; answered with the MaaS 401 body (`errors.unauthorized_response`)."""


def presented_keys(headers: Headers) -> list[str]:
    """The keys a request carries, from `api-key` and `Authorization` (with or without `Bearer`)."""
    keys = []
    api_key = headers.get("api-key")
    if api_key:
        keys.append(api_key.strip())
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, rest = authorization.strip().partition(" ")
        keys.append(rest.strip() if scheme.lower() == "bearer" else authorization.strip())
    return keys


def is_authorized(headers: Headers, expected_key: str) -> bool:
    """True when any presented key equals `expected_key`. Every candidate is compared in constant time."""
    expected = expected_key.encode()
    matches = [hmac.compare_digest(key.encode(), expected) for key in presented_keys(headers)]
    return any(matches)


def require_key(headers: Headers, expected_key: str) -> None:
    """Raises AuthError unless the request carries the key."""
    if not is_authorized(headers, expected_key):
        raise AuthError()
