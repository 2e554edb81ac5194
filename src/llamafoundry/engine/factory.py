"""Wire a local llama.cpp engine from settings."""

from __future__ import annotations

from llamafoundry.config import FLASH_ATTN_MODES, EngineSettings
from llamafoundry.engine.async_engine import AsyncEngine
from llamafoundry.engine.client import ModelInfo
from llamafoundry.engine.kv_tiers import KvTiers, build_kv_tiers
from llamafoundry.hardware.decode_check import ensure_model_decodes
from llamafoundry.model.base import ModelRunner
from llamafoundry.model.llamacpp import LlamaCppRunner


def build_local_engine(settings: EngineSettings, model_name: str, model_provider: str) -> AsyncEngine:
    """An AsyncEngine serving `settings.model_path`; the model loads when the engine starts.

    The KV cache holds `parallel` sequences of `ctx_size` tokens each (unlike llama-server, `--ctx-size` is
    the context of one request, not split across slots).
    """

    def load() -> LlamaCppRunner:
        # A build or file that crashes llama.cpp kills a child process here, not the server (ModelCrashError).
        ensure_model_decodes(settings.model_path, settings.gpu_layers)
        return LlamaCppRunner(
            settings.model_path,
            kv_size=settings.ctx_size * settings.parallel,
            max_seqs=settings.parallel,
            max_batch_tokens=settings.batch_size,
            num_threads=settings.threads,
            flash_attn=FLASH_ATTN_MODES[settings.flash_attn],
            gpu_layers=settings.gpu_layers,
            kv_cache_type=settings.kv_cache_type,
        )

    def tiers(runner: ModelRunner) -> KvTiers | None:
        return build_kv_tiers(
            settings.prefix_cache_ram, settings.prefix_cache_dir, settings.prefix_cache_disk, runner.state_fingerprint
        )

    def describe(runner: ModelRunner) -> ModelInfo:
        assert isinstance(runner, LlamaCppRunner)
        return ModelInfo(
            name=model_name,
            provider=model_provider,
            max_context=settings.ctx_size,
            chat_template=runner.metadata("tokenizer.chat_template"),
            bos_token=runner.token_text(runner.bos_token_id),
            eos_token=runner.token_text(runner.eos_token_id),
        )

    return AsyncEngine(
        load,
        settings.ctx_size,
        settings.max_queue,
        describe,
        batch_pad=settings.batch_pad,
        speculative_tokens=settings.speculative_tokens,
        default_seed=settings.seed,
        make_kv_tiers=tiers,
    )
