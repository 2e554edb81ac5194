"""`llamafoundry serve`."""

from __future__ import annotations

import argparse
import contextlib
import errno
import faulthandler
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING

from llamafoundry import logs
from llamafoundry.commands.common import console
from llamafoundry.commands.serve_platform import (
    API_KEY_ENV,
    Tls,
    add_platform_options,
    check_redis,
    open_platform,
    tls_options,
)
from llamafoundry.config import (
    FLASH_ATTN_MODES,
    KV_CACHE_TYPES,
    EngineSettings,
    ServeSettings,
    default_home,
    default_prefix_cache_ram,
    generate_api_key,
    parse_size,
)
from llamafoundry.logs import LOG_FORMATS, LOG_LEVELS

if TYPE_CHECKING:
    from fastapi import APIRouter

    from llamafoundry.api.limits import Accounting
    from llamafoundry.platform.gateway import Gateway
    from llamafoundry.platform.store import Store
    from llamafoundry.service.safety import ChatSafety

DEFAULT_MAX_CTX = 4096
# Idle keep-alive connections stay open longer than any Retry-After the API sends (a rate limit's is at most 60 s):
# azure-core waits as told and retries on its pooled connection, and with uvicorn's default of 5 s the server
# closed it just as a 503's retry (Retry-After: 5) was sent, so the client got "connection reset" instead of the
# answer.
KEEP_ALIVE_S = 75
STARTUP_FAILURE = 3  # uvicorn's exit status when the server did not start (the app's startup failed)


def register(commands: argparse._SubParsersAction) -> None:
    _add_serve(commands)


