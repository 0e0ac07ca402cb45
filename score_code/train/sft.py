"""Supervised fine-tuning for the STaR and Pair-SFT baselines (docs/method.md §6), one loop read top to bottom.

    score-code train star     --config score_code/recipes/debug_tiny.yaml --iterations 3 [--plus]
    score-code train pair-sft --config score_code/recipes/debug_tiny.yaml [--plus]

STaR: `iterations` rounds of [sample k two-attempt traces per training task from the current model (temperature
`temperature`, graded in the sandbox: benchmarks.evaluate writes iteration-N/samples/) -> keep D_STaR (D+_STaR
with --plus; score_code.baselines.data writes iteration-N/data/) -> SFT `epochs` passes over it]. Pair-SFT: the same
with one round and D_SFT / D+_SFT pairs. What the SCoRe trainer also uses is shared, not re-implemented: the config
groups (score_code.config.TrainerConfig), models, optimizer and the accumulate-clip-step update (train/common.py),
checkpoints (checkpoint-N, atomic, pruned, --resume) and logs (metrics.jsonl, TensorBoard).

Deviations from the paper, and choices where it is silent:
- Each STaR round continues training the current model on that round's data only (original STaR restarts from
  the base model every round; the SCoRe paper does not say which).
- Loss: negative log-likelihood averaged over every trained token of the optimizer batch; trained tokens are
  y2 (and y1 with --loss_on both); the first-turn prompt and the instruction p1 never carry loss.
- Token ids: the evaluation harness stores text, so y1 and y2 are tokenized from it (a record's stored
  `y1_token_ids` / `y2_token_ids` are used verbatim when present). The second turn is appended to the ids of
  prompt + y1 with the generation backend's DialogueEncoder, as at sampling time (token-in, token-out).
  Chat models get their end-of-turn token after y2 so that they learn to stop.
- `first_round_episodes`: round 1 trains on the traces a `score-code filter` run drew from the starting model
  (all its samples per task) instead of sampling its own, so baselines and SCoRe runs start from the same samples.
- There is no training reward, so no "best" checkpoint: pruning keeps the newest `save_total_limit`.
- A round whose filter keeps nothing trains nothing (logged in iteration-N/data/stats.json) and goes on.
- metrics.jsonl rows carry the step's loss and, under the SCoRe trainer's names (attempt1/reward,
  attempt2/reward, delta, delta_i2c, delta_c2i), the accuracy of the round's sampled traces (temperature 1.0),
  so `score-code plot` draws both kinds of run.
"""
from __future__ import annotations

import math
import random
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from benchmarks.generation import Dialogue
from benchmarks.tasks import Task
from score_code.baselines import data as baselines
from score_code.config import ConfigError, SFTConfig
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
    training_forward,
)
from score_code.train.rollout import Batch, Episode, collate

METHODS = ("star", "pair-sft")


def builder_name(method: str, config: SFTConfig) -> str:
    return f"{method}{'+' if config.baseline.plus else ''}"


# --- examples: a record -> token ids and loss masks ---------------------------------------------------------------


def encode_record(record: dict, encoder: Any, train_attempt1: bool = False) -> Episode:
    """prompt1 + y1 + instruction + y2 token ids with the spans of y1 and y2 (collate turns them into masks).

    `encoder` is the generation backend's DialogueEncoder, so the ids are laid out exactly as when sampling.
    """
    tokenizer = encoder.tokenizer
    messages = record["messages"]
    prompt_ids = encoder.encode(Dialogue(messages=list(messages)))
    y1_ids = list(record.get("y1_token_ids") or tokenizer(record["y1"], add_special_tokens=False)["input_ids"])
    y2_ids = list(record.get("y2_token_ids") or tokenizer(record["y2"], add_special_tokens=False)["input_ids"])
    end_of_turn = tokenizer.eos_token_id
    if encoder.chat and end_of_turn is not None and (not y2_ids or y2_ids[-1] not in encoder.eos_ids):
        y2_ids.append(end_of_turn)
    second = Dialogue(
        messages=[*messages, {"role": "assistant", "content": record["y1"]},
                  {"role": "user", "content": record["instruction"]}],
        token_ids=prompt_ids + y1_ids,
        encoded_messages=len(messages) + 1,
    )
    x2_ids = encoder.encode(second)
    kind = record.get("kind", "i->c")
    return Episode(
        task_id=record["task_id"],
        sample_index=0,
        token_ids=x2_ids + y2_ids,
        attempt1_span=(len(prompt_ids), len(prompt_ids) + len(y1_ids)),
        attempt2_span=(len(x2_ids), len(x2_ids) + len(y2_ids)),
        text1=record["y1"],
        text2=record["y2"],
        finish_reason1="stop",
        finish_reason2="stop",
        reward1=1.0 if kind.startswith("c") else 0.0,
        reward2=1.0,
        offline_attempt1=not train_attempt1,  # collate leaves y1 out of the loss unless it is trained
    )


