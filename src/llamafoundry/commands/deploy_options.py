"""The option groups `deploy create` and `deploy update` share: sizes, rate limits and content safety, and how
each becomes a change of a deployment's settings."""

from __future__ import annotations

import argparse
from typing import Any


def add_sizing_options(parser: argparse.ArgumentParser) -> None:
    """What the replicas of a deployment of local weights run with (default: from the model and the machine)."""
    parser.add_argument("--ctx-size", type=int, help="tokens of one request, prompt + completion (default: the "
                        "model's trained context, at most 8192, less when memory is short)")  # fmt: skip
    parser.add_argument("--parallel", type=int, help="sequences each replica decodes together: requests in "
                        "flight, and the most n/best_of one may ask (default 4)")  # fmt: skip
    parser.add_argument("--threads", type=int, help="CPU threads per replica (default: the instance type's cores, "
                        "else the machine's shared by the replicas)")  # fmt: skip
    parser.add_argument("--kv-cache-type", choices=sizing_choices("kv_cache_type"), help="KV cache element type "
                        "(q8_0: ~half the memory of f16, q4_0: ~a quarter)")  # fmt: skip
    parser.add_argument("--flash-attn", choices=sizing_choices("flash_attn"), help="llama.cpp flash attention")
    parser.add_argument("--gpu-layers", type=int, help="layers offloaded to a GPU (default 0)")
    parser.add_argument("--speculative-tokens", type=int, help="prompt-lookup draft tokens (default 15; 0: off)")


def sizing_choices(field: str) -> list[str]:
    from llamafoundry.platform.sizing import CHOICES

    return list(CHOICES[field])


def sizing_changes_from(args: argparse.Namespace) -> dict[str, Any]:
    from llamafoundry.platform.sizing import sizing_changes

    return sizing_changes(vars(args))


def add_limit_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tpm", type=int, help="tokens per minute (serverless default 200000; 0: no limit)")
    parser.add_argument("--rpm", type=int, help="requests per minute (serverless default 1000; 0: no limit)")


def add_content_safety_options(parser: argparse.ArgumentParser) -> None:
    on_off = ["on", "off"]
    parser.add_argument("--content-safety", choices=on_off, help="filter prompts and completions (default: on for "
                        "serverless, off for managed compute)")  # fmt: skip
    parser.add_argument("--content-safety-threshold", choices=["low", "medium", "high"],
                        help="the lowest severity that is filtered (default medium)")  # fmt: skip
    parser.add_argument("--content-safety-categories", help="comma-separated categories that may block "
                        "(default: hate,sexual,violence,self_harm; the others are only annotated)")  # fmt: skip
    parser.add_argument("--content-safety-jailbreak", choices=on_off, help="block detected jailbreak attempts "
                        "(default on)")  # fmt: skip
    parser.add_argument("--content-safety-guard", metavar="DEPLOYMENT", help="classify with this Llama Guard 3 "
                        "deployment instead of the built-in classifier ('none': the built-in one again)")  # fmt: skip
    parser.add_argument("--content-safety-indirect-attack", choices=on_off, help="block instructions aimed at the "
                        "model in tool results and <documents> (default on)")  # fmt: skip
    parser.add_argument("--content-safety-streaming", choices=["default", "asynchronous"], help="default: streamed "
                        "text is released after a check; asynchronous: text streams at once, checks run beside it and "
                        "a violation ends the stream (Azure's Asynchronous Filter)")  # fmt: skip


def content_safety_changes(args: argparse.Namespace, current: Any) -> dict[str, Any]:
    """The settings change of the --content-safety* options over the deployment's stored overrides."""
    from llamafoundry.platform.content_safety import content_safety_settings

    def on(value: str | None) -> bool | None:
        return None if value is None else value == "on"

    categories = args.content_safety_categories
    guard = args.content_safety_guard
    return content_safety_settings(
        current,
        enabled=on(args.content_safety),
        threshold=args.content_safety_threshold,
        categories=[c.strip() for c in categories.split(",") if c.strip()] if categories is not None else None,
        jailbreak=on(args.content_safety_jailbreak),
        guard=("" if guard.lower() == "none" else guard) if guard is not None else None,
        indirect_attack=on(args.content_safety_indirect_attack),
        streaming=args.content_safety_streaming,
    )


def check_guard(store: Any, guard: str | None) -> None:
    """A guard named with --content-safety-guard must be a Llama Guard 3 deployment: a misspelt name would leave
    the deployment unfiltered (the filter fails open, answering with `content_filter_error`)."""
    from llamafoundry.platform.content_safety import is_guard_model

    if guard is None or guard.lower() == "none":
        return
    found = store.get_deployment(guard.lower())
    if found is None:
        raise ValueError(
            f"--content-safety-guard {guard}: no deployment has that name. Deploy Llama Guard 3 first (deploy create "
            f"NAME --model Llama-Guard-3-1B --type managed ...), or give 'none' for the built-in classifier."
        )
    if not is_guard_model(found.model):
        raise ValueError(f"--content-safety-guard {guard}: that deployment serves {found.model}, not Llama Guard 3.")
