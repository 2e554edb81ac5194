"""Train llamafoundry's built-in demo model from scratch and write it as a GGUF.

    .venv/bin/pip install torch==2.13.0 tokenizers matplotlib   # the `train` extra
    .venv/bin/python tools/train_demo_model.py     # the shipped file (1 thread, about 12 minutes)

Steps: generate conversations (demo_data.py, fixed seed) -> train a byte-level BPE (demo_tokenizer.py) ->
render each conversation with the model's chat template and mask everything but the assistant's tokens ->
train a small Llama (demo_llama.py) with AdamW -> write F16 and quantize to Q8_0 (demo_gguf.py) -> check that
llama.cpp tokenizes like the trainer and computes the same logits as PyTorch -> plot the loss curve.

The same seed, thread count and machine give the same file; another thread count (`--threads 2` is faster) may
add up floating-point sums in another order and give a slightly different one.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "src" / "llamafoundry" / "model" / "data" / "llamafoundry-demo.gguf"
DEFAULT_PLOT = REPO / "docs" / "demo-model-loss.png"


@dataclass
class TrainSettings:
    seed: int = 0
    num_conversations: int = 40000
    num_val_conversations: int = 300
    vocab_size: int = 3072
    batch_tokens: int = 4096  # most padded tokens per step
    epochs: float = 1.0
    lr: float = 2e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 60
    weight_decay: float = 0.1
    log_every: int = 20
    eval_every: int = 100
    threads: int = 1
    quant: str = "Q8_0"


Sample = tuple[np.ndarray, np.ndarray]  # token ids int64 [seq], assistant mask bool [seq]


@dataclass
class Data:
    tokenizer: Any  # tokenizers.Tokenizer
    train: list[Sample]
    val: list[Sample]
    val_texts: list[str]
    pad_id: int


@dataclass
class TrainResult:
    model: Any  # demo_llama.DemoLlama
    history: list[dict[str, float]]
    num_steps: int
    seconds: float


def parse_args() -> tuple[TrainSettings, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = asdict(TrainSettings())
    for name, value in defaults.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="GGUF to write")
    parser.add_argument("--plot", type=Path, default=DEFAULT_PLOT, help="loss curve PNG to write")
    parser.add_argument("--stats", type=Path, default=None, help="also write the run's numbers as JSON here")
    args = parser.parse_args()
    return TrainSettings(**{name: getattr(args, name) for name in defaults}), args


def prepare_data(settings: TrainSettings) -> Data:
    """Conversations -> tokenizer -> (ids, assistant mask) per conversation; validation from another seed."""
    import demo_data
    import demo_tokenizer

    train_convs = demo_data.generate_conversations(settings.num_conversations, seed=settings.seed)
    val_convs = demo_data.generate_conversations(settings.num_val_conversations, seed=settings.seed + 1_000_003)
    tokenizer = demo_tokenizer.train_tokenizer(demo_tokenizer.tokenizer_texts(train_convs), settings.vocab_size)
    formatter = demo_tokenizer.chat_formatter()
    pad_id = tokenizer.token_to_id(demo_tokenizer.FINETUNE_RIGHT_PAD_ID)

    def encode(conversations: list[list[dict[str, str]]]) -> tuple[list[Sample], list[str]]:
        texts = [demo_tokenizer.render(formatter, c) for c in conversations]
        samples = []
        for encoding in tokenizer.encode_batch(texts):
            mask = demo_tokenizer.assistant_mask(tokenizer, encoding.ids)
            samples.append((np.array(encoding.ids, dtype=np.int64), np.array(mask, dtype=bool)))
        return samples, texts

    train, _ = encode(train_convs)
    val, val_texts = encode(val_convs)
    num_tokens = sum(len(ids) for ids, _ in train)
    print(
        f"data: {len(train)} conversations, {num_tokens} tokens ({sum(int(m.sum()) for _, m in train)} assistant), "
        f"longest {max(len(ids) for ids, _ in train)}; vocabulary {tokenizer.get_vocab_size()} tokens",
        flush=True,
    )
    return Data(tokenizer, train, val, val_texts, pad_id)


def make_batches(samples: list[Sample], batch_tokens: int, rng: random.Random) -> list[list[int]]:
    """Batches of similar length (little padding) in random order: shuffle, sort within windows, cut, shuffle."""
    order = list(range(len(samples)))
    rng.shuffle(order)
    window = 4000
    order = [
        i for w in range(0, len(order), window) for i in sorted(order[w : w + window], key=lambda i: len(samples[i][0]))
    ]
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order:
        length = len(samples[i][0])
        if current and max(longest, length) * (len(current) + 1) > batch_tokens:
            batches.append(current)
            current, longest = [], 0
        current.append(i)
        longest = max(longest, length)
    if current:
        batches.append(current)
    rng.shuffle(batches)
    return batches


def collate(samples: list[Sample], indices: list[int], pad_id: int) -> tuple[Any, Any, Any]:
    """Right-padded inputs [batch, seq-1], targets [batch, seq-1] and the mask of targets to learn."""
    import torch

    longest = max(len(samples[i][0]) for i in indices)
    ids = np.full((len(indices), longest), pad_id, dtype=np.int64)
    mask = np.zeros((len(indices), longest), dtype=bool)
    for row, i in enumerate(indices):
        sample_ids, sample_mask = samples[i]
        ids[row, : len(sample_ids)] = sample_ids
        mask[row, : len(sample_mask)] = sample_mask
    ids_t = torch.from_numpy(ids)
    return ids_t[:, :-1], ids_t[:, 1:], torch.from_numpy(mask[:, 1:])


def batch_loss(model: Any, inputs: Any, targets: Any, mask: Any) -> Any:
    """Mean cross-entropy over the assistant's tokens only (logits computed only there)."""
    import torch
    import torch.nn.functional as F

    with torch.autocast("cpu", dtype=torch.bfloat16):
        states = model.hidden_states(inputs)[mask]
        logits = model.logits(states)
    return F.cross_entropy(logits.float(), targets[mask])


