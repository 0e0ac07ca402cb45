"""STaR and Pair-SFT data builders (docs/method.md §6): graded two-attempt traces -> inspectable SFT records.

Nothing is sampled or graded here. The input is an output directory of `benchmarks.evaluate.evaluate` run with
`EvalConfig(samples=k, temperature=1.0)` (intrinsic, no feedback): `samples.jsonl` says what the model wrote,
`results.jsonl` what the sandbox said, joined on (task_id, sample_id, attempt). Only attempts 1 and 2 are used.

Which records are formed (a "trace" is one sample: its attempt 1 and its attempt 2):

- STaR (`build_star`): every trace whose attempt 1 failed and attempt 2 passed ("i->c"), y1 and y2 from that
  same trace. `include_correct` (D+_STaR) also keeps passed->passed traces ("c->c"). A trace with a sandbox
  error in either attempt is excluded (its transition is unknown) and counted.
- Pair-SFT (`build_pair_sft`): per problem, pool attempts 1 and 2 of every sample, minus sandbox-error attempts
  (counted). Split the pool into incorrect I and correct C, each in (sample_id, attempt) order. With C empty the
  problem gives no pair (listed in the stats). Otherwise every y in I gives exactly one pair (y, c) with c drawn
  uniformly from C ("i->c"): |I| pairs per problem. `include_correct` (D+_SFT) adds, for every y in C, one pair
  (y, c') with c' drawn uniformly from C without y, or y itself when it is the only correct one ("c->c"): |C|
  more. Draws come from `random.Random(f"{seed}:{task_id}")`, so a problem's pairs depend only on the seed and
  that problem's samples, not on which other problems are present or their order.

The traces may also come from a `score-code filter` run (`load_episode_traces`: its episodes.jsonl holds the same
traces as records, sampled as the SCoRe trainer samples), so that the baselines start from the very base-model
samples the filter drew.

A record is one SFT example: the first-turn messages (rebuilt from the tasks with benchmarks.prompts, checked
against the run's dataset hash), y1 (the model's raw text), the instruction p1, y2, the kind, and where y1 and
y2 came from. `y1_token_ids` / `y2_token_ids` are added when samples.jsonl carries `token_ids`.
"""
from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import prompts
from benchmarks.errors import ScoreCodeError
from benchmarks.evaluate import CONFIG_FILE, RESULTS_FILE, SAMPLES_FILE
from benchmarks.jsonl import read_jsonl, write_json_atomic, write_jsonl_atomic
from benchmarks.tasks import Task, dataset_hash

DATA_FILE, STATS_FILE = "data.jsonl", "stats.json"
BUILDERS = ("star", "star+", "pair-sft", "pair-sft+")


class BaselineDataError(ScoreCodeError):
    """An evaluation directory cannot be turned into training data; the message names the file and the problem."""


@dataclass(frozen=True)
class Attempt:
    """One graded attempt read back from an evaluation directory."""

    task_id: str
    sample_id: int
    attempt: int  # 1 or 2
    text: str  # the model's raw text (what SFT trains on), not the extracted program
    passed: bool
    sandbox_error: bool
    token_ids: tuple[int, ...] | None = None  # when samples.jsonl carries them

    @property
    def source(self) -> dict:
        return {"sample_id": self.sample_id, "attempt": self.attempt}


@dataclass
class Traces:
    """The graded attempts of one evaluation directory, grouped per problem and per sample."""

    source_dir: str
    chat: bool
    by_task: dict[str, dict[int, dict[int, Attempt]]]  # task_id -> sample_id -> attempt -> Attempt

    def samples(self, task_id: str) -> list[tuple[Attempt, Attempt]]:
        """(attempt 1, attempt 2) per sample, in sample_id order."""
        return [(per[1], per[2]) for _, per in sorted(self.by_task.get(task_id, {}).items())]


