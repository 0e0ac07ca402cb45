"""Task loaders: HumanEval from the package, MBPP splits from the shared files, user task files and their errors."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.tasks import (
    MBPP_ENV_VAR,
    Task,
    TaskLoadError,
    dataset_hash,
    load_humaneval,
    load_mbpp,
    load_shots,
    load_task_file,
    load_tasks,
    mbpp_entry_point,
)

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
MBPP = DATA / "mbpp.jsonl"
SANITIZED = DATA / "sanitized-mbpp.json"
FIXTURES = Path(__file__).parent / "fixtures"

needs_mbpp = pytest.mark.skipif(not MBPP.exists(), reason=f"{MBPP} not present (shared data beside the repo)")


def test_humaneval_has_164_tasks_with_runnable_reference() -> None:
    tasks = load_humaneval()
    assert len(tasks) == 164
    first = tasks[0]
    assert first.task_id == "HumanEval/0" and first.entry_point == "has_close_elements"
    assert first.test_format == "humaneval" and len(first.tests) == 1 and "def check(candidate)" in first.tests[0]
    assert first.reference_solution.startswith(first.prompt)
    job = first.to_job(first.reference_solution, timeout_s=3.0, job_id="x")
    assert (job.format, job.entry_point, job.timeout_s, job.job_id) == ("humaneval", "has_close_elements", 3.0, "x")
    assert job.setup_code == first.prompt and job.metadata["task_id"] == "HumanEval/0"


@needs_mbpp
@pytest.mark.parametrize("split,size",
                         [("prompt", 10), ("test", 500), ("validation", 90), ("train", 374), ("all", 974)])
def test_mbpp_split_sizes(split: str, size: int) -> None:
    tasks = load_mbpp(MBPP, split)
    assert len(tasks) == size
    assert len({t.task_id for t in tasks}) == size


@needs_mbpp
def test_mbpp_task_fields_and_entry_point() -> None:
    tasks = {t.task_id: t for t in load_mbpp(MBPP, "test")}
    t = tasks["Mbpp/11"]
    assert t.prompt == ("Write a python function to remove first and last occurrence of a given character from the "
                        "string.")
    assert t.entry_point == "remove_Occ"
    assert t.tests == t.test_list_for_prompt and len(t.tests) == 3
    assert "\r" not in t.reference_solution  # the original release has CRLF line ends
    assert t.metadata["mbpp_task_id"] == 11
    # every test split entry point is a function the reference defines
    assert all(f"def {t.entry_point}" in t.reference_solution for t in tasks.values())


@needs_mbpp
def test_mbpp_sanitized_format() -> None:
    tasks = load_mbpp(SANITIZED, "all")
    assert len(tasks) == 427
    t = {x.task_id: x for x in tasks}["Mbpp/2"]
    # the first assert is `assert set(similar_elements(...)) == ...`: the builtin `set` is not the entry point
    assert t.entry_point == "similar_elements"
    assert t.prompt == "Write a function to find the shared elements from the given two lists."
    with_imports = [x for x in tasks if x.setup_code]
    assert with_imports and all(line.startswith(("import", "from")) for x in with_imports
                                for line in x.setup_code.splitlines())


def test_entry_point_prefers_reference_definitions() -> None:
    assert mbpp_entry_point("assert math.isclose(area(2), 4.0)", "def area(r):\n    return r * r") == "area"
    assert mbpp_entry_point("assert sorted(f([2, 1])) == [1, 2]") == "f"
    with pytest.raises(TaskLoadError, match="no function call"):
        mbpp_entry_point("assert True")


@needs_mbpp
def test_load_tasks_dispatch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MBPP_ENV_VAR, raising=False)
    with pytest.raises(TaskLoadError, match=MBPP_ENV_VAR):
        load_tasks("mbpp", "test")
    monkeypatch.setenv(MBPP_ENV_VAR, str(MBPP))
    assert len(load_tasks("mbpp", "validation")) == 90
    assert len(load_tasks(str(SANITIZED), "test")) == 257
    assert [t.task_id for t in load_shots("mbpp")] == ["Mbpp/2", "Mbpp/3", "Mbpp/4"]
    assert load_shots("humaneval") == ()
    assert len(load_tasks("humaneval")) == 164
    with pytest.raises(TaskLoadError, match="only a test split"):
        load_tasks("humaneval", "train")
    with pytest.raises(TaskLoadError, match="neither"):
        load_tasks("no/such/file.jsonl")


def test_hub_name_offline_says_to_pass_a_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(TaskLoadError, match="pass a local path"):
        load_mbpp("score-code-test/no-such-mbpp-dataset", "test")


def test_task_file_schema() -> None:
    tasks = load_task_file(FIXTURES / "tasks_valid.jsonl")
    assert [t.task_id for t in tasks] == ["demo/add", "demo/square", "demo/generic"]
    add, square, generic = tasks
    assert add.entry_point == "add" and add.test_format == "mbpp"  # parsed from the first assert
    assert square.metadata == {"source": "hand-written"} and square.to_job("x").format == "humaneval"
    assert generic.test_format == "generic" and generic.entry_point == ""
    assert len(load_tasks(str(FIXTURES / "tasks_valid.jsonl"))) == 3


def test_task_file_error_names_file_line_and_field() -> None:
    path = FIXTURES / "tasks_missing_tests.jsonl"
    with pytest.raises(TaskLoadError) as info:
        load_task_file(path)
    assert str(info.value).startswith(f"{path}:2: field 'tests'")
    message = r"tasks_duplicate_id.jsonl:2: field 'task_id': 'same' already used on line 1"
    with pytest.raises(TaskLoadError, match=message):
        load_task_file(FIXTURES / "tasks_duplicate_id.jsonl")


@pytest.mark.parametrize(
    "record,field",
    [
        ({"task_id": "t", "prompt": "p", "tests": "assert f()"}, "tests"),
        ({"task_id": "t", "prompt": "p", "tests": ["x"], "test_format": "pytest"}, "test_format"),
        ({"task_id": "t", "prompt": "p", "tests": ["x"], "test_format": "humaneval"}, "entry_point"),
        ({"task_id": "", "prompt": "p", "tests": ["x"]}, "task_id"),
        ({"task_id": "t", "prompt": "p", "tests": ["x"], "metadata": []}, "metadata"),
        ({"task_id": "t", "prompt": "p", "tests": ["x"], "test": ["x"]}, "unknown field"),
    ],
)
def test_task_file_bad_fields(tmp_path: Path, record: dict, field: str) -> None:
    path = tmp_path / "tasks.jsonl"
    path.write_text(json.dumps({"task_id": "ok", "prompt": "p", "tests": ["x"]}) + "\n" + json.dumps(record) + "\n")
    with pytest.raises(TaskLoadError, match=rf"tasks.jsonl:2: .*{field}"):
        load_task_file(path)


def test_task_file_invalid_json_names_line(tmp_path: Path) -> None:
    path = tmp_path / "tasks.jsonl"
    path.write_text('{"task_id": "ok", "prompt": "p", "tests": ["x"]}\n{"task_id": \n')
    with pytest.raises(TaskLoadError, match=r"tasks.jsonl:2: invalid JSON"):
        load_task_file(path)


def test_dataset_hash_tracks_graded_content_only() -> None:
    a = Task("t1", "p", "f", ("assert f()",), "mbpp", metadata={"x": 1})
    same = Task("t1", "p", "f", ("assert f()",), "mbpp", metadata={"x": 2})
    other = Task("t1", "p", "f", ("assert f() == 1",), "mbpp")
    assert dataset_hash([a]) == dataset_hash([same]) != dataset_hash([other])
    assert dataset_hash([a]) != dataset_hash([a], shots=[other])
    assert len(dataset_hash([a])) == 64
