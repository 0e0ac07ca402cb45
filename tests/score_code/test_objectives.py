"""Rewards, advantages and losses of both SCoRe stages on hand-made tensors."""
from __future__ import annotations

import math

import pytest
import torch

from score_code.train import objectives as obj


def test_shaped_reward_table_alpha_10():
    r1 = torch.tensor([0.0, 1.0, 0.0, 1.0])
    r2 = torch.tensor([1.0, 1.0, 0.0, 0.0])
    shaped1, shaped2 = obj.shaped_rewards(r1, r2, alpha=10.0)
    assert shaped1.tolist() == [0.0, 1.0, 0.0, 1.0]
    assert shaped2.tolist() == [11.0, 1.0, 0.0, -10.0]  # 0->1, 1->1, 0->0, 1->0


def test_leave_one_out_baseline_by_hand():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0])
    valid = torch.ones(8, dtype=torch.bool)
    adv = obj.advantages(rewards, valid, samples_per_prompt=4, baseline="rloo")
    # prompt A: [1,0,0,1]: 1 - (0+0+1)/3 = 2/3 ; 0 - (1+0+1)/3 = -2/3
    # prompt B: [1,1,0,0]: same numbers
    expected = [2 / 3, -2 / 3, -2 / 3, 2 / 3, 2 / 3, 2 / 3, -2 / 3, -2 / 3]
    assert adv.tolist() == pytest.approx(expected)
    assert adv.view(2, 4).sum(dim=1).tolist() == pytest.approx([0.0, 0.0], abs=1e-6)


def test_rloo_all_equal_rewards_give_zero_advantage():
    adv = obj.advantages(torch.ones(6), torch.ones(6, dtype=torch.bool), 3, "rloo")
    assert adv.tolist() == [0.0] * 6


def test_sandbox_errors_are_neither_scored_nor_a_baseline():
    rewards = torch.tensor([1.0, 0.0, 123.0, 0.0])  # 123: garbage where the sandbox failed
    valid = torch.tensor([True, True, False, True])
    adv = obj.advantages(rewards, valid, 4, "rloo")
    assert adv[2] == 0.0
    assert adv[0].item() == pytest.approx(1.0 - 0.0)  # peers 0, 0
    assert adv[1].item() == pytest.approx(0.0 - 0.5)  # peers 1, 0


def test_episode_without_valid_peer_gets_no_advantage():
    adv = obj.advantages(torch.tensor([1.0, 0.0]), torch.tensor([True, False]), 2, "rloo")
    assert adv.tolist() == [0.0, 0.0]


def test_no_baseline_is_plain_reinforce():
    adv = obj.advantages(torch.tensor([1.0, 0.0, 1.0]), torch.tensor([True, True, False]), 3, "none")
    assert adv.tolist() == [1.0, 0.0, 0.0]


def test_stage_advantages():
    r1 = torch.tensor([0.0, 1.0, 0.0, 1.0])
    r2 = torch.tensor([1.0, 1.0, 0.0, 0.0])
    valid = torch.ones(4, dtype=torch.bool)
    a1, a2 = obj.stage_advantages(1, r1, r2, valid, 4, "none", alpha=10.0)
    assert a1.tolist() == [0.0] * 4 and a2.tolist() == [1.0, 1.0, 0.0, 0.0]
    a1, a2 = obj.stage_advantages(2, r1, r2, valid, 4, "none", alpha=10.0)
    assert a1.tolist() == [0.0, 1.0, 0.0, 1.0] and a2.tolist() == [11.0, 1.0, 0.0, -10.0]
    a1, a2 = obj.stage_advantages(2, r1, r2, valid, 4, "rloo", alpha=10.0)
    assert a2.tolist() == pytest.approx([11 - (1 + 0 - 10) / 3, 1 - (11 + 0 - 10) / 3, 0 - (11 + 1 - 10) / 3,
                                         -10 - (11 + 1 + 0) / 3])


def test_k3_kl_is_zero_at_reference_and_positive_elsewhere():
    logp = torch.tensor([-1.0, -2.0, -0.5])
    assert obj.k3_kl(logp, logp).tolist() == [0.0, 0.0, 0.0]
    kl = obj.k3_kl(logp, torch.tensor([-1.5, -1.0, -0.5]))
    assert kl[0] > 0 and kl[1] > 0 and kl[2] == 0
    assert kl[0].item() == pytest.approx(math.exp(-0.5) + 0.5 - 1)


