"""What `llamafoundry serve` adds for the platform: the store's deployments, the management API and its admin
key, bearer tokens for managed deployments, TLS, and the `--replica` mode of a deployment's engine processes."""

from __future__ import annotations

import argparse
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llamafoundry.commands.common import console
from llamafoundry.config import ServeSettings

if TYPE_CHECKING:
    from fastapi import APIRouter

    from llamafoundry.platform.gateway import Gateway
    from llamafoundry.platform.store import Store
    from llamafoundry.platform.tls import LocalTls
    from llamafoundry.platform.tokens import TokenVerifier
    from llamafoundry.service.chat import ChatService

API_KEY_ENV = "LLAMAFOUNDRY_API_KEY"  # how replicas get their key: never on a command line
DATABASE_URL_ENV = "LLAMAFOUNDRY_DATABASE_URL"
JWKS_ENV = "LLAMAFOUNDRY_JWKS"


def add_platform_options(serve: argparse.ArgumentParser) -> None:
    serve.add_argument("--database-url", default=None, help="postgresql://... holding the deployments "
                       f"(default: ${DATABASE_URL_ENV}, else SQLite in the data directory)")  # fmt: skip
    serve.add_argument("--no-default", action="store_true", help="serve no model of its own: the bare routes and "
                       "/models need the azureml-model-deployment header or the model field")  # fmt: skip
    serve.add_argument("--jwks", default=None, help="JWKS file or URL of the token issuer: managed-compute "
                       f"deployments accept its RS256 tokens (default: ${JWKS_ENV})")  # fmt: skip
    serve.add_argument("--token-issuer", default=None, help="the `iss` tokens must carry (default: any)")
    serve.add_argument("--token-audience", default=None, help="the `aud` tokens must carry "
                       "(default: https://ml.azure.com)")  # fmt: skip
    serve.add_argument("--tls", choices=["auto"], default=None, help="auto: serve HTTPS with a certificate signed "
                       "by a local certificate authority kept in the data directory (created once, reused; the "
                       "banner says how clients trust it)")  # fmt: skip
    serve.add_argument("--tls-cert", type=Path, default=None, help="serve HTTPS with this certificate (PEM)")
    serve.add_argument("--tls-key", type=Path, default=None, help="the certificate's private key (PEM)")
    serve.add_argument("--replica", action="store_true", help=argparse.SUPPRESS)  # a deployment's engine process


@dataclass
class Tls:
    """How the server listens: uvicorn's TLS arguments (none: HTTP), and the local CA of `--tls auto`."""

    uvicorn: dict[str, Any]
    local: LocalTls | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.uvicorn else "http"


def tls_options(args: argparse.Namespace, home: Path) -> Tls:
    """`--tls auto`, or both of --tls-cert and --tls-key, or neither (HTTP)."""
    if args.tls == "auto":
        if args.tls_cert is not None or args.tls_key is not None:
            raise ValueError("--tls auto makes its own certificate: leave out --tls-cert and --tls-key.")
        from llamafoundry.platform.tls import ensure_local_tls

        local = ensure_local_tls(home / "tls", args.host)
        return Tls({"ssl_certfile": str(local.server_cert), "ssl_keyfile": str(local.server_key)}, local)
    return Tls(_given_certificate(args))


def _given_certificate(args: argparse.Namespace) -> dict[str, Any]:
    """uvicorn's TLS arguments for --tls-cert/--tls-key; both files or neither."""
    if (args.tls_cert is None) != (args.tls_key is None):
        raise ValueError("Give both --tls-cert and --tls-key to serve HTTPS, or neither for HTTP.")
    if args.tls_cert is None:
        return {}
    for flag, path in (("--tls-cert", args.tls_cert), ("--tls-key", args.tls_key)):
        if not path.is_file():
            raise FileNotFoundError(f"{flag} {path}: no such file. Pass a PEM file.")
    try:  # what uvicorn will do, now: a wrong pair is a sentence before anything starts, not a traceback after
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(args.tls_cert, args.tls_key)
    except ssl.SSLError as exc:
        raise ValueError(
            f"--tls-cert {args.tls_cert} and --tls-key {args.tls_key} do not load ({exc.reason or exc}): give a PEM "
            "certificate and its own private key, unencrypted."
        ) from None
    return {"ssl_certfile": str(args.tls_cert), "ssl_keyfile": str(args.tls_key)}


