"""Where the learning signal is (issue #16): each task's pass rate under a model, per attempt, at the training
sampling settings, and the tasks worth spending training compute on.

SCoRe's policy gradient with a leave-one-out baseline learns nothing from a task whose k episodes all score alike:
a task teaches only when 0 < p < 1 on some attempt. `estimate_signal` samples k two-attempt episodes per task
exactly as the trainer does (score_code.train.rollout.generate_rollouts, the same prompts, instruction p1, stop
strings and per-sequence seeds from (seed, task, sample, attempt)), grades both attempts in the sandbox
(SandboxReward) and writes, in the output directory:

    config.json     the settings and dataset hash, written first; a rerun with other settings is refused
    episodes.jsonl  every graded two-attempt trace, appended per batch of tasks (the resume point): the first-turn
                    messages, y1, the instruction, y2 and their token ids (the record shape of the STaR / Pair-SFT
                    data, score_code.baselines.data), rewards, verdicts, token counts, this trace's share of the
                    batch's generation and grading time
    rates.jsonl     per task: k, passes, graded attempts and p per attempt, syntax errors per attempt, sandbox
                    errors, mean tokens per attempt, signal (0 < p < 1 on some attempt)
    tasks.jsonl     the tasks with signal, as a task file (`--tasks PATH`), each with its rates in metadata.signal
    summary.json    settings, pass rate per attempt, signal fraction, syntax-error rate, tokens/s, times

Sandbox errors are neither passes nor failures: they leave p's denominator and are counted apart. A killed run
continues where it stopped (whole batches of tasks are redone, so its episodes match an uninterrupted run); the
final files are written atomically once all tasks are done, and a finished run is not sampled again.
"""
from __future__ import annotations

import json
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from benchmarks import prompts
from benchmarks.errors import ScoreCodeError
from benchmarks.generation import Dialogue, Generator, sequence_seed
from benchmarks.jsonl import append_jsonl, read_jsonl, write_json_atomic, write_jsonl_atomic
from benchmarks.tasks import Task, dataset_hash
from sandbox.verdict import Result, Status
from score_code.config import DataConfig, RolloutConfig, RunConfig, config_field

CONFIG_FILE, EPISODES_FILE, RATES_FILE = "config.json", "episodes.jsonl", "rates.jsonl"
TASKS_FILE, SUMMARY_FILE = "tasks.jsonl", "summary.json"


class SignalError(ScoreCodeError):
    """The filter cannot run or continue; the message names the flag or file."""


class Grader(Protocol):
    """What grades a batch of completions: SandboxReward.grade."""

    def grade(self, tasks: Sequence[Task], completions: Sequence[str]) -> list[Result]: ...


@dataclass
class FilterRunConfig:
    """The filter's own settings; the data and rollout groups are the trainers' (same flags, same meaning)."""

    output: str = config_field("", "output directory (required): rates.jsonl, summary.json, tasks.jsonl, "
                                   "episodes.jsonl; rerun the same command to resume")
    model: str = config_field("", "model: a path, a hub id (offline cache) or a .gguf file; '' = the embedded "
                                  "default SmolLM2-135M-Instruct (the base model a run would train)")
    dtype: Literal["auto", "float32", "bfloat16"] = config_field(
        "auto", "compute dtype; auto = bfloat16 where the GPU or CPU has it natively, else float32")
    seed: int = config_field(0, "sampling seed; each sequence's seed is a hash of (seed, task, sample, attempt)")
    sandbox_backend: Literal["docker", "local", "remote"] = config_field(
        "docker", "grader: the Docker sandbox, local (rlimits only: trusted code only) or remote (`sandbox serve`)")
    sandbox_url: str = config_field("", "remote grader URLs, comma-separated; '' = $SANDBOX_URL when set")
    sandbox_token_file: str = config_field("", "file holding the remote graders' token ('' = $SANDBOX_TOKEN)")
    sandbox_workers: int = config_field(0, "programs graded in parallel (0 = one per core)")
    sandbox_timeout_s: float = config_field(0.0, "per program: 0 = per task, calibrated as in training; > 0 = flat")
    progress: bool = config_field(True, "show a tqdm progress bar")

    def sandbox_options(self) -> dict[str, Any]:
        """Sandbox(**options) by the trainers' rule (RunConfig.sandbox_options)."""
        run = RunConfig(sandbox_backend=self.sandbox_backend, sandbox_url=self.sandbox_url,
                        sandbox_token_file=self.sandbox_token_file, sandbox_workers=self.sandbox_workers)
        return run.sandbox_options()


