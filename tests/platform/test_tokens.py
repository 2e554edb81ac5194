"""Entra-ID-style tokens: RS256/ES256 JWTs checked against a JWKS for algorithm, signature, issuer, expiry,
not-before and audience."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from llamafoundry.platform.tokens import AZURE_ML_AUDIENCE, JwksSource, TokenError, TokenVerifier, looks_like_jwt

ISSUER = "https://login.example/tenant"


class Issuer:
    """A test identity provider: RSA keys, their JWKS, and tokens signed with them."""

    def __init__(self, kid: str = "key-1") -> None:
        self.kid = kid
        self.private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwks(self) -> dict[str, Any]:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.private_key.public_key()))
        return {"keys": [{**jwk, "kid": self.kid, "use": "sig", "alg": "RS256"}]}

    def token(self, **claims: Any) -> str:
        now = int(time.time())
        body = {"aud": AZURE_ML_AUDIENCE, "iss": ISSUER, "sub": "user-1", "oid": "oid-1",
                "iat": now, "nbf": now - 5, "exp": now + 3600, **claims}  # fmt: skip
        body = {k: v for k, v in body.items() if v is not None}
        return jwt.encode(body, self.private_key, algorithm="RS256", headers={"kid": self.kid})


@pytest.fixture(scope="module")
def issuer() -> Issuer:
    return Issuer()


@pytest.fixture
def verifier(issuer: Issuer, tmp_path: Path) -> TokenVerifier:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(issuer.jwks()))
    return TokenVerifier(JwksSource(str(path)), issuer=ISSUER)


def test_a_valid_token_is_accepted(issuer: Issuer, verifier: TokenVerifier) -> None:
    claims = verifier.verify(issuer.token())
    assert claims.subject == "user-1" and claims.object_id == "oid-1"


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"exp": int(time.time()) - 3600}, "expired"),
        ({"nbf": int(time.time()) + 3600}, "not yet valid"),
        ({"aud": "https://cognitiveservices.azure.com"}, "(?i)audience"),
        ({"aud": None}, "aud"),
        ({"exp": None}, "exp"),
    ],
)
def test_bad_claims_are_refused(issuer: Issuer, verifier: TokenVerifier, claims: dict[str, Any], reason: str) -> None:
    with pytest.raises(TokenError, match=reason):
        verifier.verify(issuer.token(**claims))


def test_a_token_signed_by_another_key_is_refused(verifier: TokenVerifier) -> None:
    with pytest.raises(TokenError, match="[Ss]ignature"):
        verifier.verify(Issuer("key-1").token())  # same kid, different key


def test_an_unknown_kid_is_refused(verifier: TokenVerifier) -> None:
    with pytest.raises(TokenError, match="no key with kid"):
        verifier.verify(Issuer("other-kid").token())


def test_other_algorithms_are_refused(issuer: Issuer, verifier: TokenVerifier) -> None:
    token = jwt.encode({"aud": AZURE_ML_AUDIENCE, "exp": int(time.time()) + 60}, "s" * 32, algorithm="HS256")
    with pytest.raises(TokenError, match="RS256"):
        verifier.verify(token)


def test_the_issuer_is_checked(issuer: Issuer, verifier: TokenVerifier) -> None:
    verifier.verify(issuer.token())
    with pytest.raises(TokenError, match="(?i)issuer"):
        verifier.verify(issuer.token(iss="https://evil.example"))
    with pytest.raises(TokenError, match="iss"):
        verifier.verify(issuer.token(iss=None))


def test_an_issuer_is_required(issuer: Issuer, tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(issuer.jwks()))
    with pytest.raises(ValueError, match="--jwks needs --token-issuer"):
        TokenVerifier(JwksSource(str(path)))
    several = TokenVerifier(JwksSource(str(path)), issuer=f"https://other.example, {ISSUER}")
    assert several.verify(issuer.token()).subject == "user-1"


def _unsigned(claims: dict[str, Any], header: dict[str, Any]) -> str:
    import base64

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part(header)}.{part(claims)}."


def test_alg_none_and_hs256_signed_with_the_public_key_are_refused(issuer: Issuer, verifier: TokenVerifier) -> None:
    claims = jwt.decode(issuer.token(), options={"verify_signature": False})
    with pytest.raises(TokenError, match="algorithm 'none'"):
        verifier.verify(_unsigned(claims, {"alg": "none", "typ": "JWT", "kid": issuer.kid}))
    # the classic confusion: the issuer's public key (which anyone can fetch) used as an HMAC secret
    public_pem = issuer.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "typ": "JWT", "kid": issuer.kid}
    signing_input = _unsigned(claims, header)[:-1].encode()
    signature = hmac.new(public_pem, signing_input, hashlib.sha256).digest()
    forged = signing_input.decode() + "." + base64.urlsafe_b64encode(signature).rstrip(b"=").decode()
    with pytest.raises(TokenError, match="algorithm 'HS256'"):
        verifier.verify(forged)


def test_es256_tokens_are_accepted(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [{**jwk, "kid": "ec-1", "use": "sig", "alg": "ES256"}]}))
    now = int(time.time())
    claims = {"aud": AZURE_ML_AUDIENCE, "iss": ISSUER, "sub": "user-2", "iat": now, "exp": now + 600}
    token = jwt.encode(claims, key, algorithm="ES256", headers={"kid": "ec-1"})
    assert TokenVerifier(JwksSource(str(path)), issuer=ISSUER).verify(token).subject == "user-2"


def test_a_rotated_jwks_file_is_read_again(issuer: Issuer, tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(issuer.jwks()))
    verifier = TokenVerifier(JwksSource(str(path)), issuer=ISSUER)
    verifier.verify(issuer.token())
    rotated = Issuer("key-2")
    path.write_text(json.dumps(rotated.jwks()))
    later = time.time() + 5
    import os

    os.utime(path, (later, later))
    verifier.verify(rotated.token())
    with pytest.raises(TokenError):
        verifier.verify(issuer.token())


@pytest.fixture
def jwks_url(issuer: Issuer) -> Iterator[str]:
    body = json.dumps(issuer.jwks()).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/discovery/keys"
    server.shutdown()


def test_the_jwks_can_come_from_a_url(issuer: Issuer, jwks_url: str) -> None:
    assert TokenVerifier(JwksSource(jwks_url), issuer=ISSUER).verify(issuer.token()).subject == "user-1"


def test_a_missing_jwks_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no such file"):
        JwksSource(str(tmp_path / "missing.json"))


def test_jwt_shape(issuer: Issuer) -> None:
    assert looks_like_jwt(issuer.token())
    assert not looks_like_jwt("0123456789abcdef0123456789abcdef")
    assert not looks_like_jwt("eyJ.only-two")
