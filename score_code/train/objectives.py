"""SCoRe losses as pure tensor functions (docs/method.md §2-4).

Shapes: B episodes (P prompts x k samples, the k samples of a prompt consecutive), T token positions.
`logp` and `ref_logp` are per-token log-probabilities of the sampled tokens under the policy and the frozen
reference; `mask1` / `mask2` select attempt-1 / attempt-2 tokens (prompt, instruction and padding are 0).

Stage I   loss = PG(attempt 2, A(r2))                  + beta2 * KL(attempt 1) + beta1 * KL(attempt 2)
Stage II  loss = PG(attempt 1, A(r1)) + PG(attempt 2, A(r2 + alpha * (r2 - r1))) + beta1 * (KL(1) + KL(2))

Every term is aggregated over its own attempt's tokens, so beta2 multiplies "the KL of attempt 1" whatever the
attempts' lengths. The KL is a per-token estimator (k3 by default, k2 optional, §4.3); its gradient flows through
the attempt's own log-probabilities (not folded into the scalar that multiplies the policy gradient, which would not
anchor y1). When the rollouts came from another copy of the weights (a vLLM engine in bf16), the policy gradient is
reweighted by the truncated importance ratio pi(token) / pi_engine(token), as TRL does.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.utils.checkpoint
from torch import Tensor

Baseline = Literal["rloo", "none"]
Aggregation = Literal["token", "sequence"]
KLEstimator = Literal["k3", "k2"]

LOG_SOFTMAX_CHUNK_ROWS = 1024  # rows (token positions) per float32 slice of the logits; 1024 x 152k x 4 B = 0.6 GB


def _chunk_log_probs(logits: Tensor, target_ids: Tensor, temperature: float) -> Tensor:
    rows = logits.float() / temperature
    return rows.gather(-1, target_ids.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(rows, dim=-1)


def selected_log_probs(logits: Tensor, target_ids: Tensor, temperature: float = 1.0,
                       chunk_rows: int = LOG_SOFTMAX_CHUNK_ROWS) -> Tensor:
    """log softmax(logits / temperature)[target]: (B, N, V) logits and the (B, N) ids they predict -> (B, N), float32.

    The gathered logit minus logsumexp, a slice of rows at a time: a full-vocabulary float32 copy (and a log_softmax
    output as large) never exists. Under autograd each slice is recomputed in backward rather than kept, so what
    backward holds is the logits in their own dtype. Dividing by the sampling temperature makes these the
    log-probabilities the tokens were sampled with.
    """
    flat_logits = logits.reshape(-1, logits.shape[-1])
    flat_ids = target_ids.reshape(-1)
    parts = []
    for start in range(0, flat_ids.shape[0], chunk_rows):
        rows, ids = flat_logits[start:start + chunk_rows], flat_ids[start:start + chunk_rows]
        if torch.is_grad_enabled() and rows.requires_grad:
            parts.append(torch.utils.checkpoint.checkpoint(_chunk_log_probs, rows, ids, temperature,
                                                           use_reentrant=False))
        else:
            parts.append(_chunk_log_probs(rows, ids, temperature))
    if not parts:
        return torch.zeros(target_ids.shape, dtype=torch.float32, device=logits.device)
    return torch.cat(parts).view(target_ids.shape)


def k3_kl(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """Per-token k3 estimate of KL(pi || pi_ref) for tokens sampled from pi: exp(d) - d - 1 with d = ref - logp.

    Non-negative and unbiased as a value (Schulman, "Approximating KL divergence", 2020). As a loss differentiated
    through `logp` its gradient per token is 1 - exp(d), whose expectation is the gradient of KL(pi_ref || pi)
    (docs/method.md §4.3).
    """
    delta = ref_logp - logp
    return torch.exp(delta) - delta - 1.0


def k2_kl(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """Per-token k2 estimate 0.5 * (logp - ref)^2. Its gradient per token, logp - ref, is in expectation the
    gradient of KL(pi || pi_ref)'s per-token surrogate: it anchors the direction of the KL the paper writes."""
    return 0.5 * (logp - ref_logp) ** 2


KL_ESTIMATORS = {"k3": k3_kl, "k2": k2_kl}


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