@dataclass
class FilterConfig:
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    run: FilterRunConfig = field(default_factory=FilterRunConfig)

    def validate(self) -> FilterConfig:
        """Each message names the flag."""
        r, d = self.rollout, self.data
        if not self.run.output:
            raise SignalError("--output DIR is required (where rates.jsonl, summary.json, tasks.jsonl and "
                              "episodes.jsonl go)")
        for name in ("samples_per_prompt", "max_new_tokens", "generation_batch_size"):
            if getattr(r, name) < 1:
                raise SignalError(f"--{name} must be >= 1, got {getattr(r, name)}")
        if r.temperature <= 0:
            raise SignalError(f"--temperature must be > 0 (the filter samples as training does), got {r.temperature}")
        if not 0 < r.top_p <= 1:
            raise SignalError(f"--top_p must be in (0, 1], got {r.top_p}")
        if not 0 <= d.mbpp_shots <= 3:
            raise SignalError(f"--mbpp_shots must be 0 (zero-shot with the asserts), 1, 2 or 3, got {d.mbpp_shots}")
        if self.run.sandbox_timeout_s < 0:
            raise SignalError(f"--sandbox_timeout_s must be >= 0, got {self.run.sandbox_timeout_s}")
        return self

    def settings(self) -> dict[str, Any]:
        """What decides the episodes (not where they go or how fast): the resume check compares these."""
        d, r, run = self.data, self.rollout, self.run
        return {"tasks": d.tasks, "train_split": d.train_split, "max_train_tasks": d.max_train_tasks,
                "mbpp_shots": d.mbpp_shots, "samples_per_prompt": r.samples_per_prompt,
                "temperature": r.temperature, "top_p": r.top_p, "max_new_tokens": r.max_new_tokens,
                "generation_batch_size": r.generation_batch_size, "model": run.model, "dtype": run.dtype,
                "seed": run.seed, "sandbox_timeout_s": run.sandbox_timeout_s}


# --- sampling and grading -------------------------------------------------------------------------------------------


class _RecordingReward:
    """The trainer's reward from a grader's verdicts, keeping the verdicts of the last call (syntax errors)."""

    def __init__(self, grader: Grader) -> None:
        self.grader = grader
        self.results: list[Result] = []

    def __call__(self, tasks: Sequence[Task], completions: Sequence[str]) -> list[float | None]:
        from score_code.train.rollout import reward_of

        self.results = self.grader.grade(tasks, completions)
        return [reward_of(r) for r in self.results]


def _transition(reward1: float | None, reward2: float | None) -> str | None:
    if reward1 is None or reward2 is None:
        return None
    return f"{'c' if reward1 == 1.0 else 'i'}->{'c' if reward2 == 1.0 else 'i'}"


