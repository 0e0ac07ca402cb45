"""The trainer: schedule and sampling helpers, log-prob bookkeeping, learning on a synthetic verifiable task,
the beta2 anchor on attempt 1, resume after a kill, the CLI, and an end-to-end run through the Docker sandbox."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from benchmarks.tasks import Task
from score_code.config import ModelConfig, ScoreConfig
from score_code.train import checkpoint as ckpt
from score_code.train.common import TrainError, prepare_run_dir, sequence_log_probs
from score_code.train.rollout import Episode, collate
from score_code.train.run_log import read_metrics, rollout_metrics, truncate_jsonl
from score_code.train.score import phase_plan, reference_log_probs, stage_at, tasks_for_step, train

MBPP_PATH = Path(os.environ["SCORE_CODE_MBPP"])  # set by tests/conftest.py
REPO = Path(__file__).resolve().parents[2]

# --- synthetic verifiable task: a random tiny model says a word starting with a capital letter about 28% of the
# time (the share of such tokens in the SmolLM2 vocabulary); the reward asks for one. Learnable in seconds.
SYNTHETIC_TASKS = [Task(task_id=f"cap/{i}", prompt=f"Say one word ({i}).", entry_point="", tests=("pass",),
                        test_format="generic") for i in range(4)]


def capital_reward(tasks, completions):
    return [1.0 if text.lstrip()[:1].isupper() else 0.0 for text in completions]


def _config(tmp_path: Path, model_dir: Path, name: str, **overrides) -> ScoreConfig:
    # float32 whatever the CPU: `dtype: auto` would be bf16 on one with native bf16 and fp32 elsewhere
    values = dict(model=str(model_dir), dtype="float32", output_dir=str(tmp_path / name), max_new_tokens=1,
                  prompts_per_step=4,
                  samples_per_prompt=4, micro_batch_size=16, learning_rate=3e-2, beta1=0.0, schedule="1",
                  stage1_steps=30, stage2_steps=0, save_steps=1000, progress=False, log_completions=1)
    values.update(overrides)
    return ScoreConfig.from_flat(values)


# --- helpers -------------------------------------------------------------------------------------------------------


def test_schedule_counts_steps_per_stage():
    config = ScoreConfig.from_flat({"schedule": "1,2,1,2", "stage1_steps": 2, "stage2_steps": 3})
    plan = phase_plan(config)
    assert plan == [(1, 2), (2, 3), (1, 2), (2, 3)]
    assert [stage_at(s, plan) for s in range(1, 11)] == [1, 1, 2, 2, 2, 1, 1, 2, 2, 2]
    with pytest.raises(ValueError, match="past the schedule"):
        stage_at(11, plan)


def test_ranks_see_disjoint_tasks_and_an_epoch_covers_all():
    rank0 = tasks_for_step(10, step=1, per_process=5, world_size=2, rank=0, seed=3)
    rank1 = tasks_for_step(10, step=1, per_process=5, world_size=2, rank=1, seed=3)
    assert not set(rank0) & set(rank1) and sorted(rank0 + rank1) == list(range(10))
    assert tasks_for_step(10, 2, 5, 2, 0, 3) != rank0  # the next epoch is reshuffled ...
    assert tasks_for_step(10, 1, 5, 2, 0, 3) == rank0  # ... and the draw is a function of (seed, step, rank)


def test_existing_run_is_refused_unless_resumed(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("")
    with pytest.raises(TrainError, match="already holds a run; pass --resume"):
        prepare_run_dir(tmp_path, resume=False)
    with pytest.raises(TrainError, match="no checkpoint-N to resume from"):
        prepare_run_dir(tmp_path, resume=True)
    assert prepare_run_dir(tmp_path / "new", resume=False) is None


def test_truncate_jsonl_drops_rows_past_the_checkpoint_and_torn_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s}) + "\n" for s in (1, 2, 3)) + '{"step": 4, "rew')
    assert truncate_jsonl(path, 2) == 2
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2]


def test_rollout_metrics_transitions():
    def ep(r1, r2):
        return Episode("t", 0, [1, 2, 3], (1, 2), (2, 3), "", "", "stop", "stop", r1, r2)

    m = rollout_metrics([ep(0.0, 1.0), ep(1.0, 0.0), ep(1.0, 1.0), ep(0.0, 0.0), ep(None, 1.0)])
    assert m["attempt1/reward"] == 0.5 and m["attempt2/reward"] == 0.5 and m["reward"] == 0.5
    assert m["delta_i2c"] == 0.25 and m["delta_c2i"] == 0.25 and m["delta"] == 0.0
    assert m["sandbox_errors"] == 1.0 and m["episodes"] == 5.0
    assert m["edit_ratio"] == 0.0  # two empty texts


def test_rollout_metrics_edit_ratio_is_the_mean_over_episodes():
    def ep(text1, text2):
        return Episode("t", 0, [1, 2, 3], (1, 2), (2, 3), text1, text2, "stop", "stop", 0.0, 0.0)

    m = rollout_metrics([ep("return a", "return a"), ep("abcd", "abcx")])  # 0 and 1 / 8
    assert m["edit_ratio"] == pytest.approx(1 / 16)


def test_log_probs_at_trained_positions_match_a_full_forward(tiny_model):
    episodes = [Episode("t", 0, list(range(100, 112)), (4, 7), (9, 12), "", "", "stop", "stop", 1.0, 0.0),
                Episode("t", 1, list(range(200, 209)), (3, 5), (7, 9), "", "", "stop", "stop", 0.0, 1.0)]
    batch = collate(episodes, pad_token_id=0)
    logp = sequence_log_probs(tiny_model, batch)
    with torch.no_grad():
        full = torch.log_softmax(tiny_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits, -1)
    mask = (batch.mask1 + batch.mask2).bool()
    for row, col in mask.nonzero().tolist():
        assert logp[row, col].item() == pytest.approx(full[row, col - 1, batch.input_ids[row, col]].item(), abs=1e-5)
    untrained_columns = ~mask.any(dim=0)  # no row needs them: no logits computed there
    assert logp[:, untrained_columns].abs().sum() == 0 and untrained_columns.sum() == 3


def test_a_row_alone_and_unpadded_has_the_log_probs_it_has_in_a_padded_batch(tiny_model):
    """accumulate_step trims each micro-batch: a short row run alone (no padding, no mask) must score as it does
    beside a longer one."""
    episodes = [Episode("t", 0, list(range(100, 112)), (4, 7), (9, 12), "", "", "stop", "stop", 1.0, 0.0),
                Episode("t", 1, list(range(200, 209)), (3, 5), (7, 9), "", "", "stop", "stop", 0.0, 1.0)]
    batch = collate(episodes, pad_token_id=0)
    with torch.no_grad():
        together = sequence_log_probs(tiny_model, batch)
        alone = sequence_log_probs(tiny_model, batch[1:2].trimmed())
    trained = (batch.mask1[1, :9] + batch.mask2[1, :9]).bool()
    assert alone.shape == (1, 9) and trained.sum() == 4
    torch.testing.assert_close(alone[0, trained], together[1, :9][trained], atol=1e-5, rtol=0)


def test_lora_reference_is_the_policy_with_its_adapter_disabled(tiny_model_dir):
    from score_code.train.common import build_models

    model_cfg = ModelConfig(model=str(tiny_model_dir), dtype="float32", lora=True, lora_r=4, lora_alpha=8)
    policy, reference, _ = build_models(model_cfg, None, torch.device("cpu"))
    assert reference is None
    base, _, _ = build_models(ModelConfig(model=str(tiny_model_dir), dtype="float32"), None, torch.device("cpu"))
    batch = collate([Episode("t", 0, list(range(300, 310)), (3, 6), (7, 10), "", "", "stop", "stop", 1.0, 1.0)], 0)
    with torch.no_grad():
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.add_(0.5)  # a trained adapter
    ref = reference_log_probs(policy, None, batch)
    assert torch.allclose(ref, sequence_log_probs(base, batch).detach(), atol=1e-5)
    assert not torch.allclose(ref, sequence_log_probs(policy, batch).detach(), atol=1e-3)
    trainable = [n for n, p in policy.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)


# --- learning ------------------------------------------------------------------------------------------------------


def _mean(rows, key, steps):
    values = [r[key] for r in rows if r["step"] in steps]
    return sum(values) / len(values)


@pytest.mark.slow
def test_stage1_learns_attempt2_and_beta2_anchors_attempt1(tmp_path, tiny_model_dir):
    """Stage I raises the attempt-2 reward; a large beta2 keeps attempt 1 closer to the reference than beta2 = 0."""
    free = read_metrics(train(_config(tmp_path, tiny_model_dir, "beta2_0", beta2=0.0),
                              reward_fn=capital_reward, train_tasks=SYNTHETIC_TASKS))
    anchored = read_metrics(train(_config(tmp_path, tiny_model_dir, "beta2_1", beta2=1.0),
                                  reward_fn=capital_reward, train_tasks=SYNTHETIC_TASKS))
    first, last = range(1, 6), range(26, 31)
    start, end = _mean(free, "attempt2/reward", first), _mean(free, "attempt2/reward", last)
    assert end >= start + 0.3, f"attempt-2 reward went from {start:.2f} to only {end:.2f} in 30 steps"
    kl_free, kl_anchored = _mean(free, "kl/attempt1", range(21, 31)), _mean(anchored, "kl/attempt1", range(21, 31))
    assert kl_anchored < 0.5 * kl_free, f"attempt-1 KL with beta2=1: {kl_anchored:.3f}, with beta2=0: {kl_free:.3f}"


# --- dynamic sampling ----------------------------------------------------------------------------------------------

ONE_MIXED_GROUP = [Task(task_id=t, prompt=f"Say one word ({t}).", entry_point="", tests=("pass",),
                        test_format="generic") for t in ("fails", "mixed")]


def mixed_reward(tasks, completions):
    """'fails' never passes; 'mixed' passes on every other completion of each call (both attempts are mixed)."""
    seen: dict[str, int] = {}
    out = []
    for task in tasks:
        seen[task.task_id] = seen.get(task.task_id, 0) + 1
        out.append(float(task.task_id == "mixed" and seen[task.task_id] % 2 == 1))
    return out


@pytest.mark.parametrize("stage", [1, 2])
def test_skip_zero_advantage_groups_trains_and_counts_only_the_groups_with_signal(tmp_path, tiny_model_dir,
                                                                                   monkeypatch, stage):
    from score_code.train import score

    sampled, updates = [], []
    real_rollouts, real_update = score.generate_rollouts, score.policy_update

    def spy_rollouts(*args, **kwargs):
        rollouts = real_rollouts(*args, **kwargs)
        sampled.append(rollouts.episodes)
        return rollouts

    def spy_update(policy, reference, optimizer, scheduler, accelerator, batch, advantage1, advantage2, *rest):
        updates.append((batch, advantage1, advantage2))
        return real_update(policy, reference, optimizer, scheduler, accelerator, batch, advantage1, advantage2, *rest)

    monkeypatch.setattr(score, "generate_rollouts", spy_rollouts)
    monkeypatch.setattr(score, "policy_update", spy_update)
    config = _config(tmp_path, tiny_model_dir, f"skip{stage}", schedule=str(stage), stage1_steps=1, stage2_steps=1,
                     prompts_per_step=2, samples_per_prompt=2, max_new_tokens=3,
                     skip_zero_advantage_groups=True)
    row = read_metrics(train(config, reward_fn=mixed_reward, train_tasks=ONE_MIXED_GROUP))[0]

    (episodes,), ((batch, advantage1, advantage2),) = sampled, updates
    mixed = [e for e in episodes if e.task_id == "mixed"]
    assert len(episodes) == 4 and len(mixed) == 2
    # the update's batch is the mixed group alone: its rows, and its tokens are all the aggregation counts
    assert batch.input_ids.shape[0] == 2
    for r, e in enumerate(mixed):
        assert batch.input_ids[r, : len(e.token_ids)].tolist() == e.token_ids
    assert batch.mask2.sum() == sum(e.attempt2_span[1] - e.attempt2_span[0] for e in mixed)
    assert batch.mask1.sum() == sum(e.attempt1_span[1] - e.attempt1_span[0] for e in mixed)
    assert (advantage2 != 0).all() and (advantage1 != 0).all() == (stage == 2)
    assert row["update/tokens"] == sum(len(e.token_ids) for e in mixed)
    assert (row["rollout/groups_kept"], row["rollout/groups_skipped"], row["rollout/groups_zero_advantage"]) == \
        (1.0, 1.0, 1.0)
    assert row["episodes"] == 4.0 and row["attempt2/reward"] == 0.25  # rollout metrics cover every episode


def test_a_step_with_no_signal_makes_no_optimizer_step_but_counts_and_logs(tmp_path, tiny_model_dir):
    """Step 1 has a mixed group, step 2 none. Skipping: step 2 leaves the weights as step 1 left them (Adam's
    momentum would have moved them) and the schedule unstepped. Without skipping the same step 2 moves them."""
    def rewards_then_nothing(calls: list[int]):
        def reward(tasks, completions):
            calls.append(1)
            return mixed_reward(tasks, completions) if len(calls) == 1 else [0.0] * len(completions)
        return reward

    runs = {}
    for skip in (True, False):
        params: dict[int, dict[str, torch.Tensor]] = {}
        config = _config(tmp_path, tiny_model_dir, f"noskip-{skip}", stage1_steps=2, prompts_per_step=2,
                         samples_per_prompt=2, max_new_tokens=3, warmup_steps=4, skip_zero_advantage_groups=skip)
        run = train(config, reward_fn=rewards_then_nothing([]), train_tasks=ONE_MIXED_GROUP,
                    after_step=lambda step, policy, params=params: params.update(
                        {step: {k: v.detach().clone() for k, v in policy.named_parameters()}}))
        runs[skip] = (read_metrics(run), params, run)

    rows, params, run = runs[True]
    assert [r["step"] for r in rows] == [1, 2] and rows[1]["rollout/groups_kept"] == 0.0
    assert rows[1]["rollout/groups_skipped"] == 2.0 and rows[1]["update/tokens"] == 0.0
    assert math.isnan(rows[1]["loss"]) and math.isnan(rows[1]["grad_norm"])
    assert rows[1]["episodes"] == 4.0 and rows[1]["attempt2/reward"] == 0.0  # the rollout is still logged
    assert all(torch.equal(params[1][k], params[2][k]) for k in params[1])
    scheduler = torch.load(run / "checkpoint-2" / "scheduler.pt")
    assert scheduler["last_epoch"] == 1  # one update: the warm-up counts updates, not steps
    assert rows[1]["learning_rate"] == rows[0]["learning_rate"] * 2  # still the second warm-up value

    rows, params, _ = runs[False]
    assert rows[1]["rollout/groups_skipped"] == 0.0 and rows[1]["rollout/groups_zero_advantage"] == 2.0
    assert math.isfinite(rows[1]["loss"])
    assert any(not torch.equal(params[1][k], params[2][k]) for k in params[1])


def test_a_process_that_kept_no_group_still_joins_the_update_with_no_loss_token(tiny_model):
    """DDP: when another process kept a group, this one runs a backward too (through one episode with no loss token)
    so that the gradient reduction does not wait for it; its loss and gradient are 0."""
    from score_code.train.objectives import Normalizers, stage_loss
    from score_code.train.score import update_batch

    episodes = [Episode("t", i, list(range(100, 112)), (4, 7), (9, 12), "", "", "stop", "stop", 0.0, 0.0)
                for i in range(2)]
    batch, a1, a2 = update_batch(episodes, torch.zeros(2), torch.zeros(2), torch.tensor([False, False]), 0, 1)
    assert batch.input_ids.shape[0] == 1 and batch.mask1.sum() == 0 and batch.mask2.sum() == 0 and a2.shape == (1,)
    logp = sequence_log_probs(tiny_model, batch)
    loss = stage_loss(1, logp, logp.detach(), batch.mask1, batch.mask2, a1, a2, 0.01, 0.25,
                      normalizers=Normalizers.of(batch.mask1, batch.mask2)).loss
    loss.backward()
    grads = [p.grad for p in tiny_model.parameters()]
    assert all(g is not None and g.abs().sum() == 0 for g in grads)
    tiny_model.zero_grad(set_to_none=True)


CPU_LEARN = REPO / "score_code" / "recipes" / "cpu_learn.yaml"


def test_cpu_learn_recipe_trains_its_lora_adapter_over_a_bf16_base(tmp_path, tiny_model_dir):
    """The recipe as it is, on the tiny model and a short budget: its LoRA settings reach the model (rank, scale,
    every linear layer but the head), the adapter is float32 over the bf16 base and one step moves only it."""
    from transformers import AutoModelForCausalLM

    from score_code.config import load_recipe
    from score_code.train.common import build_models

    config = ScoreConfig.from_flat({**load_recipe(CPU_LEARN), "model": str(tiny_model_dir), "dtype": "bfloat16",
                                    "output_dir": str(tmp_path / "run"), "max_new_tokens": 3, "stage1_steps": 1,
                                    "stage2_steps": 0, "schedule": "1", "progress": False})
    assert config.model.lora and config.objective.skip_zero_advantage_groups and config.optim.micro_batch_size == 1
    blocks_linear = {n for n, m in AutoModelForCausalLM.from_pretrained(tiny_model_dir).named_modules()
                     if isinstance(m, torch.nn.Linear) and n != "lm_head"}
    assert len(blocks_linear) == 2 * 7  # q, k, v, o, gate, up, down in each of 2 layers

    policy, _, _ = build_models(config.model, None, torch.device("cpu"))
    lora_config = policy.peft_config["default"]
    assert (lora_config.r, lora_config.lora_alpha) == (config.model.lora_r, config.model.lora_alpha)
    assert {n.removeprefix("base_model.model.") for n, m in policy.named_modules() if hasattr(m, "lora_A")} == \
        blocks_linear
    assert {p.dtype for p in policy.parameters() if p.requires_grad} == {torch.float32}
    assert {p.dtype for p in policy.parameters() if not p.requires_grad} == {torch.bfloat16}

    before = {n: p.detach().clone() for n, p in policy.named_parameters()}
    after = {}
    train(config, reward_fn=mixed_reward, train_tasks=ONE_MIXED_GROUP,
          after_step=lambda step, policy: after.update({n: p.detach().clone() for n, p in policy.named_parameters()}))
    moved = {n for n in before if not torch.equal(before[n], after[n])}
    assert moved and all("lora_" in n for n in moved)


def test_the_ablations_are_flags_of_the_cpu_learn_recipe(monkeypatch):
    """Stage II only (no stage I, from the base model) and alpha 0, from the command line over the recipe."""
    from score_code.train import score

    seen = []
    monkeypatch.setattr(score, "train", seen.append)
    assert _cli(["train", "stage2", "--config", str(CPU_LEARN), "--stage2_steps", "60"]) == 0
    assert _cli(["train", "score", "--config", str(CPU_LEARN), "--alpha", "0"]) == 0
    stage2_only, alpha0 = seen
    assert stage2_only.stages() == [2] and stage2_only.schedule.stage2_steps == 60 and not stage2_only.model.init_from
    assert alpha0.stages() == [1, 2] and alpha0.objective.alpha == 0.0 and alpha0.model.lora


# --- resume --------------------------------------------------------------------------------------------------------


class Killed(Exception):
    pass


def test_resume_after_a_kill_matches_an_uninterrupted_run(tmp_path, tiny_model_dir):
    common = dict(schedule="1,2", stage1_steps=2, stage2_steps=2, save_steps=2, max_new_tokens=2,
                  prompts_per_step=2, samples_per_prompt=2, micro_batch_size=2, learning_rate=1e-2, beta1=0.01)
    whole_dir = train(_config(tmp_path, tiny_model_dir, "whole", **common), reward_fn=capital_reward,
                      train_tasks=SYNTHETIC_TASKS)

    def kill_at_3(step, policy):
        if step == 3:  # after step 3 is logged, before the checkpoint at step 4
            raise Killed

    config = _config(tmp_path, tiny_model_dir, "killed", **common)
    with pytest.raises(Killed):
        train(config, reward_fn=capital_reward, train_tasks=SYNTHETIC_TASKS, after_step=kill_at_3)
    assert [r["step"] for r in read_metrics(Path(config.run.output_dir))] == [1, 2, 3]
    config.run.resume = True
    resumed_dir = train(config, reward_fn=capital_reward,
                        train_tasks=SYNTHETIC_TASKS)

    whole, resumed = read_metrics(whole_dir), read_metrics(resumed_dir)
    assert [r["step"] for r in resumed] == [1, 2, 3, 4]
    assert [r["stage"] for r in resumed] == [1, 1, 2, 2]
    for a, b in zip(whole, resumed, strict=True):
        assert (a["attempt1/reward"], a["attempt2/reward"]) == (b["attempt1/reward"], b["attempt2/reward"])
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
    completions = [json.loads(x)["step"] for x in (resumed_dir / "completions.jsonl").read_text().splitlines()]
    assert completions == [1, 2, 3, 4]
    state = json.loads((resumed_dir / "checkpoint-4" / ckpt.TRAINER_STATE_NAME).read_text())
    assert state["global_step"] == 4 and state["stage"] == 2
    expected = load_file(str(whole_dir / "checkpoint-4" / "model.safetensors"))
    got = load_file(str(resumed_dir / "checkpoint-4" / "model.safetensors"))
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.allclose(expected[key], got[key], atol=1e-5), key


def test_stage2_offline_first_attempts_are_sampled_once_and_reused(tmp_path, tiny_model_dir):
    config = _config(tmp_path, tiny_model_dir, "offline", schedule="2", stage1_steps=0, stage2_steps=3,
                     prompts_per_step=4, samples_per_prompt=2, offline_ratio=0.5, max_new_tokens=3,
                     log_completions=8)
    run = train(config, reward_fn=capital_reward, train_tasks=SYNTHETIC_TASKS[:2])
    rows = [json.loads(x) for x in (run / "completions.jsonl").read_text().splitlines()]
    assert {r["offline_attempt1"] for r in rows if r["sample_index"] == 1} == {True}
    assert {r["offline_attempt1"] for r in rows if r["sample_index"] == 0} == {False}
    firsts: dict[str, set[str]] = {}
    for r in rows:
        if r["offline_attempt1"]:
            firsts.setdefault(r["task_id"], set()).add(r["attempt1"])
    assert firsts and all(len(texts) == 1 for texts in firsts.values())  # one stored attempt per task, reused


def test_stage2_starts_from_a_stage1_checkpoint_and_keeps_the_base_model_as_reference(tmp_path, tiny_model_dir):
    stage1 = train(_config(tmp_path, tiny_model_dir, "stage1", stage1_steps=1, save_steps=1),
                   reward_fn=capital_reward, train_tasks=SYNTHETIC_TASKS)
    assert read_metrics(stage1)[0]["kl/attempt1"] == 0.0  # a fresh policy is its reference
    stage2 = train(_config(tmp_path, tiny_model_dir, "stage2", schedule="2", stage2_steps=1,
                           init_from=str(stage1 / "checkpoint-1")), reward_fn=capital_reward,
                   train_tasks=SYNTHETIC_TASKS)
    row = read_metrics(stage2)[0]
    assert row["stage"] == 2 and row["kl/attempt1"] > 0.0  # the stage-I policy, measured against the base model


@pytest.mark.parametrize("lora", [False, True])
def test_stage2_with_offline_first_attempts_from_the_reference(tmp_path, tiny_model_dir, lora):
    """offline_ratio: attempt 1 of half the episodes is sampled once from the reference (a frozen copy, or with LoRA
    the policy with its adapter off) and reused; the run trains through it."""
    extra = {"lora": True, "lora_r": 4, "lora_alpha": 8} if lora else {}
    config = _config(tmp_path, tiny_model_dir, f"offline-{lora}", schedule="2", stage1_steps=0, stage2_steps=2,
                     offline_ratio=0.5, max_new_tokens=2, **extra)
    rows = read_metrics(train(config, reward_fn=capital_reward, train_tasks=SYNTHETIC_TASKS))
    assert [r["stage"] for r in rows] == [2, 2] and all(math.isfinite(r["loss"]) for r in rows)


def test_lora_run_saves_an_adapter_that_stage2_continues_from(tmp_path, tiny_model_dir):
    lora = dict(lora=True, lora_r=4, lora_alpha=8)
    stage1 = train(_config(tmp_path, tiny_model_dir, "lora1", stage1_steps=1, save_steps=1, **lora),
                   reward_fn=capital_reward, train_tasks=SYNTHETIC_TASKS)
    names = {p.name for p in (stage1 / "checkpoint-1").iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "optimizer.pt"} <= names
    assert "model.safetensors" not in names  # the base weights are not copied into every checkpoint
    stage2 = train(_config(tmp_path, tiny_model_dir, "lora2", schedule="2", stage2_steps=1,
                           init_from=str(stage1 / "checkpoint-1"), **lora),
                   reward_fn=capital_reward, train_tasks=SYNTHETIC_TASKS)
    assert read_metrics(stage2)[0]["kl/attempt1"] > 0.0  # trained adapter vs the adapter-disabled reference


def _stand_in_llm(vllm_stand_ins, engines: list, reseed: int | None = None) -> type:
    """A stand-in vllm.LLM: its own copy of the base model, sampling through transformers with each request's seed,
    returning each sampled token's log-prob at the request's temperature (what logprobs_mode processed_logprobs
    gives). `reseed`: construction reseeds torch's global generator, as a real engine does."""
    from transformers import AutoModelForCausalLM

    class StandInLLM:
        def __init__(self, model, dtype, seed, gpu_memory_utilization, **kwargs):
            if reseed is not None:
                torch.manual_seed(reseed)
            self.model = AutoModelForCausalLM.from_pretrained(model).eval()
            self.llm_engine = vllm_stand_ins.in_process_engine(self.model)
            self.dtype, self.kwargs, self.prompts, self.seeds = dtype, kwargs, 0, []
            engines.append(self)

        def generate(self, prompts, sampling_params, use_tqdm=False):
            outputs = []
            for prompt, params in zip(prompts, sampling_params, strict=True):
                ids = torch.tensor([prompt["prompt_token_ids"]])
                self.seeds.append(params["seed"])
                with torch.no_grad(), torch.random.fork_rng():  # a request's seed is its own, not the process's
                    torch.manual_seed(params["seed"])
                    out = self.model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True, top_k=0,
                                              temperature=params["temperature"], max_new_tokens=params["max_tokens"],
                                              pad_token_id=0, output_logits=True, return_dict_in_generate=True)
                new = out.sequences[0, ids.shape[1]:].tolist()
                logprobs = [{t: types.SimpleNamespace(logprob=torch.log_softmax(
                    logits[0].float() / params["temperature"], -1)[t].item())}
                    for t, logits in zip(new, out.logits, strict=True)]
                text = "Yes" if new[0] % 2 else "no"  # the reward reads the text; any policy-driven text will do
                outputs.append(types.SimpleNamespace(outputs=[types.SimpleNamespace(
                    text=text, token_ids=new, finish_reason="length", logprobs=logprobs)]))
            self.prompts += len(prompts)
            return outputs

        def reset_prefix_cache(self):
            return True

    return StandInLLM