def groups_with_signal(advantage1: Tensor, advantage2: Tensor, samples_per_prompt: int) -> Tensor:
    """(P,) bool: whether some advantage of a task group (its k consecutive episodes) is nonzero, either attempt.

    Under the RLOO baseline a group whose episodes all scored alike (all failed or all passed the attempt, shaped
    rewards included) has every advantage exactly 0, so its policy gradient is 0 and only its KL terms would train
    (dynamic sampling, DAPO: such groups can leave the update). Under `baseline: none` an all-fail group is such a
    group, an all-pass one is not. Stage I passes attempt-1 advantages of 0, so only attempt 2 decides there.
    """
    nonzero = (advantage1 != 0) | (advantage2 != 0)
    return nonzero.view(-1, samples_per_prompt).any(dim=1)


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
        return cls(*(max(c, 1.0) for c in cls._counts(mask1, mask2)))

    @classmethod
    def across_processes(cls, mask1: Tensor, mask2: Tensor, sum_over_processes: Callable[[Tensor], Tensor],
                         world_size: int) -> Normalizers:
        """The global counts divided by the number of processes: DDP averages the processes' gradients, so with
        these each token weighs the same in the step whichever process it landed on (per-process counts would
        give a token of a process with few tokens more weight)."""
        counts = sum_over_processes(torch.tensor(cls._counts(mask1, mask2), dtype=torch.float64))
        return cls(*(max(float(c), 1.0) / world_size for c in counts))

    @staticmethod
    def _counts(mask1: Tensor, mask2: Tensor) -> list[float]:
        return [float(mask1.sum()), float(mask2.sum()), float((mask1.sum(dim=1) > 0).sum()),
                float((mask2.sum(dim=1) > 0).sum())]


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


def importance_weights(logp: Tensor, sampling_logp: Tensor | None, cap: float) -> Tensor:
    """Per-token truncated importance weights min(pi / pi_sampler, cap), detached; 1 without sampler log-probs, where
    one is unknown (NaN), or with `cap` 0. The engine that sampled (vLLM, bf16 weights) is not exactly the policy:
    small LoRA updates round away in it, so its tokens are off-policy by a little, and this reweighting corrects the
    loss for it (truncated: a rare token cannot blow up the step's variance)."""
    if sampling_logp is None or cap <= 0:
        return torch.ones_like(logp)
    weights = torch.exp(logp.detach() - sampling_logp).clamp(max=cap)
    return torch.where(sampling_logp.isnan(), 1.0, weights)  # NaN: no engine log-prob (the policy sampled it)


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
    kl_estimator: KLEstimator = "k3",
    weights: Tensor | None = None,
) -> LossTerms:
    """REINFORCE on each attempt with its own advantage, plus a per-attempt KL penalty.

    `advantage1=None` means attempt 1 gets no policy-gradient term at all (stage I). On-policy, so the ratio
    exp(logp - logp.detach()) is 1 and its gradient is grad logp: the loss value reads as -advantage + KL.
    `weights` (importance_weights) multiply every per-token term, policy gradient and KL, as TRL does: each is an
    expectation under the policy estimated from the engine's samples.
    """
    mask1 = mask1.to(logp.dtype)
    mask2 = mask2.to(logp.dtype)
    norm = normalizers or Normalizers.of(mask1, mask2)
    ratio = torch.exp(logp - logp.detach())
    if weights is not None:
        ratio = ratio * weights
    # Untrained positions (padding, prompts, other rows' columns) hold arbitrary log-probs: exp of their difference
    # can overflow, and inf * 0 is NaN, so they are zeroed before the estimator sees them.
    in_loss = (mask1 + mask2) > 0
    kl = KL_ESTIMATORS[kl_estimator](torch.where(in_loss, logp, 0.0), torch.where(in_loss, ref_logp.detach(), 0.0))
    if weights is not None:
        kl = kl * weights

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
    kl_estimator: KLEstimator = "k3",
    weights: Tensor | None = None,
) -> LossTerms:
    """The stage's loss: stage I = PG on attempt 2 + beta2 KL(1) + beta1 KL(2); stage II = PG on both + beta1 KL."""
    if stage == 1:
        return score_loss(logp, ref_logp, mask1, mask2, None, advantage2, beta2, beta1, aggregation, normalizers,
                          kl_estimator, weights)
    if stage == 2:
        return score_loss(logp, ref_logp, mask1, mask2, advantage1, advantage2, beta1, beta1, aggregation,
                          normalizers, kl_estimator, weights)
    raise ValueError(f"stage must be 1 or 2, got {stage}")
