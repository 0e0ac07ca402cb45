"""An offline repair set (the MBPP-R analogue, docs/method.md §7.2) and its one-attempt evaluation.

Building: from an evaluation directory of a chosen model, take for every problem the failing attempt-1 program
of its lowest sample_id (failed, timeout, runtime/syntax error, ...; never a sandbox error, never an empty
program: both are counted). The set is a directory, fixed once built and independent of the data files:

    items.jsonl    {"task": <Task.to_dict()>, "wrong_program": str, "source": {sample_id, status, first_failure}}
    manifest.json  where it came from (directory, model, dataset name and hash), the few-shot tasks, counts

Evaluating: the model sees the problem's first-turn prompt, the wrong program as its own previous answer (in the
shape its answers take: a ```python block for chat models, the program and [DONE] for plain MBPP prompts), the
instruction p1, and answers once. This runs through the two-attempt harness (benchmarks.evaluate) with attempt 1
replayed from the set, so resume, grading and the result files are the harness's own: attempt 1 is the wrong
program re-graded (it should fail again), attempt 2 the repair. metrics.json gains `repair_accuracy`, the
fraction of problems whose repair passes (sandbox errors excluded, as everywhere), which `compare` shows as MBPP-R.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from benchmarks import prompts
from benchmarks.errors import ScoreCodeError
from benchmarks.evaluate import (
    CONFIG_FILE,
    RESULTS_FILE,
    SAMPLES_FILE,
    BatchSandbox,
    EvalConfig,
    evaluate,
    read_config,
    write_reports,
)
from benchmarks.generation import Dialogue, Generation, Generator, SamplingParams
from benchmarks.jsonl import read_jsonl, write_json_atomic, write_jsonl_atomic
from benchmarks.tasks import Task, TaskLoadError, dataset_hash, parse_task
from score_code.baselines.data import check_dataset

ITEMS_FILE, MANIFEST_FILE = "items.jsonl", "manifest.json"
SCHEMA_VERSION = 1


class RepairSetError(ScoreCodeError):
    """A repair set cannot be built or read; the message names the file and the problem."""


def build_repair_set(eval_dir: str | Path, tasks: Sequence[Task], shots: Sequence[Task],
                     output_dir: str | Path) -> dict:
    """Write items.jsonl and manifest.json from the failing attempt-1 programs of `eval_dir`; returns the manifest."""
    src = Path(eval_dir)
    for name in (CONFIG_FILE, SAMPLES_FILE, RESULTS_FILE):
        if not (src / name).is_file():
            raise RepairSetError(f"{src / name}: missing; expected the output directory of `score-code eval`")
    out = Path(output_dir)
    if (out / ITEMS_FILE).exists():
        raise RepairSetError(f"{out / ITEMS_FILE} exists; a repair set is fixed once built: choose another --output")
    check_dataset(src, tasks, shots)
    config = json.loads((src / CONFIG_FILE).read_text(encoding="utf-8"))["config"]
    programs = {(r["task_id"], int(r["sample_id"])): r["solution"]
                for r in read_jsonl(src / SAMPLES_FILE).records if int(r["attempt"]) == 1}
    first_failing: dict[str, dict] = {}
    counts = {"problems": len(tasks), "attempt1_failing": 0, "sandbox_errors": 0, "empty_programs": 0}
    for r in read_jsonl(src / RESULTS_FILE).records:
        if int(r["attempt"]) != 1 or r["passed"]:
            continue
        if r["status"] == "sandbox_error":
            counts["sandbox_errors"] += 1
            continue
        counts["attempt1_failing"] += 1
        program = programs.get((r["task_id"], int(r["sample_id"])), "")
        if not program.strip():
            counts["empty_programs"] += 1
            continue
        best = first_failing.get(r["task_id"])
        if best is None or int(r["sample_id"]) < best["sample_id"]:
            first_failing[r["task_id"]] = {"sample_id": int(r["sample_id"]), "status": r["status"],
                                           "first_failure": r.get("first_failure", ""), "program": program}
    items = []
    for task in tasks:  # the evaluation's task order
        chosen = first_failing.get(task.task_id)
        if chosen is not None:
            program = chosen.pop("program")
            items.append({"task": task.to_dict(), "wrong_program": program, "source": chosen})
    if not items:
        raise RepairSetError(f"{src}: no failing attempt-1 program with code in it ({counts}); nothing to repair")
    counts["items"] = len(items)
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "source_dir": str(src),
        "source_model": config.get("model", ""),
        "source_dataset": {"name": config.get("dataset", ""), "hash": config.get("dataset_hash", "")},
        "shots": [s.to_dict() for s in shots],
        "counts": counts,
    }
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl_atomic(out / ITEMS_FILE, items)
    write_json_atomic(out / MANIFEST_FILE, manifest)
    return manifest


def load_repair_set(repair_dir: str | Path) -> tuple[list[Task], tuple[Task, ...], dict[str, str], dict]:
    """(tasks, shots, task_id -> wrong program, manifest) of a repair set directory."""
    d = Path(repair_dir)
    for name in (ITEMS_FILE, MANIFEST_FILE):
        if not (d / name).is_file():
            raise RepairSetError(f"{d / name}: missing; build the set with `score-code repair-set build`")
    manifest = json.loads((d / MANIFEST_FILE).read_text(encoding="utf-8"))
    try:
        shots = tuple(parse_task(s, f"{d / MANIFEST_FILE}: shots[{i}]") for i, s in enumerate(manifest["shots"]))
        tasks, wrong = [], {}
        for line_no, item in enumerate(read_jsonl(d / ITEMS_FILE).records, start=1):
            where = f"{d / ITEMS_FILE}:{line_no}"
            task = parse_task(item.get("task"), f"{where}: task")
            if task.task_id in wrong:
                raise RepairSetError(f"{where}: task {task.task_id!r} appears twice")
            if not isinstance(item.get("wrong_program"), str):
                raise RepairSetError(f"{where}: field 'wrong_program' must be a string")
            tasks.append(task)
            wrong[task.task_id] = item["wrong_program"]
    except (TaskLoadError, KeyError) as e:
        raise RepairSetError(f"{d}: malformed repair set ({e})") from None
    return tasks, shots, wrong, manifest


def previous_answer(program: str, task: Task, chat: bool) -> str:
    """The wrong program written the way the evaluated model writes its own answers."""
    if chat:
        return f"```python\n{program.rstrip()}\n```"
    if task.test_format == "mbpp":
        return f"{program.rstrip()}\n{prompts.MBPP_DONE}"
    return program


class ReplayFirstAttempt:
    """A Generator whose attempt 1 is the stored wrong program; later turns go to the real model.

    The replayed turn carries no token ids (it was never sampled by this model), so the backend encodes the
    whole dialogue at the repair turn instead of appending to ids it does not have.
    """

    def __init__(self, generator: Generator, answers: dict[str, str]) -> None:
        self.generator = generator
        self.by_prompt = answers  # first user message -> previous answer text

    def generate(self, dialogues: list[Dialogue], params: SamplingParams) -> list[Generation]:
        if all(len(d.messages) == 1 for d in dialogues):
            return [self._replay(d) for d in dialogues]
        if any(len(d.messages) == 1 for d in dialogues):
            raise RepairSetError("a batch mixes first turns and repair turns; the harness sends one attempt at a time")
        return self.generator.generate(dialogues, params)

    def _replay(self, dialogue: Dialogue) -> Generation:
        text = self.by_prompt[dialogue.messages[0]["content"]]
        reply = Dialogue(messages=[*dialogue.messages, {"role": "assistant", "content": text}])
        return Generation(text=text, token_ids=[], prompt_token_ids=[], finish_reason="stop", dialogue=reply)


def evaluate_repair(generator: Generator, repair_dir: str | Path, sandbox: BatchSandbox, output_dir: str | Path,
                    config: EvalConfig, progress: bool = True) -> dict:
    """One greedy repair attempt per item (resumable); returns the metrics written to metrics.json."""
    tasks, shots, wrong, manifest = load_repair_set(repair_dir)
    if config.attempts != 2 or config.samples != 1 or config.feedback is not None:
        raise RepairSetError(f"a repair evaluation is one intrinsic repair attempt per item: attempts=2, samples=1, "
                             f"feedback=None (got {config.attempts}, {config.samples}, {config.feedback!r})")
    answers: dict[str, str] = {}
    for task in tasks:
        prompt = prompts.first_user_message(task, shots, config.chat)
        if prompt in answers:
            raise RepairSetError(f"{repair_dir}: two items share one first prompt (task {task.task_id!r})")
        answers[prompt] = previous_answer(wrong[task.task_id], task, config.chat)
    config = replace(config, dataset=config.dataset or f"repair:{repair_dir}", dataset_hash=dataset_hash(tasks, shots))
    metrics = evaluate(ReplayFirstAttempt(generator, answers), tasks, sandbox, output_dir, config, shots=shots,
                       progress=progress)
    counts = metrics["transitions"]["t1->t2"]["counts"]
    metrics = {
        **metrics,
        "repair_accuracy": metrics["accuracy"]["t2"],
        "n_programs": metrics["n_samples"],
        "repaired": counts["i->c"],
        "wrong_program_passed_on_regrade": counts["c->c"] + counts["c->i"],
    }
    write_reports(output_dir, metrics, read_config(output_dir), extra={
        "kind": "repair",
        "repair_set": {"dir": str(repair_dir), "source_model": manifest.get("source_model", ""),
                       "source_dataset": manifest.get("source_dataset", {})},
    })
    return metrics
