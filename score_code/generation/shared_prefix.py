"""Attention over a prompt prefix that every row of a batch shares (MBPP's three shots), stored and read once.

Decoding on a CPU is bound by memory reads, and at batch 32 the keys and values of MBPP's 3-shot prompts are most of
them: 656 of a prompt's ~950 positions are the same shots in every row. The HF backend keeps that prefix's states
once (`[1, kv_heads, P, head_dim]` per layer), passes them to the model forward as `shared_prefix`, and caches only
each row's own positions after it. A decode step splits attention exactly: scores over the prefix and over the row's
positions share one maximum and one softmax denominator, as in blockwise (flash) attention; a prefill, with many
queries per row, runs SDPA over the prefix copied in front of each row (what the cache used to hold).

`enabled(model)` switches the model to this attention implementation for the duration of a generate call; without
`shared_prefix` it is transformers' SDPA attention unchanged.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

NAME = "score_code_shared_prefix"


def shared_prefix_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                            attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                            shared_prefix: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
                            **kwargs: Any) -> tuple[torch.Tensor, None]:
    """query [B, H, Q, D]; key/value [B, KV, W, D]: the rows' own positions; shared_prefix[layer]: keys and values
    [1, KV, P, D] that every query sees (they precede all of its row). Returns [B, Q, H, D] as SDPA does."""
    if shared_prefix is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    if dropout:
        raise ValueError("shared-prefix attention is for generation: dropout must be 0")
    prefix_keys, prefix_values = shared_prefix[module.layer_idx]
    batch, heads, length, dim = query.shape
    if length > 1:  # a prefill: SDPA's fused kernel over the prefix copied in front of each row, as a plain cache
        return _prefill(module, query, key, value, attention_mask, scaling, prefix_keys, prefix_values, **kwargs)
    kv_heads = key.shape[1]
    group = heads // kv_heads  # query heads per key/value head, consecutive (as transformers' repeat_kv)
    scale = dim ** -0.5 if scaling is None else scaling
    rows = group * length
    q = query.float().reshape(batch, kv_heads, rows, dim)  # a kv head's queries, head-major then position

    # The prefix: every row's queries against its one copy, as one matrix product per kv head.
    flat = q.transpose(0, 1).reshape(kv_heads, batch * rows, dim)
    prefix_scores = torch.matmul(flat, prefix_keys[0].float().transpose(-1, -2)) * scale  # [KV, B*rows, P]
    prefix_max = prefix_scores.amax(-1, keepdim=True).reshape(kv_heads, batch, rows, 1).transpose(0, 1)

    own_scores = torch.matmul(q, key.float().transpose(-1, -2)) * scale  # [B, KV, rows, W]
    allowed = _allowed(attention_mask, batch, length, key.shape[2], query.device)
    if allowed is not None:  # [B or 1, 1, Q, W] -> per query row of the group
        allowed = allowed.unsqueeze(2).expand(-1, -1, group, -1, -1).reshape(allowed.shape[0], 1, rows, -1)
        own_scores = own_scores.masked_fill(~allowed, float("-inf"))
    top = torch.maximum(prefix_max, own_scores.amax(-1, keepdim=True))  # finite: the prefix is never masked

    prefix_weights = torch.exp(prefix_scores - top.transpose(0, 1).reshape(kv_heads, batch * rows, 1))
    own_weights = torch.exp(own_scores - top)
    prefix_out = torch.matmul(prefix_weights, prefix_values[0].float())  # [KV, B*rows, D]
    prefix_sum = prefix_weights.sum(-1, keepdim=True)
    out = torch.matmul(own_weights, value.float())
    out += prefix_out.reshape(kv_heads, batch, rows, dim).transpose(0, 1)
    out /= own_weights.sum(-1, keepdim=True) + prefix_sum.reshape(kv_heads, batch, rows, 1).transpose(0, 1)
    out = out.reshape(batch, heads, length, dim).transpose(1, 2).contiguous()
    return out.to(query.dtype), None


def _prefill(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
             attention_mask: torch.Tensor | None, scaling: float | None, prefix_keys: torch.Tensor,
             prefix_values: torch.Tensor, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """Many queries per row: the copies cost little next to the scores, and the fused kernel keeps those in cache."""
    batch, _, length, _ = query.shape
    allowed = _allowed(attention_mask, batch, length, key.shape[2], query.device)
    if allowed is None:
        allowed = torch.ones((1, 1, length, key.shape[2]), dtype=torch.bool, device=query.device)
    allowed = torch.cat([allowed.new_ones((*allowed.shape[:3], prefix_keys.shape[2])), allowed], dim=3)
    key = torch.cat([prefix_keys.expand(batch, -1, -1, -1), key], dim=2)
    value = torch.cat([prefix_values.expand(batch, -1, -1, -1), value], dim=2)
    return sdpa_attention_forward(module, query, key, value, allowed.expand(batch, -1, -1, -1), scaling=scaling,
                                  **kwargs)


def _allowed(mask: torch.Tensor | None, batch: int, length: int, width: int,
             device: torch.device) -> torch.Tensor | None:
    """The mask transformers built for SDPA as booleans (True: may attend); None (no padding) means causal."""
    if mask is None:
        if length == 1:
            return None
        return torch.ones((length, width), dtype=torch.bool, device=device).tril(width - length)[None, None]
    if mask.dtype == torch.bool:
        return mask
    return mask == 0  # an additive float mask: 0 where allowed, the dtype's minimum where not


AttentionInterface.register(NAME, shared_prefix_attention)
ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)


@contextmanager
def enabled(model: Any) -> Iterator[None]:
    """Run `model` (a transformers model, or a peft one over it) with this attention, then restore its own."""
    config = model.config
    before = config._attn_implementation
    config._attn_implementation = NAME
    try:
        yield
    finally:
        config._attn_implementation = before
