"""The anchor of the model perf scripts: this machine's peak GEMM rate per dtype, measured in the same run, and the
model FLOPs that a decode or a training update does, so that a tok/s figure becomes a utilisation.

Machines differ and drift (other jobs, clocks), so a perf script never compares with a number measured elsewhere:
it measures the peak with `peak_gemm` first and prints its own figures as fractions of it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

# (M, K, N): a large square GEMM (the machine's peak), and the decode shapes of SmolLM2-135M at batch 32
# (the MLP's 576 x 1536, the LM head's 576 x 49152).
PEAK_SHAPE = (2048, 2048, 2048)


def gemm_gflops(m: int, k: int, n: int, dtype: torch.dtype, seconds: float = 1.0) -> float:
    """GFLOP/s of an (m, k) @ (k, n) matmul in `dtype`: the best of timed groups of calls over about `seconds`
    (the best, because other processes only ever slow a group down)."""
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(m, k, generator=generator).to(dtype)
    b = torch.randn(k, n, generator=generator).to(dtype)
    for _ in range(3):
        a @ b  # warm-up: oneDNN picks and caches its kernel
    flops = 2 * m * k * n
    calls = max(1, int(2e8 / flops))  # a group is about 0.2 GFLOP, long enough to time
    best = float("inf")
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or best == float("inf"):
        start = time.perf_counter()
        for _ in range(calls):
            a @ b
        best = min(best, (time.perf_counter() - start) / calls)
    return flops / best / 1e9


@dataclass
class Peak:
    dtype: torch.dtype
    peak: float  # GFLOP/s on PEAK_SHAPE
    decode: float  # GFLOP/s on a decode-shaped GEMM (batch rows x hidden x MLP width)

    def line(self) -> str:
        shape = "x".join(map(str, PEAK_SHAPE))
        return (f"{str(self.dtype).removeprefix('torch.'):>9}: {self.peak:7.0f} GFLOP/s peak ({shape}), "
                f"{self.decode:6.0f} at the decode shape")


def peak_gemm(dtype: torch.dtype, decode_rows: int, hidden: int, width: int) -> Peak:
    return Peak(dtype, gemm_gflops(*PEAK_SHAPE, dtype), gemm_gflops(decode_rows, hidden, width, dtype))


def matmul_params(config: Any) -> int:
    """Weights that take part in a matmul per token: every linear layer of the decoder and the LM head (embedding
    lookups are not matmuls). For a Llama-style config."""
    hidden, layers = config.hidden_size, config.num_hidden_layers
    head_dim = getattr(config, "head_dim", None) or hidden // config.num_attention_heads
    kv = config.num_key_value_heads * head_dim
    attention = hidden * config.num_attention_heads * head_dim * 2 + hidden * kv * 2  # q, o; k, v
    mlp = 3 * hidden * config.intermediate_size  # gate, up, down
    return layers * (attention + mlp) + hidden * config.vocab_size


def token_flops(config: Any, context: float) -> float:
    """Forward FLOPs of one token attending to `context` earlier positions: 2 per matmul weight, plus the attention
    scores and the weighted sum (2 x 2 x heads x head_dim per position and layer)."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    attention = 4 * config.num_hidden_layers * config.num_attention_heads * head_dim * context
    return 2 * matmul_params(config) + attention


def native_dtypes() -> list[torch.dtype]:
    """fp32, and bf16 where the CPU multiplies it in hardware (where it does not, bf16 is emulated and slower)."""
    from score_code.models import cpu_has_native_bf16

    return [torch.float32, torch.bfloat16] if cpu_has_native_bf16() else [torch.float32]
