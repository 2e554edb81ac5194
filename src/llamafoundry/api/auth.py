"""API-key authentication, as the Azure SDKs send it.

The Python and JS SDKs send the key twice, as `api-key: <key>` and `Authorization: Bearer <key>`; MaaS also
accepted a bare `Authorization: <key>` (curl examples). Any one of them carrying the key is enough.
"""

from __future__ import annotations

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
