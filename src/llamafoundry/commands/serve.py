"""`llamafoundry serve`."""

from __future__ import annotations

import argparse
import contextlib
import errno
import faulthandler
import logging
import math
import socket
from pathlib import Path
from typing import TYPE_CHECKING

from llamafoundry import logs
from llamafoundry.commands.serve_banner import Banner, print_banner
from llamafoundry.commands.serve_model import ModelChoice, resolve_model
from llamafoundry.commands.serve_options import DEFAULT_MAX_CTX, serve_parser, serve_settings
from llamafoundry.commands.serve_platform import check_redis, open_platform, tls_options
from llamafoundry.commands.store_options import data_home
from llamafoundry.config import EngineSettings, ServeSettings, default_prefix_cache_ram, generate_api_key, parse_size
from llamafoundry.settings import ServeOptions, default_data_dir

if TYPE_CHECKING:
    from fastapi import APIRouter

    from llamafoundry.api.limits import Accounting
    from llamafoundry.platform.gateway import Gateway
    from llamafoundry.platform.store import Store
    from llamafoundry.safety.chat import ChatSafety
    from llamafoundry.service.backend import ChatBackend

logger = logging.getLogger(__name__)

# Idle keep-alive connections stay open longer than any Retry-After the API sends (a rate limit's is at most 60 s):
# azure-core waits as told and retries on its pooled connection, and with uvicorn's default of 5 s the server
# closed it just as a 503's retry (Retry-After: 5) was sent, so the client got "connection reset" instead of the
# answer.
KEEP_ALIVE_S = 75
STARTUP_FAILURE = 3  # uvicorn's exit status when the server did not start (the app's startup failed)


def register(commands: argparse._SubParsersAction) -> None:
    serve = serve_parser(commands, "serve", help="serve a model behind the Azure AI Model Inference API")
    serve.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from llamafoundry.api.app import create_app
    from llamafoundry.api.drain import DrainingServer

    resolved = serve_settings(args)  # every value checked, with where it came from, before anything starts
    options = resolved.values
    logs.configure(options.log_level, options.log_format)
    # A native crash the start-up decode check did not catch (a kernel only some batch shape reaches) still prints
    # where it happened ("Fatal Python error: Illegal instruction" and the Python stack), not a bare signal.
    faulthandler.enable()
    if args.replica:  # an engine behind a deployment's gateway: it limits, meters and filters, not the replica
        options = options.model_copy(update={"tpm": 0, "rpm": 0, "content_safety": "off"})
    home = default_data_dir() if args.replica else data_home(resolved)  # a replica keeps no state
    settings, service = _settings_and_service(options, home)
    if service is not None and not args.replica:  # a replica's gateway has said it for the deployment
        _warn_if_host_tier_small(settings.engine)
    tls = tls_options(options, home)  # every check that can fail comes before the banners (and a shown-once admin key)
    if settings.redis_url:
        check_redis(settings.redis_url)
    listener = _listen(settings.host, settings.port)
    platform = None if args.replica else open_platform(options, home, settings, tls.scheme)
    accounting = _accounting(settings, platform.store, home) if platform else None
    gateway: Gateway | None = None
    management: APIRouter | None = None
    if platform is not None and accounting is not None:  # accounting exists exactly when a platform does
        gateway, management = platform.build(service, settings)
        management.include_router(_usage_routes(accounting, platform.store))  # /management/usage, admin key
    app = create_app(service, settings, accounting, gateway=gateway, management=management)
    print_banner(Banner(settings, resolved.origin("api_key"), tls, app, has_model=service is not None))
    if platform is not None:
        platform.print_banner()
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_config=None, access_log=False,  # logs.configure's
        timeout_graceful_shutdown=math.ceil(options.shutdown_timeout),  # uvicorn's type: whole seconds
        timeout_keep_alive=KEEP_ALIVE_S, **tls.uvicorn,
    )  # fmt: skip
    server = DrainingServer(config, app.state.drain)
    with contextlib.suppress(KeyboardInterrupt):  # as uvicorn.run: Ctrl-C after the drain is a clean exit
        server.run(sockets=[listener])
    return 0 if server.started else STARTUP_FAILURE


