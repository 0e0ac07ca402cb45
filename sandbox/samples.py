"""Task files and sample files, read line by line, and samples graded into result rows. No dataset knowledge here:
benchmarks/grade.py (`score-code grade`) builds Problems from HumanEval and MBPP and reuses the rest.

Task file (`sandbox grade --problems PATH`), JSONL, one object per line:
    task_id      str or int, required, unique
    tests        list of str: statements (e.g. asserts) run after the program, one test each
    test         str: test code; its top-level test_* functions are the tests, or the whole code is one test when
                 it defines none. A task has `tests` or `test`, not both.
    format       "mbpp" | "generic" | "humaneval" (alias: test_format), as in sandbox/jobs.py; default "mbpp" with
                 `tests`, "generic" with `test`. "humaneval" takes one test source defining check(candidate).
    entry_point  str: the function under test (required for "humaneval")
    setup_code   str: trusted code run before the tests (imports, helpers)
Other fields are ignored, so the task files of benchmarks/tasks.py grade here too.

Samples (JSONL, the HumanEval/EvalPlus format), one object per line; other keys are copied to the result rows:
    {"task_id": ..., "solution": "def f(...): ..."}   the whole program
    {"task_id": ..., "completion": "..."}             appended to the problem's completion_prefix (HumanEval: its
                                                      prompt; for task files it is empty, so also the whole program)
"""
from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import SandboxError
from .jobs import Job
from .verdict import Status

if TYPE_CHECKING:
    from . import Sandbox
    from .pool import Progress

FORMATS = ("humaneval", "mbpp", "generic")
TASK_FILE_HINT = "fix that line of the task file; its schema: `python3 -m pydoc sandbox.samples`"


class SampleError(SandboxError):
    """One rejected line of a task or samples file: names the file, the 1-based line (0: the whole file), the field."""

    def __init__(self, path: str | Path, line: int, field: str, message: str, hint: str = "") -> None:
        self.path, self.line, self.field = str(path), line, field
        where = f"{path}:{line}" if line else str(path)
        super().__init__(f"{where}: field '{field}': {message}" if field else f"{where}: {message}", hint)


@dataclass(frozen=True)
class Problem:
    """What the samples of one task are graded against: a Job without a program, and what a completion extends."""

    task_id: str
    template: Job  # trusted: tests, format, entry_point, setup_code; `program` is filled in per sample
    completion_prefix: str = ""  # prepended to a sample's `completion` (HumanEval: the prompt)

    def job(self, program: str, job_id: str) -> Job:
        return dataclasses.replace(self.template, program=program, job_id=job_id)


# --- task files ------------------------------------------------------------------------------------------------
def load_task_file(path: Path) -> dict[str, Problem]:
    """The Problems of a task file (schema above) by task_id. A bad line raises a SampleError that names it; an MBPP
    data file raises a SandboxError pointing at `score-code grade`."""
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        raise SandboxError(f"{path} is one JSON array, not a JSONL task file (sanitized MBPP is such an array)",
                           hint=f"grade MBPP with `score-code grade SAMPLES --problems {path}`")
    problems: dict[str, Problem] = {}
    first_line: dict[str, int] = {}
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise SampleError(path, n, "", f"not valid JSON ({exc.args[0]})", TASK_FILE_HINT) from None
        problem = _parse_task(path, n, record)
        if problem.task_id in problems:
            raise SampleError(path, n, "task_id", f"{problem.task_id!r} already used on line "
                              f"{first_line[problem.task_id]}", TASK_FILE_HINT)
        problems[problem.task_id] = problem
        first_line[problem.task_id] = n
    if not problems:
        raise SampleError(path, 0, "", "no tasks", TASK_FILE_HINT)
    return problems


