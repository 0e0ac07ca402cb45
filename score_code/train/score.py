"""SCoRe for code, stage I and stage II (docs/method.md §1-4), one loop read top to bottom.

    score-code train score  --config score_code/recipes/cpu_default.yaml     # stage I, then stage II
    score-code train stage1 ... ;  score-code train stage2 --init-from RUN/checkpoint-N ...
    python -m score_code.cli train score --config score_code/recipes/gpu_lora.yaml --model DIR    # 1 GPU, vLLM
    accelerate launch -m score_code.cli train score --config score_code/recipes/gpu_lora.yaml --backend hf  # DDP
    torchrun --nproc_per_node 2 -m score_code.cli train score ...                                 # CPU processes

One step: sample k two-attempt episodes for each of `prompts_per_step` tasks (temperature 1.0) -> grade both
attempts in one sandbox batch -> per-attempt advantages -> (maybe drop the groups with no advantage) -> stage loss
(objectives.py) -> backward over micro-batches -> Adam step -> log -> maybe evaluate -> maybe checkpoint.

Deviations from the paper, and choices where it is silent:
- Baseline: the paper says REINFORCE and no more. Default: leave-one-out (RLOO) over the k samples of a task,
  computed per attempt; `--baseline none` is plain REINFORCE.
- KL: per-token k3 estimator (or k2, `kl_estimator`) against the frozen starting model, gradient through the
  attempt's own log-probabilities; each attempt's KL and policy-gradient terms are averaged over that attempt's
  tokens (`loss_aggregation`), so beta1/beta2 are per-token coefficients. Under DDP the denominators are the
  global counts, so each token weighs the same whichever process sampled it.
- On-policy, one gradient step per batch: no PPO clipping. Log-probs are taken at the sampling temperature
  (top_p < 1 is refused). With a vLLM engine the policy gradient carries a truncated importance weight
  pi / pi_engine (`importance_sampling_cap`), and the gap between the two is logged every step.
- Steps are counted per stage (`stage1_steps`, `stage2_steps`); `schedule` "1,2" or interleaved "1,2,1,2".
- `train score` keeps one Adam state and one learning-rate schedule across its stages; `train stage2
  --init-from` restarts from a stage-I checkpoint with a fresh optimizer, as the paper describes.
- The reference for every KL is `--model` (the base model), also in stage II started from a stage-I checkpoint.
- Sandbox errors: the episode leaves the loss and is counted in `sandbox_errors`, never scored 0.
- Timeouts: per task, calibrated from the reference solutions (benchmarks.timeouts), so a slow but correct
  program is not rewarded 0 on one sample and 1 on the next; `sandbox_timeout_s` > 0 sets a flat one. The run's
  are in timeouts.json.
- Offline first attempts (stage II, `offline_ratio`): the last round(ratio * k) samples of each task reuse an
  attempt 1 sampled once (per task and sample index) from the reference; only their attempt 2 is trained.
- Best checkpoint: highest mean attempt-2 training reward over the steps since the previous checkpoint, within a
  stage (stage I and stage II rewards are not compared).
- Stage I trains an episode whose attempt-1 grading failed (r1 is not used there); stage II needs both rewards.
- Dynamic sampling (`skip_zero_advantage_groups`, off by default; DAPO): a task group whose advantages are all 0
  (stage I: attempt 2's; stage II: both attempts' shaped ones) leaves the update whole, its KL terms too, so the token
  and episode counts of the aggregation are the kept groups'. Stage I's beta2 anchor then acts on the kept groups'
  attempts 1 only: it still holds attempt 1 wherever the update pushes, at the same per-token weight; keeping the
  others for their KL alone would cost the forward and backward the switch exists to save. A step where no group is
  left makes no optimizer step and no schedule step (the warm-up counts updates), but counts as a step: steps are
  units of sampling budget. Not done: DAPO's refill (sampling more tasks until the batch is full), which makes the
  episodes a step costs vary; `rollout/groups_kept` says how much of the budget trained.
- Precision: trained weights are float32 master weights, forwards run under bf16 autocast on a GPU.
- The policy samples in eval mode and computes the loss in train mode (gradient checkpointing runs only there);
  every dropout probability must be 0, so the two are one function.
- Every sampled sequence has its own seed, a hash of (seed, global step, rank, task slot, task, sample, attempt)
  (benchmarks.generation.sequence_seed): no two samples share a noise stream, and a resumed run draws the same
  episodes as an uninterrupted one. Offline first attempts are seeded by (seed, task, sample) alone.
- Scale: the paper trains Gemini 1.0 Pro, batch 128, 1500 steps; recipes here size this for SmolLM2-135M.

- `backend: vllm`: one engine colocated with a single training process, in the policy's compute dtype; after
  every update the policy's weights (LoRA folded in) are copied into it (generation/vllm.py).

- Checkpoints hold full (unsharded) model and optimizer states, the optimizer's keyed by parameter name, so a run
  resumes the same under one process, DDP or FSDP.

Not done yet: the vLLM path is tested against a stand-in engine only (scripts/gpu_smoke.sh checks a real GPU run,
and the engine where vLLM is installed, but has not run yet); multi-process runs are tested as CPU DDP (gloo); FSDP
is wired but untested: accelerate enables FSDP only on accelerators, never on CPU. Under FSDP every forward is a
collective, but the hf backend's continuous batching runs as many forwards as its own sequences need, which differs
across ranks: FSDP runs would need the ranks' decode loops kept in step.
"""
from __future__ import annotations