def _add_serve(commands: argparse._SubParsersAction) -> None:
    serve = commands.add_parser("serve", help="serve a model behind the Azure AI Model Inference API")
    serve.add_argument("--model", type=Path, help="GGUF file to serve (default: the embedded default model)")
    serve.add_argument("--name", help="model name reported by /info and in responses (default: from the file)")
    serve.add_argument("--provider", default=None,
                       help="model_provider_name in /info (default: Meta; the demo model: llamafoundry)")  # fmt: skip
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--api-key", help="key clients must send (default: a generated 32-character key)")
    serve.add_argument(
        "--ctx-size",
        type=int,
        default=None,
        help=f"context of one request, prompt + completion (default: the model's own, at most {DEFAULT_MAX_CTX})",
    )
    serve.add_argument("--parallel", type=int, default=4, help="sequences decoded together (KV cache slots)")
    serve.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    serve.add_argument(
        "--batch-size", type=int, default=1024, help="most tokens per engine step (computed 512 at a time)"
    )
    serve.add_argument("--max-queue", type=int, default=64, help="requests that may wait for a slot")
    serve.add_argument("--shutdown-timeout", type=float, default=10.0, help="seconds running requests get to "
                       "finish when the server stops (Ctrl-C, SIGTERM); then they end with a 503 or an error "
                       "chunk")  # fmt: skip
    serve.add_argument(
        "--flash-attn",
        choices=list(FLASH_ATTN_MODES),
        default="auto",
        help="llama.cpp flash attention (default auto: on for CPUs). off decodes faster at long contexts "
        "(~1,000+ tokens) on CPU, on is faster for short ones; see docs/benchmarks.md",
    )
    serve.add_argument(
        "--batch-pad",
        type=int,
        default=16,
        help="give free slots a throwaway token so decode steps just short of N sequences run as one pass of N "
        "(llama.cpp's CPU kernels on x86 are faster at 16 rows than at 12-15); 0 turns it off",
    )
    serve.add_argument(
        "--speculative-tokens",
        type=int,
        default=15,
        metavar="N",
        help="prompt-lookup speculative decoding: when an answer's newest 9 tokens repeat earlier text (its prompt "
        "or itself), up to N tokens that followed there are checked in one pass (same output, faster when the "
        "answer copies text); 0 turns it off",
    )
    add_kv_cache_options(serve)
    serve.add_argument(
        "--stream-keepalive",
        type=float,
        default=15.0,
        metavar="SECONDS",
        help="a stream that has had no output for this long (a long prompt being computed, a wait for a free "
        "slot) gets an empty chunk, so that proxies and clients do not drop it as idle; 0 turns it off",
    )
    serve.add_argument(
        "--gpu-layers",
        type=int,
        default=0,
        metavar="N",
        help="model layers offloaded to the GPU (needs llama.cpp built with LLAMAFOUNDRY_GPU=cuda|vulkan; "
        "`llamafoundry doctor` shows the backend); default 0: all on the CPU",
    )
    serve.add_argument("--log-level", choices=LOG_LEVELS, default="info", help="the least severe log lines written "
                       "(default info: one access line per request, deployments starting, refused tokens)")  # fmt: skip
    serve.add_argument("--log-format", choices=LOG_FORMATS, default="text", help="text, or json (one object per "
                       "line) for log collectors; replicas log the same way")  # fmt: skip
    serve.add_argument("--data-dir", type=Path, default=None, help="data directory (default: ~/.llamafoundry)")
    serve.add_argument(
        "--tpm", type=int, default=None, help="tokens per minute for the model (default 200000; 0: no limit)"
    )
    serve.add_argument(
        "--rpm", type=int, default=None, help="requests per minute for the model (default 1000; 0: no limit)"
    )
    serve.add_argument(
        "--redis-url", default=None, help="redis://HOST:PORT: rate-limit counters shared by several servers"
    )
    serve.add_argument("--content-safety", choices=["on", "off"], default="on", help="filter prompts and "
                       "completions of the model with the built-in classifier (default: on, like a serverless "
                       "deployment; deployments have their own setting)")  # fmt: skip
    add_platform_options(serve)
    serve.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from llamafoundry.api.app import create_app
    from llamafoundry.api.drain import DrainingServer
    from llamafoundry.engine.factory import build_local_engine
    from llamafoundry.service.chat import ChatService

    logs.configure(args.log_level, args.log_format)
    # A native crash the start-up decode check did not catch (a kernel only some batch shape reaches) still prints
    # where it happened ("Fatal Python error: Illegal instruction" and the Python stack), not a bare signal.
    faulthandler.enable()
    home = args.data_dir or default_home()
    if args.replica:  # an engine behind a deployment's gateway: it limits, meters and filters, not the replica
        args.tpm = args.rpm = 0
        args.content_safety = "off"
    if args.no_default:  # the bare routes serve no model of their own; deployments only
        model_path, default_name, default_provider = Path("none.gguf"), "none", "llamafoundry"
    else:
        model_path, default_name, default_provider = _resolve_model(args.model)
    settings = ServeSettings(
        engine=EngineSettings(
            model_path=model_path,
            ctx_size=args.ctx_size or _default_ctx_size(model_path, args.no_default),
            parallel=args.parallel,
            threads=args.threads,
            batch_size=args.batch_size,
            max_queue=args.max_queue,
            flash_attn=args.flash_attn,
            batch_pad=args.batch_pad,
            speculative_tokens=args.speculative_tokens,
            gpu_layers=args.gpu_layers,
            kv_cache_type=args.kv_cache_type,
            prefix_cache_ram=prefix_cache_ram(args),
            prefix_cache_dir=args.prefix_cache_dir,
            prefix_cache_disk=parse_size(args.prefix_cache_disk),
        ),
        model_name=args.name or default_name,
        model_provider=args.provider or default_provider,
        host=args.host,
        port=args.port,
        api_key=args.api_key or os.environ.get(API_KEY_ENV) or generate_api_key(),
        tokens_per_minute=args.tpm,
        requests_per_minute=args.rpm,
        stream_keepalive_s=args.stream_keepalive,
        redis_url=args.redis_url,
    )
    service = None
    if not args.no_default:
        engine = build_local_engine(settings.engine, settings.model_name, settings.model_provider)
        service = ChatService(
            engine,
            settings.model_name,
            settings.model_provider,
            settings.engine.ctx_size,
            safety=_content_safety(args.content_safety == "on"),
        )
    tls = tls_options(args, home)  # every check that can fail comes before the banners (and a shown-once admin key)
    if settings.redis_url:
        check_redis(settings.redis_url)
    listener = _listen(settings.host, settings.port)
    platform = None if args.replica else open_platform(args, home, settings, tls.scheme)
    accounting = _accounting(settings, platform.store) if platform else None
    if service is not None:
        key_source = "option" if args.api_key else ("environment" if API_KEY_ENV in os.environ else "generated")
        _print_banner(settings, key_source, tls)
    gateway: Gateway | None = None
    management: APIRouter | None = None
    if platform is not None and accounting is not None:  # accounting exists exactly when a platform does
        platform.print_banner()
        gateway, management = platform.build(service, settings)
        management.include_router(_usage_routes(accounting, platform.store))  # /management/usage, admin key
    app = create_app(service, settings, accounting, gateway=gateway, management=management)
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_config=None, access_log=False,  # logs.configure's
        timeout_graceful_shutdown=max(args.shutdown_timeout, 0.0),
        timeout_keep_alive=KEEP_ALIVE_S, **tls.uvicorn,
    )  # fmt: skip
    server = DrainingServer(config, app.state.drain)
    with contextlib.suppress(KeyboardInterrupt):  # as uvicorn.run: Ctrl-C after the drain is a clean exit
        server.run(sockets=[listener])
    return 0 if server.started else STARTUP_FAILURE