@dataclass
class BuildStats:
    builder: str
    source_dir: str
    seed: int | None = None
    problems: int = 0
    traces: int = 0  # samples (two-attempt traces) read
    transitions: Counter = field(default_factory=Counter)  # over traces without sandbox errors
    sandbox_error_attempts: int = 0
    excluded_traces: int = 0  # STaR: traces with a sandbox error in either attempt
    records: Counter = field(default_factory=Counter)  # per kind
    problems_with_records: int = 0
    problems_without_correct: list[str] = field(default_factory=list)  # no correct attempt at all (after exclusion)

    def to_dict(self) -> dict:
        return {
            "builder": self.builder,
            "source_dir": self.source_dir,
            "seed": self.seed,
            "problems": self.problems,
            "traces": self.traces,
            "transitions": {k: self.transitions.get(k, 0) for k in ("i->i", "i->c", "c->i", "c->c")},
            "sandbox_error_attempts": self.sandbox_error_attempts,
            "excluded_traces": self.excluded_traces,
            "records": {k: self.records.get(k, 0) for k in ("i->c", "c->c")},
            "records_total": sum(self.records.values()),
            "problems_with_records": self.problems_with_records,
            "problems_without_correct": self.problems_without_correct,
        }

    def summary(self) -> str:
        kinds = ", ".join(f"{k} {self.records.get(k, 0)}" for k in ("i->c", "c->c"))
        return (f"{self.builder}: {sum(self.records.values())} records ({kinds}) from {self.problems} problems, "
                f"{self.traces} traces; {len(self.problems_without_correct)} problems without a correct "
                f"attempt; sandbox errors: {self.sandbox_error_attempts} attempts excluded")


# --- reading an evaluation directory ------------------------------------------------------------------------------


