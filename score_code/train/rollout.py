"""Two-attempt episodes for training: sample y1, append the instruction p1, sample y2, grade both in one batch.

Token-in, token-out: an episode's `token_ids` are the exact ids the model saw and sampled, prompt1 + y1 +
instruction + y2, never re-tokenized (the generator appends only the new turn's tokens; `_check_prefix` fails
loudly if a backend does not). Loss masks select y1 and y2; the prompt and the instruction are never trained on.

The reward is injectable: any callable `(tasks, completions) -> list[float | None]` (None = the grader failed,
the episode is left out of the loss and counted). `SandboxReward` is the real one: extract the program, build
the task's sandbox job, `Sandbox.run_batch` all of them concurrently.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import torch

from benchmarks import prompts
from benchmarks.errors import ScoreCodeError
from benchmarks.generation import Dialogue, Generation, Generator, SamplingParams
from benchmarks.tasks import Task
from sandbox.verdict import Result
from score_code.config import RolloutConfig

RewardFn = Callable[[Sequence[Task], Sequence[str]], "list[float | None]"]


class RolloutError(ScoreCodeError):
    """A generation backend broke the token-in/token-out contract."""


class _BatchSandbox(Protocol):
    def run_batch(self, jobs: list) -> list: ...


class SandboxReward:
    """Binary reward from the sandbox: 1.0 iff the extracted program passes every test; None on sandbox error."""

    def __init__(self, sandbox: _BatchSandbox, timeouts: Mapping[str, float] | None = None,
                 flat_timeout_s: float | None = None) -> None:
        """`timeouts`: task_id -> timeout of the tasks calibrated above the sandbox's limit
        (benchmarks.timeouts.calibrated_timeouts); every other task gets `flat_timeout_s`, None = that limit."""
        self.sandbox = sandbox
        self.timeouts = dict(timeouts or {})
        self.flat_timeout_s = flat_timeout_s

    def __call__(self, tasks: Sequence[Task], completions: Sequence[str]) -> list[float | None]:
        return [reward_of(r) for r in self.grade(tasks, completions)]

    def grade(self, tasks: Sequence[Task], completions: Sequence[str]) -> list[Result]:
        """The sandbox's verdicts (status, tests), for callers that count more than the reward (score_code.signal)."""
        from benchmarks.extract import extract_program

        jobs = [
            task.to_job(extract_program(text, task), self.timeouts.get(task.task_id, self.flat_timeout_s),
                        job_id=f"{task.task_id}#{i}")
            for i, (task, text) in enumerate(zip(tasks, completions, strict=True))
        ]
        return self.sandbox.run_batch(jobs)


def reward_of(result: Result) -> float | None:
    """A verdict's training reward: None on a sandbox error (neither pass nor fail), else the binary reward."""
    return None if result.is_sandbox_error else result.reward


@dataclass
class Episode:
    task_id: str
    sample_index: int  # 0..k-1 within its task
    token_ids: list[int]  # prompt1 + y1 + instruction + y2
    attempt1_span: tuple[int, int]  # [start, end) of y1 in token_ids
    attempt2_span: tuple[int, int]  # [start, end) of y2
    text1: str
    text2: str
    finish_reason1: str
    finish_reason2: str
    reward1: float | None = None
    reward2: float | None = None
    offline_attempt1: bool = False  # y1 was sampled once from the reference: not trained on
    sampling_logprobs1: list[float] | None = None  # per-token log-probs of y1 under the engine that sampled it
    sampling_logprobs2: list[float] | None = None  # (vLLM); None when the policy itself sampled

    @property
    def valid(self) -> bool:
        """Both rewards known (no sandbox error)."""
        return self.reward1 is not None and self.reward2 is not None

    def trainable(self, stage: int) -> bool:
        """Whether the episode enters the stage's loss: stage I needs only r2 (attempt 1 gets no task reward, only
        the KL), stage II both rewards."""
        return self.reward2 is not None and (stage == 1 or self.reward1 is not None)


@dataclass
class RolloutTimes:
    generation_s: float = 0.0
    grading_s: float = 0.0