def test_selected_log_probs_match_log_softmax():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    ids = torch.randint(0, 7, (2, 5))
    out = obj.selected_log_probs(logits, ids)
    assert out.shape == (2, 5)
    expected = torch.log_softmax(logits[1, 2], -1)[ids[1, 2]]
    assert out[1, 2].item() == pytest.approx(expected.item(), abs=1e-6)


# One episode laid out as: prompt (0-1) | attempt 1 (2-4) | instruction (5-6) | attempt 2 (7-9) | padding (10)
MASK1 = torch.tensor([[0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0]], dtype=torch.float)
MASK2 = torch.tensor([[0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 0]], dtype=torch.float)


def _logps() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    ref = -torch.rand(1, 11) - 0.1
    logp = (ref + 0.3 * torch.randn(1, 11)).requires_grad_(True)  # away from the reference: KL has a gradient
    return logp, ref


def test_stage1_policy_gradient_does_not_touch_attempt1_but_beta2_does():
    logp, ref = _logps()
    adv1, adv2 = torch.tensor([5.0]), torch.tensor([1.0])
    pg_only = obj.stage_loss(1, logp, ref, MASK1, MASK2, adv1, adv2, beta1=0.0, beta2=0.0)
    (grad,) = torch.autograd.grad(pg_only.loss, logp)
    assert grad[0, 2:5].abs().sum() == 0  # the attempt-1 advantage is ignored in stage I
    assert (grad[0, 7:10] != 0).all()

    kl_only = obj.stage_loss(1, logp, ref, MASK1, MASK2, adv1, torch.tensor([0.0]), beta1=0.0, beta2=0.25)
    (grad,) = torch.autograd.grad(kl_only.loss, logp)
    assert (grad[0, 2:5] != 0).all()  # beta2 anchors attempt 1 through its own log-probs
    assert grad[0, 7:10].abs().sum() == 0
    assert kl_only.kl1 > 0


def test_prompt_instruction_and_padding_never_get_gradient():
    logp, ref = _logps()
    for stage in (1, 2):
        for how in ("token", "sequence"):
            terms = obj.stage_loss(stage, logp, ref, MASK1, MASK2, torch.tensor([2.0]), torch.tensor([-3.0]),
                                   beta1=0.5, beta2=0.5, aggregation=how)
            (grad,) = torch.autograd.grad(terms.loss, logp)
            assert grad[0, [0, 1, 5, 6, 10]].abs().sum() == 0, (stage, how)
            assert (grad[0, 2:5] != 0).all() and (grad[0, 7:10] != 0).all()


def test_stage1_loss_value_by_hand():
    logp, ref = _logps()
    terms = obj.stage_loss(1, logp, ref, MASK1, MASK2, torch.tensor([9.0]), torch.tensor([0.5]),
                           beta1=0.01, beta2=0.25)
    kl = obj.k3_kl(logp, ref)
    kl1, kl2 = kl[0, 2:5].mean(), kl[0, 7:10].mean()
    assert terms.kl1.item() == pytest.approx(kl1.item(), rel=1e-6)
    assert terms.loss.item() == pytest.approx(-0.5 + 0.25 * kl1.item() + 0.01 * kl2.item(), rel=1e-6)


def test_stage2_credits_each_attempt_with_its_own_advantage():
    logp, ref = _logps()
    terms = obj.stage_loss(2, logp, ref, MASK1, MASK2, torch.tensor([1.0]), torch.tensor([11.0]),
                           beta1=0.0, beta2=123.0)
    (grad,) = torch.autograd.grad(terms.loss, logp)
    # token mean per attempt (3 tokens each): d loss / d logp_t = -advantage / 3
    assert grad[0, 2:5].tolist() == pytest.approx([-1 / 3] * 3)
    assert grad[0, 7:10].tolist() == pytest.approx([-11 / 3] * 3)
    assert terms.pg_loss.item() == pytest.approx(-12.0)