def sft_loss(logp: torch.Tensor, mask: torch.Tensor, tokens: float) -> torch.Tensor:
    """Negative log-likelihood summed over masked tokens / `tokens` (all trained tokens of the optimizer batch, so
    the micro-batch losses add up to the batch's token mean)."""
    return -(logp * mask).sum() / tokens


def sft_update(policy: Any, optimizer: torch.optim.Optimizer, scheduler: Any, accelerator: Any, batch: Batch,
               config: SFTConfig, dtype: torch.dtype = torch.float32) -> dict[str, float]:
    """One optimizer step on the token-mean NLL of `batch`'s trained tokens; forwards autocast to `dtype`."""
    tokens = max(float((batch.mask1 + batch.mask2).sum()), 1.0)

    def micro_loss(micro: Batch, rows: slice) -> dict[str, torch.Tensor]:
        with training_forward(policy), compute_context(accelerator.device, dtype):
            logp = sequence_log_probs(policy, micro)
        return {"loss": sft_loss(logp, micro.mask1 + micro.mask2, tokens)}

    update = accumulate_step(policy, optimizer, scheduler, accelerator, batch, config.optim.micro_batch_size,
                             config.optim.max_grad_norm, micro_loss)
    return {**update, "tokens": tokens, "examples": float(batch.input_ids.shape[0])}


def epoch_order(n: int, seed: int, iteration: int, epoch: int) -> list[int]:
    """A seeded shuffle per (round, epoch): a resumed run replays the same order and skips the steps it did."""
    order = list(range(n))
    random.Random(seed * 1_000_003 + iteration * 1009 + epoch).shuffle(order)
    return order


def sample_and_build(method: str, config: SFTConfig, generator: Any, train_tasks: Sequence[Task],
                     shots: Sequence[Task], sandbox: Any, round_dir: Path, round_no: int,
                     context: Any) -> tuple[dict, list[dict], baselines.BuildStats]:
    """k graded two-attempt traces per task from the current model (benchmarks.evaluate, resumable, in
    round_dir/samples) -> (their metrics, the round's SFT records, the builder's stats)."""
    from benchmarks.evaluate import EvalConfig, evaluate

    eval_config = EvalConfig(
        model=f"{round_dir.parent}@iteration-{round_no}", dataset=f"{config.data.tasks}:{config.data.train_split}",
        chat=generator.chat, attempts=2, samples=config.rollout.samples_per_prompt,
        temperature=config.rollout.temperature, top_p=config.rollout.top_p,
        max_new_tokens=config.rollout.max_new_tokens, seed=config.run.seed + round_no,
        timeout_s=config.run.sandbox_timeout_s or None)  # None: per task, in samples/config.json
    with context:
        sampled = evaluate(generator, train_tasks, sandbox, round_dir / "samples", eval_config, shots=shots,
                           progress=config.run.progress)
    records, stats = baselines.build(builder_name(method, config), round_dir / "samples", train_tasks, shots,
                                     seed=config.run.seed + round_no)
    return sampled, records, stats


# --- the run -------------------------------------------------------------------------------------------------------