def evaluate(model: Any, data: Data, settings: TrainSettings) -> float:
    import torch

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in make_batches(data.val, settings.batch_tokens, random.Random(0)):
            inputs, targets, mask = collate(data.val, batch, data.pad_id)
            n = int(mask.sum())
            total += float(batch_loss(model, inputs, targets, mask)) * n
            count += n
    model.train()
    return total / count


def cosine_lr(step: int, num_steps: int, settings: TrainSettings) -> float:
    """Linear warm-up, then cosine decay to `min_lr_ratio` of the peak."""
    if step < settings.warmup_steps:
        return settings.lr * (step + 1) / settings.warmup_steps
    progress = min(1.0, (step - settings.warmup_steps) / max(1, num_steps - settings.warmup_steps))
    return settings.lr * (
        settings.min_lr_ratio + (1 - settings.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    )


def make_optimizer(model: Any, settings: TrainSettings) -> Any:
    import torch

    decay = [p for p in model.parameters() if p.dim() == 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]  # norm weights
    groups = [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=settings.lr, betas=(0.9, 0.95), eps=1e-8)


def train(settings: TrainSettings, data: Data) -> TrainResult:
    import torch
    from demo_llama import DemoConfig, DemoLlama

    config = DemoConfig(vocab_size=settings.vocab_size)
    model = DemoLlama(config)
    optimizer = make_optimizer(model, settings)
    rng = random.Random(settings.seed)
    schedule: list[list[int]] = []
    num_steps = round(settings.epochs * len(make_batches(data.train, settings.batch_tokens, random.Random(0))))
    while len(schedule) < num_steps:  # a fresh order for every epoch
        schedule += make_batches(data.train, settings.batch_tokens, rng)
    schedule = schedule[:num_steps]
    print(f"model: {sum(p.numel() for p in model.parameters())} parameters; {num_steps} steps", flush=True)
    history: list[dict[str, float]] = [
        {"step": 0, "train_loss": float("nan"), "val_loss": evaluate(model, data, settings)}
    ]
    started = time.perf_counter()
    running, running_n, tokens_seen = 0.0, 0, 0
    for step, batch in enumerate(schedule):
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, num_steps, settings)
        inputs, targets, mask = collate(data.train, batch, data.pad_id)
        loss = batch_loss(model, inputs, targets, mask)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        running, running_n = running + loss.item(), running_n + 1
        tokens_seen += inputs.numel()
        done = step + 1
        if done % settings.log_every == 0 or done == num_steps:
            record: dict[str, float] = {"step": done, "train_loss": running / running_n}
            if done % settings.eval_every == 0 or done == num_steps:
                record["val_loss"] = evaluate(model, data, settings)
            history.append(record)
            _print_progress(record, num_steps, tokens_seen, time.perf_counter() - started, group["lr"])
            running, running_n = 0.0, 0
    return TrainResult(model, history, num_steps, time.perf_counter() - started)