import math
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from benchmarks import prompts
from benchmarks.generation import Dialogue, Generation, Generator, SamplingParams, sequence_seed
from benchmarks.jsonl import write_json_atomic
from benchmarks.tasks import Task
from benchmarks.timeouts import RULE, calibrated_timeouts
from score_code.config import ScoreConfig, ScoreDataConfig
from score_code.generation import make_generator, sync_policy
from score_code.models import dtype_name, resolve_dtype
from score_code.train import checkpoint as ckpt
from score_code.train.common import (
    accumulate_step,
    build_models,
    compute_context,
    load_training_tasks,
    make_optimizer,
    prepare_run_dir,
    refuse_unservable_backend,
    save,
    sequence_log_probs,
    task_spec,
    training_forward,
)
from score_code.train.objectives import (
    Normalizers,
    groups_with_signal,
    importance_weights,
    stage_advantages,
    stage_loss,
)
from score_code.train.rollout import (
    Batch,
    Episode,
    RewardFn,
    SandboxReward,
    attempt_params,
    collate,
    generate_rollouts,
)
from score_code.train.run_log import RunLogger, rollout_metrics

TIMEOUTS_FILE = "timeouts.json"  # the per-task timeouts of the reward, beside config.json

# --- helpers (explicit arguments, no globals) ---------------------------------------------------------------------


def phase_plan(config: ScoreConfig) -> list[tuple[int, int]]:
    """[(stage, steps)] in schedule order."""
    steps = {1: config.schedule.stage1_steps, 2: config.schedule.stage2_steps}
    return [(stage, steps[stage]) for stage in config.stages()]


def stage_at(global_step: int, plan: list[tuple[int, int]]) -> int:
    """The stage that global step `global_step` (1-based) belongs to."""
    end = 0
    for stage, steps in plan:
        end += steps
        if global_step <= end:
            return stage
    raise ValueError(f"step {global_step} is past the schedule ({end} steps)")


def tasks_for_step(n_tasks: int, step: int, per_process: int, world_size: int, rank: int, seed: int) -> list[int]:
    """Task indices for one process at one step: epochs of seeded permutations, ranks take disjoint slices."""
    per_step = per_process * world_size
    first = (step - 1) * per_step
    indices = []
    for position in range(first + rank * per_process, first + (rank + 1) * per_process):
        epoch, offset = divmod(position, n_tasks)
        order = list(range(n_tasks))
        random.Random(seed * 1_000_003 + epoch).shuffle(order)
        indices.append(order[offset])
    return indices


