"""Checkpoints in the Hugging Face Trainer layout, written atomically, pruned, with the best one kept.

    checkpoint-N/
      model.safetensors + config.json  (or adapter_model.safetensors + adapter_config.json with LoRA)
      tokenizer files
      optimizer.pt, scheduler.pt, rng_state.pth
      trainer_state.json               global_step, stage, best_metric, best_model_checkpoint, ...

A checkpoint is written to a hidden temporary directory and renamed into place, so a kill mid-save never leaves
a half checkpoint that `--resume` would pick up. Past `save_total_limit` the oldest are deleted, except the one
with the best training reward of each stage (`best_by_stage`), never pruned (the paper selects checkpoints by
training reward). Rewards of the two stages are not compared with each other: stage II's shaped objective and
its trained first attempt make its reward a different quantity, so `best_model_checkpoint` is the best checkpoint
of the stage trained last.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
from collections.abc import Collection
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from benchmarks.errors import ScoreCodeError

TRAINER_STATE_NAME = "trainer_state.json"
OPTIMIZER_NAME = "optimizer.pt"
SCHEDULER_NAME = "scheduler.pt"
RNG_STATE_NAME = "rng_state.pth"
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


class CheckpointError(ScoreCodeError):
    """A checkpoint is missing or unreadable; the message names the directory and the file."""


@dataclass
class TrainerState:
    """What a resumed run needs besides weights and optimizer: where it was and what was best so far."""

    global_step: int = 0  # optimizer steps done, over all stages
    stage: int = 1  # stage of the last completed step
    metric_for_best_model: str = "reward"
    best_metric: float | None = None  # of best_model_checkpoint: its window's mean training reward
    best_model_checkpoint: str | None = None  # directory name, e.g. "checkpoint-40": the best of the latest stage
    best_by_stage: dict[str, dict[str, Any]] = field(default_factory=dict)  # "1" -> {"metric", "checkpoint"}
    window_reward_sum: float = 0.0  # reward summed since the last save (makes best selection survive a resume)
    window_steps: int = 0
    window_stage: int = 0  # the stage of the steps in the window: a stage change starts a new window
    base_model: str | None = None  # the run's --model (the KL reference), checked by --init-from and --resume
    extra: dict[str, Any] = field(default_factory=dict)

    def record_reward(self, reward: float, stage: int = 1) -> None:
        """Add a step's reward to the window the next checkpoint is judged by; the window holds one stage only, so
        a checkpoint right after a stage change is judged by the new stage's steps."""
        if stage != self.window_stage:
            self.window_reward_sum, self.window_steps, self.window_stage = 0.0, 0, stage
        self.window_reward_sum += reward
        self.window_steps += 1

    def judge_window(self, name: str) -> None:
        """Score checkpoint `name` by the window's mean reward against the best of the same stage; empty the window."""
        if not self.window_steps:
            return
        reward = self.window_reward_sum / self.window_steps
        key = str(self.window_stage)
        best = self.best_by_stage.get(key)
        if best is None or reward > best["metric"]:
            best = self.best_by_stage[key] = {"metric": reward, "checkpoint": name}
        self.best_metric, self.best_model_checkpoint = best["metric"], best["checkpoint"]
        self.window_reward_sum, self.window_steps = 0.0, 0

    def kept_checkpoints(self) -> set[str]:
        """Checkpoints pruning never deletes: each stage's best."""
        kept = {b["checkpoint"] for b in self.best_by_stage.values()}
        return kept | ({self.best_model_checkpoint} if self.best_model_checkpoint else set())

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_file(cls, path: Path) -> TrainerState:
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{path}: cannot read trainer state ({exc})") from exc
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


def model_identity(model: str) -> str:
    """How a run records its --model: '' (the embedded default), a resolved absolute path, or a hub id."""
    if not model:
        return ""
    path = Path(model).expanduser()
    return str(path.resolve()) if path.exists() else model


def checkpoint_step(path: Path) -> int | None:
    match = _CHECKPOINT_RE.match(path.name)
    return int(match.group(1)) if match else None