def load_traces(eval_dir: str | Path) -> Traces:
    """Join samples.jsonl and results.jsonl of an intrinsic evaluation with at least two attempts."""
    out = Path(eval_dir)
    for name in (CONFIG_FILE, SAMPLES_FILE, RESULTS_FILE):
        if not (out / name).is_file():
            raise BaselineDataError(f"{out / name}: missing; expected the output directory of `score-code eval`")
    try:
        config = json.loads((out / CONFIG_FILE).read_text(encoding="utf-8"))["config"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise BaselineDataError(f"{out / CONFIG_FILE}: unreadable ({e})") from None
    if int(config.get("attempts", 0)) < 2:
        raise BaselineDataError(f"{out / CONFIG_FILE}: attempts={config.get('attempts')}; traces need 2 attempts")
    if config.get("feedback") is not None:
        raise BaselineDataError(f"{out / CONFIG_FILE}: feedback={config['feedback']!r}; the baselines train on the "
                                "intrinsic instruction p1 only (evaluate without feedback)")

    texts: dict[tuple[str, int, int], tuple[str, tuple[int, ...] | None]] = {}
    for line_no, r in enumerate(read_jsonl(out / SAMPLES_FILE).records, start=1):
        key = _key(r, out / SAMPLES_FILE, line_no)
        if key[2] in (1, 2):
            ids = r.get("token_ids")
            texts[key] = (r["raw"], tuple(ids) if ids is not None else None)

    by_task: dict[str, dict[int, dict[int, Attempt]]] = defaultdict(lambda: defaultdict(dict))
    for line_no, r in enumerate(read_jsonl(out / RESULTS_FILE).records, start=1):
        key = _key(r, out / RESULTS_FILE, line_no)
        if key[2] not in (1, 2):
            continue
        if key not in texts:
            raise BaselineDataError(f"{out / RESULTS_FILE}:{line_no}: {key[0]} sample {key[1]} attempt {key[2]} "
                                    f"has a verdict but no text in {SAMPLES_FILE}")
        text, ids = texts[key]
        by_task[key[0]][key[1]][key[2]] = Attempt(
            task_id=key[0], sample_id=key[1], attempt=key[2], text=text, passed=bool(r["passed"]),
            sandbox_error=r["status"] == "sandbox_error", token_ids=ids,
        )
    for task_id, per_sample in by_task.items():
        for sample_id, per in per_sample.items():
            if set(per) != {1, 2}:
                raise BaselineDataError(f"{out / RESULTS_FILE}: {task_id} sample {sample_id} has attempts "
                                        f"{sorted(per)}, expected 1 and 2 (an unfinished run? rerun eval to resume)")
    return Traces(source_dir=str(out), chat=bool(config.get("chat", True)),
                  by_task={t: dict(s) for t, s in by_task.items()})


def load_episode_traces(path: str | Path, tasks: Sequence[Task], shots: Sequence[Task], chat: bool) -> Traces:
    """The traces of `tasks` in a `score-code filter` output directory (or its episodes.jsonl); episodes of other
    tasks are left out. Each trace's first-turn messages must be the prompt these tasks, shots and chat setting
    give: traces sampled under another prompt form would teach another prompt."""
    file = Path(path) / "episodes.jsonl" if Path(path).is_dir() else Path(path)
    if not file.is_file():
        raise BaselineDataError(f"{file}: missing; expected the output directory of `score-code filter`")
    first = _first_messages(tasks, shots, chat)
    by_task: dict[str, dict[int, dict[int, Attempt]]] = defaultdict(lambda: defaultdict(dict))
    for line_no, r in enumerate(read_jsonl(file).records, start=1):
        task_id = str(r.get("task_id"))
        if task_id not in first:
            continue
        if r.get("messages") != first[task_id]:
            raise BaselineDataError(f"{file}:{line_no}: {task_id}'s prompt differs from the one these tasks give "
                                    f"(chat={chat}, {len(shots)} shots); sample the episodes with the same "
                                    "--mbpp_shots and model")
        sample_id = int(r["sample_id"])
        for attempt in (1, 2):
            reward, ids = r.get(f"reward{attempt}"), r.get(f"y{attempt}_token_ids")
            by_task[task_id][sample_id][attempt] = Attempt(
                task_id=task_id, sample_id=sample_id, attempt=attempt, text=r[f"y{attempt}"], passed=reward == 1.0,
                sandbox_error=reward is None, token_ids=tuple(ids) if ids is not None else None)
    if not by_task:
        raise BaselineDataError(f"{file}: no episodes of the {len(tasks)} tasks given (first: {tasks[0].task_id})")
    return Traces(source_dir=str(file), chat=chat, by_task={t: dict(s) for t, s in by_task.items()})


def trace_metrics(traces: Traces) -> dict:
    """benchmarks.metrics over the traces (the round's sampled accuracy per attempt, transitions, and the edit
    ratio between the raw texts), as an evaluation of them would report."""
    from benchmarks.metrics import Trajectory, compute_metrics

    return compute_metrics([
        Trajectory(task_id=y1.task_id, sample_id=y1.sample_id, passed=(y1.passed, y2.passed),
                   sandbox_errors=y1.sandbox_error + y2.sandbox_error, solutions=(y1.text, y2.text))
        for task_id in traces.by_task for y1, y2 in traces.samples(task_id)])


def _key(record: dict, path: Path, line_no: int) -> tuple[str, int, int]:
    try:
        return str(record["task_id"]), int(record["sample_id"]), int(record["attempt"])
    except (KeyError, TypeError, ValueError) as e:
        raise BaselineDataError(f"{path}:{line_no}: bad or missing task_id/sample_id/attempt ({e})") from None


def check_dataset(eval_dir: str | Path, tasks: Sequence[Task], shots: Sequence[Task]) -> None:
    """Refuse to rebuild prompts from tasks other than the ones the evaluation used (dataset hash in config.json)."""
    path = Path(eval_dir) / CONFIG_FILE
    recorded = json.loads(path.read_text(encoding="utf-8"))["config"].get("dataset_hash", "")
    computed = dataset_hash(tasks, shots)
    if recorded != computed:
        raise BaselineDataError(f"{path}: dataset_hash {recorded[:12]}... differs from the tasks given "
                                f"({computed[:12]}...); pass the same tasks, split and shots the evaluation used")


# --- records -----------------------------------------------------------------------------------------------------


def _record(kind: str, first_messages: list[dict[str, str]], y1: Attempt, y2: Attempt) -> dict:
    record = {
        "task_id": y1.task_id,
        "kind": kind,
        "messages": first_messages,
        "y1": y1.text,
        "instruction": prompts.SELF_CORRECTION_INSTRUCTION,
        "y2": y2.text,
        "source": {"y1": y1.source, "y2": y2.source},
    }
    if y1.token_ids is not None and y2.token_ids is not None:
        record["y1_token_ids"] = list(y1.token_ids)
        record["y2_token_ids"] = list(y2.token_ids)
    return record


def _first_messages(tasks: Sequence[Task], shots: Sequence[Task], chat: bool) -> dict[str, list[dict[str, str]]]:
    return {t.task_id: prompts.first_dialogue(t, shots, chat).messages for t in tasks}


def _traced_tasks(traces: Traces, tasks: Sequence[Task], stats: BuildStats) -> Iterator[tuple[Task, list]]:
    """(task, its (attempt 1, attempt 2) pairs) for the tasks that have traces, in task order; counts them."""
    unknown = sorted(set(traces.by_task) - {t.task_id for t in tasks})
    if unknown:
        raise BaselineDataError(f"{traces.source_dir}: {len(unknown)} task_ids are not among the tasks given "
                                f"(first: {unknown[0]})")
    for task in tasks:
        pairs = traces.samples(task.task_id)
        if pairs:
            stats.problems += 1
            stats.traces += len(pairs)
            yield task, pairs


def build_star(traces: Traces, tasks: Sequence[Task], shots: Sequence[Task] = (),
               include_correct: bool = False) -> tuple[list[dict], BuildStats]:
    """D_STaR (i->c traces) or, with include_correct, D+_STaR (also c->c), in task then sample order."""
    first = _first_messages(tasks, shots, traces.chat)
    stats = BuildStats(builder="star+" if include_correct else "star", source_dir=traces.source_dir)
    records: list[dict] = []
    for task, pairs in _traced_tasks(traces, tasks, stats):
        before = len(records)
        any_correct = False
        for y1, y2 in pairs:
            errors = y1.sandbox_error + y2.sandbox_error
            if errors:
                stats.sandbox_error_attempts += errors
                stats.excluded_traces += 1
                continue
            kind = f"{'c' if y1.passed else 'i'}->{'c' if y2.passed else 'i'}"
            stats.transitions[kind] += 1
            any_correct = any_correct or y1.passed or y2.passed
            if kind == "i->c" or (include_correct and kind == "c->c"):
                records.append(_record(kind, first[task.task_id], y1, y2))
                stats.records[kind] += 1
        stats.problems_with_records += len(records) > before
        if not any_correct:
            stats.problems_without_correct.append(task.task_id)
    return records, stats


def build_pair_sft(traces: Traces, tasks: Sequence[Task], shots: Sequence[Task] = (),
                   include_correct: bool = False, seed: int = 0) -> tuple[list[dict], BuildStats]:
    """D_SFT (each incorrect attempt + a random correct one of its problem) or D+_SFT (also correct + correct)."""
    first = _first_messages(tasks, shots, traces.chat)
    stats = BuildStats(builder="pair-sft+" if include_correct else "pair-sft", source_dir=traces.source_dir,
                       seed=seed)
    records: list[dict] = []
    for task, pairs in _traced_tasks(traces, tasks, stats):
        pool: list[Attempt] = []
        for y1, y2 in pairs:
            if not (y1.sandbox_error or y2.sandbox_error):
                stats.transitions[f"{'c' if y1.passed else 'i'}->{'c' if y2.passed else 'i'}"] += 1
            for y in (y1, y2):
                if y.sandbox_error:
                    stats.sandbox_error_attempts += 1
                else:
                    pool.append(y)
        incorrect = [y for y in pool if not y.passed]
        correct = [y for y in pool if y.passed]
        if not correct:
            stats.problems_without_correct.append(task.task_id)
            continue
        rng = random.Random(f"{seed}:{task.task_id}")
        for y in incorrect:
            records.append(_record("i->c", first[task.task_id], y, rng.choice(correct)))
            stats.records["i->c"] += 1
        if include_correct:
            for y in correct:
                others = [c for c in correct if c is not y] or [y]
                records.append(_record("c->c", first[task.task_id], y, rng.choice(others)))
                stats.records["c->c"] += 1
        stats.problems_with_records += 1
    return records, stats


def build(builder: str, eval_dir: str | Path, tasks: Sequence[Task], shots: Sequence[Task] = (),
          seed: int = 0) -> tuple[list[dict], BuildStats]:
    """One of BUILDERS ("star", "star+", "pair-sft", "pair-sft+") on an evaluation directory of these tasks."""
    if builder not in BUILDERS:
        raise BaselineDataError(f"unknown builder {builder!r}; expected one of {BUILDERS}")
    check_dataset(eval_dir, tasks, shots)
    return build_from_traces(builder, load_traces(eval_dir), tasks, shots, seed)


def build_from_traces(builder: str, traces: Traces, tasks: Sequence[Task], shots: Sequence[Task] = (),
                      seed: int = 0) -> tuple[list[dict], BuildStats]:
    """One of BUILDERS on traces already read (load_traces, load_episode_traces)."""
    if builder not in BUILDERS:
        raise BaselineDataError(f"unknown builder {builder!r}; expected one of {BUILDERS}")
    include_correct = builder.endswith("+")
    if builder.startswith("star"):
        return build_star(traces, tasks, shots, include_correct)
    return build_pair_sft(traces, tasks, shots, include_correct, seed)


def write_dataset(out_dir: str | Path, records: list[dict], stats: BuildStats) -> Path:
    """data.jsonl (one record per line) and stats.json, both atomic; returns the data file's path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl_atomic(out / DATA_FILE, records)
    write_json_atomic(out / STATS_FILE, stats.to_dict())
    return out / DATA_FILE


def read_dataset(path: str | Path) -> list[dict]:
    """Records written by write_dataset (a data.jsonl file or the directory holding it), fields checked."""
    path = Path(path)
    if path.is_dir():
        path = path / DATA_FILE
    records = read_jsonl(path).records
    for line_no, r in enumerate(records, start=1):
        missing = [k for k in ("task_id", "messages", "y1", "instruction", "y2") if k not in r]
        if missing:
            raise BaselineDataError(f"{path}:{line_no}: missing field(s) {missing}")
    return records
