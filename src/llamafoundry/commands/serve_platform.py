"""What `llamafoundry serve` adds for the platform: the store's deployments, the management API and its admin
key, bearer tokens for managed deployments, and TLS."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llamafoundry.commands.common import console
from llamafoundry.config import ServeSettings
from llamafoundry.settings import ServeOptions, env_name

if TYPE_CHECKING:
    from fastapi import APIRouter

    from llamafoundry.platform.gateway import Gateway
    from llamafoundry.platform.store import Store
    from llamafoundry.platform.tls import LocalTls
    from llamafoundry.platform.tokens import TokenVerifier
    from llamafoundry.service.backend import ChatBackend

API_KEY_ENV = env_name("api_key")  # how replicas get their key: never on a command line


@dataclass
class Tls:
    """How the server listens: uvicorn's TLS arguments (none: HTTP), and the local CA of `--tls auto`."""

    uvicorn: dict[str, Any]
    local: LocalTls | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.uvicorn else "http"


def tls_options(options: ServeOptions, home: Path) -> Tls:
    """`--tls auto`, or both of --tls-cert and --tls-key, or neither (HTTP)."""
    if options.tls == "auto":
        if options.tls_cert is not None or options.tls_key is not None:
            raise ValueError("--tls auto makes its own certificate: leave out --tls-cert and --tls-key.")
        from llamafoundry.platform.tls import ensure_local_tls

        local = ensure_local_tls(home / "tls", options.host)
        return Tls({"ssl_certfile": str(local.server_cert), "ssl_keyfile": str(local.server_key)}, local)
    return Tls(_given_certificate(options))


def _given_certificate(options: ServeOptions) -> dict[str, Any]:
    """uvicorn's TLS arguments for --tls-cert/--tls-key; both files or neither."""
    if (options.tls_cert is None) != (options.tls_key is None):
        raise ValueError("Give both --tls-cert and --tls-key to serve HTTPS, or neither for HTTP.")
    if options.tls_cert is None or options.tls_key is None:
        return {}
    for flag, path in (("--tls-cert", options.tls_cert), ("--tls-key", options.tls_key)):
        if not path.is_file():
            raise FileNotFoundError(f"{flag} {path}: no such file. Pass a PEM file.")
    try:  # what uvicorn will do, now: a wrong pair is a sentence before anything starts, not a traceback after
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(options.tls_cert, options.tls_key)
    except ssl.SSLError as exc:
        raise ValueError(
            f"--tls-cert {options.tls_cert} and --tls-key {options.tls_key} do not load ({exc.reason or exc}): give a "
            "PEM certificate and its own private key, unencrypted."
        ) from None
    return {"ssl_certfile": str(options.tls_cert), "ssl_keyfile": str(options.tls_key)}


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

    def build(self, service: ChatBackend | None, settings: ServeSettings) -> tuple[Gateway, APIRouter]:
        """The gateway (the server's own model, if any, and the deployments) and the management routes."""
        from llamafoundry.api.management import management_router
        from llamafoundry.platform.backends import local_backend_factory
        from llamafoundry.platform.content_safety import with_content_safety
        from llamafoundry.platform.downloads import DownloadWorker
        from llamafoundry.platform.gateway import Gateway, Target, single_key_policy

        default = None
        if service is not None:
            default = Target(service, single_key_policy(settings.api_key), default_name=settings.model_name)
        # each deployment's content filter, by its policy; guards are looked up in this gateway
        factory = local_backend_factory(self.home, engine=settings.engine)
        backends = with_content_safety(factory, lambda name: gateway.resolve(name), self.home)
        downloads = DownloadWorker(self.store, self.home / "models")  # the deployments' weights, in the background
        gateway = Gateway(default, self.store, backends, self.verifier, downloads=downloads)
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
            issuers = ", ".join(self.verifier.issuers)
            console.print(f"Managed deployments also accept bearer tokens of {issuers} checked against "
                          f"{self.verifier.jwks.location} (audience {self.verifier.audience}), as their projects "
                          "grant (`llamafoundry project grant`).", soft_wrap=True, highlight=False)  # fmt: skip


def open_platform(options: ServeOptions, home: Path, settings: ServeSettings, scheme: str) -> Platform:
    """Open the store (migrating it), make sure there is an admin key, and read the token issuer's settings."""
    from llamafoundry.platform.deployments import ensure_admin_key
    from llamafoundry.platform.keys import hash_key
    from llamafoundry.platform.server_keys import check_own_key
    from llamafoundry.platform.store import Store
    from llamafoundry.platform.tokens import AZURE_ML_AUDIENCE, JwksSource, TokenError, TokenVerifier, token_issuers

    store = Store.open(home, options.database_url)
    if not options.no_default:  # the server's own key must not open a deployment too (before an admin key is made)
        check_own_key(store, hash_key(settings.api_key))
    jwks = options.jwks
    verifier = None
    if jwks:
        issuers = token_issuers(options.token_issuer)  # before the JWKS is read: a missing issuer is the first error
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
        verifier = TokenVerifier(source, options.token_audience or AZURE_ML_AUDIENCE, ",".join(issuers))
    return Platform(
        store=store,
        home=home,
        verifier=verifier,
        new_admin_key=ensure_admin_key(store),
        scheme=scheme,
        settings=settings,
    )
