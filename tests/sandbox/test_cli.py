"""`sandbox` CLI: grade against generic task files (bad lines named, valid lines graded, atomic results, pass@1;
HumanEval and MBPP refused with a pointer to `score-code grade`), cleanup and doctor."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import pytest

from sandbox import Sandbox
from sandbox.atomic import write_text_atomic
from sandbox.cli import main
from tests.conftest import ADD_BAD, ADD_OK, NEG_OK, read_jsonl, write_lines

TASKS = [
    {"task_id": "add", "tests": ["assert add(1, 2) == 3", "assert add(0, 0) == 0"]},
    {"task_id": "neg", "test": "def test_neg():\n    assert neg(2) == -2\n", "entry_point": "neg"},
]
SCORE_CODE_GRADE_HINT = "hint: grade HumanEval and MBPP with `score-code grade SAMPLES --problems humaneval|mbpp|PATH`"


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


@pytest.mark.parametrize("dataset", ["humaneval", "mbpp"])
def test_datasets_are_refused_with_a_pointer_to_score_code_grade(dataset, tmp_path, capsys):
    rc = grade(write_lines(tmp_path / "s.jsonl", [{"task_id": 2, "solution": "x"}]), dataset, tmp_path / "o.jsonl")
    err = capsys.readouterr().err
    assert rc == 1 and f"error: `sandbox grade` grades generic task files only, not the {dataset} dataset" in err
    assert SCORE_CODE_GRADE_HINT in err
    assert not (tmp_path / "o.jsonl").exists()


@pytest.mark.parametrize("mbpp_file", ["mbpp.jsonl", "sanitized-mbpp.json"])
def test_mbpp_data_files_are_refused_with_a_pointer_to_score_code_grade(mbpp_file, tmp_path, capsys):
    record = {"task_id": 2, "text": "t", "code": ADD_OK, "test_list": ["assert add(1, 2) == 3"]}
    problems = tmp_path / mbpp_file
    problems.write_text(json.dumps([record]) if mbpp_file.endswith(".json") else json.dumps(record) + "\n")
    rc = grade(write_lines(tmp_path / "s.jsonl", [{"task_id": 2, "solution": ADD_OK}]), problems, tmp_path / "o.jsonl")
    err = capsys.readouterr().err
    assert rc == 1 and f"error: {problems}" in err
    assert f"hint: grade MBPP with `score-code grade SAMPLES --problems {problems}`" in err


def test_bad_problems_file_names_its_line_and_field(tmp_path, capsys):
    problems = write_lines(tmp_path / "tasks.jsonl", [TASKS[0], {"task_id": "x", "tests": "assert 1"}])
    rc = grade(write_lines(tmp_path / "s.jsonl", [{"task_id": "add", "solution": ADD_OK}]), problems,
               tmp_path / "o.jsonl")
    assert rc == 1
    assert f"{problems}:2: field 'tests': must be a non-empty list of strings" in capsys.readouterr().err


@pytest.mark.parametrize("record, message", [
    ({"task_id": "a"}, "field 'tests': missing"),
    ({"task_id": "a", "tests": ["assert 1"], "test": "assert 1"}, "field 'test': a task has 'tests'"),
    ({"tests": ["assert 1"]}, "field 'task_id': required"),
    ({"task_id": "a", "tests": ["assert f(1,"]}, "field 'tests': does not compile"),
    ({"task_id": "a", "tests": ["assert 1", "assert ("]}, "field 'tests[1]': does not compile"),
    ({"task_id": "a", "test": "assert 1", "format": "cobol"}, "field 'format': is 'cobol'"),
    ({"task_id": "a", "test": "def check(c): pass", "test_format": "humaneval"}, "field 'entry_point': required"),
    ({"task_id": "a", "tests": ["x", "y"], "format": "humaneval", "entry_point": "f"},
     "field 'tests': the 'humaneval' format takes one test source"),
    ({"task_id": "a", "test": "assert 1", "setup_code": 3}, "field 'setup_code': must be a string"),
])
def test_task_file_errors_name_the_field(record, message, tmp_path, capsys):
    problems = write_lines(tmp_path / "tasks.jsonl", [record])
    assert grade(write_lines(tmp_path / "s.jsonl", [{"task_id": "a", "solution": ADD_OK}]), problems,
                 tmp_path / "o.jsonl") == 1
    err = capsys.readouterr().err
    assert f"error: {problems}:1: {message}" in err and "hint: fix that line of the task file" in err


def test_duplicate_task_ids_are_refused(tmp_path, capsys):
    problems = write_lines(tmp_path / "tasks.jsonl", [TASKS[0], TASKS[0]])
    assert grade(write_lines(tmp_path / "s.jsonl", [{"task_id": "add", "solution": ADD_OK}]), problems,
                 tmp_path / "o.jsonl") == 1
    assert f"{problems}:2: field 'task_id': 'add' already used on line 1" in capsys.readouterr().err


def test_format_field_and_extra_fields_of_benchmark_task_files(tmp_path, capsys):
    """A task file of benchmarks/tasks.py (prompt, test_format, reference_solution) grades here too."""
    problems = write_lines(tmp_path / "tasks.jsonl", [
        {"task_id": "sq", "prompt": "square", "test_format": "humaneval", "entry_point": "square",
         "tests": ["def check(candidate):\n    assert candidate(3) == 9\n"], "reference_solution": ""},
        {"task_id": "dbl", "format": "generic", "tests": ["assert double(2) == 4", "assert double(0) == 0"]},
    ])
    samples = write_lines(tmp_path / "s.jsonl", [{"task_id": "sq", "completion": "def square(x):\n    return x * x\n"},
                                                 {"task_id": "dbl", "solution": "def double(x):\n    return 2 * x\n"}])
    out = tmp_path / "o.jsonl"
    assert grade(samples, problems, out) == 0
    assert [(r["task_id"], r["status"]) for r in read_jsonl(out)] == [("sq", "passed"), ("dbl", "passed")]


# --- grade: scores and files -----------------------------------------------------------------------------------
def test_grade_prints_pass_at_1_as_the_mean_over_tasks(tasks, tmp_path, capsys):
    samples = write_lines(tmp_path / "s.jsonl", [
        *({"task_id": "add", "solution": s} for s in (ADD_OK, ADD_BAD, ADD_OK)),  # 2 of 3
        *({"task_id": "neg", "solution": NEG_OK} for _ in range(3)),  # 3 of 3
    ])
    assert grade(samples, tasks, tmp_path / "o.jsonl") == 0
    out = capsys.readouterr().out
    assert "status: passed 5, failed 1" in out and "passed: 5/6 sample(s)" in out
    assert "pass@1: 0.8333" in out and "pass@2" not in out


def test_unsampled_tasks_are_noted(tasks, tmp_path, capsys):
    assert grade(write_lines(tmp_path / "s.jsonl", [{"task_id": "add", "solution": ADD_OK}]), tasks,
                 tmp_path / "o.jsonl") == 0
    assert "note: 1 of 2 tasks have no samples (first: neg)" in capsys.readouterr().out


def test_grade_help_sends_datasets_and_pass_at_k_to_score_code_grade(capsys):
    with pytest.raises(SystemExit):
        main(["grade", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "pass@k with k > 1 use `score-code grade SAMPLES --problems humaneval|mbpp|PATH`" in help_text


def test_results_are_written_atomically(tmp_path, monkeypatch):
    out = tmp_path / "r.jsonl"
    out.write_text("old\n")

    def crash(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        write_text_atomic(out, '{"a": 1}\n')
    assert out.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.jsonl"], "a temp file was left behind"


def test_results_are_readable_by_others(tmp_path):
    out = tmp_path / "r.jsonl"
    write_text_atomic(out, "x\n")
    assert out.stat().st_mode & 0o777 == 0o644 and out.read_text() == "x\n"


def test_grade_leaves_only_the_results_file(tasks, mixed_samples, tmp_path):
    grade(mixed_samples, tasks, tmp_path / "out.jsonl")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl", "samples.jsonl", "tasks.jsonl"]


@pytest.mark.docker
def test_a_lone_surrogate_in_program_output_is_written_and_reads_back(docker_sandbox, tasks, tmp_path):
    """No text a program produces may crash the grader: UTF-8 cannot encode '\\udc80', yet the row is written."""
    program = "import sys\nprint('\\ud800 out')\nprint('\\udc80 err', file=sys.stderr)\nraise ValueError('\\udc80')\n"
    samples = write_lines(tmp_path / "s.jsonl", [{"task_id": "add", "solution": program}])
    out = tmp_path / "out.jsonl"
    assert main(["grade", str(samples), "--problems", str(tasks), "-o", str(out), "--workers", "1"]) == 0
    row = read_jsonl(out)[0]
    assert row["status"] == "runtime_error" and "\udc80" in row["first_failure"], row


# --- Docker end to end -----------------------------------------------------------------------------------------
@pytest.mark.docker
def test_grade_with_docker_backend(docker_sandbox, tasks, mixed_samples, tmp_path):
    out = tmp_path / "out.jsonl"
    rc = main(["grade", str(mixed_samples), "--problems", str(tasks), "-o", str(out), "--workers", "2"])
    assert rc == 1  # rejected lines
    assert [r["passed"] for r in read_jsonl(out)] == [True, False, True]


@pytest.mark.docker
def test_cleanup_removes_socket_dirs_of_dead_owners_only(docker_sandbox, tmp_path, monkeypatch):
    from sandbox.leftovers import SOCKET_DIR_PREFIX, host_tag

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = tmp_path / f"{SOCKET_DIR_PREFIX}{gone.stdout.strip()}@{host_tag()}-abc"
    alive = tmp_path / f"{SOCKET_DIR_PREFIX}{os.getpid()}@{host_tag()}-def"
    # Another host sharing this directory (graders in containers): its pids mean nothing here, whatever they are.
    other_host = tmp_path / f"{SOCKET_DIR_PREFIX}{gone.stdout.strip()}@{host_tag('grader-2')}-ghi"
    for directory in (dead, alive, other_host):
        directory.mkdir()
        (directory / "1.sock").touch()  # a worker that never connected
    assert main(["cleanup"]) == 0
    assert not dead.exists() and alive.exists() and other_host.exists()


def test_a_sigkilled_local_sandbox_leaves_no_scratch_root_behind(tmp_path):
    """The local backend's temp root cannot be removed by its SIGKILLed owner: the next local Sandbox removes it."""
    script = ("import os, signal, warnings, tempfile; warnings.simplefilter('ignore')\n"
              f"tempfile.tempdir = {str(tmp_path)!r}\n"
              "from sandbox import Sandbox\n"
              "sb = Sandbox(backend='local', workers=1)\n"
              "print(sb._spawner.root, flush=True)\n"
              "os.kill(os.getpid(), signal.SIGKILL)\n")
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    root = Path(killed.stdout.strip())
    assert killed.returncode == -9 and root.is_dir() and root.parent == tmp_path, killed.stderr
    with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mp.setattr(tempfile, "tempdir", str(tmp_path))
        with Sandbox(backend="local", workers=1) as sb:
            assert not root.exists() and Path(sb._spawner.root).is_dir()  # the living owner's root stays


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
