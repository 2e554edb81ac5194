"""Ask the demo model (or any chat GGUF) questions through llamafoundry's real engine and print the answers.

.venv/bin/python tools/demo_samples.py                        # held-out prompts, greedy
.venv/bin/python tools/demo_samples.py --temperature 1 --seed 7 "How do I stream a response?"
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from llamafoundry.config import EngineSettings
from llamafoundry.engine.factory import build_local_engine
from llamafoundry.engine.sampling_params import SamplingParams
from llamafoundry.model.demo import DEMO_MODEL_NAME, DEMO_MODEL_PROVIDER, demo_model_path
from llamafoundry.service.chat import ChatService
from llamafoundry.service.types import ChatMessage, ChatRequest, ChatResult

sys.path.insert(0, str(Path(__file__).resolve().parent))
from demo_data import HELD_OUT_PROMPTS  # noqa: E402


async def ask(path: Path, prompts: list[str], params: SamplingParams) -> list[ChatResult]:
    """One single-turn chat per prompt, all submitted at once (the engine batches them)."""
    engine = build_local_engine(
        EngineSettings(model_path=path, ctx_size=512, parallel=8, threads=1), DEMO_MODEL_NAME, DEMO_MODEL_PROVIDER
    )
    service = ChatService(engine, DEMO_MODEL_NAME, DEMO_MODEL_PROVIDER, 512)
    await service.start()
    try:
        requests = [ChatRequest([ChatMessage("user", p)], params) for p in prompts]
        return await asyncio.gather(*(service.complete(r) for r in requests))
    finally:
        await service.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("prompts", nargs="*", help="user messages (default: the tests' held-out prompts)")
    parser.add_argument("--model", type=Path, default=None, help="GGUF file (default: the packaged demo model)")
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--max-tokens", type=int, default=128)
    args = parser.parse_args()
    prompts = args.prompts or list(HELD_OUT_PROMPTS)
    params = SamplingParams(temperature=args.temperature, seed=args.seed, max_tokens=args.max_tokens)
    results = asyncio.run(ask(args.model or demo_model_path(), prompts, params))
    for prompt, result in zip(prompts, results, strict=True):
        choice = result.choices[0]
        print(f"> {prompt}\n{choice.text}\n[{choice.finish_reason}, {result.usage.completion_tokens} tokens]\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
