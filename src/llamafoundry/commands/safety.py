"""`llamafoundry safety`: judge text with the built-in content classifier, or measure it on a labelled set."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(commands: argparse._SubParsersAction) -> None:
    safety = commands.add_parser("safety", help="content safety: check text, evaluate the classifier")
    sub = safety.add_subparsers(title="safety commands")
    check = sub.add_parser(
        "check",
        help="print the verdict per category as JSON",
        description="Judge TEXT (or stdin with '-') with the built-in classifier and print Azure's annotations.",
    )
    check.add_argument("text", help="the text to judge, or - to read it from stdin")
    check.add_argument(
        "--role",
        choices=["prompt", "completion"],
        default="prompt",
        help="judge it as a prompt or as a completion (jailbreak detection runs on prompts only)",
    )
    check.add_argument(
        "--threshold", choices=["low", "medium", "high"], default="medium", help="the lowest severity that is filtered"
    )
    check.set_defaults(handler=_check)
    evaluate = sub.add_parser("eval", help="precision and recall on a labelled JSONL set (markdown table)")
    evaluate.add_argument("path", type=Path, help="JSONL: text, role, hate, sexual, violence, self_harm, jailbreak")
    evaluate.set_defaults(handler=_eval)


def _check(args: argparse.Namespace) -> int:
    from llamafoundry.safety.base import Role, SafetyPolicy, Severity
    from llamafoundry.safety.builtin import BuiltinClassifier

    text = sys.stdin.read() if args.text == "-" else args.text
    role = Role(args.role)
    policy = SafetyPolicy(threshold=Severity(args.threshold))
    verdict = BuiltinClassifier().analyze(text, role)
    blocked = policy.is_blocked(verdict, role)
    print(
        json.dumps(
            {"filtered": blocked, "role": role.value, "content_filter_results": policy.annotations(verdict, role)},
            indent=2,
        )
    )
    return 0


def _eval(args: argparse.Namespace) -> int:
    import time

    from llamafoundry.safety.builtin import BuiltinClassifier
    from llamafoundry.safety.evaluation import evaluate, load_labelled

    if not args.path.is_file():
        raise FileNotFoundError(f"{args.path}: no such file. Pass a JSONL file of labelled texts.")
    classifier = BuiltinClassifier()
    rows = load_labelled(args.path)
    start = time.perf_counter()
    report = evaluate(rows, classifier.analyze)
    elapsed = time.perf_counter() - start
    print(report.table())
    print(
        f"\n{report.num_texts} texts; benign texts blocked: {len(report.benign_false_blocks)}; "
        f"{1000 * elapsed / max(report.num_texts, 1):.2f} ms per text (first run, cold caches)"
    )
    return 0
