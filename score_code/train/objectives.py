"""SCoRe losses as pure tensor functions (docs/method.md §2-4).

Shapes: B episodes (P prompts x k samples, the k samples of a prompt consecutive), T token positions.
`logp` and `ref_logp` are per-token log-probabilities of the sampled tokens under the policy and the frozen
reference; `mask1` / `mask2` select attempt-1 / attempt-2 tokens (prompt, instruction and padding are 0).

Stage I   loss = PG(attempt 2, A(r2))                  + beta2 * KL(attempt 1) + beta1 * KL(attempt 2)
Stage II  loss = PG(attempt 1, A(r1)) + PG(attempt 2, A(r2 + alpha * (r2 - r1))) + beta1 * (KL(1) + KL(2))

Every term is aggregated over its own attempt's tokens, so beta2 multiplies "the KL of attempt 1" whatever the
attempts' lengths. The KL is the per-token k3 estimator; its gradient flows through the attempt's own
log-probabilities (not folded into the scalar that multiplies the policy gradient, which would not anchor y1).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

Baseline = Literal["rloo", "none"]
Aggregation = Literal["token", "sequence"]


def selected_log_probs(logits: Tensor, target_ids: Tensor) -> Tensor:
    """log softmax(logits)[target]: (B, N, V) logits and the (B, N) ids they predict -> (B, N), in float32."""
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, target_ids.unsqueeze(-1)).squeeze(-1)


def k3_kl(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """Per-token k3 estimate of KL(pi || pi_ref) for tokens sampled from pi: exp(d) - d - 1 with d = ref - logp.

    Non-negative, unbiased, and differentiable in `logp` (Schulman, "Approximating KL divergence", 2020).
    """
    delta = ref_logp - logp
    return torch.exp(delta) - delta - 1.0


def shaped_rewards(reward1: Tensor, reward2: Tensor, alpha: float) -> tuple[Tensor, Tensor]:
    """Stage-II rewards: attempt 1 keeps r1, attempt 2 gets r2 + alpha * (r2 - r1) (a bonus for fixing)."""
    return reward1, reward2 + alpha * (reward2 - reward1)


def advantages(rewards: Tensor, valid: Tensor, samples_per_prompt: int, baseline: Baseline) -> Tensor:
    """Advantage per episode: reward minus the leave-one-out mean of the other valid samples of its prompt ("rloo"),
    or the reward itself ("none", plain REINFORCE as in the paper).

    `valid` is False for episodes whose reward is unknown (sandbox error): they get advantage 0 and are not used as
    anyone's baseline. An episode with no valid peer gets advantage 0 under "rloo" (no baseline to compare with).
    """
    if rewards.shape[0] % samples_per_prompt:
        raise ValueError(f"{rewards.shape[0]} episodes are not a multiple of samples_per_prompt={samples_per_prompt}")
    valid_f = valid.to(rewards.dtype)
    r = torch.where(valid, rewards, torch.zeros_like(rewards))
    if baseline == "none":
        return r * valid_f
    if baseline != "rloo":
        raise ValueError(f"unknown baseline {baseline!r} (rloo or none)")
    grouped_r = r.view(-1, samples_per_prompt)
    grouped_n = valid_f.view(-1, samples_per_prompt)
    peers_sum = grouped_r.sum(dim=1, keepdim=True) - grouped_r
    peers_n = grouped_n.sum(dim=1, keepdim=True) - grouped_n
    mean_of_peers = peers_sum / peers_n.clamp(min=1.0)
    adv = (grouped_r - mean_of_peers) * (peers_n > 0).to(r.dtype) * grouped_n
    return adv.view(-1)


def stage_advantages(
    stage: int,
    reward1: Tensor,
    reward2: Tensor,
    valid: Tensor,
    samples_per_prompt: int,
    baseline: Baseline,
    alpha: float,
) -> tuple[Tensor, Tensor]:
    """(advantage of attempt 1, advantage of attempt 2) for a stage. Stage I gives attempt 1 no task reward."""
    if stage == 1:
        return torch.zeros_like(reward1), advantages(reward2, valid, samples_per_prompt, baseline)
    if stage == 2:
        shaped1, shaped2 = shaped_rewards(reward1, reward2, alpha)
        return (
            advantages(shaped1, valid, samples_per_prompt, baseline),
            advantages(shaped2, valid, samples_per_prompt, baseline),
        )
    raise ValueError(f"stage must be 1 or 2, got {stage}")


@dataclass
class Normalizers:
    """Denominators of the aggregation, taken over the whole optimizer batch so that summing the losses of
    micro-batches gives the loss of the batch. Token mean: the attempt's tokens; sequence mean: the episodes
    whose attempt has tokens in the loss (sandbox errors and offline first attempts do not dilute it)."""

    tokens1: float
    tokens2: float
    sequences1: float
    sequences2: float

    @classmethod
    def of(cls, mask1: Tensor, mask2: Tensor) -> Normalizers:
        return cls(
            tokens1=max(float(mask1.sum()), 1.0),
            tokens2=max(float(mask2.sum()), 1.0),
            sequences1=max(float((mask1.sum(dim=1) > 0).sum()), 1.0),
            sequences2=max(float((mask2.sum(dim=1) > 0).sum()), 1.0),
        )


@dataclass
class LossTerms:
    loss: Tensor  # what backward() is called on
    pg_loss: Tensor  # policy-gradient part (value: minus the mean advantage; the gradient is what matters)
    kl1: Tensor  # aggregated per-token KL of attempt 1 (detached, for logging)
    kl2: Tensor  # same for attempt 2


def _aggregate(per_token: Tensor, mask: Tensor, how: Aggregation, tokens: float, sequences: float) -> Tensor:
    masked = per_token * mask
    if how == "token":
        return masked.sum() / tokens
    if how == "sequence":
        per_sequence = masked.sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        return per_sequence.sum() / sequences
    raise ValueError(f"unknown loss aggregation {how!r} (token or sequence)")


def score_loss(
    logp: Tensor,
    ref_logp: Tensor,
    mask1: Tensor,
    mask2: Tensor,
    advantage1: Tensor | None,
    advantage2: Tensor,
    kl_coef1: float,
    kl_coef2: float,
    aggregation: Aggregation = "token",
    normalizers: Normalizers | None = None,
) -> LossTerms:
    """REINFORCE on each attempt with its own advantage, plus a per-attempt k3 KL penalty.

    `advantage1=None` means attempt 1 gets no policy-gradient term at all (stage I). On-policy, so the ratio
    exp(logp - logp.detach()) is 1 and its gradient is grad logp: the loss value reads as -advantage + KL.
    """
    mask1 = mask1.to(logp.dtype)
    mask2 = mask2.to(logp.dtype)
    norm = normalizers or Normalizers.of(mask1, mask2)
    ratio = torch.exp(logp - logp.detach())
    kl = k3_kl(logp, ref_logp.detach())

    pg2 = _aggregate(-ratio * advantage2.unsqueeze(1), mask2, aggregation, norm.tokens2, norm.sequences2)
    pg = pg2
    if advantage1 is not None:
        pg = pg + _aggregate(-ratio * advantage1.unsqueeze(1), mask1, aggregation, norm.tokens1, norm.sequences1)
    kl1 = _aggregate(kl, mask1, aggregation, norm.tokens1, norm.sequences1)
    kl2 = _aggregate(kl, mask2, aggregation, norm.tokens2, norm.sequences2)
    loss = pg + kl_coef1 * kl1 + kl_coef2 * kl2
    return LossTerms(loss=loss, pg_loss=pg.detach(), kl1=kl1.detach(), kl2=kl2.detach())


def stage_loss(
    stage: int,
    logp: Tensor,
    ref_logp: Tensor,
    mask1: Tensor,
    mask2: Tensor,
    advantage1: Tensor,
    advantage2: Tensor,
    beta1: float,
    beta2: float,
    aggregation: Aggregation = "token",
    normalizers: Normalizers | None = None,
) -> LossTerms:
    """The stage's loss: stage I = PG on attempt 2 + beta2 KL(1) + beta1 KL(2); stage II = PG on both + beta1 KL."""
    if stage == 1:
        return score_loss(logp, ref_logp, mask1, mask2, None, advantage2, beta2, beta1, aggregation, normalizers)
    if stage == 2:
        return score_loss(logp, ref_logp, mask1, mask2, advantage1, advantage2, beta1, beta1, aggregation, normalizers)
    raise ValueError(f"stage must be 1 or 2, got {stage}")
