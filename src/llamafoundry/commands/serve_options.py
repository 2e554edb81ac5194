"""The options of `llamafoundry serve` (also taken by `config show`): argparse defines the flags and their help,
`llamafoundry.settings.ServeOptions` their types, bounds and defaults, and resolves them with the environment and
the config file. No default is set here: a flag not given is absent from the namespace (the parser's
`argument_default` is SUPPRESS), so the settings can tell it from one given."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from llamafoundry.commands.store_options import add_store_options, settings_of
from llamafoundry.settings import ENV_PREFIX, Resolved, ServeOptions, choices, env_name

DEFAULT_MAX_CTX = 4096
EPILOG = (f"Every option is also an environment variable ({ENV_PREFIX}<OPTION>: --ctx-size is {env_name('ctx_size')})"
          " and a key of the config file (ctx_size = 8192); flags win over variables, variables over the file. "
          "`llamafoundry config show` prints the values in effect and where each came from.")  # fmt: skip


def serve_parser(commands: argparse._SubParsersAction, name: str, **kwargs: Any) -> argparse.ArgumentParser:
    """A subcommand that takes every serve option."""
    parser = commands.add_parser(name, argument_default=argparse.SUPPRESS, epilog=EPILOG, **kwargs)
    _add_model_options(parser)
    _add_engine_options(parser)
    _add_server_options(parser)
    _add_platform_options(parser)
    add_store_options(parser)
    return parser


def _add_model_options(serve: argparse.ArgumentParser) -> None:
    serve.add_argument("--model", metavar="GGUF|NAME|REPO[:FILE]", help="the model to serve: a .gguf file, a "
                       "catalog name (`llamafoundry models list`; downloaded into the data directory's models/ and "
                       "checked), or a Hugging Face repository owner/repo[:FILE.gguf|:QUANT] (default: the embedded "
                       "demo model)")  # fmt: skip
    serve.add_argument("--name", help="model name reported by /info and in responses (default: the catalog name, "
                       "else the file's)")  # fmt: skip
    serve.add_argument("--provider", help="model_provider_name in /info (default: Meta; the demo model: llamafoundry)")
    serve.add_argument("--ctx-size", type=int, help="context of one request, prompt + completion (default: the "
                       f"model's own, at most {DEFAULT_MAX_CTX})")  # fmt: skip


def _add_engine_options(serve: argparse.ArgumentParser) -> None:
    serve.add_argument("--parallel", type=int, help="sequences decoded together (KV cache slots; default 4)")
    serve.add_argument("--threads", type=int, help="CPU threads (default: all cores)")
    serve.add_argument("--batch-size", type=int, help="most tokens per engine step (computed 512 at a time; "
                       "default 1024)")  # fmt: skip
    serve.add_argument("--max-queue", type=int, help="requests that may wait for a slot (default 64)")
    serve.add_argument("--flash-attn", choices=choices("flash_attn"), help="llama.cpp flash attention (default auto: "
                       "on for CPUs). off decodes faster at long contexts (~1,000+ tokens) on CPU, on is faster for "
                       "short ones; see docs/benchmarks.md")  # fmt: skip
    serve.add_argument("--batch-pad", type=int, help="give free slots a throwaway token so decode steps just short "
                       "of N sequences run as one pass of N (llama.cpp's CPU kernels on x86 are faster at 16 rows than "
                       "at 12-15; default 16); 0 turns it off")  # fmt: skip
    serve.add_argument("--speculative-tokens", type=int, metavar="N", help="prompt-lookup speculative decoding: when "
                       "an answer's newest 9 tokens repeat earlier text (its prompt or itself), up to N tokens that "
                       "followed there are checked in one pass (same output, faster when the answer copies text; "
                       "default 15); 0 turns it off")  # fmt: skip
    serve.add_argument("--gpu-layers", type=int, metavar="N", help="model layers offloaded to the GPU (needs llama.cpp "
                       "built with LLAMAFOUNDRY_GPU=cuda|vulkan; `llamafoundry doctor` shows the backend); default 0: "
                       "all on the CPU")  # fmt: skip
    serve.add_argument("--seed", type=int, metavar="N", help="the sampling seed of requests that send none, so that "
                       "a request sent again gets the same answer (as llama-server's --seed; default: a random seed "
                       "for each request)")  # fmt: skip
    _add_kv_cache_options(serve)


def _add_kv_cache_options(serve: argparse.ArgumentParser) -> None:
    serve.add_argument("--kv-cache-type", choices=choices("kv_cache_type"), help="element type of the cached keys "
                       "and values: q8_0 holds ~1.9x and q4_0 ~3.6x the tokens of f16 in the same memory (llama.cpp's "
                       "quantized cache; turns flash attention on; default f16); see docs/benchmarks.md")  # fmt: skip
    serve.add_argument("--prefix-cache-ram", metavar="SIZE", help="host memory for KV states of conversations that "
                       "left their slot, so a returning one restores its history instead of computing it again "
                       "(default auto: a fifth of the machine's memory, at most 8GiB; 0: off)")  # fmt: skip
    serve.add_argument("--prefix-cache-dir", type=Path, metavar="DIR", help="also keep KV states on disk here: they "
                       "survive restarts and are shared by every server using the directory (a deployment's "
                       "replicas)")  # fmt: skip
    serve.add_argument("--prefix-cache-disk", metavar="SIZE", help="most bytes --prefix-cache-dir keeps for this "
                       "model, all servers together (default 16GiB)")  # fmt: skip


def _add_server_options(serve: argparse.ArgumentParser) -> None:
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8000)")
    serve.add_argument("--api-key", help="key clients must send (default: a generated 32-character key)")
    serve.add_argument("--shutdown-timeout", type=float, help="seconds running requests get to finish when the "
                       "server stops (Ctrl-C, SIGTERM; default 10); then they end with a 503 or an error "
                       "chunk")  # fmt: skip
    serve.add_argument("--stream-keepalive", type=float, metavar="SECONDS", help="a stream that has had no output "
                       "for this long (a long prompt being computed, a wait for a free slot) gets an empty chunk, so "
                       "that proxies and clients do not drop it as idle (default 15); 0 turns it off")  # fmt: skip
    serve.add_argument("--log-level", choices=choices("log_level"), help="the least severe log lines written "
                       "(default info: one access line per request, deployments starting, refused tokens)")  # fmt: skip
    serve.add_argument("--log-format", choices=choices("log_format"), help="text (default), or json (one object per "
                       "line) for log collectors; replicas log the same way")  # fmt: skip
    serve.add_argument("--tpm", type=int, help="tokens per minute for the model (default 200000; 0: no limit)")
    serve.add_argument("--rpm", type=int, help="requests per minute for the model (default 1000; 0: no limit)")
    serve.add_argument("--redis-url", help="redis://HOST:PORT: rate-limit counters shared by several servers")
    serve.add_argument("--metrics-key", help="/metrics answers only requests that send this key (Prometheus: "
                       "`authorization: {credentials: KEY}`; or an api-key header); default: open")  # fmt: skip
    serve.add_argument("--content-safety", choices=choices("content_safety"), help="filter prompts and completions "
                       "of the model with the built-in classifier (default: on, like a serverless deployment; "
                       "deployments have their own setting)")  # fmt: skip
    serve.add_argument("--content-safety-streaming", choices=choices("content_safety_streaming"), help="default: "
                       "streamed text is released once checked; asynchronous: text streams at once, checks run "
                       "beside it, a violation ends the stream (Azure's async filter)")  # fmt: skip
    serve.add_argument("--content-safety-blocklist", action="append", type=Path, metavar="FILE", help="a custom "
                       "blocklist for the model: one term per line ('re:' starts an RE2 regular expression, '#' a "
                       "comment); the file's stem is the list's name. Repeatable (the variable: paths separated "
                       "by commas)")  # fmt: skip


def _add_platform_options(serve: argparse.ArgumentParser) -> None:
    serve.add_argument("--no-default", action="store_true", help="serve no model of its own: the bare routes and "
                       "/models need the azureml-model-deployment header or the model field")  # fmt: skip
    serve.add_argument("--jwks", help="JWKS file or URL of the token issuer: managed-compute deployments accept its "
                       "RS256/ES256 tokens as their projects grant; needs --token-issuer")  # fmt: skip
    serve.add_argument("--token-issuer", help="the `iss` tokens must carry (several: comma-separated); required "
                       "with --jwks")  # fmt: skip
    serve.add_argument("--token-audience", help="the `aud` tokens must carry (default: https://ml.azure.com)")
    serve.add_argument("--tls", choices=choices("tls"), help="auto: serve HTTPS with a certificate signed by a local "
                       "certificate authority kept in the data directory (created once, reused; the banner says how "
                       "clients trust it)")  # fmt: skip
    serve.add_argument("--tls-cert", type=Path, help="serve HTTPS with this certificate (PEM)")
    serve.add_argument("--tls-key", type=Path, help="the certificate's private key (PEM)")
    # A deployment's engine process: not a setting (the gateway starts it with every value it needs as a flag).
    serve.add_argument("--replica", action="store_true", default=False, help=argparse.SUPPRESS)


# What a replica takes from its environment: its key (never on a command line). Nothing else: the gateway's own
# LLAMAFOUNDRY_* variables and config file are the gateway's (a LLAMAFOUNDRY_TLS or NO_DEFAULT there must not reach
# the replicas it starts with flags).
REPLICA_ENV = frozenset({"api_key"})


def serve_settings(args: argparse.Namespace) -> Resolved[ServeOptions]:
    """The serve options in effect: flags, then LLAMAFOUNDRY_* variables, then the config file, then defaults."""
    if getattr(args, "replica", False):
        return settings_of(ServeOptions, args, env_only=REPLICA_ENV, with_file=False)
    return settings_of(ServeOptions, args)
