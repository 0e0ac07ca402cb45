"""What the SCoRe trainer (score.py) and the supervised baselines (sft.py) share: models, optimizer, log-probs, one
gradient-accumulation step, run directory, training tasks and checkpointing. Helpers take explicit arguments.
"""
from __future__ import annotations

import contextlib
import copy
import math
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from benchmarks.errors import ScoreCodeError
from benchmarks.tasks import Task
from score_code.config import ConfigError, DataConfig, ModelConfig, OptimConfig
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
    """Training tasks and their few-shot examples (MBPP-format tasks: `mbpp_shots` of the canonical 3, see
    training_shots): `tasks`/`shots` when a caller passes its own (tests, custom task lists), else the configured
    ones. Never empty."""
    from benchmarks.tasks import MBPP_ENV_VAR, load_tasks

    if tasks is None:
        spec = task_spec(data)
        if spec == "mbpp" and not os.environ.get(MBPP_ENV_VAR):
            raise TrainError(f"training on MBPP needs the data: pass --mbpp_path /path/to/mbpp.jsonl or set "
                             f"{MBPP_ENV_VAR}")
        tasks = load_tasks(spec, data.train_split)
        if data.max_train_tasks:
            tasks = tasks[: data.max_train_tasks]
        shots = training_shots(data, tasks)
    if not tasks:
        raise TrainError("no training tasks (check --tasks, --train_split and --max_train_tasks)")
    return list(tasks), tuple(shots)


def training_shots(data: DataConfig, tasks: Sequence[Task]) -> tuple[Task, ...]:
    """The shots of the training prompt: the first `mbpp_shots` canonical MBPP shots when some task has the MBPP
    format, else none. mbpp_shots 0 is the zero-shot prompt that still shows the task's asserts (a fifth of the
    3-shot prompt's tokens). A task file has no prompt split, so its MBPP-format tasks take the shots from
    --mbpp_path (or $SCORE_CODE_MBPP): the option, not the file's origin, decides the prompt form."""
    from benchmarks.tasks import MBPP_ENV_VAR, load_shots

    if not data.mbpp_shots or not any(t.test_format == "mbpp" for t in tasks):
        return ()
    spec = task_spec(data)
    shots = load_shots(spec)
    if not shots:  # a task file: MBPP's prompt split holds the shots
        source = data.mbpp_path or os.environ.get(MBPP_ENV_VAR, "")
        if not source:
            raise TrainError(f"{spec}: its MBPP-format tasks get the {data.mbpp_shots}-shot prompt (mbpp_shots="
                             f"{data.mbpp_shots}), whose shots come from MBPP's prompt split: pass --mbpp_path "
                             f"/path/to/mbpp.jsonl (or set {MBPP_ENV_VAR}), or --mbpp_shots 0 for the zero-shot "
                             "prompt with the task's asserts")
        shots = load_shots(source)
        if not shots:
            raise TrainError(f"mbpp_path {source!r} is not an MBPP file (mbpp.jsonl or sanitized-mbpp.json) to take "
                             f"the prompt's shots from; pass one, or --mbpp_shots 0")
    return tuple(shots[: data.mbpp_shots])


def refuse_unservable_backend(model_cfg: ModelConfig, world_size: int) -> None:
    """Before anything is loaded, not after minutes of it: a vLLM engine is colocated with one training process
    and cannot take every model (generation.vllm.refuse_unservable)."""
    if model_cfg.backend != "vllm":
        return
    from score_code.generation.vllm import refuse_unservable

    if world_size > 1:
        raise ConfigError(f"backend: vllm colocates one engine with a single training process, got {world_size} "
                          "processes; launch one process, or use backend: hf for multi-process runs")
    refuse_unservable(model_cfg.model)


def build_models(model_cfg: ModelConfig, init_path: Path | None, device: torch.device) -> tuple[Any, Any, Any]:
    """(policy, reference or None, tokenizer). The reference is `model_cfg.model`, frozen. With LoRA there is no
    second copy: the reference is the policy with its adapter disabled (reference_log_probs).

    Whatever is trained is kept in float32 (master weights): at lr 1e-5 most Adam updates of a bf16 weight of size
    0.02 round away; the forwards run under `compute_context` (bf16 autocast where `dtype` resolves to bf16). A LoRA
    base stays in `dtype` (the memory saving), and the reference, being that base, computes exactly as the policy
    does. A full fine-tuning reference is a float32 copy under the same autocast: a bf16 copy would compute other
    numbers (its norms and residual stream in bf16), so the KL would start above 0 and pull the policy toward bf16
    rounding (measured: grad_norm 0.04 at step 0 of a step with no reward).
    """
    if init_path is not None:
        check_base_model(init_path, model_cfg.model)
    from score_code.models import load_model

    base_name = model_cfg.model or None
    loaded = load_model(base_name, dtype=model_cfg.dtype if model_cfg.lora else "float32", device=str(device))
    tokenizer = loaded.tokenizer
    if model_cfg.lora:
        from peft import LoraConfig, PeftModel, get_peft_model

        # peft keeps the adapter in float32 over a bf16 base (autocast_adapter_dtype, its default): said explicitly
        if init_path is not None:
            if not (init_path / "adapter_config.json").is_file():
                raise TrainError(f"{init_path} holds no LoRA adapter (adapter_config.json); with --lora, "
                                 "--init-from must be a checkpoint of a LoRA run")
            policy = PeftModel.from_pretrained(loaded.model, str(init_path), is_trainable=True,
                                               autocast_adapter_dtype=True)
        else:
            targets = model_cfg.lora_target_modules
            policy = get_peft_model(loaded.model, LoraConfig(
                r=model_cfg.lora_r, lora_alpha=model_cfg.lora_alpha, lora_dropout=model_cfg.lora_dropout,
                target_modules=targets if targets == "all-linear" else [t.strip() for t in targets.split(",")],
                task_type="CAUSAL_LM"), autocast_adapter_dtype=True)
        reference = None
    else:
        reference = loaded.model
        if init_path is not None:
            policy = load_model(str(init_path), dtype="float32", device=str(device)).model
        else:
            policy = copy.deepcopy(reference)
        reference.requires_grad_(False)
    check_no_dropout(policy)
    if model_cfg.gradient_checkpointing:  # non-reentrant: works with frozen inputs (LoRA) without input grads
        enable = getattr(policy, "activation_checkpointing_enable", None)  # transformers >= 5.24; older: the alias
        if enable is not None:
            enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    policy.eval()  # sampling runs in eval mode; the loss forward switches to train mode (training_forward)
    return policy, reference, tokenizer