def episode_seeds(seed: int, step: int, rank: int, tasks: Sequence[Task], k: int) -> Callable[[int, int], int]:
    """(episode index, attempt) -> the sequence's own sampling seed, a hash of (run seed, step, rank, task slot, task,
    sample, attempt). The slot too: a small task set can put one task twice in a step."""
    def seed_of(episode: int, attempt: int) -> int:
        slot, sample = divmod(episode, k)
        return sequence_seed(seed, step, rank, slot, tasks[slot].task_id, sample, attempt)

    return seed_of


def load_eval_tasks(data: ScoreDataConfig, max_tasks: int) -> tuple[list[Task], tuple[Task, ...]]:
    """Held-out tasks and their few-shot examples."""
    from benchmarks.tasks import load_shots, load_tasks

    spec = task_spec(data)
    tasks = load_tasks(spec, data.eval_split)
    return (tasks[:max_tasks] if max_tasks else tasks), load_shots(spec)


def reference_log_probs(policy: Any, reference: Any, batch: Batch, temperature: float = 1.0) -> torch.Tensor:
    with torch.no_grad():
        if reference is not None:
            return sequence_log_probs(reference, batch, temperature)
        with policy.disable_adapter():  # LoRA: the base model is the reference
            return sequence_log_probs(policy, batch, temperature)


class ReferenceGenerator:
    """Samples from the reference of a LoRA run: the policy's generator with the adapter disabled."""

    def __init__(self, generator: Generator, lora_policy: Any) -> None:
        self.generator = generator
        self.lora_policy = lora_policy

    def generate(self, dialogues: list[Dialogue], params: SamplingParams) -> list[Generation]:
        with self.lora_policy.disable_adapter():
            return self.generator.generate(dialogues, params)


def update_batch(episodes: Sequence[Episode], advantage1: torch.Tensor, advantage2: torch.Tensor, keep: torch.Tensor,
                 pad_id: int, stage: int) -> tuple[Batch, torch.Tensor, torch.Tensor]:
    """The update's batch and advantages: the episodes where `keep` is True. With none kept here but some on another
    process (DDP), one episode without loss tokens, so that this process still runs a backward and joins the gradient
    reduction (sequence_log_probs ties every parameter in)."""
    rows = keep.nonzero().squeeze(1).tolist()
    if rows:
        return collate([episodes[i] for i in rows], pad_id, stage), advantage1[rows], advantage2[rows]
    batch = collate(episodes[:1], pad_id, stage)
    empty = replace(batch, mask1=torch.zeros_like(batch.mask1), mask2=torch.zeros_like(batch.mask2))
    return empty, advantage1[:1], advantage2[:1]


def skipped_update(scheduler: Any) -> dict[str, float]:
    """policy_update's metrics for a step that makes no update: no loss, KL or gradient was computed (NaN; plots and
    TensorBoard skip them), no token ran."""
    return {**dict.fromkeys(("loss", "pg_loss", "kl/attempt1", "kl/attempt2", "grad_norm"), math.nan),
            "learning_rate": scheduler.get_last_lr()[0], "update/tokens": 0.0}


