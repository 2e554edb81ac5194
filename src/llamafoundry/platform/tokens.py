"""Entra-ID-style bearer tokens for managed-compute deployments: RS256 or ES256 JWTs checked against an issuer's JWKS.

A token is accepted when its algorithm is RS256 or ES256 (never `none`, never an HMAC: a public key used as an HMAC
secret would let anyone sign), its signature verifies with the JWKS key its header names (`kid`), its issuer
(`iss`) is one of the configured issuers (required: a server with --jwks and no --token-issuer does not start), it
has not expired (`exp`, required), it is already valid (`nbf`, when present), and its audience (`aud`) is the
configured one, by default `https://ml.azure.com`, the resource the Azure SDKs request tokens for
(`https://ml.azure.com/.default`). Which tokens open which deployments is then the projects' grants'
(`platform.projects.Grant`).

The JWKS comes from a file (re-read when it changes) or a URL (cached for 5 minutes, fetched again at once for
an unknown `kid`, at most every 30 seconds), so an issuer's key rotation is picked up without a restart.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt

AZURE_ML_AUDIENCE = "https://ml.azure.com"
ALGORITHMS = ["RS256", "ES256"]
URL_CACHE_S = 300.0
URL_REFRESH_COOLDOWN_S = 30.0
LEEWAY_S = 60  # clock skew allowed on exp and nbf (Microsoft's validators allow 5 minutes; one is enough on one host)
_JWT_SHAPE = re.compile(r"^eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")


class TokenError(Exception):
    """A token that is not accepted; the message says why (for the server log, never for the caller)."""


def looks_like_jwt(value: str) -> bool:
    """Three base64url segments starting `eyJ`: what a bearer token is, as opposed to a 32-character key."""
    return bool(_JWT_SHAPE.match(value))


@dataclass(frozen=True)
class TokenClaims:
    subject: str | None
    object_id: str | None
    issuer: str | None
    claims: dict[str, Any]


class JwksSource:
    """The issuer's signing keys, from a file path or an http(s) URL."""

    def __init__(self, location: str, *, verify_tls: bool | str = True) -> None:
        self.location = location
        self.is_url = location.startswith(("http://", "https://"))
        self.verify_tls = verify_tls
        self._keys: jwt.PyJWKSet | None = None
        self._stamp: float | None = None  # file mtime, or the time of the last URL fetch
        self._lock = threading.Lock()
        if not self.is_url and not Path(location).is_file():
            raise ValueError(f"--jwks {location}: no such file. Give a JWKS file or an https:// URL.")

    def check(self) -> None:
        """Read the keys now. Raises TokenError when they cannot be read: at startup, a wrong --jwks (a PEM file,
        an unreachable URL) is then a sentence instead of every token refused without a word."""
        with self._lock:
            self._load()

    def key(self, kid: str | None) -> jwt.PyJWK:
        with self._lock:
            keys = self._current()
            found = _find(keys, kid)
            if found is None and self.is_url and time.time() - (self._stamp or 0) >= URL_REFRESH_COOLDOWN_S:
                keys = self._load()  # a key rotated in since the last fetch
                found = _find(keys, kid)
        if found is None:
            raise TokenError(f"no key with kid {kid!r} in the JWKS at {self.location}")
        return found

    def _current(self) -> jwt.PyJWKSet:
        if self._keys is None:
            return self._load()
        if self.is_url:
            stale = time.time() - (self._stamp or 0) >= URL_CACHE_S
        else:
            stale = Path(self.location).stat().st_mtime != self._stamp
        return self._load() if stale else self._keys

    def _load(self) -> jwt.PyJWKSet:
        try:
            if self.is_url:
                response = httpx.get(self.location, timeout=10, verify=self.verify_tls)
                response.raise_for_status()
                data, stamp = response.json(), time.time()
            else:
                path = Path(self.location)
                stamp = path.stat().st_mtime
                data = json.loads(path.read_text())
            keys = jwt.PyJWKSet.from_dict(data)
        except (OSError, ValueError, httpx.HTTPError, jwt.PyJWKSetError) as exc:
            if self._keys is not None:
                return self._keys  # keep serving with the keys we had
            raise TokenError(f"cannot read the JWKS at {self.location}: {exc}") from None
        self._keys, self._stamp = keys, stamp
        return keys


def token_issuers(issuer: str | None) -> list[str]:
    """The issuers of `--token-issuer` (comma-separated). Raises ValueError, a sentence, when there is none."""
    issuers = [part.strip() for part in (issuer or "").split(",") if part.strip()]
    if not issuers:
        raise ValueError(
            "--jwks needs --token-issuer: without it a token signed by any key in that JWKS, for any tenant, would "
            "be accepted. Give the issuer your tokens carry in 'iss' (for Entra ID: "
            "https://login.microsoftonline.com/<tenant-id>/v2.0, or https://sts.windows.net/<tenant-id>/ for v1 "
            "tokens; several separated by commas)."
        )
    return issuers


def _find(keys: jwt.PyJWKSet, kid: str | None) -> jwt.PyJWK | None:
    for key in keys.keys:
        if kid is None or key.key_id == kid:
            return key
    return None


class TokenVerifier:
    """Checks bearer tokens.

    Args:
        jwks: where the issuer's keys are (file path or URL).
        audience: the `aud` a token must carry.
        issuer: the `iss` a token must carry: one issuer, or several separated by commas (required).
    """

    def __init__(self, jwks: JwksSource, audience: str = AZURE_ML_AUDIENCE, issuer: str | None = None) -> None:
        self.jwks = jwks
        self.audience = audience
        self.issuers = token_issuers(issuer)

    def verify(self, token: str) -> TokenClaims:
        """The token's claims. Raises TokenError when it is not accepted. May fetch the JWKS (blocking)."""
        try:
            header = jwt.get_unverified_header(token)
            if header.get("alg") not in ALGORITHMS:
                raise TokenError(f"algorithm {header.get('alg')!r} is not accepted; tokens must be RS256 or ES256")
            key = self.jwks.key(header.get("kid"))
            claims = jwt.decode(
                token,
                key,
                algorithms=ALGORITHMS,
                audience=self.audience,
                issuer=self.issuers,
                leeway=LEEWAY_S,
                options={"require": ["exp", "aud", "iss"]},
            )
        except jwt.PyJWTError as exc:
            raise TokenError(f"token rejected: {exc}") from None
        return TokenClaims(claims.get("sub"), claims.get("oid"), claims.get("iss"), claims)