def list_checkpoints(run_dir: Path) -> list[Path]:
    """checkpoint-N directories, oldest first (by step)."""
    if not run_dir.is_dir():
        return []
    found = [(checkpoint_step(p), p) for p in run_dir.iterdir() if p.is_dir() and checkpoint_step(p) is not None]
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: Path) -> Path | None:
    checkpoints = list_checkpoints(run_dir)
    return checkpoints[-1] if checkpoints else None


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    try:
        import numpy as np

        state["numpy"] = np.random.get_state()
    except ImportError:
        pass
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "numpy" in state:
        import numpy as np

        np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def optimizer_state(model: Any, optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer's full, unsharded state keyed by parameter name, whatever wraps `model` (DDP, FSDP, peft).

    A collective under FSDP: every process calls it; the state is gathered on the main process (others get {})."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(model, _torch_optimizer(optimizer),
                                    options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def _torch_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    """The torch optimizer inside accelerate's AcceleratedOptimizer (or the optimizer itself)."""
    return getattr(optimizer, "optimizer", optimizer)


def save_checkpoint(
    run_dir: Path,
    state: TrainerState,
    model: Any,
    tokenizer: Any,
    optimizer_state: dict,
    scheduler: Any,
    save_total_limit: int,
    state_dict: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write checkpoint-{state.global_step} atomically, update the best one, prune; returns its path.

    `model` is the unwrapped model (anything with `save_pretrained`); `state_dict` the full state dict when the
    model is sharded (FSDP: `accelerator.get_state_dict(model)`); `optimizer_state` from `optimizer_state()`.
    Call on the main process only.
    """
    name = f"checkpoint-{state.global_step}"
    final = run_dir / name
    tmp = run_dir / f".tmp-{name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)

    state.judge_window(name)

    save_kw = {"safe_serialization": True}
    if state_dict is not None:
        save_kw["state_dict"] = state_dict
    model.save_pretrained(tmp, **save_kw)
    tokenizer.save_pretrained(tmp)
    torch.save(optimizer_state, tmp / OPTIMIZER_NAME)
    torch.save(scheduler.state_dict(), tmp / SCHEDULER_NAME)
    torch.save(_rng_state(), tmp / RNG_STATE_NAME)
    (tmp / TRAINER_STATE_NAME).write_text(state.to_json())

    if final.exists():  # re-running a step after a kill that came after this save
        shutil.rmtree(final)
    os.replace(tmp, final)
    prune_checkpoints(run_dir, save_total_limit, keep=state.kept_checkpoints())
    return final


def prune_checkpoints(run_dir: Path, save_total_limit: int, keep: Collection[str] = ()) -> list[Path]:
    """Delete the oldest checkpoints beyond the newest `save_total_limit`, never those named in `keep`; returns
    what was deleted."""
    checkpoints = list_checkpoints(run_dir)
    removable = [p for p in checkpoints if p.name not in keep]
    kept_newest = set(checkpoints[-save_total_limit:])
    deleted = [p for p in removable if p not in kept_newest]
    for p in deleted:
        shutil.rmtree(p)
    for stale in run_dir.glob(".tmp-checkpoint-*"):  # left over by a kill during a save
        shutil.rmtree(stale, ignore_errors=True)
    return deleted


def load_training_state(checkpoint: Path, model: Any, optimizer: torch.optim.Optimizer, scheduler: Any) -> TrainerState:
    """Restore optimizer, scheduler and RNG from a checkpoint; weights are loaded with the model (models.py).

    `model` and `optimizer` as the run uses them (after `accelerator.prepare`): the name-keyed optimizer state is
    mapped onto their parameters, and sharded again under FSDP."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    for name in (TRAINER_STATE_NAME, OPTIMIZER_NAME, SCHEDULER_NAME):
        if not (checkpoint / name).is_file():
            raise CheckpointError(f"{checkpoint}: {name} is missing; not a training checkpoint")
    saved = torch.load(checkpoint / OPTIMIZER_NAME, map_location="cpu", weights_only=True)
    set_optimizer_state_dict(model, _torch_optimizer(optimizer), saved,
                             options=StateDictOptions(full_state_dict=True))
    scheduler.load_state_dict(torch.load(checkpoint / SCHEDULER_NAME, weights_only=True))
    if (checkpoint / RNG_STATE_NAME).is_file():
        _set_rng_state(torch.load(checkpoint / RNG_STATE_NAME, weights_only=False))
    return TrainerState.from_file(checkpoint / TRAINER_STATE_NAME)
