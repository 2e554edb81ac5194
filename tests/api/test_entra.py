"""Entra-ID-style tokens over HTTPS with the real SDK: `ChatCompletionsClient(endpoint, TokenCredential)` against
`serve --tls-cert/--tls-key --jwks --token-issuer`. Managed-compute deployments accept valid RS256 tokens for
https://ml.azure.com of the configured issuer, as their project grants them (to a subject, a group or an app
role); serverless deployments answer any token with the 401 body, as Azure does."""

from __future__ import annotations

import datetime
import ipaddress
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from azure.ai.inference import ChatCompletionsClient
from azure.ai.inference.models import UserMessage
from azure.core.credentials import AccessToken, AzureKeyCredential
from azure.core.exceptions import ClientAuthenticationError
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from tests.api.conftest import API_KEY, Server
from tests.api.deployment_fixtures import Gateway, chat, cli_json, start_gateway
from tests.platform.test_tokens import ISSUER, Issuer

pytestmark = pytest.mark.slow


class StaticCredential:
    """A TokenCredential (what DefaultAzureCredential is) that hands out one prepared token."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken(self.token, int(time.time()) + 3600)


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


@dataclass
class Setup:
    gateway: Gateway
    issuer: Issuer
    keys: dict[str, str]
    ca_path: Path  # the self-signed certificate, trusted as its own CA: TLS is verified, not switched off


@pytest.fixture(scope="module")
def setup(server: Server, tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    home = tmp_path_factory.mktemp("entra-home")
    issuer = Issuer("entra-key")
    (home / "jwks.json").write_text(json.dumps(issuer.jwks()))
    upstream = ["--upstream", server.url, "--upstream-key", API_KEY]
    managed = cli_json(home, "deploy", "create", "managed-chat", "--model", "Meta-Llama-3.1-8B-Instruct",
                       "--type", "managed", *upstream)  # fmt: skip
    serverless = cli_json(home, "deploy", "create", "serverless-chat", "--model", "Meta-Llama-3.1-70B-Instruct",
                          *upstream)  # fmt: skip
    cli_json(home, "project", "grant", "default", "--subject", "oid-1")  # the Issuer's tokens' default oid
    cli_json(home, "project", "create", "team-b")
    cli_json(home, "deploy", "create", "managed-b", "--model", "Meta-Llama-3.1-8B-Instruct", "--type", "managed",
             "--project", "team-b", *upstream)  # fmt: skip
    cli_json(home, "project", "grant", "team-b", "--group", "group-b")
    cli_json(home, "project", "grant", "team-b", "--app-role", "Chat.Invoke", "--deployments", "managed-b")
    cert, key = self_signed_cert(home)
    gateway = start_gateway(home, tiny_model_path, "--jwks", str(home / "jwks.json"), "--token-issuer", ISSUER,
                            tls=(cert, key))  # fmt: skip
    keys = {"managed-chat": managed["primary_key"], "serverless-chat": serverless["primary_key"]}
    yield Setup(gateway, issuer, keys, cert)
    gateway.stop()


def sdk(setup: Setup, name: str, credential: Any) -> ChatCompletionsClient:
    endpoint = f"{setup.gateway.url}/deployments/{name}"
    return ChatCompletionsClient(endpoint, credential, connection_verify=str(setup.ca_path))


def test_a_managed_deployment_accepts_an_entra_token_from_the_sdk(setup: Setup) -> None:
    credential = StaticCredential(setup.issuer.token())
    client = sdk(setup, "managed-chat", credential)
    response = client.complete(messages=[UserMessage("Hi!")], max_tokens=3)
    assert response.model == "Meta-Llama-3.1-8B-Instruct" and response.usage.completion_tokens == 3
    assert client.get_model_info().model_name == "Meta-Llama-3.1-8B-Instruct"
    assert credential.scopes[0] == ("https://ml.azure.com/.default",)  # the resource the SDK asks a token for


def test_keys_still_work_over_https(setup: Setup) -> None:
    client = sdk(setup, "managed-chat", AzureKeyCredential(setup.keys["managed-chat"]))
    response = client.complete(messages=[UserMessage("Hi!")], max_tokens=2)
    assert response.usage.completion_tokens >= 1  # random weights: the text itself may be empty


def test_a_serverless_deployment_rejects_tokens_with_the_401_body(setup: Setup) -> None:
    client = sdk(setup, "serverless-chat", StaticCredential(setup.issuer.token()))
    with pytest.raises(ClientAuthenticationError, match="(?i)auth token validation failed") as refused:
        client.complete(messages=[UserMessage("Hi!")])
    assert refused.value.status_code == 401
    assert sdk(setup, "serverless-chat", AzureKeyCredential(setup.keys["serverless-chat"])).get_model_info()


@pytest.mark.parametrize(
    "claims",
    [
        {"exp": int(time.time()) - 600},  # expired (beyond the clock-skew allowance)
        {"nbf": int(time.time()) + 600},  # not valid yet
        {"aud": "https://cognitiveservices.azure.com"},  # a token for another resource
    ],
)
def test_invalid_tokens_are_refused(setup: Setup, claims: dict[str, Any]) -> None:
    client = sdk(setup, "managed-chat", StaticCredential(setup.issuer.token(**claims)))
    with pytest.raises(ClientAuthenticationError):
        client.complete(messages=[UserMessage("Hi!")])


def test_a_token_from_another_issuer_is_refused(setup: Setup) -> None:
    forged = Issuer("entra-key").token()  # same kid, different private key
    with pytest.raises(ClientAuthenticationError):
        sdk(setup, "managed-chat", StaticCredential(forged)).complete(messages=[UserMessage("Hi!")])


def test_tokens_do_not_open_the_servers_own_model(setup: Setup) -> None:
    url = f"{setup.gateway.url}/chat/completions"
    assert chat(url, setup.issuer.token()).status_code == 401
    assert chat(url, API_KEY).status_code == 200


def forged(issuer: Issuer, alg: str) -> str:
    """A token of `issuer`'s claims, unsigned (`alg: none`) or HMAC-signed with its public key as the secret."""
    import base64
    import hashlib
    import hmac

    from cryptography.hazmat.primitives import serialization as ser

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    claims = __import__("jwt").decode(issuer.token(), options={"verify_signature": False})
    signing_input = f"{part({'alg': alg, 'typ': 'JWT', 'kid': issuer.kid})}.{part(claims)}"
    if alg == "none":
        return signing_input + "."
    secret = issuer.private_key.public_key().public_bytes(ser.Encoding.PEM, ser.PublicFormat.SubjectPublicKeyInfo)
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + base64.urlsafe_b64encode(signature).rstrip(b"=").decode()