def test_token_and_sequence_aggregation_differ_as_defined():
    logp = torch.zeros(2, 4, requires_grad=True)
    ref = torch.zeros(2, 4)
    mask1 = torch.zeros(2, 4)
    mask2 = torch.tensor([[1.0, 0, 0, 0], [1, 1, 1, 0]])  # lengths 1 and 3
    adv2 = torch.tensor([1.0, 1.0])
    tok = obj.stage_loss(1, logp, ref, mask1, mask2, adv2, adv2, 0.0, 0.0, aggregation="token")
    (g_tok,) = torch.autograd.grad(tok.loss, logp)
    assert g_tok[0, 0].item() == pytest.approx(-1 / 4) and g_tok[1, 0].item() == pytest.approx(-1 / 4)
    seq = obj.stage_loss(1, logp, ref, mask1, mask2, adv2, adv2, 0.0, 0.0, aggregation="sequence")
    (g_seq,) = torch.autograd.grad(seq.loss, logp)
    assert g_seq[0, 0].item() == pytest.approx(-1 / 2) and g_seq[1, 0].item() == pytest.approx(-1 / 6)


def test_sequence_mean_ignores_episodes_without_tokens_in_the_loss():
    logp = torch.zeros(3, 3, requires_grad=True)
    mask2 = torch.tensor([[0.0, 1, 1], [0, 1, 0], [0, 0, 0]])  # the third episode: sandbox error, masked out
    terms = obj.stage_loss(1, logp, torch.zeros(3, 3), torch.zeros(3, 3), mask2, torch.ones(3), torch.ones(3),
                           0.0, 0.0, aggregation="sequence")
    (grad,) = torch.autograd.grad(terms.loss, logp)
    assert grad[0, 1].item() == pytest.approx(-1 / 4) and grad[1, 1].item() == pytest.approx(-1 / 2)


def test_micro_batches_with_batch_normalizers_sum_to_the_batch_loss():
    torch.manual_seed(3)
    logp, ref = -torch.rand(4, 6), -torch.rand(4, 6)
    mask1 = (torch.rand(4, 6) > 0.5).float()
    mask2 = (torch.rand(4, 6) > 0.5).float() * (1 - mask1)
    a1, a2 = torch.randn(4), torch.randn(4)
    for how in ("token", "sequence"):
        whole = obj.stage_loss(2, logp, ref, mask1, mask2, a1, a2, 0.1, 0.2, how).loss
        norm = obj.Normalizers.of(mask1, mask2)
        parts = sum(
            obj.stage_loss(2, logp[s], ref[s], mask1[s], mask2[s], a1[s], a2[s], 0.1, 0.2, how, norm).loss
            for s in (slice(0, 1), slice(1, 4))
        )
        assert parts.item() == pytest.approx(whole.item(), rel=1e-5)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="multiple of samples_per_prompt=4"):
        obj.advantages(torch.ones(6), torch.ones(6, dtype=torch.bool), 4, "rloo")
    with pytest.raises(ValueError, match="unknown baseline"):
        obj.advantages(torch.ones(4), torch.ones(4, dtype=torch.bool), 4, "mean")
    with pytest.raises(ValueError, match="stage must be 1 or 2"):
        obj.stage_advantages(3, torch.ones(2), torch.ones(2), torch.ones(2, dtype=torch.bool), 2, "rloo", 10.0)


# --- the GPU-path review (issue #13) ---------------------------------------------------------------------------------