def test_vllm_backend_samples_from_an_engine_synced_after_every_update(tmp_path, tiny_model_dir, fake_vllm,
                                                                      vllm_stand_ins, monkeypatch):
    """A stand-in vllm.LLM (its own copy of the base model, generating through transformers) gets the LoRA policy's
    merged weights at start and after each update; every rollout is sampled from it, each request under its own
    seed; the engine's log-probs match the policy's (the logged gap), in the policy's dtype, in this process."""
    from score_code.generation.vllm import served_weights

    engines: list = []
    fake_vllm.LLM = _stand_in_llm(vllm_stand_ins, engines)
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")  # forced to 0 whatever the environment says
    in_sync = []

    def after_step(step, policy):
        engine = engines[0].model.state_dict()
        in_sync.append(all(torch.equal(engine[name], t) for name, t in served_weights(policy)))

    config = _config(tmp_path, tiny_model_dir, "vllm", backend="vllm", stage1_steps=2, lora=True, lora_r=4,
                     lora_alpha=8, temperature=0.7)
    run = train(config, reward_fn=capital_reward, train_tasks=SYNTHETIC_TASKS, after_step=after_step)
    assert len(engines) == 1 and engines[0].prompts == 2 * 4 * 4 * 2  # steps x tasks x samples x attempts
    assert len(set(engines[0].seeds)) == len(engines[0].seeds)  # no two samples share a noise stream
    assert in_sync == [True, True] and os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
    assert engines[0].dtype == "float32" and engines[0].kwargs == {"logprobs_mode": "processed_logprobs"}
    base = load_file(tiny_model_dir / "model.safetensors")
    assert any(not torch.equal(engines[0].model.state_dict()[k], v) for k, v in base.items())  # it was trained
    rows = read_metrics(run)
    assert all(r["sampling/logprob_gap"] < 1e-4 for r in rows), [r["sampling/logprob_gap"] for r in rows]
    assert all(r["sampling/importance_weight"] == pytest.approx(1.0, abs=1e-3) for r in rows)


