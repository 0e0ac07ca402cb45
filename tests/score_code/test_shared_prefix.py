"""Shared-prefix attention equals SDPA over the prefix concatenated to every row, for decode and prefill shapes,
with padding masks in either form and with none (causal)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from score_code.generation import shared_prefix

BATCH, KV_HEADS, GROUP, DIM, PREFIX = 3, 2, 3, 8, 5


def _reference(query, keys, values, prefix_keys, prefix_values, allowed):
    """SDPA with the prefix copied in front of each row's keys and values (what the cache used to hold)."""
    batch = query.shape[0]
    keys = torch.cat([prefix_keys.expand(batch, -1, -1, -1), keys], dim=2).repeat_interleave(GROUP, dim=1)
    values = torch.cat([prefix_values.expand(batch, -1, -1, -1), values], dim=2).repeat_interleave(GROUP, dim=1)
    allowed = torch.cat([allowed.new_ones((*allowed.shape[:3], PREFIX)), allowed], dim=3)
    out = torch.nn.functional.scaled_dot_product_attention(query, keys, values, attn_mask=allowed)
    return out.transpose(1, 2)


@pytest.mark.parametrize("length", [1, 4])
@pytest.mark.parametrize("form", ["bool", "float", "none"])
def test_matches_sdpa_over_the_prefix_copied_into_every_row(length, form):
    gen = torch.Generator().manual_seed(length)
    width = 6
    query = torch.randn(BATCH, KV_HEADS * GROUP, length, DIM, generator=gen)
    keys, values = (torch.randn(BATCH, KV_HEADS, width, DIM, generator=gen) for _ in range(2))
    prefix = [tuple(torch.randn(1, KV_HEADS, PREFIX, DIM, generator=gen) for _ in range(2))]
    causal = torch.ones(length, width, dtype=torch.bool).tril(width - length)
    allowed = causal.expand(BATCH, 1, length, width).clone()
    if form != "none":
        allowed[0, :, :, :2] = False  # row 0 is left-padded by two positions
    mask = {"bool": allowed, "float": torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min),
            "none": None}[form]
    module = SimpleNamespace(layer_idx=0, num_key_value_groups=GROUP, is_causal=True)
    out, weights = shared_prefix.shared_prefix_attention(module, query, keys, values, mask, shared_prefix=prefix)
    assert weights is None and out.shape == (BATCH, length, KV_HEADS * GROUP, DIM)
    expected = _reference(query, keys, values, *prefix[0], allowed)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


def test_without_a_prefix_it_is_sdpa_and_the_switch_restores_the_model(tiny_model):
    gen = torch.Generator().manual_seed(0)
    query = torch.randn(1, 2, 3, DIM, generator=gen)
    keys, values = (torch.randn(1, 2, 3, DIM, generator=gen) for _ in range(2))
    module = SimpleNamespace(layer_idx=0, num_key_value_groups=1, is_causal=True)
    out, _ = shared_prefix.shared_prefix_attention(module, query, keys, values, None)
    expected = torch.nn.functional.scaled_dot_product_attention(query, keys, values, is_causal=True)
    torch.testing.assert_close(out, expected.transpose(1, 2))

    before = tiny_model.config._attn_implementation
    with pytest.raises(RuntimeError, match="inside"):
        with shared_prefix.enabled(tiny_model):
            assert tiny_model.config._attn_implementation == shared_prefix.NAME
            raise RuntimeError("inside")
    assert tiny_model.config._attn_implementation == before