def check_base_model(checkpoint: Path, model: str) -> None:
    """Refuse to continue a checkpoint with another base model than the one it was trained from: the base is the KL
    reference, and a LoRA adapter only means something on its own base. Checkpoints written before the base was
    recorded are not checked."""
    state_file = checkpoint / ckpt.TRAINER_STATE_NAME
    if not state_file.is_file():
        return
    recorded = ckpt.TrainerState.from_file(state_file).base_model
    if recorded is not None and recorded != ckpt.model_identity(model):
        def name(m: str) -> str:
            return repr(m) if m else "the embedded default"

        fix = f"pass --model {recorded}" if recorded else "omit --model (the embedded default)"
        raise TrainError(f"{checkpoint} was trained from base model {name(recorded)}, but --model is {name(model)}; "
                         f"{fix}")


def check_no_dropout(model: Any) -> None:
    """Refuse any dropout: the loss forward runs in train mode (gradient checkpointing needs it), and dropout there
    would make the trained function differ from the one that sampled the rollouts."""
    active = sorted({name or "model" for name, m in model.named_modules()
                     if isinstance(m, torch.nn.Dropout) and m.p > 0})
    config = getattr(model, "config", None)
    config_dict = config.to_dict() if config is not None and hasattr(config, "to_dict") else {}
    active += sorted(f"config.{k}={v}" for k, v in config_dict.items()
                     if ("dropout" in k or "pdrop" in k) and isinstance(v, (int, float)) and v > 0)
    if active:
        raise TrainError(f"the policy has dropout ({', '.join(active[:5])}{', ...' if len(active) > 5 else ''}); "
                         "the trainer needs every dropout probability at 0 (set lora_dropout: 0, and the model "
                         "config's dropout fields to 0)")


def compute_context(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """Autocast to `dtype` for forwards of float32 master weights (bf16 on a GPU); nothing when it is float32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@contextlib.contextmanager
def training_forward(model: Any) -> Iterator[None]:
    """Train mode for the duration of a loss forward (transformers checkpoints a layer's activations only in train
    mode), eval mode again for sampling. There is no dropout (check_no_dropout), so both are the same function."""
    model.train()
    try:
        yield
    finally:
        model.eval()


def sequence_log_probs(model: Any, batch: Batch, temperature: float = 1.0) -> torch.Tensor:
    """Per-token log-probs (B, T) of the sampled tokens at the sampling temperature, computed only where some row
    has a trained token: the lm-head over a large vocabulary is most of the cost, and the prompt (3-shot for MBPP)
    is most of the sequence.

    With no trained token at all (every episode a sandbox error) the forward still runs and the result is tied to
    the logits by a zero: backward then reaches every parameter, and under DDP every process joins the gradient
    reduction instead of the others waiting for it.
    """
    trained = (batch.mask1 + batch.mask2).sum(dim=0) > 0
    trained[0] = False  # the first token has no prediction
    targets = trained.nonzero().squeeze(1)  # positions of tokens whose log-prob the loss needs
    out = torch.zeros(batch.input_ids.shape, dtype=torch.float32, device=batch.input_ids.device)
    keep = targets - 1 if len(targets) else 1
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, logits_to_keep=keep,
                   use_cache=False).logits
    if len(targets) == 0:
        return out + 0.0 * logits.sum()
    out[:, targets] = selected_log_probs(logits, batch.input_ids[:, targets], temperature)
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
    each term summed over micro-batches, `grad_norm`, the `learning_rate` the step used and the batch's real tokens
    (`update/tokens`).
    """
    rows = batch.input_ids.shape[0]
    totals: dict[str, float] = {}
    for start in range(0, rows, micro_batch_size):
        part = slice(start, start + micro_batch_size)
        micro = batch[part].trimmed().to(accelerator.device)
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
    totals["update/tokens"] = float(batch.attention_mask.sum())  # what the forwards ran on, padding aside
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
