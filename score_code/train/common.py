"""What the SCoRe trainer (score.py) and the supervised baselines (sft.py) share: models, optimizer, log-probs, one
gradient-accumulation step, run directory, training tasks and checkpointing. Helpers take explicit arguments.
"""
from __future__ import annotations

import contextlib
import copy
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from benchmarks.errors import ScoreCodeError
from benchmarks.tasks import Task
from score_code.config import DataConfig, ModelConfig, OptimConfig
from score_code.train import checkpoint as ckpt
from score_code.train.objectives import selected_log_probs
from score_code.train.rollout import Batch


class TrainError(ScoreCodeError):
    """The run cannot start or continue; the message says why and what to pass instead."""


def task_spec(data: DataConfig) -> str:
    """What benchmarks.tasks.load_tasks reads: --mbpp_path for 'mbpp' when given, else --tasks."""
    return data.mbpp_path if data.tasks == "mbpp" and data.mbpp_path else data.tasks


def load_training_tasks(data: DataConfig, tasks: Sequence[Task] | None = None,
                        shots: Sequence[Task] = ()) -> tuple[list[Task], tuple[Task, ...]]:
    """Training tasks and their few-shot examples (MBPP: the canonical 3 shots): `tasks`/`shots` when a caller
    passes its own (tests, custom task lists), else the configured ones. Never empty."""
    from benchmarks.tasks import MBPP_ENV_VAR, load_shots, load_tasks

    if tasks is None:
        spec = task_spec(data)
        if spec == "mbpp" and not os.environ.get(MBPP_ENV_VAR):
            raise TrainError(f"training on MBPP needs the data: pass --mbpp_path /path/to/mbpp.jsonl or set "
                             f"{MBPP_ENV_VAR}")
        tasks = load_tasks(spec, data.train_split)
        if data.max_train_tasks:
            tasks = tasks[: data.max_train_tasks]
        shots = load_shots(spec)
    if not tasks:
        raise TrainError("no training tasks (check --tasks, --train_split and --max_train_tasks)")
    return list(tasks), tuple(shots)


def build_models(model_cfg: ModelConfig, init_path: Path | None, device: torch.device) -> tuple[Any, Any, Any]:
    """(policy, reference or None, tokenizer). The reference is `model_cfg.model`, frozen. With LoRA there is no
    second copy: the reference is the policy with its adapter disabled (reference_log_probs)."""
    from score_code.models import load_model

    base_name = model_cfg.model or None
    loaded = load_model(base_name, dtype=model_cfg.dtype, device=str(device))
    tokenizer = loaded.tokenizer
    if model_cfg.lora:
        from peft import LoraConfig, PeftModel, get_peft_model

        if init_path is not None:
            if not (init_path / "adapter_config.json").is_file():
                raise TrainError(f"{init_path} holds no LoRA adapter (adapter_config.json); with --lora, "
                                 "--init-from must be a checkpoint of a LoRA run")
            policy = PeftModel.from_pretrained(loaded.model, str(init_path), is_trainable=True)
        else:
            targets = model_cfg.lora_target_modules
            policy = get_peft_model(loaded.model, LoraConfig(
                r=model_cfg.lora_r, lora_alpha=model_cfg.lora_alpha, lora_dropout=model_cfg.lora_dropout,
                target_modules=targets if targets == "all-linear" else [t.strip() for t in targets.split(",")],
                task_type="CAUSAL_LM"))
        reference = None
    else:
        reference = loaded.model
        if init_path is not None:
            policy = load_model(str(init_path), dtype=model_cfg.dtype, device=str(device)).model
        else:
            policy = copy.deepcopy(reference)
        reference.requires_grad_(False)
    if model_cfg.gradient_checkpointing:
        policy.gradient_checkpointing_enable()
    policy.eval()  # no dropout: rollouts and updates see the same function
    return policy, reference, tokenizer


