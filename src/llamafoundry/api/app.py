"""The ASGI application: routes, error handlers, request context, and the model's lifecycle.

uvicorn accepts connections only once lifespan startup returns, so the model is loaded in a background task:
`/health` answers 503 while it loads (and again while the server drains), and chat requests get 503 with
`Retry-After` until it is ready.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Protocol

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from llamafoundry import __version__
from llamafoundry.api.auth import AuthError
from llamafoundry.api.drain import Drain
from llamafoundry.api.errors import error_response, json_response, unauthorized_response
from llamafoundry.api.inference import inference_router
from llamafoundry.api.management_audit import AuditMiddleware
from llamafoundry.api.middleware import RequestContextMiddleware
from llamafoundry.api.openapi import install_docs
from llamafoundry.api.portal import OwnModel, portal_router
from llamafoundry.api.usage import install_accounting
from llamafoundry.config import ServeSettings
from llamafoundry.hardware.decode_check import ModelCrashError
from llamafoundry.platform.gateway import Gateway, Target, single_key_policy
from llamafoundry.platform.replicas import MODEL_LOAD_FAILED
from llamafoundry.protocol.errors import ApiError, not_found

if TYPE_CHECKING:
    from llamafoundry.api.limits import Accounting
    from llamafoundry.service.backend import ChatBackend

logger = logging.getLogger(__name__)
STORE_RETRY_AFTER_S = 5


class LoadableModel(Protocol):
    """What the lifecycle needs of the server's own model: a `ChatBackend`, or `NoDefaultModel` without one."""

    @property
    def model_name(self) -> str: ...

    @property
    def is_ready(self) -> bool: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class ModelLifecycle:
    """Starts the service in the background and stops it on shutdown; tells /health where it stands."""

    def __init__(self, service: LoadableModel) -> None:
        self.service = service
        self.start_task: asyncio.Task[None] | None = None
        self.load_error: BaseException | None = None
        self.drain = Drain()

    def begin_start(self) -> None:
        self.start_task = asyncio.create_task(self._start())

    async def _start(self) -> None:
        started = time.monotonic()
        try:
            await self.service.start()
            logger.info("model %s is ready (loaded in %.2f s)", self.service.model_name, time.monotonic() - started)
        except ModelCrashError as exc:  # a sentence with the cause and the fix: no traceback to read
            self.load_error = exc
            logger.error("the model cannot run here; the server will answer 503 until restarted: %s", exc)
        except Exception as exc:
            self.load_error = exc
            logger.exception("the model failed to load; the server will answer 503 until restarted")

    @property
    def is_draining(self) -> bool:
        return self.drain.is_draining

    def load_error_message(self) -> str:
        if isinstance(self.load_error, ModelCrashError):
            return f"{self.load_error} Then restart the server."
        return "The model failed to load; see the server log, fix the cause and restart the server."

    async def shutdown(self) -> None:
        self.drain.is_draining = True
        if self.start_task is not None and not self.start_task.done():
            await self.start_task  # a half-loaded model cannot be stopped cleanly: let the load finish
        try:
            await self.service.stop()
        except Exception:
            logger.exception("stopping the model failed")

    def health(self) -> Response:
        if self.service.is_ready and not self.is_draining:
            return json_response({"status": "ready", "model": self.service.model_name})
        if self.load_error is not None:
            return error_response(ApiError(503, MODEL_LOAD_FAILED, self.load_error_message()))
        if self.is_draining:
            return error_response(ApiError(503, "ServiceUnavailable", "The server is shutting down.", retry_after=5))
        return error_response(ApiError(
            503, "ServiceUnavailable", "The model is loading; retry in a few seconds.", retry_after=5
        ))


