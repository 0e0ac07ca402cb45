"""bf16 compute against the fp32 reference path: the trainer's loss and gradients, and greedy decoding.

Tolerances (stated in README, "Speed"): under bf16 autocast over float32 master weights, the stage loss is within 2%
of fp32's and the gradient within 0.99 cosine and 5% norm; greedy bf16 decoding equals fp32's up to the first
token where fp32's own top-two logits are within NEAR_TIE of each other (bf16 rounds the logits by more than that).
"""
from __future__ import annotations

import copy

import pytest
import torch

from benchmarks import prompts
from benchmarks.generation import SamplingParams
from benchmarks.tasks import load_humaneval
from score_code.generation.hf import HFGenerator
from score_code.models import load_model
from score_code.train.common import compute_context, sequence_log_probs
from score_code.train.objectives import Normalizers, stage_loss
from score_code.train.rollout import Episode, collate

NEAR_TIE = 0.25  # logits; measured: bf16 flipped fp32 argmaxes whose margin was 0.002-0.08, never above 0.1


@pytest.fixture(scope="module")
def default_model():
    """The embedded SmolLM2-135M-Instruct in float32: real weights, whose bf16 rounding errors are the real ones."""
    return load_model(None, dtype="fp32", device="cpu")


def _episodes() -> list[Episode]:
    gen = torch.Generator().manual_seed(0)
    episodes = []
    for i in range(2):
        ids = torch.randint(100, 40000, (32,), generator=gen).tolist()
        episodes.append(Episode("t", i, ids, (8, 18), (22, 32), "", "", "stop", "stop", float(i), 1.0))
    return episodes


def _loss_and_grad(policy, reference, batch, stage: int, dtype: torch.dtype) -> tuple[float, torch.Tensor]:
    """As the trainer computes them: both models' log-probs in the same compute context, the stage's loss."""
    policy.zero_grad(set_to_none=True)
    with compute_context(torch.device("cpu"), dtype):
        with torch.no_grad():
            reference_logp = sequence_log_probs(reference, batch)
        logp = sequence_log_probs(policy, batch)
    advantage = torch.tensor([1.0, -0.5])
    terms = stage_loss(stage, logp, reference_logp, batch.mask1, batch.mask2, advantage, -advantage, 0.01, 0.25,
                       normalizers=Normalizers.of(batch.mask1, batch.mask2))
    terms.loss.backward()
    grad = torch.cat([p.grad.flatten() for p in policy.parameters() if p.grad is not None])
    return terms.loss.item(), grad.double()


@pytest.mark.parametrize("stage", [1, 2])
def test_bf16_compute_gives_the_fp32_loss_and_gradient_within_tolerance(default_model, stage):
    reference = default_model.model
    policy = copy.deepcopy(reference).train()
    with torch.no_grad():  # a policy some steps away from its reference, so the KL terms and their gradients count
        gen = torch.Generator().manual_seed(1)
        for p in policy.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05 * p.std())
    assert all(p.dtype == torch.float32 for p in policy.parameters())  # master weights
    batch = collate(_episodes(), pad_token_id=0)
    loss32, grad32 = _loss_and_grad(policy, reference, batch, stage, torch.float32)
    loss16, grad16 = _loss_and_grad(policy, reference, batch, stage, torch.bfloat16)
    assert all(p.grad.dtype == torch.float32 for p in policy.parameters())  # float32 weights get float32 gradients
    assert loss16 == pytest.approx(loss32, rel=0.02)
    assert torch.nn.functional.cosine_similarity(grad32, grad16, dim=0) > 0.99
    assert float(grad16.norm() / grad32.norm()) == pytest.approx(1.0, abs=0.05)
    assert not torch.equal(grad16, grad32)  # bf16 really ran


def test_greedy_bf16_decoding_equals_fp32_up_to_the_first_near_tie(default_model):
    """The fast path (a bf16 model with float32 logits, what `--dtype auto` loads on a CPU with native bf16) against
    the reference path (fp32) on HumanEval prompts, batched as the harness batches them."""
    tokenizer, model32 = default_model.tokenizer, default_model.model
    model16 = load_model(None, dtype="bf16", device="cpu", float32_logits=True).model  # as `score-code eval` loads it
    assert model16.model.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16
    dialogues = [prompts.first_dialogue(task) for task in load_humaneval()[:8]]
    params = SamplingParams(max_new_tokens=48)
    reference = HFGenerator(model32, tokenizer, batch_size=8).generate(dialogues, params)
    fast = HFGenerator(model16, tokenizer, batch_size=8).generate(dialogues, params)
    compared = 0
    for ref, got in zip(reference, fast, strict=True):
        ids = ref.prompt_token_ids + ref.token_ids
        with torch.no_grad():  # fp32's own logits along its greedy path: how close each choice was
            logits = model32(input_ids=torch.tensor([ids])).logits[0, len(ref.prompt_token_ids) - 1:-1].float()
        top = logits.topk(2, dim=-1).values
        margins = (top[:, 0] - top[:, 1]).tolist()
        assert ref.token_ids == logits.argmax(dim=-1).tolist()[:len(ref.token_ids)]  # the path is fp32's greedy one
        sure = next((i for i, margin in enumerate(margins) if margin < NEAR_TIE), len(margins))
        assert got.token_ids[:sure] == ref.token_ids[:sure]
        compared += sure
    assert compared >= 8 * 10  # not vacuous: near ties do not come at the first tokens