def test_vllm_engine_is_built_before_the_rng_state_is_restored(tmp_path, tiny_model_dir, fake_vllm, vllm_stand_ins):
    """An engine reseeds torch's global generator when it starts: a resumed run must restore the checkpoint's RNG
    state after that, so that it continues with the same random stream as the uninterrupted run."""
    fake_vllm.LLM = _stand_in_llm(vllm_stand_ins, [], reseed=1234)
    states: dict[str, dict[int, torch.Tensor]] = {"whole": {}, "killed": {}, "resumed": {}}

    def reward(tasks, completions):  # a step that draws from the global generator
        torch.rand(1)
        return capital_reward(tasks, completions)

    def record(name):
        def after_step(step, policy):
            states[name][step] = torch.get_rng_state()
            if name == "killed":
                raise Killed
        return after_step

    common = dict(backend="vllm", stage1_steps=2, save_steps=1, max_new_tokens=1)
    train(_config(tmp_path, tiny_model_dir, "whole", **common), reward_fn=reward, train_tasks=SYNTHETIC_TASKS,
          after_step=record("whole"))
    config = _config(tmp_path, tiny_model_dir, "killed", **common)
    with pytest.raises(Killed):  # after step 1 and its checkpoint
        train(config, reward_fn=reward, train_tasks=SYNTHETIC_TASKS, after_step=record("killed"))
    config.run.resume = True
    train(config, reward_fn=reward, train_tasks=SYNTHETIC_TASKS, after_step=record("resumed"))
    assert list(states["resumed"]) == [2] and torch.equal(states["resumed"][2], states["whole"][2])