def add_kv_cache_options(serve: argparse.ArgumentParser) -> None:
    serve.add_argument("--kv-cache-type", choices=KV_CACHE_TYPES, default="f16", help="element type of the cached "
                       "keys and values: q8_0 holds ~1.9x and q4_0 ~3.6x the tokens of f16 in the same memory "
                       "(llama.cpp's quantized cache; turns flash attention on); see docs/benchmarks.md")  # fmt: skip
    serve.add_argument("--prefix-cache-ram", default="auto", metavar="SIZE", help="host memory for KV states of "
                       "conversations that left their slot, so a returning one restores its history instead of "
                       "computing it again (default auto: a fifth of the machine's memory, at most 8GiB; 0: "
                       "off)")  # fmt: skip
    serve.add_argument("--prefix-cache-dir", type=Path, default=None, metavar="DIR", help="also keep KV states on "
                       "disk here: they survive restarts and are shared by every server using the directory (a "
                       "deployment's replicas)")  # fmt: skip
    serve.add_argument("--prefix-cache-disk", default="16GiB", metavar="SIZE", help="most bytes --prefix-cache-dir "
                       "keeps for this model, all servers together (default 16GiB)")  # fmt: skip


def prefix_cache_ram(args: argparse.Namespace) -> int:
    return default_prefix_cache_ram() if args.prefix_cache_ram == "auto" else parse_size(args.prefix_cache_ram)


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


def _content_safety(enabled: bool) -> ChatSafety | None:
    """The server's own model's filter: the built-in classifier with a serverless deployment's policy."""
    if not enabled:
        return None
    from llamafoundry.platform.safety.base import SafetyPolicy
    from llamafoundry.platform.safety.builtin import BuiltinClassifier
    from llamafoundry.service.safety import ChatSafety

    return ChatSafety(BuiltinClassifier(), SafetyPolicy.for_deployment("serverless"))


def _accounting(settings: ServeSettings, store: Store) -> Accounting:
    """Rate limits (in-process, or Redis with --redis-url) and usage metered into the store's database."""
    from llamafoundry.api.usage import build_accounting
    from llamafoundry.platform.metering import Meter

    return build_accounting(settings, Meter(store.engine))


def _usage_routes(accounting: Accounting, store: Store) -> APIRouter:
    from llamafoundry.api.usage import usage_router
    from llamafoundry.platform.usage import store_pricing

    return usage_router(accounting, lambda: store_pricing(store), path="/usage")


def _resolve_model(model: Path | None) -> tuple[Path, str, str]:
    """The GGUF to serve, its default name and provider: --model, else the built-in demo model."""
    if model is not None:
        if not model.is_file():
            raise FileNotFoundError(f"--model {model}: no such file. Pass the path of a .gguf file.")
        return model, model.stem, "Meta"
    from llamafoundry.model.demo import DEMO_MODEL_NAME, DEMO_MODEL_PROVIDER, demo_model_path

    return demo_model_path(), DEMO_MODEL_NAME, DEMO_MODEL_PROVIDER


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


def _print_banner(settings: ServeSettings, key_source: str, tls: Tls) -> None:
    """Where the server listens and how to call it. A key taken from the environment is not printed: the one who
    set it has it, and this output may go to a log others read (a deployment's replicas log it to a file)."""
    url = f"{tls.scheme}://{settings.host}:{settings.port}"
    console.print(f"[bold]llamafoundry[/bold] serving [cyan]{settings.model_name}[/cyan] at {url}")
    if tls.local is not None:
        console.print(f"HTTPS with a certificate from this data directory's local CA ({tls.local.ca_cert}) for "
                      f"{', '.join(tls.local.names)}. Trust the CA once:", soft_wrap=True, highlight=False)  # fmt: skip
        for line in tls.local.trust_instructions():
            console.print(f"  {line}", soft_wrap=True, highlight=False)
    if key_source == "environment":
        console.print(f"API key: the value of ${API_KEY_ENV}", soft_wrap=True)
        credential = f'os.environ["{API_KEY_ENV}"]'
    else:
        key_note = " (generated; pass --api-key to choose one)" if key_source == "generated" else ""
        console.print(f"API key{key_note}: [green]{settings.api_key}[/green]", soft_wrap=True)
        credential = f'"{settings.api_key}"'
    console.print(
        "Try it:\n"
        "  from azure.ai.inference import ChatCompletionsClient\n"
        "  from azure.ai.inference.models import UserMessage\n"
        "  from azure.core.credentials import AzureKeyCredential\n"
        f'  client = ChatCompletionsClient("{url}", AzureKeyCredential({credential}))\n'
        '  print(client.complete(messages=[UserMessage("Hi!")]).choices[0].message.content)',
        highlight=False,
        soft_wrap=True,  # never wrap the snippet: it must stay copy-pasteable
    )