def sequence_log_probs(model: Any, batch: Batch) -> torch.Tensor:
    """Per-token log-probs (B, T), computed only where some row has a trained token: the lm-head over a 49k
    vocabulary is most of the cost, and the prompt (3-shot for MBPP) is most of the sequence."""
    trained = (batch.mask1 + batch.mask2).sum(dim=0) > 0
    trained[0] = False  # the first token has no prediction
    targets = trained.nonzero().squeeze(1)  # positions of tokens whose log-prob the loss needs
    out = torch.zeros(batch.input_ids.shape, dtype=torch.float32, device=batch.input_ids.device)
    if len(targets) == 0:
        return out
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, logits_to_keep=targets - 1).logits
    out[:, targets] = selected_log_probs(logits, batch.input_ids[:, targets])
    return out


def prepare_run_dir(run_dir: Path, resume: bool) -> Path | None:
    """The checkpoint to resume from, or None for a fresh run; refuses to clobber an existing run."""
    latest = ckpt.latest_checkpoint(run_dir)
    if resume:
        if latest is None and run_dir.is_dir() and any(run_dir.glob("metrics.jsonl")):
            raise TrainError(f"{run_dir}: --resume but no checkpoint-N to resume from; rerun without --resume "
                             "into a new --output_dir")
        return latest
    if run_dir.is_dir() and any(p for p in run_dir.iterdir() if not p.name.startswith(".")):
        raise TrainError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --output_dir")
    return None


def make_optimizer(policy: torch.nn.Module, opt: OptimConfig) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW over the trainable parameters, linear warm-up then constant; shared with the SFT baselines."""
    optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=opt.learning_rate,
                                  betas=(opt.adam_beta1, opt.adam_beta2), weight_decay=opt.weight_decay)
    warmup = opt.warmup_steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0)
    return optimizer, scheduler


def accumulate_step(policy: Any, optimizer: torch.optim.Optimizer, scheduler: Any, accelerator: Any, batch: Batch,
                    micro_batch_size: int, max_grad_norm: float,
                    micro_loss: Callable[[Batch, slice], dict[str, torch.Tensor]]) -> dict[str, float]:
    """One optimizer step over `batch`, the same for RL and SFT.

    `micro_loss(micro, rows)` returns a micro-batch's loss terms (scalars), normalized by the whole batch so that
    they add up to the batch's loss; "loss" is the one differentiated. Gradients are accumulated over micro-batches
    and synchronized across processes once, on the last; then clip, step the optimizer and the schedule. Returns
    each term summed over micro-batches, `grad_norm` and the `learning_rate` the step used.
    """
    rows = batch.input_ids.shape[0]
    totals: dict[str, float] = {}
    for start in range(0, rows, micro_batch_size):
        part = slice(start, start + micro_batch_size)
        micro = batch[part].to(accelerator.device)
        last = start + micro_batch_size >= rows
        with contextlib.nullcontext() if last else accelerator.no_sync(policy):
            terms = micro_loss(micro, part)
            accelerator.backward(terms["loss"])
        for name, value in terms.items():
            totals[name] = totals.get(name, 0.0) + value.item()
    params = [p for p in policy.parameters() if p.requires_grad]
    grad_norm = accelerator.clip_grad_norm_(params, max_grad_norm if max_grad_norm > 0 else math.inf)
    totals["grad_norm"] = float(grad_norm)
    totals["learning_rate"] = scheduler.get_last_lr()[0]
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return totals


def save(run_dir: Path, state: ckpt.TrainerState, policy: Any, tokenizer: Any, optimizer: Any, scheduler: Any,
         accelerator: Any, save_total_limit: int) -> None:
    """Checkpoint on the main process; every process takes part in gathering a sharded (FSDP) state dict."""
    from accelerate.utils import DistributedType

    sharded = accelerator.distributed_type == DistributedType.FSDP
    state_dict = accelerator.get_state_dict(policy) if sharded else None
    optimizer_state = ckpt.optimizer_state(policy, optimizer)  # gathered from every process's shard under FSDP
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        ckpt.save_checkpoint(run_dir, state, accelerator.unwrap_model(policy), tokenizer, optimizer_state, scheduler,
                             save_total_limit, state_dict=state_dict)
    accelerator.wait_for_everyone()