def test_selected_log_probs_divide_by_the_temperature_and_chunk_rows():
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 11)
    ids = torch.randint(0, 11, (3, 5))
    expected = torch.log_softmax(logits / 0.7, -1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(obj.selected_log_probs(logits, ids, temperature=0.7, chunk_rows=4), expected, atol=1e-6)


def test_selected_log_probs_keep_no_full_vocabulary_float32_tensor_for_backward():
    """bf16 logits of 64 rows: backward may hold them (bf16) but no float32 copy or log_softmax of all 64 rows."""
    torch.manual_seed(0)
    logits = torch.randn(2, 32, 1000, dtype=torch.bfloat16, requires_grad=True)
    ids = torch.randint(0, 1000, (2, 32))
    saved: list[torch.Tensor] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = obj.selected_log_probs(logits, ids, chunk_rows=8)
    out.sum().backward()
    big_float32 = [t.shape for t in saved if t.dtype == torch.float32 and t.numel() > 8 * 1000]
    assert not big_float32, big_float32
    reference = torch.log_softmax(logits.detach().float(), -1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(out.detach(), reference, atol=1e-5) and logits.grad is not None


@pytest.mark.parametrize("estimator", ["k3", "k2"])
def test_kl_gradient_per_token_equals_its_hand_value(estimator):
    """k3: d/dlogp [exp(d) - d - 1] = 1 - exp(ref - logp); k2: d/dlogp [0.5 (logp - ref)^2] = logp - ref; each
    token of attempt 1 (3 tokens, token mean) gets beta2 / 3 of it."""
    logp, ref = _logps()
    terms = obj.stage_loss(1, logp, ref, MASK1, MASK2, torch.zeros(1), torch.zeros(1), beta1=0.0, beta2=0.25,
                           kl_estimator=estimator)
    (grad,) = torch.autograd.grad(terms.loss, logp)
    d = (ref - logp.detach())[0, 2:5]
    per_token = 1 - torch.exp(d) if estimator == "k3" else -d
    assert grad[0, 2:5].tolist() == pytest.approx((0.25 / 3 * per_token).tolist(), rel=1e-5)
    assert grad[0, 7:10].abs().sum() == 0


def test_masked_positions_with_huge_log_prob_gaps_do_not_make_the_loss_nan():
    logp, ref = _logps()
    logp = logp.detach().clone()
    logp[0, 10] = -200.0  # padding: exp(ref - logp) overflows float32
    logp.requires_grad_(True)
    terms = obj.stage_loss(2, logp, ref, MASK1, MASK2, torch.ones(1), torch.ones(1), beta1=0.1, beta2=0.1)
    (grad,) = torch.autograd.grad(terms.loss, logp)
    assert math.isfinite(terms.loss.item()) and torch.isfinite(grad).all() and grad[0, 10] == 0


def test_global_normalizers_make_two_processes_average_to_the_whole_batch_gradient():
    """Two ranks with unequal token counts: averaging their gradients (DDP) gives the one-process gradient."""
    torch.manual_seed(4)
    logp = (-torch.rand(4, 6)).requires_grad_(True)
    ref = -torch.rand(4, 6)
    mask1 = torch.zeros(4, 6)
    mask2 = torch.tensor([[1.0, 1, 1, 1, 1, 0], [1, 1, 1, 1, 0, 0], [1, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0]])
    a = torch.randn(4)
    (whole,) = torch.autograd.grad(obj.stage_loss(1, logp, ref, mask1, mask2, a, a, 0.1, 0.1).loss, logp)
    ranks = (slice(0, 2), slice(2, 4))
    total = sum(torch.tensor(obj.Normalizers._counts(mask1[r], mask2[r]), dtype=torch.float64) for r in ranks)
    averaged = torch.zeros_like(logp)
    for r in ranks:
        norm = obj.Normalizers.across_processes(mask1[r], mask2[r], lambda counts: total, world_size=2)
        loss = obj.stage_loss(1, logp[r], ref[r], mask1[r], mask2[r], a[r], a[r], 0.1, 0.1, normalizers=norm).loss
        (g,) = torch.autograd.grad(loss, logp)
        averaged += g / 2
    assert torch.allclose(averaged, whole, atol=1e-6)


def test_importance_weights_reweight_the_policy_gradient_truncated_at_the_cap():
    logp, ref = _logps()
    sampling = logp.detach().clone()
    sampling[0, 7] -= 0.5  # the engine gave token 7 less probability: weight e^0.5
    sampling[0, 8] -= 5.0  # much less: truncated at the cap
    weights = obj.importance_weights(logp, sampling, cap=2.0)
    terms = obj.stage_loss(1, logp, ref, MASK1, MASK2, torch.zeros(1), torch.ones(1), 0.0, 0.0, weights=weights)
    (grad,) = torch.autograd.grad(terms.loss, logp)
    assert grad[0, 7:10].tolist() == pytest.approx([-math.exp(0.5) / 3, -2.0 / 3, -1 / 3], rel=1e-5)
    assert torch.equal(obj.importance_weights(logp, None, 2.0), torch.ones_like(logp))
    unknown = torch.full_like(sampling, math.nan)
    assert torch.equal(obj.importance_weights(logp, unknown, 2.0), torch.ones_like(logp))  # the policy sampled
    weighted = obj.stage_loss(1, logp, ref, MASK1, MASK2, torch.zeros(1), torch.zeros(1), 0.0, 0.0, weights=weights)
    kl = obj.k3_kl(logp, ref).detach()[0, 7:10]
    assert weighted.kl2.item() == pytest.approx((kl * weights[0, 7:10]).mean().item(), rel=1e-5)  # the KL too


@pytest.mark.parametrize("baseline", ["rloo", "none"])
def test_alpha_0_stage2_is_reinforce_on_each_attempts_own_reward_plus_the_kl(baseline):
    """The Table-4 ablation "no reward shaping": with alpha 0, stage II is REINFORCE on r1 for attempt 1 and r2 for
    attempt 2 (each with the same baseline, discount 0), plus beta1 * KL on both attempts."""
    r1 = torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0, 0.0])
    r2 = torch.tensor([1.0, 1.0, 0.0, 0.0, 1.0, 0.0])
    valid = torch.ones(6, dtype=torch.bool)
    a1, a2 = obj.stage_advantages(2, r1, r2, valid, 3, baseline, alpha=0.0)
    assert torch.equal(a1, obj.advantages(r1, valid, 3, baseline))
    assert torch.equal(a2, obj.advantages(r2, valid, 3, baseline))
    if baseline == "none":
        assert torch.equal(a1, r1) and torch.equal(a2, r2)

    logp, ref = _logps()
    adv1, adv2 = a1[1:2], a2[1:2]  # one episode: r1 = r2 = 1
    pg = obj.stage_loss(2, logp, ref, MASK1, MASK2, adv1, adv2, beta1=0.0, beta2=123.0)
    (grad,) = torch.autograd.grad(pg.loss, logp)
    assert grad[0, 2:5].tolist() == pytest.approx([-adv1.item() / 3] * 3)  # d(-A * mean logp)/d logp_t
    assert grad[0, 7:10].tolist() == pytest.approx([-adv2.item() / 3] * 3)
    with_kl = obj.stage_loss(2, logp, ref, MASK1, MASK2, adv1, adv2, beta1=0.01, beta2=123.0)
    assert with_kl.loss.item() == pytest.approx(pg.loss.item() + 0.01 * (pg.kl1 + pg.kl2).item(), rel=1e-6)