def _parse_task(path: Path, n: int, record: object) -> Problem:
    """One task-file line; errors name the file, the line and the field."""
    def bad(field: str, message: str) -> SampleError:
        return SampleError(path, n, field, message, TASK_FILE_HINT)

    if not isinstance(record, dict):
        raise bad("", f"expected a JSON object, got {type(record).__name__}")
    if "test_list" in record and "tests" not in record and "test" not in record:
        raise SandboxError(f"{path}:{n}: an MBPP record (field 'test_list'), not a generic task",
                           hint=f"grade MBPP with `score-code grade SAMPLES --problems {path}`")
    task_id = record.get("task_id")
    if isinstance(task_id, bool) or not isinstance(task_id, (str, int)) or task_id == "":
        raise bad("task_id", "required: a non-empty string or an integer")
    test_field = "tests" if "tests" in record else "test"
    if "tests" in record and "test" in record:
        raise bad("test", "a task has 'tests' (list of str) or 'test' (str), not both")
    if test_field not in record:
        raise bad("tests", "missing: a task needs 'tests' (list of str) or 'test' (str)")
    if "tests" in record:
        tests = record["tests"]
        if not isinstance(tests, list) or not tests or not all(isinstance(t, str) for t in tests):
            raise bad("tests", "must be a non-empty list of strings")
    elif not isinstance(record["test"], str) or not record["test"].strip():
        raise bad("test", "must be a non-empty string")
    else:
        tests = [record["test"]]
    field = "format" if "format" in record else "test_format"
    fmt = record.get(field, "mbpp" if "tests" in record else "generic")
    if fmt not in FORMATS:
        raise bad(field, f"is {fmt!r}; expected one of {', '.join(FORMATS)}")
    for name in ("entry_point", "setup_code"):
        if not isinstance(record.get(name, ""), str):
            raise bad(name, f"must be a string, got {type(record[name]).__name__}")
    if fmt == "humaneval" and not record.get("entry_point"):
        raise bad("entry_point", "required when the format is 'humaneval'")
    if fmt == "humaneval" and len(tests) != 1:
        raise bad("tests", f"the 'humaneval' format takes one test source defining check(candidate), got {len(tests)}")
    trusted = {f"{test_field}[{i}]" if len(tests) > 1 else test_field: source for i, source in enumerate(tests)}
    trusted["setup_code"] = record.get("setup_code", "")
    for name, source in trusted.items():
        try:
            compile(source, f"<{name}>", "exec", dont_inherit=True)
        except (SyntaxError, ValueError) as exc:  # else every sample of the task would be a sandbox error
            raise bad(name, f"does not compile ({getattr(exc, 'msg', exc)})") from None
    template = Job(program="", format=fmt, tests=tuple(tests), entry_point=record.get("entry_point", ""),
                   setup_code=record.get("setup_code", ""), metadata={"task_id": str(task_id)})
    return Problem(str(task_id), template)


# --- samples ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sample:
    line: int  # 1-based line in the samples file
    record: dict  # the input object, copied to the result row
    problem: Problem
    program: str

    def job(self) -> Job:
        return self.problem.job(self.program, job_id=f"{self.record['task_id']}#{self.line}")


def read_samples(path: Path, problems: dict[str, Problem]) -> tuple[list[Sample], list[SampleError]]:
    """Every valid line as a Sample, and one SampleError per rejected line (bad UTF-8/JSON, field, task_id): one bad
    line must not cost the grading of the others. `problems` is keyed by str(task_id), aliases included."""
    samples, errors = [], []
    with open(path, "rb") as f:
        for n, raw in enumerate(f, start=1):
            try:
                sample = _parse_sample(path, n, raw, problems)
            except SampleError as exc:
                errors.append(exc)
                continue
            if sample is not None:
                samples.append(sample)
    return samples, errors


def _parse_sample(path: Path, n: int, raw: bytes, problems: dict[str, Problem]) -> Sample | None:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SampleError(path, n, "", f"not valid UTF-8 (byte {raw[exc.start]:#04x} at column {exc.start + 1})") \
            from None
    if not text.strip():
        return None
    try:
        record = json.loads(text)
    except ValueError as exc:
        raise SampleError(path, n, "", f"not valid JSON ({exc.args[0]})") from None
    if not isinstance(record, dict):
        raise SampleError(path, n, "", f"expected a JSON object, got {type(record).__name__}")
    if "task_id" not in record:
        raise SampleError(path, n, "task_id", "missing")
    problem = problems.get(str(record["task_id"]))
    if problem is None:
        raise SampleError(path, n, "task_id", f"unknown task {record['task_id']!r} (not in the problems given)")
    if isinstance(record.get("solution"), str):
        program = record["solution"]
    elif isinstance(record.get("completion"), str):
        program = problem.completion_prefix + record["completion"]
    elif "solution" in record or "completion" in record:
        field = "solution" if "solution" in record else "completion"
        raise SampleError(path, n, field, f"must be a string, got {type(record[field]).__name__}")
    else:
        raise SampleError(path, n, "completion", "missing (a sample needs 'completion' or 'solution')")
    return Sample(n, record, problem, program)


# --- grading ---------------------------------------------------------------------------------------------------
def grade_samples(sandbox: Sandbox, samples: Sequence[Sample], progress: Progress | None = None) -> list[dict]:
    """One result row per sample, in input order: the sample's own keys, then its verdict."""
    results = sandbox.run_batch([s.job() for s in samples], progress) if samples else []
    return [{**sample.record, "status": result.status.value, "passed": result.reward == 1.0,
             "reward": result.reward, "pass_fraction": result.pass_fraction,
             "failed_tests": [t.name for t in result.tests if not t.passed],
             "first_failure": result.first_failure, "duration_s": round(result.wall_time_s, 4)}
            for sample, result in zip(samples, results, strict=True)]


def passes_by_task(samples: Sequence[Sample], rows: Sequence[dict]) -> dict[str, list[bool]]:
    """Per task_id, whether each of its samples passed. Sandbox errors are left out: they say nothing of the
    program, so they must never be scored as failures."""
    by_task: dict[str, list[bool]] = defaultdict(list)
    for sample, row in zip(samples, rows, strict=True):
        if row["status"] != Status.SANDBOX_ERROR.value:
            by_task[sample.problem.task_id].append(row["passed"])
    return dict(by_task)