def policy_update(policy: Any, reference: Any, optimizer: torch.optim.Optimizer, scheduler: Any, accelerator: Any,
                  batch: Batch, advantage1: torch.Tensor, advantage2: torch.Tensor, stage: int,
                  config: ScoreConfig, dtype: torch.dtype = torch.float32) -> dict[str, float]:
    """One optimizer step on the stage's loss (objectives.stage_loss), normalized by the whole batch of all
    processes. Forwards autocast to `dtype` and run the policy in train mode (gradient checkpointing)."""
    obj = config.objective
    temperature = config.rollout.temperature
    norm = Normalizers.across_processes(batch.mask1, batch.mask2, lambda t: accelerator.reduce(
        t.to(accelerator.device), reduction="sum").cpu(), accelerator.num_processes)
    engine_tokens = 0.0
    if batch.sampling_logp is not None:
        engine_tokens = max(float(((batch.mask1 + batch.mask2 > 0) & ~batch.sampling_logp.isnan()).sum()), 1.0)

    def micro_loss(micro: Batch, rows: slice) -> dict[str, torch.Tensor]:
        with compute_context(accelerator.device, dtype):
            ref_logp = reference_log_probs(accelerator.unwrap_model(policy), reference, micro, temperature)
            with training_forward(policy):
                logp = sequence_log_probs(policy, micro, temperature)
        weights = importance_weights(logp, micro.sampling_logp, obj.importance_sampling_cap)
        terms = stage_loss(stage, logp, ref_logp, micro.mask1, micro.mask2, advantage1[rows].to(logp.device),
                           advantage2[rows].to(logp.device), obj.beta1, obj.beta2, obj.loss_aggregation, norm,
                           obj.kl_estimator, weights)
        out = {"loss": terms.loss, "pg_loss": terms.pg_loss, "kl/attempt1": terms.kl1, "kl/attempt2": terms.kl2}
        if micro.sampling_logp is not None:  # how far the engine that sampled is from the policy, per token
            known = ((micro.mask1 + micro.mask2) > 0) & ~micro.sampling_logp.isnan()
            gap = (logp.detach() - micro.sampling_logp).abs()
            out["sampling/logprob_gap"] = torch.where(known, gap, 0.0).sum() / engine_tokens
            out["sampling/importance_weight"] = torch.where(known, weights, 0.0).sum() / engine_tokens
        return out

    return accumulate_step(policy, optimizer, scheduler, accelerator, batch, config.optim.micro_batch_size,
                           config.optim.max_grad_norm, micro_loss)


def mean_across_processes(metrics: dict[str, float], accelerator: Any) -> dict[str, float]:
    """Average each metric over processes (NaN-aware: a process with no valid episode does not count)."""
    if accelerator.num_processes == 1:
        return metrics
    keys = sorted(metrics)
    values = torch.tensor([metrics[k] for k in keys], dtype=torch.float64, device=accelerator.device)
    present = (~values.isnan()).double()
    sums = accelerator.reduce(torch.nan_to_num(values), reduction="sum")
    counts = accelerator.reduce(present, reduction="sum")
    return {k: (s / c).item() if c > 0 else math.nan for k, s, c in zip(keys, sums, counts, strict=True)}


def evaluate_during_training(generator: Generator, tasks: Sequence[Task], shots: Sequence[Task], sandbox: Any,
                             out_dir: Path, config: ScoreConfig, chat: bool) -> dict[str, float]:
    """Greedy two-attempt evaluation on the held-out split; numeric metrics under an `eval/` prefix."""
    from benchmarks.evaluate import EvalConfig, evaluate

    eval_config = EvalConfig(model=config.model.model or "default",
                             dataset=f"{config.data.tasks}:{config.data.eval_split}",
                             chat=chat, attempts=2, samples=1, temperature=0.0,
                             max_new_tokens=config.run.eval_max_new_tokens, seed=config.run.seed,
                             timeout_s=config.run.sandbox_timeout_s or None)
    metrics = evaluate(generator, tasks, sandbox, out_dir, eval_config, shots=shots, progress=False)
    flat: dict[str, float] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}/{k}", v)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[prefix] = float(value)

    walk("eval", metrics)
    return flat