@pytest.mark.parametrize(
    "token",
    [
        lambda issuer: issuer.token(iss="https://login.example/another-tenant"),  # wrong issuer
        lambda issuer: issuer.token(aud="api://someone-else"),  # wrong audience
        lambda issuer: issuer.token(exp=int(time.time()) - 600),  # expired
        lambda issuer: forged(issuer, "none"),  # alg: none
        lambda issuer: forged(issuer, "HS256"),  # HS256 with the public key as the secret
        lambda issuer: issuer.token(oid="oid-2", sub="user-2"),  # valid, but its subject has no grant
        lambda issuer: issuer.token(oid="oid-9", sub="user-9", groups=["group-b"]),  # granted in another project
    ],
    ids=["wrong-issuer", "wrong-audience", "expired", "alg-none", "hs256-public-key", "no-grant", "other-project"],
)
def test_tokens_the_managed_deployment_refuses(setup: Setup, token: Any) -> None:
    url = f"{setup.gateway.url}/deployments/managed-chat/chat/completions"
    headers = {"Authorization": f"Bearer {token(setup.issuer)}"}
    body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    refused = httpx.post(url, json=body, headers=headers, verify=str(setup.ca_path))
    assert refused.status_code == 401 and refused.json()["message"].startswith("Auth token validation failed")


def test_grants_open_their_own_projects_deployments_only(setup: Setup) -> None:
    def status(name: str, **claims: Any) -> int:
        url = f"{setup.gateway.url}/deployments/{name}/chat/completions"
        token = setup.issuer.token(**{"oid": "oid-9", "sub": "user-9", **claims})
        return chat(url, token, {"Authorization": f"Bearer {token}"}).status_code

    assert status("managed-b", groups=["group-b"]) == 200  # the group team-b grants
    assert status("managed-b", roles=["Chat.Invoke"]) == 200  # the app role team-b grants for managed-b
    assert status("managed-b", oid="oid-1") == 401  # granted in project default, not in team-b
    assert status("managed-chat", oid="oid-1") == 200
    assert status("managed-chat", groups=["group-b"], roles=["Chat.Invoke"]) == 401
