"""`llamafoundry` command line: parse, call, print."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from llamafoundry import __version__
from llamafoundry.config import EngineSettings, ServeSettings, default_home, generate_api_key

console = Console(stderr=True)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except (ValueError, FileNotFoundError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 2
    except KeyboardInterrupt:
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llamafoundry", description="Serve Meta Llama models (GGUF) locally.")
    parser.add_argument("--version", action="version", version=f"llamafoundry {__version__}")
    commands = parser.add_subparsers(title="commands")
    _add_serve(commands)
    _add_models(commands)
    return parser


def _add_serve(commands: argparse._SubParsersAction) -> None:
    serve = commands.add_parser("serve", help="serve a model behind the Azure AI Model Inference API")
    serve.add_argument("--model", type=Path, help="GGUF file to serve (default: the embedded default model)")
    serve.add_argument("--name", help="model name reported by /info and in responses (default: from the file)")
    serve.add_argument("--provider", default=None, help="model_provider_name in /info (default: Meta)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--api-key", help="key clients must send (default: a generated 32-character key)")
    serve.add_argument("--ctx-size", type=int, default=4096, help="context of one request, prompt + completion")
    serve.add_argument("--parallel", type=int, default=4, help="sequences decoded together (KV cache slots)")
    serve.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    serve.add_argument("--batch-size", type=int, default=512, help="most tokens per engine step")
    serve.add_argument("--max-queue", type=int, default=64, help="requests that may wait for a slot")
    serve.add_argument("--data-dir", type=Path, default=None, help="data directory (default: ~/.llamafoundry)")
    serve.set_defaults(handler=_serve)


def _add_models(commands: argparse._SubParsersAction) -> None:
    models = commands.add_parser("models", help="model files").add_subparsers(title="models commands")
    build = models.add_parser("build-random", help="write a Llama-architecture GGUF with random weights")
    build.add_argument("out", type=Path)
    build.add_argument("--preset", default="tiny", choices=["tiny", "llama-3.2-1b", "llama-3.2-3b", "llama-3.1-8b"])
    build.add_argument("--quant", default="F16", choices=["Q4_K_M", "Q8_0", "F16"])
    build.add_argument("--tokenizer", type=Path, default=None, help="GGUF whose tokenizer to copy")
    build.add_argument("--seed", type=int, default=0)
    build.set_defaults(handler=_build_random)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from llamafoundry.api.app import create_app
    from llamafoundry.engine.factory import build_local_engine
    from llamafoundry.service.chat import ChatService

    home = args.data_dir or default_home()
    model_path, default_name, default_provider = _resolve_model(args.model, home)
    settings = ServeSettings(
        engine=EngineSettings(
            model_path=model_path,
            ctx_size=args.ctx_size,
            parallel=args.parallel,
            threads=args.threads,
            batch_size=args.batch_size,
            max_queue=args.max_queue,
        ),
        model_name=args.name or default_name,
        model_provider=args.provider or default_provider,
        host=args.host,
        port=args.port,
        api_key=args.api_key or generate_api_key(),
    )
    engine = build_local_engine(settings.engine, settings.model_name, settings.model_provider)
    service = ChatService(engine, settings.model_name, settings.model_provider, settings.engine.ctx_size)
    _print_banner(settings, generated_key=args.api_key is None)
    uvicorn.run(
        create_app(service, settings),
        host=settings.host,
        port=settings.port,
        log_level="warning",
        timeout_graceful_shutdown=10,
    )
    return 0


def _resolve_model(model: Path | None, home: Path) -> tuple[Path, str, str]:
    """The GGUF to serve, its default name and provider: --model, else the embedded default model."""
    if model is not None:
        if not model.is_file():
            raise FileNotFoundError(f"--model {model}: no such file. Pass the path of a .gguf file.")
        return model, model.stem, "Meta"
    from llamafoundry.model.gguf_builder import default_model_path, ensure_default_model

    if not default_model_path(home).is_file():
        console.print(f"Building the embedded default model in {default_model_path(home)} (first start only)...")
    return ensure_default_model(home), "llamafoundry-tiny", "llamafoundry"


def _print_banner(settings: ServeSettings, generated_key: bool) -> None:
    url = f"http://{settings.host}:{settings.port}"
    key_note = " (generated; pass --api-key to choose one)" if generated_key else ""
    console.print(f"[bold]llamafoundry[/bold] serving [cyan]{settings.model_name}[/cyan] at {url}")
    console.print(f"API key{key_note}: [green]{settings.api_key}[/green]")
    console.print(
        "Try it:\n"
        "  from azure.ai.inference import ChatCompletionsClient\n"
        "  from azure.ai.inference.models import UserMessage\n"
        "  from azure.core.credentials import AzureKeyCredential\n"
        f'  client = ChatCompletionsClient("{url}", AzureKeyCredential("{settings.api_key}"))\n'
        '  print(client.complete(messages=[UserMessage("Hi!")]).choices[0].message.content)',
        highlight=False,
    )


def _build_random(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

    from llamafoundry.model.gguf_builder import build_random_gguf

    with Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), console=console) as bar:
        tasks: dict[str, int] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        out = build_random_gguf(
            args.out, preset=args.preset, quant=args.quant, tokenizer=args.tokenizer, seed=args.seed, progress=progress
        )
    size_mib = out.stat().st_size / 2**20
    print(f"{out} ({args.preset}, {args.quant}, {size_mib:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
