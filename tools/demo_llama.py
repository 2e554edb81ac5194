"""The demo model in PyTorch: a Llama exactly as llama.cpp's `llama` architecture computes it.

RMSNorm before attention and feed-forward, rotary position embeddings, grouped-query attention, SwiGLU, a
final RMSNorm and an output projection tied to the token embedding.

RoPE rotates adjacent pairs (x[2i], x[2i+1]), as Meta's original Llama code and llama.cpp's rope mode 0 (the
one `llama` uses) do. Hugging Face checkpoints rotate halves (x[i], x[i + d/2]) instead, which is why
llama.cpp's convert_hf_to_gguf.py permutes the rows of q and k (`LlamaModel.permute`); weights trained here
are already in llama.cpp's layout and are written unpermuted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from llamafoundry.model.gguf_builder import RMS_NORM_EPS


@dataclass(frozen=True)
class DemoConfig:
    """Hyperparameters of the demo model (the `llama.*` GGUF metadata)."""

    vocab_size: int = 3072
    n_embd: int = 256
    n_layer: int = 4
    n_head: int = 8
    n_head_kv: int = 4
    n_ff: int = 768
    context_length: int = 512
    rope_freq_base: float = 10000.0
    rms_norm_eps: float = RMS_NORM_EPS

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


def rope_tables(config: DemoConfig, num_positions: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of every position's rotation angles: [num_positions, head_dim / 2] each."""
    dims = torch.arange(0, config.head_dim, 2, dtype=torch.float64) / config.head_dim
    inv_freq = 1.0 / (config.rope_freq_base**dims)
    angles = torch.outer(torch.arange(num_positions, dtype=torch.float64), inv_freq)
    return angles.cos().float(), angles.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent pairs of x: [batch, heads, seq, head_dim] by the angles of positions 0..seq-1."""
    x_even, x_odd = x[..., 0::2].float(), x[..., 1::2].float()
    rotated = torch.stack((x_even * cos - x_odd * sin, x_even * sin + x_odd * cos), dim=-1)
    return rotated.flatten(-2).type_as(x)


class Block(nn.Module):
    def __init__(self, config: DemoConfig) -> None:
        super().__init__()
        self.config = config
        e, kv = config.n_embd, config.n_head_kv * config.head_dim
        self.attn_norm = nn.RMSNorm(e, eps=config.rms_norm_eps)
        self.attn_q = nn.Linear(e, e, bias=False)
        self.attn_k = nn.Linear(e, kv, bias=False)
        self.attn_v = nn.Linear(e, kv, bias=False)
        self.attn_output = nn.Linear(e, e, bias=False)
        self.ffn_norm = nn.RMSNorm(e, eps=config.rms_norm_eps)
        self.ffn_gate = nn.Linear(e, config.n_ff, bias=False)
        self.ffn_up = nn.Linear(e, config.n_ff, bias=False)
        self.ffn_down = nn.Linear(config.n_ff, e, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self._attention(self.attn_norm(x), cos, sin)
        h = self.ffn_norm(x)
        return x + self.ffn_down(F.silu(self.ffn_gate(h)) * self.ffn_up(h))

    def _attention(self, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        c = self.config
        batch, seq, _ = h.shape
        # q: [batch, n_head, seq, head_dim]; k, v: [batch, n_head_kv, seq, head_dim]
        q = self.attn_q(h).view(batch, seq, c.n_head, c.head_dim).transpose(1, 2)
        k = self.attn_k(h).view(batch, seq, c.n_head_kv, c.head_dim).transpose(1, 2)
        v = self.attn_v(h).view(batch, seq, c.n_head_kv, c.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        # query head i reads kv head i // (n_head / n_head_kv), as llama.cpp broadcasts it
        groups = c.n_head // c.n_head_kv
        k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.attn_output(out.transpose(1, 2).reshape(batch, seq, c.n_embd))


class DemoLlama(nn.Module):
    """Token ids [batch, seq] -> next-token logits [batch, seq, vocab]."""

    def __init__(self, config: DemoConfig) -> None:
        super().__init__()
        self.config = config
        self.token_embd = nn.Embedding(config.vocab_size, config.n_embd)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.output_norm = nn.RMSNorm(config.n_embd, eps=config.rms_norm_eps)
        cos, sin = rope_tables(config, config.context_length)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self._init_weights()

    def _init_weights(self) -> None:
        for name, param in self.named_parameters():
            if param.dim() == 2:
                std = 0.02
                if name.endswith(("attn_output.weight", "ffn_down.weight")):
                    std /= math.sqrt(2 * self.config.n_layer)  # residual branches: GPT-2 scaling
                nn.init.normal_(param, mean=0.0, std=std)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.logits(self.hidden_states(ids))

    def hidden_states(self, ids: torch.Tensor) -> torch.Tensor:
        """[batch, seq] -> normed final states [batch, seq, n_embd]. Causal: position t sees positions <= t,
        so right padding never changes the states before it."""
        seq = ids.shape[1]
        cos, sin = self.rope_cos[:seq], self.rope_sin[:seq]
        x = self.token_embd(ids)
        for block in self.blocks:
            x = block(x, cos, sin)
        return self.output_norm(x)

    def logits(self, states: torch.Tensor) -> torch.Tensor:
        """[..., n_embd] -> [..., vocab]: the output projection, tied to the token embedding."""
        return F.linear(states, self.token_embd.weight)

    def gguf_tensors(self) -> dict[str, torch.Tensor]:
        """Every weight under its llama.cpp name (token_embd, blk.N.*, output_norm; output tied)."""
        tensors = {"token_embd.weight": self.token_embd.weight}
        for i, block in enumerate(self.blocks):
            for name, param in block.named_parameters():
                tensors[f"blk.{i}.{name}"] = param
        tensors["output_norm.weight"] = self.output_norm.weight
        return {name: t.detach().float().cpu() for name, t in tensors.items()}