@dataclass
class Rollouts:
    episodes: list[Episode]
    times: RolloutTimes = field(default_factory=RolloutTimes)

    @property
    def sandbox_errors(self) -> int:
        return sum((e.reward1 is None) + (e.reward2 is None) for e in self.episodes)


def _check_prefix(first: Generation, second: Generation, task_id: str) -> None:
    expected = list(first.prompt_token_ids) + list(first.token_ids)
    got = list(second.prompt_token_ids[: len(expected)])
    if got != expected:
        at = next((i for i, (a, b) in enumerate(zip(expected, got, strict=False)) if a != b),
                  min(len(expected), len(got)))
        raise RolloutError(
            f"{task_id}: attempt 2's input does not start with attempt 1's prompt + completion token ids "
            f"(first difference at position {at} of {len(expected)}); the generator must append, not re-tokenize"
        )


def attempt_params(rollout: RolloutConfig, tasks: Sequence[Task], chat: bool) -> tuple[SamplingParams, SamplingParams]:
    """The sampling settings of attempts 1 and 2 for these tasks: the rollout config, and every task's stop strings
    for that attempt (benchmarks.prompts.stop_sequences)."""
    def params(attempt: int) -> SamplingParams:
        stop = tuple(sorted({s for t in tasks for s in prompts.stop_sequences(t, chat, attempt)}))
        return SamplingParams(max_new_tokens=rollout.max_new_tokens, temperature=rollout.temperature,
                              top_p=rollout.top_p, stop=stop)

    return params(1), params(2)


def generate_rollouts(
    generator: Generator,
    tasks: Sequence[Task],
    first_dialogues: Callable[[Task], Dialogue],
    instruction: str,
    samples_per_prompt: int,
    params1: SamplingParams,
    params2: SamplingParams,
    reward_fn: RewardFn,
    offline_first: dict[int, Generation] | None = None,
    seed_of: Callable[[int, int], int] | None = None,
) -> Rollouts:
    """k episodes per task, in task order (the k samples of a task consecutive, as objectives.advantages expects).

    `offline_first` maps an episode index to a stored attempt-1 Generation to use instead of sampling one.
    `seed_of(episode index, attempt)` gives each sequence its own sampling seed (SamplingParams.seeds): no two
    samples share a noise stream, which would correlate a leave-one-out baseline with its own sample.
    """
    offline_first = offline_first or {}
    episode_tasks = [task for task in tasks for _ in range(samples_per_prompt)]
    times = RolloutTimes()

    def seeded(params: SamplingParams, episodes: Sequence[int], attempt: int) -> SamplingParams:
        return params if seed_of is None else replace(params, seeds=tuple(seed_of(i, attempt) for i in episodes))

    start = time.perf_counter()
    to_sample = [i for i in range(len(episode_tasks)) if i not in offline_first]
    sampled = generator.generate([first_dialogues(episode_tasks[i]) for i in to_sample],
                                 seeded(params1, to_sample, 1)) if to_sample else []
    firsts: list[Generation] = [None] * len(episode_tasks)  # type: ignore[list-item]
    for i, gen in zip(to_sample, sampled, strict=True):
        firsts[i] = gen
    for i, gen in offline_first.items():
        firsts[i] = gen

    second_dialogues = []
    for gen in firsts:
        d = gen.dialogue
        second_dialogues.append(Dialogue(
            messages=[*d.messages, {"role": "user", "content": instruction}],
            token_ids=list(d.token_ids) if d.token_ids is not None else None,
            encoded_messages=d.encoded_messages,
        ))
    seconds = generator.generate(second_dialogues, seeded(params2, range(len(episode_tasks)), 2))
    times.generation_s = time.perf_counter() - start

    start = time.perf_counter()
    rewards = reward_fn(episode_tasks * 2, [g.text for g in firsts] + [g.text for g in seconds])
    times.grading_s = time.perf_counter() - start
    if len(rewards) != 2 * len(episode_tasks):
        raise RolloutError(f"reward function returned {len(rewards)} rewards for {2 * len(episode_tasks)} completions")

    episodes = []
    n = len(episode_tasks)
    for i, (task, first, second) in enumerate(zip(episode_tasks, firsts, seconds, strict=True)):
        _check_prefix(first, second, task.task_id)
        start1 = len(first.prompt_token_ids)
        end1 = start1 + len(first.token_ids)
        start2 = len(second.prompt_token_ids)
        episodes.append(Episode(
            task_id=task.task_id,
            sample_index=i % samples_per_prompt,
            token_ids=list(second.prompt_token_ids) + list(second.token_ids),
            attempt1_span=(start1, end1),
            attempt2_span=(start2, start2 + len(second.token_ids)),
            text1=first.text,
            text2=second.text,
            finish_reason1=first.finish_reason,
            finish_reason2=second.finish_reason,
            reward1=None if rewards[i] is None else float(rewards[i]),
            reward2=None if rewards[n + i] is None else float(rewards[n + i]),
            offline_attempt1=i in offline_first,
            sampling_logprobs1=getattr(first, "logprobs", None),
            sampling_logprobs2=getattr(second, "logprobs", None),
        ))
    return Rollouts(episodes=episodes, times=times)