def test_vllm_refuses_several_processes_before_loading_anything(tmp_path, tiny_model_dir, fake_vllm, monkeypatch):
    import accelerate

    from score_code.config import ConfigError
    from score_code.train import score

    class TwoProcesses(accelerate.Accelerator):
        num_processes = 2

    monkeypatch.setattr(accelerate, "Accelerator", TwoProcesses)
    monkeypatch.setattr(score, "build_models", lambda *a: pytest.fail("models were built before the refusal"))
    with pytest.raises(ConfigError, match="single training process, got 2 processes"):
        train(_config(tmp_path, tiny_model_dir, "two", backend="vllm"), reward_fn=capital_reward,
              train_tasks=SYNTHETIC_TASKS)


@pytest.mark.slow
def test_evaluation_during_training_logs_eval_metrics(tmp_path, tiny_model_dir):
    config = _config(tmp_path, tiny_model_dir, "evaluated", stage1_steps=2, eval_steps=2, eval_max_tasks=2,
                     eval_max_new_tokens=8, mbpp_path=str(MBPP_PATH), sandbox_backend="local", sandbox_workers=2)
    run = train(config, reward_fn=capital_reward, train_tasks=SYNTHETIC_TASKS)
    rows = read_metrics(run)
    assert [r["step"] for r in rows] == [1, 2]
    eval_keys = [k for k in rows[1] if k.startswith("eval/")]
    assert eval_keys and not any(k.startswith("eval/") for k in rows[0])
    assert (run / "eval" / "step-2" / "results.jsonl").is_file()