def check_redis(url: str) -> None:
    """Raise a sentence now when the rate limits' Redis cannot be reached (not a traceback at startup)."""
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        raise ValueError(
            f"The Redis server for the rate limits cannot be reached at {url} ({exc}). Start it, or fix --redis-url."
        ) from None
    finally:
        client.close()


@dataclass
class Platform:
    """The store-backed part of a server."""

    store: Store
    home: Path
    verifier: TokenVerifier | None
    new_admin_key: str | None
    scheme: str
    settings: ServeSettings

    def build(self, service: ChatService | None, settings: ServeSettings) -> tuple[Gateway, APIRouter]:
        """The gateway (the server's own model, if any, and the deployments) and the management routes."""
        from llamafoundry.api.management import management_router
        from llamafoundry.platform.gateway import Gateway, Target, local_backend_factory, single_key_policy
        from llamafoundry.platform.safety.deployments import with_content_safety

        default = None
        if service is not None:
            default = Target(service, single_key_policy(settings.api_key), default_name=settings.model_name)
        # each deployment's content filter, by its policy; guards are looked up in this gateway
        factory = local_backend_factory(self.home, engine=settings.engine)
        backends = with_content_safety(factory, lambda name: gateway.resolve(name), self.home)
        gateway = Gateway(default, self.store, backends, self.verifier)
        return gateway, management_router(self.store, self.home, gateway)

    def print_banner(self) -> None:
        deployments = self.store.list_deployments()
        url = f"{self.scheme}://{self.settings.host}:{self.settings.port}"
        names = ", ".join(d.name for d in deployments) or "none yet (`llamafoundry deploy create`)"
        console.print(f"Deployments at {url}/deployments/<name>: {names}", soft_wrap=True, highlight=False)
        if self.new_admin_key is not None:
            console.print(f"Admin key for {url}/management (shown once; `llamafoundry deploy admin-key --regenerate` "
                          f"replaces it): [green]{self.new_admin_key}[/green]", soft_wrap=True)  # fmt: skip
        if self.verifier is not None:
            console.print(f"Managed deployments also accept bearer tokens checked against {self.verifier.jwks.location}"
                          f" (audience {self.verifier.audience}).", soft_wrap=True, highlight=False)  # fmt: skip


def open_platform(args: argparse.Namespace, home: Path, settings: ServeSettings, scheme: str) -> Platform:
    """Open the store (migrating it), make sure there is an admin key, and read the token issuer's settings."""
    from llamafoundry.platform.deployments import ensure_admin_key
    from llamafoundry.platform.store import Store
    from llamafoundry.platform.tokens import AZURE_ML_AUDIENCE, JwksSource, TokenError, TokenVerifier

    store = Store.open(home, args.database_url or os.environ.get(DATABASE_URL_ENV))
    jwks = args.jwks or os.environ.get(JWKS_ENV)
    verifier = None
    if jwks:
        source = JwksSource(jwks)
        try:
            source.check()
        except TokenError as exc:
            if not source.is_url:
                raise ValueError(
                    f'--jwks: {exc}. Give the issuer\'s JSON Web Key Set (a JSON object with "keys").'
                ) from None
            console.print(f"[yellow]warning:[/yellow] {exc}; bearer tokens are refused until it answers.",
                          soft_wrap=True, highlight=False)  # fmt: skip
        verifier = TokenVerifier(source, args.token_audience or AZURE_ML_AUDIENCE, args.token_issuer)
    return Platform(
        store=store,
        home=home,
        verifier=verifier,
        new_admin_key=ensure_admin_key(store),
        scheme=scheme,
        settings=settings,
    )