def test_groups_with_signal_are_those_with_a_nonzero_advantage():
    # groups of 2: all fail, mixed, all pass (attempt 2); attempt 1 fails everywhere
    r1 = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    r2 = torch.tensor([0.0, 0.0, 1.0, 0.0, 1.0, 1.0])
    valid = torch.ones(6, dtype=torch.bool)
    for stage in (1, 2):
        a1, a2 = obj.stage_advantages(stage, r1, r2, valid, 2, "rloo", alpha=10.0)
        assert obj.groups_with_signal(a1, a2, 2).tolist() == [False, True, False], stage
    a1, a2 = obj.stage_advantages(1, r1, r2, valid, 2, "none", alpha=10.0)
    assert obj.groups_with_signal(a1, a2, 2).tolist() == [False, True, True]  # no baseline: passing is signal
    # stage II: attempt 2 alike (all pass), attempt 1 mixed -> shaped rewards differ -> signal
    a1, a2 = obj.stage_advantages(2, torch.tensor([1.0, 0.0]), torch.ones(2), torch.ones(2, dtype=torch.bool), 2,
                                  "rloo", alpha=0.0)
    assert obj.groups_with_signal(a1, a2, 2).tolist() == [True]
    # a sandbox error leaves a group whose only valid episode has no peer: no signal
    a1, a2 = obj.stage_advantages(1, torch.zeros(2), torch.tensor([1.0, 0.0]), torch.tensor([True, False]), 2,
                                  "rloo", alpha=10.0)
    assert obj.groups_with_signal(a1, a2, 2).tolist() == [False]