def create_app(
    service: ChatBackend | None,
    settings: ServeSettings,
    accounting: Accounting | None = None,
    *,
    gateway: Gateway | None = None,
    management: APIRouter | None = None,
) -> FastAPI:
    """The Azure AI Model Inference API for the server's own model and the store's deployments.

    Args:
        service: the server's own model (the bare routes), or None (`serve --no-default`); started in the
            background at startup, stopped (drained) at shutdown.
        settings: the API key and the deployment name (`/deployments/<name>` routes).
        accounting: rate limits, metering and metrics (default: built from `settings`, not metered).
        gateway: the served targets (default: `service` alone, under `settings.api_key`); started and stopped
            with the app.
        management: the `/management` routes, when the server has a store.
    """
    gateway = gateway or default_gateway(service, settings)
    lifecycle = ModelLifecycle(service or NoDefaultModel())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await accounting_.start()
        lifecycle.begin_start()
        await gateway.start()
        try:
            yield
        finally:
            await gateway.stop()
            await lifecycle.shutdown()
            await accounting_.stop()  # after the drain: the last streams are metered too

    # /openapi.json and /docs are `install_docs`' own (Swagger UI served offline, bodies described by hand)
    app = FastAPI(title="llamafoundry", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.lifecycle = lifecycle
    app.state.gateway = gateway
    app.state.drain = lifecycle.drain  # `serve` begins it when the server starts to stop
    app.state.stream_keepalive_s = settings.stream_keepalive_s or None
    if management is not None:
        app.add_middleware(AuditMiddleware)  # records /management changes in the store
    accounting_ = install_accounting(app, service, settings, accounting)  # inside RequestContextMiddleware
    app.add_middleware(RequestContextMiddleware)
    _add_error_handlers(app)

    async def health(request: Request) -> Response:
        return lifecycle.health()

    app.add_api_route("/health", health, methods=["GET"], include_in_schema=False)
    app.include_router(inference_router(gateway, settings))
    if management is not None:
        app.include_router(management)
        own_model = OwnModel(settings.model_name, settings.api_key) if service is not None else None
        app.include_router(portal_router(own_model))  # /portal: a client of /management and the inference routes
    install_docs(app, __version__)
    return app


def default_gateway(service: ChatBackend | None, settings: ServeSettings) -> Gateway:
    """A gateway serving `service` alone (no store), with `settings.api_key`."""
    if service is None:
        return Gateway(None)
    return Gateway(Target(service, single_key_policy(settings.api_key), default_name=settings.model_name))


class NoDefaultModel:
    """Stands in for the server's own model under `serve --no-default`: always ready, nothing to load."""

    model_name = "none (--no-default)"
    is_ready = True

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


def _add_error_handlers(app: FastAPI) -> None:
    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return error_response(exc)

    async def auth_error(request: Request, exc: Exception) -> Response:
        return unauthorized_response()

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            return error_response(not_found(f"Resource not found: {request.url.path}."))
        if exc.status_code == 405:
            allowed = (exc.headers or {}).get("Allow", "")
            message = f"Method {request.method} is not allowed on {request.url.path}; use {allowed}."
            return error_response(ApiError(405, "MethodNotAllowed", message, headers={"Allow": allowed}))
        return error_response(ApiError(exc.status_code, "HttpError", str(exc.detail)))

    async def request_validation_error(request: Request, exc: Exception) -> Response:
        return error_response(ApiError(400, "invalid_request", "The request is not valid."))

    async def store_error(request: Request, exc: Exception) -> Response:
        """The database is down or unreachable (a management call, a usage report): a 503 to retry, not a 500."""
        logger.warning("%s %s: the store cannot be reached: %s", request.method, request.url.path,
                       str(exc).splitlines()[0])  # fmt: skip
        message = "The server's store (its database) cannot be reached right now; retry shortly."
        return error_response(ApiError(503, "ServiceUnavailable", message, retry_after=STORE_RETRY_AFTER_S))

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(AuthError, auth_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, request_validation_error)
    app.add_exception_handler(OperationalError, store_error)
    app.add_exception_handler(InterfaceError, store_error)