@dataclass
class Batch:
    input_ids: torch.Tensor  # (B, T) right-padded
    attention_mask: torch.Tensor  # (B, T) 1 on real tokens
    mask1: torch.Tensor  # (B, T) 1 on trained attempt-1 tokens
    mask2: torch.Tensor  # (B, T) 1 on attempt-2 tokens
    sampling_logp: torch.Tensor | None = None  # (B, T) the sampling engine's log-probs; NaN where unknown

    def to(self, device: torch.device | str) -> Batch:
        return Batch(*(None if t is None else t.to(device) for t in self._fields()))

    def __getitem__(self, rows: slice) -> Batch:
        return Batch(*(None if t is None else t[rows] for t in self._fields()))

    def trimmed(self) -> Batch:
        """Without the trailing columns that are padding in every row. A micro-batch of one row then has no padding
        at all, and attention runs causal with no mask, skipping the masked half (perf/rl_step.py: the cpu_default
        update took 48.6 s in micro-batches of 1 against 80.1 s in micro-batches of 4)."""
        width = int(self.attention_mask.sum(dim=1).max()) if self.attention_mask.numel() else 0
        return Batch(*(None if t is None else t[:, :width] for t in self._fields()))

    def _fields(self) -> tuple[torch.Tensor | None, ...]:
        return self.input_ids, self.attention_mask, self.mask1, self.mask2, self.sampling_logp


def collate(episodes: Sequence[Episode], pad_token_id: int, stage: int = 2) -> Batch:
    """Right-padded tensors and loss masks. Episodes the stage cannot train on (sandbox error, Episode.trainable)
    and offline first attempts get a zero mask where they must not be trained; the prompt, the instruction and
    padding are always 0. `sampling_logp` is set when some episode carries its engine's log-probs."""
    width = max(len(e.token_ids) for e in episodes)
    input_ids = torch.full((len(episodes), width), pad_token_id, dtype=torch.long)
    attention = torch.zeros((len(episodes), width), dtype=torch.long)
    mask1 = torch.zeros((len(episodes), width))
    mask2 = torch.zeros((len(episodes), width))
    with_engine = any(e.sampling_logprobs1 is not None or e.sampling_logprobs2 is not None for e in episodes)
    sampling = torch.full((len(episodes), width), math.nan) if with_engine else None
    for row, e in enumerate(episodes):
        input_ids[row, : len(e.token_ids)] = torch.tensor(e.token_ids, dtype=torch.long)
        attention[row, : len(e.token_ids)] = 1
        if sampling is not None:
            for span, values in ((e.attempt1_span, e.sampling_logprobs1), (e.attempt2_span, e.sampling_logprobs2)):
                if values is not None:
                    sampling[row, span[0]: span[1]] = torch.tensor(values[: span[1] - span[0]])
        if not e.trainable(stage):
            continue
        if not e.offline_attempt1:
            mask1[row, e.attempt1_span[0]: e.attempt1_span[1]] = 1.0
        mask2[row, e.attempt2_span[0]: e.attempt2_span[1]] = 1.0
    return Batch(input_ids, attention, mask1, mask2, sampling)