# --- CLI -----------------------------------------------------------------------------------------------------------


def _cli(argv: list[str]) -> int:
    from score_code.cli import main

    return main(argv)


def test_cli_reports_config_errors(tmp_path, capsys):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("beta3: 1\n")
    assert _cli(["train", "stage1", "--config", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert "error: " in err and "unknown config key 'beta3'" in err
    assert "hint: see `score-code train stage1 --help`" in err


def test_cli_plot_writes_a_png(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    rows = [{"step": s, "stage": 1 if s <= 3 else 2, "attempt1/reward": 0.1 * s, "attempt2/reward": 0.2 * s,
             "delta": 0.1 * s, "delta_i2c": 0.1, "delta_c2i": 0.0, "kl/attempt1": 0.01, "kl/attempt2": 0.02,
             "edit_ratio": 0.05, "loss": 1.0 / s} for s in range(1, 7)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert _cli(["plot", str(run)]) == 0
    png = run / "training_curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


# --- end to end through the Docker sandbox ---------------------------------------------------------------------------


@pytest.mark.docker
@pytest.mark.slow
def test_score_end_to_end_on_mbpp_with_docker(tmp_path, tiny_model_dir, docker_sandbox):
    """`score-code train score`: 2 steps per stage on 2 MBPP train tasks, graded by the real sandbox."""
    out = tmp_path / "run"
    code = _cli(["train", "score", "--config", str(REPO / "score_code" / "recipes" / "debug_tiny.yaml"),
                 "--model", str(tiny_model_dir), "--mbpp_path", str(MBPP_PATH), "--output_dir", str(out),
                 "--max_train_tasks", "2", "--stage1_steps", "2", "--stage2_steps", "2", "--save_steps", "2",
                 "--sandbox_backend", "docker", "--no-progress"])
    assert code == 0
    rows = read_metrics(out)
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and [r["stage"] for r in rows] == [1, 1, 2, 2]
    assert all(r["sandbox_errors"] == 0 for r in rows), rows
    assert all(0.0 <= r["attempt2/reward"] <= 1.0 for r in rows)
    assert (out / "checkpoint-4" / "model.safetensors").is_file()
    assert json.loads((out / "config.json").read_text())["stage2_steps"] == 2
    assert list((out / "tensorboard").iterdir())


# --- two processes (DDP over gloo on CPU) ------------------------------------------------------------------------


DDP_SCRIPT = """
import json, sys, torch
from benchmarks.tasks import Task
from score_code.config import ScoreConfig
from score_code.train import score as T

seen = []
def reward(tasks, completions):
    seen.extend(t.task_id for t in tasks)
    return [1.0] * len(completions)  # with baseline none, every step updates whatever was sampled

tasks = [Task(task_id=f"cap/{i}", prompt=f"Say one word ({i}).", entry_point="", tests=("pass",),
              test_format="generic") for i in range(4)]
config = ScoreConfig.from_flat(dict(model=sys.argv[1], output_dir=sys.argv[2], max_new_tokens=2,
    prompts_per_step=1, samples_per_prompt=2, micro_batch_size=1, learning_rate=1e-2, schedule="1", baseline="none",
    stage1_steps=1, save_steps=1000, progress=False))

def dump(step, policy):
    from accelerate import PartialState
    rank = PartialState().process_index
    torch.save({k: v.detach().clone() for k, v in policy.state_dict().items()}, f"{sys.argv[2]}/params{rank}.pt")
    json.dump({"tasks": sorted(set(seen))}, open(f"{sys.argv[2]}/rank{rank}.json", "w"))

T.train(config, reward_fn=reward, train_tasks=tasks, after_step=dump)
"""


@pytest.mark.slow
def test_two_processes_see_different_tasks_and_end_with_identical_parameters(tmp_path, tiny_model_dir):
    script = tmp_path / "ddp_run.py"
    script.write_text(DDP_SCRIPT)
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    # torchrun, not `accelerate launch --cpu`, which starts a single process on a CPU-only host
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_addr", "127.0.0.1", "--master_port", "29517",
                           str(script), str(tiny_model_dir), str(out)],
                          env=env, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = [json.loads((out / f"rank{r}.json").read_text())["tasks"] for r in (0, 1)]
    assert seen[0] and seen[1] and not set(seen[0]) & set(seen[1]), seen
    params = [torch.load(out / f"params{r}.pt") for r in (0, 1)]
    initial = load_file(str(tiny_model_dir / "model.safetensors"))
    assert params[0].keys() == params[1].keys()
    for key in params[0]:
        assert torch.equal(params[0][key], params[1][key]), key
    assert any(not torch.equal(params[0][k], initial[k]) for k in params[0] if k in initial), "no update happened"



# --- the GPU path (issue #13): what a GPU run would get wrong, checked on CPU ----------------------------------------


def test_bf16_full_fine_tuning_keeps_float32_master_weights_that_small_updates_move(tmp_path, tiny_model_dir):
    """dtype bfloat16 without LoRA: the trained weights are float32, so lr 1e-5 moves nearly all of them; updating
    bf16 weights directly rounded most such updates away. The reference is a float32 copy under the same autocast,
    so at step 0 its log-probs are the policy's exactly (a bf16 copy computes others: the KL would start above 0)."""
    from score_code.train.common import build_models, compute_context

    policy, reference, _ = build_models(ModelConfig(model=str(tiny_model_dir), dtype="bfloat16"), None,
                                        torch.device("cpu"))
    assert {p.dtype for p in policy.parameters()} == {torch.float32}
    assert {p.dtype for p in reference.parameters()} == {torch.float32}
    batch = collate([Episode("t", 0, list(range(100, 130)), (8, 18), (22, 30), "", "", "stop", "stop", 1.0, 0.0)], 0)
    with torch.no_grad(), compute_context(torch.device("cpu"), torch.bfloat16):
        assert torch.equal(reference_log_probs(policy, reference, batch), sequence_log_probs(policy, batch))
    start = {k: v.detach().clone() for k, v in policy.named_parameters()}
    seen = {}
    train(_config(tmp_path, tiny_model_dir, "bf16", dtype="bfloat16", learning_rate=1e-5, stage1_steps=2,
                  baseline="none"), reward_fn=lambda t, c: [1.0] * len(c), train_tasks=SYNTHETIC_TASKS,
          after_step=lambda step, policy: seen.update(policy.named_parameters()))
    layer = "model.layers.0.mlp.down_proj.weight"  # away from the (tied, sparsely used) embedding
    changed = (seen[layer].detach() != start[layer]).float().mean().item()
    assert changed > 0.9, f"only {changed:.0%} of {layer} moved"


def test_lora_adapter_is_float32_over_a_bf16_base(tiny_model_dir):
    from score_code.train.common import build_models

    policy, _, _ = build_models(ModelConfig(model=str(tiny_model_dir), dtype="bfloat16", lora=True, lora_r=4),
                                None, torch.device("cpu"))
    dtypes = {p.dtype for p in policy.parameters() if p.requires_grad}
    frozen = {p.dtype for p in policy.parameters() if not p.requires_grad}
    assert dtypes == {torch.float32} and frozen == {torch.bfloat16}


def test_log_probs_are_taken_at_the_sampling_temperature(tiny_model):
    batch = collate([Episode("t", 0, list(range(100, 112)), (4, 7), (9, 12), "", "", "stop", "stop", 1.0, 0.0)], 0)
    logp = sequence_log_probs(tiny_model, batch, temperature=0.5)
    with torch.no_grad():
        logits = tiny_model(input_ids=batch.input_ids).logits
    expected = torch.log_softmax(logits[0, 3] / 0.5, -1)[batch.input_ids[0, 4]]
    assert logp[0, 4].item() == pytest.approx(expected.item(), abs=1e-5)


def test_gradient_checkpointing_runs_in_the_loss_forward(tiny_model_dir):
    """transformers checkpoints a layer only in train mode: the loss forward must run in it (each layer then goes
    through its checkpoint function), while sampling stays in eval mode."""
    from score_code.train.common import build_models, training_forward

    policy, _, _ = build_models(ModelConfig(model=str(tiny_model_dir), gradient_checkpointing=True), None,
                                torch.device("cpu"))
    layer = policy.model.layers[0]
    checkpoint, calls = layer._gradient_checkpointing_func, []
    layer._gradient_checkpointing_func = lambda *a, **kw: calls.append(1) or checkpoint(*a, **kw)
    batch = collate([Episode("t", 0, list(range(100, 112)), (4, 7), (9, 12), "", "", "stop", "stop", 1.0, 0.0)], 0)
    with training_forward(policy):
        logp = sequence_log_probs(policy, batch)
    logp.sum().backward()
    assert calls == [1] and not policy.training


def test_a_policy_with_dropout_is_refused(tiny_model_dir):
    from score_code.train.common import build_models

    with pytest.raises(TrainError, match="lora_dropout: 0"):
        build_models(ModelConfig(model=str(tiny_model_dir), lora=True, lora_r=4, lora_dropout=0.1), None,
                     torch.device("cpu"))


def test_a_micro_batch_of_sandbox_errors_still_runs_a_backward_through_every_parameter(tiny_model):
    """No trained token: the forward runs anyway and backward reaches every parameter (DDP's reduction needs it)."""
    batch = collate([Episode("t", 0, list(range(100, 112)), (4, 7), (9, 12), "", "", "stop", "stop", None, None)], 0)
    logp = sequence_log_probs(tiny_model, batch)
    assert logp.requires_grad and logp.abs().sum() == 0
    logp.sum().backward()
    assert all(p.grad is not None for p in tiny_model.parameters())


def test_stage2_refuses_a_stage1_checkpoint_of_another_base_model(tmp_path, tiny_model_dir):
    stage1 = train(_config(tmp_path, tiny_model_dir, "stage1", stage1_steps=1, save_steps=1),
                   reward_fn=capital_reward, train_tasks=SYNTHETIC_TASKS)
    other = tmp_path / "other-base"  # refused before it is loaded
    other.mkdir()
    with pytest.raises(TrainError, match=f"trained from base model '{tiny_model_dir}'.*pass --model {tiny_model_dir}"):
        train(_config(tmp_path, other, "stage2", schedule="2", stage2_steps=1, init_from=str(stage1 / "checkpoint-1")),
              reward_fn=capital_reward, train_tasks=SYNTHETIC_TASKS)


def test_offline_first_attempts_are_seeded_by_task_and_sample_alone():
    """A resumed run starts with an empty cache: its draws must be the same as the first run's."""
    from benchmarks.generation import Generation, SamplingParams, sequence_seed
    from score_code.train.score import offline_first_attempts

    calls = []

    class Recorder:
        def generate(self, dialogues, params):
            calls.append(params.seeds)
            return [Generation(str(s), [1], [2], "stop", d) for d, s in zip(dialogues, params.seeds, strict=True)]

    tasks = SYNTHETIC_TASKS[:2]
    first = offline_first_attempts(tasks, 2, 1, {}, lambda t: None, Recorder(), SamplingParams(), seed=7)
    again = offline_first_attempts(tasks[::-1], 2, 1, {}, lambda t: None, Recorder(), SamplingParams(), seed=7)
    assert calls[0] == tuple(sequence_seed(7, "offline", t.task_id, 1) for t in tasks)
    assert {first[1].text, first[3].text} == {again[1].text, again[3].text}


# --- the GPU smoke check (scripts/gpu_smoke.sh) ----------------------------------------------------------------------


def test_gpu_smoke_stops_at_once_on_a_cpu_saying_a_gpu_is_needed():
    proc = subprocess.run(["bash", str(REPO / "scripts" / "gpu_smoke.sh")], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and "needs a CUDA GPU" in proc.stderr and "PASS" not in proc.stdout
    from score_code.train import gpu_smoke

    assert gpu_smoke.main([]) == 2  # the module itself refuses too (a host with nvidia-smi but no CUDA torch)


def test_gpu_smoke_sampling_check_passes_for_a_model_whose_decode_matches_training(tiny_model, tokenizer, capsys):
    """The check the smoke script runs on a GPU, here in float32 on CPU: a KV-cached decode's log-probs equal the
    training forward's."""
    from score_code.train import gpu_smoke

    report = gpu_smoke.Report()
    gpu_smoke.check_sampling_matches_training(report, tiny_model, tokenizer, torch.float32, torch.device("cpu"), 16)
    assert not report.failed and capsys.readouterr().out.startswith("PASS  sampling log-probs")
    before = {"w": torch.zeros(4)}
    assert gpu_smoke.changed_fraction(before, {"w": torch.tensor([0.0, 1.0, 0.0, 2.0])}) == 0.5