def _print_progress(record: dict[str, float], num_steps: int, tokens: int, elapsed: float, lr: float) -> None:
    step = int(record["step"])
    eta = elapsed / step * (num_steps - step)
    val = f"  val {record['val_loss']:.3f}" if "val_loss" in record else ""
    print(
        f"step {step:5d}/{num_steps}  loss {record['train_loss']:.3f}{val}  lr {lr:.2e}  "
        f"{tokens / elapsed:6.0f} tok/s  elapsed {elapsed / 60:5.1f} min  eta {eta / 60:5.1f} min",
        flush=True,
    )


def plot_loss(history: list[dict[str, float]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    train = [(h["step"], h["train_loss"]) for h in history if not math.isnan(h["train_loss"])]
    val = [(h["step"], h["val_loss"]) for h in history if "val_loss" in h]
    ax.plot(*zip(*train, strict=True), label="train (assistant tokens)")
    ax.plot(*zip(*val, strict=True), "o-", markersize=3, label="validation (fresh conversations, another seed)")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats per token)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def main() -> int:
    settings, args = parse_args()
    # before torch and tokenizers start their thread pools
    os.environ["RAYON_NUM_THREADS"] = str(settings.threads)
    os.environ["OMP_NUM_THREADS"] = str(settings.threads)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import torch
    from demo_gguf import check_against_llamacpp, write_gguf

    torch.set_num_threads(settings.threads)
    torch.manual_seed(settings.seed)
    started = time.perf_counter()
    data = prepare_data(settings)
    result = train(settings, data)
    model = result.model.eval()
    write_gguf(args.out, model.config, model.gguf_tensors(), data.tokenizer, settings.quant, settings.threads)
    check = check_against_llamacpp(args.out, model, data.tokenizer, data.val_texts)
    num_params = sum(p.numel() for p in model.parameters())
    stats = {
        "settings": asdict(settings),
        "model": asdict(model.config),
        "num_params": num_params,
        "num_conversations": len(data.train),
        "num_train_tokens": int(sum(len(ids) for ids, _ in data.train)),
        "num_assistant_tokens": int(sum(int(mask.sum()) for _, mask in data.train)),
        "num_steps": result.num_steps,
        "train_minutes": round(result.seconds / 60, 2),
        "total_minutes": round((time.perf_counter() - started) / 60, 2),
        "final_train_loss": round(result.history[-1]["train_loss"], 4),
        "final_val_loss": round(result.history[-1]["val_loss"], 4),
        "file_bytes": args.out.stat().st_size,
        **check,
    }
    title = (
        f"llamafoundry-demo: {num_params / 1e6:.1f}M params, {stats['num_train_tokens'] / 1e6:.1f}M tokens, "
        f"{stats['train_minutes']:.0f} min on {settings.threads} CPU thread{'s' if settings.threads > 1 else ''}"
    )
    plot_loss(result.history, args.plot, title)
    print(json.dumps(stats, indent=2))
    if args.stats:
        args.stats.write_text(json.dumps(stats, indent=2) + "\n")
    print(f"wrote {args.out} ({stats['file_bytes'] / 1e6:.1f} MB) and {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