def _sample_batch(generator: Generator, tasks: Sequence[Task], shots: Sequence[Task], config: FilterConfig,
                  grader: Grader) -> list[dict]:
    """k graded two-attempt episodes per task, as the trainer samples them -> episode records, in task order."""
    from score_code.train.rollout import attempt_params, generate_rollouts

    k, chat = config.rollout.samples_per_prompt, generator.chat
    params = attempt_params(config.rollout, tasks, chat)

    def first_dialogue(task: Task) -> Dialogue:
        return prompts.first_dialogue(task, shots, chat)

    def seed_of(episode: int, attempt: int) -> int:
        slot, sample = divmod(episode, k)
        return sequence_seed(config.run.seed, tasks[slot].task_id, sample, attempt)

    reward = _RecordingReward(grader)
    instruction = prompts.self_correction_message()
    rollouts = generate_rollouts(generator, tasks, first_dialogue, instruction, k, params[0], params[1], reward,
                                 seed_of=seed_of)
    n = len(rollouts.episodes)
    statuses = [r.status.value for r in reward.results]
    share = {"generation": rollouts.times.generation_s / n, "grading": rollouts.times.grading_s / n}
    records = []
    for i, e in enumerate(rollouts.episodes):
        task = tasks[i // k]
        records.append({
            "task_id": e.task_id, "sample_id": e.sample_index, "kind": _transition(e.reward1, e.reward2),
            "messages": first_dialogue(task).messages, "y1": e.text1, "instruction": instruction, "y2": e.text2,
            "y1_token_ids": e.token_ids[slice(*e.attempt1_span)], "y2_token_ids": e.token_ids[slice(*e.attempt2_span)],
            "reward1": e.reward1, "reward2": e.reward2, "status1": statuses[i], "status2": statuses[n + i],
            "finish_reason1": e.finish_reason1, "finish_reason2": e.finish_reason2,
            "n_prompt_tokens": e.attempt1_span[0], "n_tokens1": e.attempt1_span[1] - e.attempt1_span[0],
            "n_tokens2": e.attempt2_span[1] - e.attempt2_span[0], "time_s": share,
        })
    return records


# --- rates ------------------------------------------------------------------------------------------------------


def _rate(rewards: list[float | None]) -> tuple[int, int, float | None]:
    graded = [r for r in rewards if r is not None]
    passes = sum(r == 1.0 for r in graded)
    return passes, len(graded), (passes / len(graded) if graded else None)


def has_signal(p: float | None) -> bool:
    """A leave-one-out baseline has something to learn from: some but not all episodes passed."""
    return p is not None and 0.0 < p < 1.0


def task_rates(task_id: str, records: Sequence[dict]) -> dict:
    """One rates.jsonl row from a task's k episode records."""
    passes1, graded1, p1 = _rate([r["reward1"] for r in records])
    passes2, graded2, p2 = _rate([r["reward2"] for r in records])
    k = len(records)
    return {
        "task_id": task_id, "k": k, "passes1": passes1, "passes2": passes2, "graded1": graded1, "graded2": graded2,
        "p1": p1, "p2": p2,
        "syntax_errors1": sum(r["status1"] == Status.SYNTAX_ERROR.value for r in records),
        "syntax_errors2": sum(r["status2"] == Status.SYNTAX_ERROR.value for r in records),
        "sandbox_errors": sum((r["reward1"] is None) + (r["reward2"] is None) for r in records),
        "mean_tokens1": sum(r["n_tokens1"] for r in records) / k,
        "mean_tokens2": sum(r["n_tokens2"] for r in records) / k,
        "signal": has_signal(p1) or has_signal(p2),
    }


def summarize(rates: Sequence[dict], records: Sequence[dict], settings: dict, wall_s: float) -> dict:
    """summary.json: pass rates over graded attempts, the signal fraction (tasks with 0 < p < 1 on some attempt),
    syntax-error rates over all attempts, throughput over the sampling time of every batch (resumed ones too)."""
    n_tasks, n = len(rates), len(records)
    generation_s = sum(r["time_s"]["generation"] for r in records)
    grading_s = sum(r["time_s"]["grading"] for r in records)
    tokens = sum(r["n_tokens1"] + r["n_tokens2"] for r in records)

    def pass_rate(attempt: int) -> float | None:
        graded = sum(r[f"graded{attempt}"] for r in rates)
        return sum(r[f"passes{attempt}"] for r in rates) / graded if graded else None

    signal = sum(r["signal"] for r in rates)
    return {
        "settings": settings,
        "tasks": n_tasks,
        "episodes": n,
        "pass_rate1": pass_rate(1),
        "pass_rate2": pass_rate(2),
        "signal_tasks": signal,
        "signal_fraction": signal / n_tasks if n_tasks else 0.0,
        "signal_fraction1": sum(has_signal(r["p1"]) for r in rates) / n_tasks if n_tasks else 0.0,
        "signal_fraction2": sum(has_signal(r["p2"]) for r in rates) / n_tasks if n_tasks else 0.0,
        "tasks_passed_ever": sum(r["passes1"] + r["passes2"] > 0 for r in rates),
        "transitions": dict(sorted(Counter(r["kind"] for r in records if r["kind"]).items())),
        "syntax_error_rate1": sum(r["syntax_errors1"] for r in rates) / n if n else 0.0,
        "syntax_error_rate2": sum(r["syntax_errors2"] for r in rates) / n if n else 0.0,
        "sandbox_errors": sum(r["sandbox_errors"] for r in rates),
        "mean_prompt_tokens": sum(r["n_prompt_tokens"] for r in records) / n if n else 0.0,
        "mean_tokens1": sum(r["n_tokens1"] for r in records) / n if n else 0.0,
        "mean_tokens2": sum(r["n_tokens2"] for r in records) / n if n else 0.0,
        "truncated1": sum(r["finish_reason1"] == "length" for r in records),
        "truncated2": sum(r["finish_reason2"] == "length" for r in records),
        "generation_s": round(generation_s, 2),
        "grading_s": round(grading_s, 2),
        "tokens_per_s": round(tokens / generation_s, 1) if generation_s else None,
        "sampling_wall_s": round(generation_s + grading_s, 2),
        "wall_s": round(wall_s, 2),
    }


# --- the run ------------------------------------------------------------------------------------------------------


def _check_settings(out: Path, settings: dict) -> None:
    path = out / CONFIG_FILE
    if not path.exists():
        return
    recorded = json.loads(path.read_text(encoding="utf-8")).get("settings", {})
    differ = sorted(k for k in set(recorded) | set(settings) if recorded.get(k) != settings.get(k))
    if differ:
        changes = ", ".join(f"{k}: {recorded.get(k)!r} -> {settings.get(k)!r}" for k in differ)
        raise SignalError(f"--output {out} holds a run with other settings ({changes}); pass another --output or "
                          "the same settings to resume")


def _finished_records(out: Path, tasks: Sequence[Task], k: int, batches: list[list[Task]]) -> dict[str, list[dict]]:
    """task_id -> its k records, for the batches whose every task is complete; the file is rewritten without the
    rest (a batch cut short by a kill is redone whole, so it samples in the same company as before)."""
    path = out / EPISODES_FILE
    if not path.exists():
        return {}
    by_task: dict[str, list[dict]] = defaultdict(list)
    for r in read_jsonl(path, tolerate_partial_last_line=True).records:
        by_task[r["task_id"]].append(r)
    done = {t.task_id: by_task[t.task_id] for batch in batches
            if all(len(by_task.get(t.task_id, ())) == k for t in batch) for t in batch}
    write_jsonl_atomic(path, [r for t in tasks if t.task_id in done for r in done[t.task_id]])
    return done


def estimate_signal(config: FilterConfig, tasks: Sequence[Task], shots: Sequence[Task],
                    make_generator: Callable[[], Generator], grader: Grader) -> dict:
    """Sample, grade and write the output directory (module docstring); returns the summary. The generator is made
    only when there is something left to sample."""
    from tqdm import tqdm

    start = time.perf_counter()
    out = Path(config.run.output)
    settings = {**config.settings(), "dataset_hash": dataset_hash(tasks, shots), "n_tasks": len(tasks),
                "prompt_form": f"{len(shots)}-shot" if shots else "zero-shot"}
    _check_settings(out, settings)
    if (out / SUMMARY_FILE).exists():
        print(f"{out}: finished already ({SUMMARY_FILE}); nothing to do", file=sys.stderr)
        return json.loads((out / SUMMARY_FILE).read_text(encoding="utf-8"))
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / CONFIG_FILE, {"settings": settings, "config": {g: asdict(getattr(config, g))
                                                                          for g in ("data", "rollout", "run")}})

    k = config.rollout.samples_per_prompt
    per_batch = max(1, config.rollout.generation_batch_size // k)
    batches = [list(tasks[i:i + per_batch]) for i in range(0, len(tasks), per_batch)]
    done = _finished_records(out, tasks, k, batches)
    todo = [b for b in batches if not all(t.task_id in done for t in b)]
    bar = tqdm(total=len(tasks), initial=len(tasks) - sum(len(b) for b in todo), desc="filter", unit="task",
               dynamic_ncols=True, disable=not config.run.progress, file=sys.stderr)
    try:
        generator = make_generator() if todo else None
        for batch in todo:
            records = _sample_batch(generator, batch, shots, config, grader)
            append_jsonl(out / EPISODES_FILE, records)
            for r in records:
                done.setdefault(r["task_id"], []).append(r)
            bar.update(len(batch))
            bar.set_postfix(signal=sum(task_rates(t, recs)["signal"] for t, recs in done.items()))
    finally:
        bar.close()

    rates = [task_rates(t.task_id, done[t.task_id]) for t in tasks]
    records = [r for t in tasks for r in done[t.task_id]]
    kept = [_with_rates(t, r) for t, r in zip(tasks, rates, strict=True) if r["signal"]]
    write_jsonl_atomic(out / RATES_FILE, rates)
    write_jsonl_atomic(out / TASKS_FILE, kept)
    summary = summarize(rates, records, settings, time.perf_counter() - start)
    write_json_atomic(out / SUMMARY_FILE, summary)  # last: its presence marks the run finished
    return summary


def _with_rates(task: Task, rates: dict) -> dict:
    """A task-file record (benchmarks.tasks schema) carrying the rates it was kept for in metadata.signal."""
    record = task.to_dict()
    record["metadata"] = {**task.metadata, "signal": {k: rates[k] for k in ("k", "p1", "p2")}}
    return record