def train_baseline(method: str, config: SFTConfig, sandbox: Any = None,
                   train_tasks: Sequence[Task] | None = None, shots: Sequence[Task] = ()) -> Path:
    """Run STaR or Pair-SFT; returns the run directory. `sandbox` / `train_tasks` replace the configured grader
    and MBPP (tests and custom tasks)."""
    from accelerate import Accelerator

    from score_code.train.run_log import RunLogger

    # --- resolve config, run directory ----------------------------------------------------------------------
    if method not in METHODS:
        raise ConfigError(f"unknown baseline {method!r}; expected one of {METHODS}")
    config.validate()
    sft = config.baseline
    rounds = sft.iterations if method == "star" else 1
    run_dir = Path(config.run.output_dir)
    resume_from = prepare_run_dir(run_dir, config.run.resume)
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    if accelerator.num_processes > 1:
        raise ConfigError("the SFT baselines run in one process (sampling goes through benchmarks.evaluate); "
                          "start them without `accelerate launch`")
    refuse_unservable_backend(config.model, accelerator.num_processes)
    print(config.describe())
    run_dir.mkdir(parents=True, exist_ok=True)
    config.save_json(run_dir / "config.json", method=method)

    # --- seed, data ------------------------------------------------------------------------------------------
    seed = config.run.seed
    torch.manual_seed(seed)
    random.seed(seed)
    train_tasks, shots = load_training_tasks(config.data, train_tasks, shots)
    print(f"{method}: {len(train_tasks)} tasks x {config.rollout.samples_per_prompt} two-attempt traces per round, "
          f"{rounds} round(s), builder {builder_name(method, config)}, loss on {sft.loss_on}")

    # --- policy, optimizer, schedule -------------------------------------------------------------------------
    init_path = resume_from or (Path(config.model.init_from) if config.model.init_from else None)
    policy, reference, tokenizer = build_models(config.model, init_path, accelerator.device)
    dtype = resolve_dtype(config.model.dtype, accelerator.device)  # compute dtype; trained weights stay float32
    del reference  # supervised: no KL, no reference model
    optimizer, scheduler = make_optimizer(policy, config.optim)
    policy, optimizer = accelerator.prepare(policy, optimizer)
    # The engine first: building one reseeds the global generators, which a resume then restores.
    generator = make_generator(config.model.backend, config.model.model, policy=accelerator.unwrap_model(policy),
                               tokenizer=tokenizer, dtype=dtype_name(dtype),
                               batch_size=config.rollout.generation_batch_size, seed=seed,
                               gpu_memory_utilization=config.model.vllm_gpu_memory_utilization)
    state = ckpt.TrainerState(metric_for_best_model="none", base_model=ckpt.model_identity(config.model.model))
    if resume_from is not None:
        state = ckpt.load_training_state(resume_from, policy, optimizer, scheduler)
        print(f"resuming from {resume_from} at global step {state.global_step} ({state.extra})")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    # --- grader, logs ----------------------------------------------------------------------------------------
    own_sandbox = sandbox is None
    if own_sandbox:
        from sandbox import Sandbox

        sandbox = Sandbox(**config.run.sandbox_options())
    logger = RunLogger(run_dir, resume_step=state.global_step if resume_from is not None else None)
    first_round = int(state.extra.get("round", 1))
    done_steps = int(state.extra.get("round_steps", 0))  # optimizer steps already taken in `first_round`
    if state.extra.get("round_done"):
        first_round, done_steps = first_round + 1, 0

    try:
        for round_no in range(first_round, rounds + 1):
            round_dir = run_dir / f"iteration-{round_no}"
            sync_policy(generator, accelerator.unwrap_model(policy))  # a vLLM engine samples the current model
            # --- sample: k graded two-attempt traces per task from the current model (resumable) ----------
            if round_no == 1 and sft.first_round_episodes:  # the base model's traces, sampled once elsewhere
                traces = baselines.load_episode_traces(sft.first_round_episodes, train_tasks, shots, generator.chat)
                sampled = baselines.trace_metrics(traces)
                records, stats = baselines.build_from_traces(builder_name(method, config), traces, train_tasks,
                                                             shots, seed=seed + round_no)
            else:
                sampled, records, stats = sample_and_build(method, config, generator, train_tasks, shots, sandbox,
                                                           round_dir, round_no, compute_context(accelerator.device,
                                                                                                dtype))
            baselines.write_dataset(round_dir / "data", records, stats)
            print(f"round {round_no}/{rounds}: sampled Acc@t1 {sampled['accuracy']['t1']:.3f} "
                  f"Acc@t2 {sampled['accuracy']['t2']:.3f}; {stats.summary()}")
            # --- train: SFT passes over this round's records ----------------------------------------------
            examples = [encode_record(r, generator.encoder, sft.loss_on == "both") for r in records]
            steps_per_epoch = math.ceil(len(examples) / sft.sft_batch_size)
            # The round's sampled traces under the SCoRe trainer's names, so `score-code plot` draws them too.
            transition = sampled["transitions"]["t1->t2"]
            round_metrics = {"round": round_no, "attempt1/reward": sampled["accuracy"]["t1"],
                             "attempt2/reward": sampled["accuracy"]["t2"], "reward": sampled["accuracy"]["t2"],
                             "delta": transition["delta"], "delta_i2c": transition["i_to_c"],
                             "delta_c2i": transition["c_to_i"], "data/records": float(len(records)),
                             **({"edit_ratio": sampled["edit_ratio"]["t1->t2"]} if sampled["edit_ratio"] else {})}
            round_step = 0
            for epoch in range(sft.epochs):
                order = epoch_order(len(examples), seed, round_no, epoch)
                for start in range(0, len(order), sft.sft_batch_size):
                    round_step += 1
                    if round_step <= done_steps:
                        continue  # taken before the checkpoint this run resumed from
                    batch = collate([examples[i] for i in order[start:start + sft.sft_batch_size]], pad_id)
                    update = sft_update(policy, optimizer, scheduler, accelerator, batch, config, dtype)
                    state.global_step += 1
                    state.extra = {"round": round_no, "round_steps": round_step, "round_done": False}
                    logger.log(state.global_step, {**update, **round_metrics, "epoch": epoch + 1})
                    print(f"step {state.global_step} (round {round_no}, epoch {epoch + 1}, "
                          f"{round_step}/{steps_per_epoch * sft.epochs}): loss {update['loss']:.4f}", file=sys.stderr)
                    if state.global_step % config.run.save_steps == 0:
                        save(run_dir, state, policy, tokenizer, optimizer, scheduler, accelerator,
                             config.run.save_total_limit)
            # --- end of round: checkpoint the model the next round samples from ---------------------------
            state.extra = {"round": round_no, "round_steps": round_step, "round_done": True}
            save(run_dir, state, policy, tokenizer, optimizer, scheduler, accelerator, config.run.save_total_limit)
            done_steps = 0
    finally:
        logger.close()
        if own_sandbox:
            sandbox.close()
    print(f"done: {run_dir} (global step {state.global_step}; final model {ckpt.latest_checkpoint(run_dir)})")
    return run_dir