def _settings_and_service(options: ServeOptions, home: Path) -> tuple[ServeSettings, ChatBackend | None]:
    """The server's settings and its own model's chat backend (None with --no-default), the model loaded."""
    from llamafoundry.engine.factory import build_local_engine
    from llamafoundry.safety.backend import FilteredChatBackend
    from llamafoundry.service.chat import ChatService

    if options.no_default:  # the bare routes serve no model of their own; deployments only
        model = ModelChoice(Path("none.gguf"), "none", "llamafoundry")
    else:
        model = resolve_model(options.model, home)
    settings = ServeSettings(
        engine=EngineSettings(
            model_path=model.path,
            ctx_size=options.ctx_size or _default_ctx_size(model.path, options.no_default),
            parallel=options.parallel,
            threads=options.threads,
            batch_size=options.batch_size,
            max_queue=options.max_queue,
            flash_attn=options.flash_attn,
            batch_pad=options.batch_pad,
            speculative_tokens=options.speculative_tokens,
            seed=options.seed,
            gpu_layers=options.gpu_layers,
            kv_cache_type=options.kv_cache_type,
            prefix_cache_ram=_prefix_cache_ram(options.prefix_cache_ram),
            prefix_cache_dir=options.prefix_cache_dir,
            prefix_cache_disk=parse_size(options.prefix_cache_disk),
        ),
        model_name=options.name or model.name,
        model_provider=options.provider or model.provider,
        host=options.host,
        port=options.port,
        api_key=options.api_key or generate_api_key(),
        tokens_per_minute=options.tpm,
        requests_per_minute=options.rpm,
        stream_keepalive_s=options.stream_keepalive,
        redis_url=options.redis_url,
        metrics_key=options.metrics_key,
    )
    if options.no_default:
        return settings, None
    engine = build_local_engine(settings.engine, settings.model_name, settings.model_provider)
    own = ChatService(engine, settings.model_name, settings.model_provider, settings.engine.ctx_size)
    safety = _content_safety(options)
    return settings, FilteredChatBackend(own, lambda: safety)  # the one safety layer deployments have too


def _warn_if_host_tier_small(engine: EngineSettings) -> None:
    """Say so at start-up when `--prefix-cache-ram` cannot hold the slots' worth of this model's KV states."""
    from llamafoundry.platform.errors import DeploymentError
    from llamafoundry.platform.sizing import host_tier_shortfall, model_shape

    try:
        shape = model_shape(engine.model_path)
    except DeploymentError:  # metadata it cannot read: the model's load says what is wrong with the file
        return
    warning = host_tier_shortfall(
        engine.prefix_cache_ram, shape, engine.ctx_size, engine.parallel, engine.kv_cache_type
    )
    if warning:
        logger.warning(warning)


def _prefix_cache_ram(size: str) -> int:
    return default_prefix_cache_ram() if size == "auto" else parse_size(size)


def _listen(host: str, port: int) -> socket.socket:
    """The server's listening socket, bound as uvicorn binds it; a clear error when the address is taken."""
    sock = socket.socket(family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        reason = exc.strerror or str(exc)
        if exc.errno == errno.EADDRINUSE:
            reason += "; another server is listening there: stop it, or pass --port N"
        raise ValueError(f"Cannot listen on {host}:{port}: {reason}.") from None
    return sock


def _content_safety(options: ServeOptions) -> ChatSafety | None:
    """The server's own model's filter: the built-in classifier with a serverless deployment's policy, its
    streaming mode and blocklists from the command line."""
    if options.content_safety != "on":
        return None
    from llamafoundry.safety.base import SafetyPolicy
    from llamafoundry.safety.blocklists import load_blocklist_file
    from llamafoundry.safety.builtin import BuiltinClassifier
    from llamafoundry.safety.chat import ChatSafety

    blocklists = tuple(load_blocklist_file(path) for path in options.content_safety_blocklist)
    streaming = options.content_safety_streaming
    policy = SafetyPolicy.for_deployment("serverless", streaming=streaming, blocklists=blocklists)
    return ChatSafety(BuiltinClassifier(), policy)


def _accounting(settings: ServeSettings, store: Store, home: Path) -> Accounting:
    """Rate limits (in-process, or Redis with --redis-url), budgets, and usage metered into the store's database,
    journaled in the data directory (a server that dies loses no usage: the next one on `home` replays it)."""
    from llamafoundry.api.usage import build_accounting
    from llamafoundry.platform.budgets import BudgetGuard
    from llamafoundry.platform.metering import Meter
    from llamafoundry.platform.usage_journal import JOURNAL_DIR, UsageJournal

    accounting = build_accounting(settings, Meter(store.engine, journal=UsageJournal(home / JOURNAL_DIR)))
    accounting.budgets = BudgetGuard(store)  # the projects' and keys' spend budgets, and their webhooks
    return accounting


def _usage_routes(accounting: Accounting, store: Store) -> APIRouter:
    from llamafoundry.api.usage import usage_router
    from llamafoundry.platform.usage import store_pricing

    return usage_router(accounting, lambda project: store_pricing(store, project), path="/usage")


def _default_ctx_size(model_path: Path, no_model: bool) -> int:
    """The context the model was trained for, capped: a 128k context would reserve gigabytes of KV cache."""
    if no_model:
        return DEFAULT_MAX_CTX
    from llamafoundry.model.llamacpp import LlamaCppVocab

    vocab = LlamaCppVocab(model_path)  # metadata and vocabulary only: no weights are read
    try:
        return min(DEFAULT_MAX_CTX, vocab.n_ctx_train() or DEFAULT_MAX_CTX)
    finally:
        vocab.close()