def sandbox_reward(sandbox: Any, tasks: Sequence[Task], flat_timeout_s: float, accelerator: Any,
                   run_dir: Path) -> SandboxReward:
    """The sandbox reward under the run's timeouts, recorded in timeouts.json (config.json stays a recipe):
    `flat_timeout_s` for every task, or if 0 per task from the reference solutions (benchmarks.timeouts), measured
    by the main process alone; the others then read its cache."""
    if flat_timeout_s:
        timeouts, rule = {}, f"flat {flat_timeout_s:g} s"
    else:
        if accelerator.is_main_process:
            calibrated_timeouts(sandbox, tasks)
        accelerator.wait_for_everyone()
        timeouts, rule = calibrated_timeouts(sandbox, tasks), RULE
    if accelerator.is_main_process:
        write_json_atomic(run_dir / TIMEOUTS_FILE, {"timeout_rule": rule, "task_timeouts_s": timeouts})
    return SandboxReward(sandbox, timeouts, flat_timeout_s=flat_timeout_s or None)


# --- the run -------------------------------------------------------------------------------------------------------


def train(config: ScoreConfig, reward_fn: RewardFn | None = None, train_tasks: Sequence[Task] | None = None,
          shots: Sequence[Task] = (), after_step: Callable[[int, Any], None] | None = None) -> Path:
    """Run the schedule; returns the run directory. `reward_fn` / `train_tasks` replace the sandbox and MBPP
    (tests and custom tasks); `after_step(step, policy)` runs after each step's log and checkpoint (tests use it
    to kill a run or to read a process's parameters)."""
    from accelerate import Accelerator
    from tqdm import tqdm

    # --- resolve config, run directory ----------------------------------------------------------------------
    config.validate()
    # One process, or DDP/FSDP under `accelerate launch` / `torchrun`. cpu=True on a CPU-only host is what makes
    # accelerate use gloo for several processes there (else it silently runs each process alone).
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    print0 = accelerator.print
    rank, world = accelerator.process_index, accelerator.num_processes
    refuse_unservable_backend(config.model, world)
    run_dir = Path(config.run.output_dir)
    resume_from = prepare_run_dir(run_dir, config.run.resume)
    accelerator.wait_for_everyone()
    print0(config.describe())
    if accelerator.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        config.save_json(run_dir / "config.json")
    plan = phase_plan(config)
    total_steps = sum(steps for _, steps in plan)
    last_step = min(total_steps, config.schedule.max_steps) if config.schedule.max_steps else total_steps

    # --- seed, data ------------------------------------------------------------------------------------------
    torch.manual_seed(config.run.seed + rank)
    random.seed(config.run.seed + rank)
    train_tasks, shots = load_training_tasks(config.data, train_tasks, shots)
    print0(f"{len(train_tasks)} training tasks; {config.rollout.prompts_per_step} x {config.rollout.samples_per_prompt}"
           f" episodes per step per process x {world} process(es) = "
           f"{config.rollout.prompts_per_step * config.rollout.samples_per_prompt * world} episodes per step; "
           f"schedule {plan}, {total_steps} steps")

    # --- policy and frozen reference -------------------------------------------------------------------------
    init_path = resume_from or (Path(config.model.init_from) if config.model.init_from else None)
    policy, reference, tokenizer = build_models(config.model, init_path, accelerator.device)
    dtype = resolve_dtype(config.model.dtype, accelerator.device)  # compute dtype; trained weights stay float32
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    # --- optimizer and schedule ------------------------------------------------------------------------------
    optimizer, scheduler = make_optimizer(policy, config.optim)
    policy, optimizer = accelerator.prepare(policy, optimizer)  # the scheduler is stepped by hand, once per step
    # The engine before the resume: building one reseeds the global generators, which the resume then restores.
    generator = make_generator(config.model.backend, config.model.model, policy=accelerator.unwrap_model(policy),
                               tokenizer=tokenizer, dtype=dtype_name(dtype),
                               batch_size=config.rollout.generation_batch_size, seed=config.run.seed,
                               gpu_memory_utilization=config.model.vllm_gpu_memory_utilization)
    chat = generator.chat
    state = ckpt.TrainerState(base_model=ckpt.model_identity(config.model.model))
    if resume_from is not None:
        state = ckpt.load_training_state(resume_from, policy, optimizer, scheduler)
        state.base_model = ckpt.model_identity(config.model.model)
        print0(f"resuming from {resume_from} at global step {state.global_step}")

    # --- grader, logs ----------------------------------------------------------------------------------------
    sandbox = None
    if reward_fn is None or config.run.eval_steps:
        from sandbox import Sandbox

        sandbox = Sandbox(**config.run.sandbox_options())
    reward_fn = reward_fn or sandbox_reward(sandbox, train_tasks, config.run.sandbox_timeout_s, accelerator, run_dir)
    eval_tasks, eval_shots = (load_eval_tasks(config.data, config.run.eval_max_tasks) if config.run.eval_steps
                              else ([], ()))
    logger = RunLogger(run_dir, enabled=accelerator.is_main_process,
                       resume_step=state.global_step if resume_from is not None else None)
    instruction = prompts.self_correction_message()
    k = config.rollout.samples_per_prompt
    offline_per_task = round(config.rollout.offline_ratio * k)
    offline_cache: dict[tuple[str, int], Generation] = {}  # (task_id, sample index) -> reference attempt 1
    reference_generator: Generator | None = None
    if offline_per_task:  # sampled once per task, through transformers whatever the rollout backend
        unwrapped = accelerator.unwrap_model(policy)
        sampler = unwrapped if reference is None else reference
        reference_generator = make_generator("hf", config.model.model, policy=sampler, tokenizer=tokenizer,
                                             batch_size=config.rollout.generation_batch_size)
        if reference is None:  # LoRA: the reference is the policy with its adapter disabled
            reference_generator = ReferenceGenerator(reference_generator, unwrapped)

    def first_dialogue(task: Task) -> Dialogue:
        return prompts.first_dialogue(task, shots, chat)

    bar = tqdm(total=last_step, initial=state.global_step, desc="score", dynamic_ncols=True,
               disable=not (config.run.progress and accelerator.is_main_process), file=sys.stderr)
    try:
        for step in range(state.global_step + 1, last_step + 1):
            stage = stage_at(step, plan)
            step_start = time.perf_counter()
            # --- rollout: k two-attempt episodes per task, both attempts graded in one batch --------------
            tasks = [train_tasks[i] for i in tasks_for_step(len(train_tasks), step, config.rollout.prompts_per_step,
                                                            world, rank, config.run.seed)]
            params = attempt_params(config.rollout, tasks, chat)

            offline: dict[int, Generation] = {}
            with compute_context(accelerator.device, dtype):
                if stage == 2 and reference_generator is not None:
                    offline = offline_first_attempts(tasks, k, offline_per_task, offline_cache, first_dialogue,
                                                     reference_generator, params[0], config.run.seed)
                rollouts = generate_rollouts(generator, tasks, first_dialogue, instruction, k, params[0], params[1],
                                             reward_fn, offline_first=offline,
                                             seed_of=episode_seeds(config.run.seed, step, rank, tasks, k))
            episodes = rollouts.episodes

            # --- rewards -> advantages -------------------------------------------------------------------
            valid = torch.tensor([e.trainable(stage) for e in episodes])
            reward1 = torch.tensor([e.reward1 if e.reward1 is not None else 0.0 for e in episodes])
            reward2 = torch.tensor([e.reward2 if e.reward2 is not None else 0.0 for e in episodes])
            advantage1, advantage2 = stage_advantages(stage, reward1, reward2, valid, k, config.objective.baseline,
                                                      config.objective.alpha)

            # --- dynamic sampling: a group whose advantages are all 0 has no policy gradient; skip it? -----
            signal = groups_with_signal(advantage1, advantage2, k)
            keep = signal if config.objective.skip_zero_advantage_groups else torch.ones_like(signal)
            kept_anywhere = accelerator.reduce(keep.sum().to(accelerator.device), reduction="sum").item() > 0

            # --- loss -> backward -> step (none when no process kept a group) ----------------------------
            update_start = time.perf_counter()
            if kept_anywhere:
                batch, kept_advantage1, kept_advantage2 = update_batch(episodes, advantage1, advantage2,
                                                                       keep.repeat_interleave(k), pad_id, stage)
                update = policy_update(policy, reference, optimizer, scheduler, accelerator, batch, kept_advantage1,
                                       kept_advantage2, stage, config, dtype)
                sync_policy(generator, accelerator.unwrap_model(policy))
            else:  # nothing to learn: the step still spends its episodes (global_step counts sampling steps)
                update = skipped_update(scheduler)
            update_s = time.perf_counter() - update_start

            # --- log -------------------------------------------------------------------------------------
            metrics = {**rollout_metrics(episodes), **update,
                       "rollout/groups_zero_advantage": float((~signal).sum()),
                       "rollout/groups_skipped": float((~keep).sum()), "rollout/groups_kept": float(keep.sum()),
                       "time/generation": rollouts.times.generation_s, "time/grading": rollouts.times.grading_s,
                       "time/update": update_s}
            metrics = mean_across_processes(metrics, accelerator)
            metrics["time/step"] = time.perf_counter() - step_start
            metrics["stage"] = stage
            state.global_step, state.stage = step, stage
            if not math.isnan(metrics["reward"]):
                state.record_reward(metrics["reward"], stage)

            # --- maybe evaluate --------------------------------------------------------------------------
            if config.run.eval_steps and (step % config.run.eval_steps == 0 or step == last_step):
                if accelerator.is_main_process:
                    metrics.update(evaluate_during_training(generator, eval_tasks, eval_shots, sandbox,
                                                            run_dir / "eval" / f"step-{step}", config, chat))
                accelerator.wait_for_everyone()
            logger.log(step, metrics)
            logger.log_completions(step, stage, episodes[: config.run.log_completions])
            bar.update(1)
            bar.set_postfix(stage=stage, r1=f"{metrics['attempt1/reward']:.2f}", r2=f"{metrics['attempt2/reward']:.2f}",
                            kl1=f"{metrics['kl/attempt1']:.3f}", loss=f"{metrics['loss']:.3f}")

            # --- maybe checkpoint ------------------------------------------------------------------------
            if step % config.run.save_steps == 0 or step == last_step:
                save(run_dir, state, policy, tokenizer, optimizer, scheduler, accelerator, config.run.save_total_limit)
            if after_step is not None:
                after_step(step, accelerator.unwrap_model(policy))
    finally:
        bar.close()
        logger.close()
        if sandbox is not None:
            sandbox.close()
    print0(f"done: {run_dir} (global step {state.global_step}; best {state.best_model_checkpoint})")
    return run_dir


def offline_first_attempts(tasks: Sequence[Task], k: int, per_task: int, cache: dict[tuple[str, int], Generation],
                           first_dialogue: Callable[[Task], Dialogue], reference_generator: Generator,
                           params: SamplingParams, seed: int) -> dict[int, Generation]:
    """Episode index -> stored reference attempt 1 for the last `per_task` samples of each task; samples missing
    from `cache` are drawn now (once per task and sample index for the whole run). Each draw is seeded by (run seed,
    task, sample index) alone, so a resumed run, whose in-memory cache starts empty, draws the same attempts."""
    wanted = [(i * k + s, task, s) for i, task in enumerate(tasks) for s in range(k - per_task, k)]
    missing = list({(task.task_id, s): (task, s) for _, task, s in wanted if (task.task_id, s) not in cache}.values())
    if missing:
        seeds = tuple(sequence_seed(seed, "offline", task.task_id, s) for task, s in missing)
        drawn = reference_generator.generate([first_dialogue(task) for task, _ in missing],
                                             replace(params, seeds=seeds))
        for (task, s), gen in zip(missing, drawn, strict=True):
            cache[(task.task_id, s)] = gen
    return {index: cache[(task.task_id, s)] for index, task, s in wanted}
