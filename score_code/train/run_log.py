"""Per-step training logs: metrics.jsonl, TensorBoard and completions.jsonl, plus the rollout statistics.

Metric names follow TRL (`reward`, `loss`, `grad_norm`, `learning_rate`, `completions/mean_length`) with
per-attempt ones from docs/method.md §5. `reward` is the attempt-2 (final answer) reward, the number the
best checkpoint is selected by. On `--resume` from checkpoint-N, rows with step > N are dropped from both JSONL
files and TensorBoard purges events past N, so every step appears exactly once.
On ranks other than 0 a RunLogger writes nothing, so the loop never branches on the rank (nanochat's DummyWandb).
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.metrics import edit_ratio
from sandbox.atomic import ENCODING_ERRORS, write_text_atomic
from score_code.train.rollout import Episode

METRICS_FILE = "metrics.jsonl"
COMPLETIONS_FILE = "completions.jsonl"
TENSORBOARD_DIR = "tensorboard"


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def rollout_metrics(episodes: Sequence[Episode]) -> dict[str, float]:
    """Rewards per attempt and the transitions between them over the valid episodes; lengths and `edit_ratio` over
    all. `edit_ratio` is the mean character edit ratio between the two attempts' raw texts (the evaluation's is
    between the graded programs): near 0 when the second attempt repeats the first, the minimal-edit collapse."""
    valid = [e for e in episodes if e.valid]
    r1 = [float(e.reward1) for e in valid]  # type: ignore[arg-type]
    r2 = [float(e.reward2) for e in valid]  # type: ignore[arg-type]
    n = len(valid)
    lengths1 = [e.attempt1_span[1] - e.attempt1_span[0] for e in episodes]
    lengths2 = [e.attempt2_span[1] - e.attempt2_span[0] for e in episodes]
    return {
        "reward": _mean(r2),
        "attempt1/reward": _mean(r1),
        "attempt2/reward": _mean(r2),
        "delta": _mean(r2) - _mean(r1),
        "delta_i2c": sum(a < b for a, b in zip(r1, r2, strict=True)) / n if n else math.nan,
        "delta_c2i": sum(a > b for a, b in zip(r1, r2, strict=True)) / n if n else math.nan,
        "completions/mean_length": _mean(lengths1 + lengths2),
        "completions/attempt1_mean_length": _mean(lengths1),
        "completions/attempt2_mean_length": _mean(lengths2),
        "edit_ratio": _mean([edit_ratio(e.text1, e.text2) for e in episodes]),
        "sandbox_errors": float(sum((e.reward1 is None) + (e.reward2 is None) for e in episodes)),
        "episodes": float(len(episodes)),
    }


def truncate_jsonl(path: Path, max_step: int) -> int:
    """Drop rows whose "step" is past `max_step` (written after the checkpoint a run resumes from); returns how many.
    Rewritten atomically; a torn last line (kill mid-write) is dropped too."""
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            dropped += 1
            continue
        if row.get("step", 0) > max_step:
            dropped += 1
        else:
            kept.append(line)
    write_text_atomic(path, "".join(k + "\n" for k in kept))
    return dropped


class RunLogger:
    """Writes metrics rows and completions; a no-op when `enabled` is False (ranks other than 0)."""

    def __init__(self, run_dir: Path, enabled: bool = True, resume_step: int | None = None,
                 tensorboard: bool = True) -> None:
        self.enabled = enabled
        self.run_dir = run_dir
        self._writer = None
        if not enabled:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        if resume_step is not None:
            truncate_jsonl(run_dir / METRICS_FILE, resume_step)
            truncate_jsonl(run_dir / COMPLETIONS_FILE, resume_step)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            purge = resume_step + 1 if resume_step is not None else None
            self._writer = SummaryWriter(log_dir=str(run_dir / TENSORBOARD_DIR), purge_step=purge)
        self._metrics = open(run_dir / METRICS_FILE, "a", encoding="utf-8", errors=ENCODING_ERRORS)
        self._completions = open(run_dir / COMPLETIONS_FILE, "a", encoding="utf-8", errors=ENCODING_ERRORS)

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        if not self.enabled:
            return
        row = {"step": step, **metrics}
        self._metrics.write(json.dumps(row, allow_nan=True) + "\n")
        self._metrics.flush()
        if self._writer is not None:
            for key, value in metrics.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                    self._writer.add_scalar(key, value, step)
            self._writer.flush()

    def log_completions(self, step: int, stage: int, episodes: Sequence[Episode]) -> None:
        if not self.enabled:
            return
        for e in episodes:
            row = {"step": step, "stage": stage, "task_id": e.task_id, "sample_index": e.sample_index,
                   "attempt1": e.text1, "attempt2": e.text2, "reward1": e.reward1, "reward2": e.reward2,
                   "finish_reason1": e.finish_reason1, "finish_reason2": e.finish_reason2,
                   "offline_attempt1": e.offline_attempt1}
            self._completions.write(json.dumps(row) + "\n")
        self._completions.flush()

    def close(self) -> None:
        if not self.enabled:
            return
        self._metrics.close()
        self._completions.close()
        if self._writer is not None:
            self._writer.close()


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
