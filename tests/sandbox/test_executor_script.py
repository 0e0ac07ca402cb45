"""Script jobs (format "script", the SandboxFusion /run_code mode): a program run as `python program.py < stdin` in a
working dir holding its files, judged by its exit code alone; the local executor (fast), then a few through Docker."""
from __future__ import annotations

import base64
import json
import time
import uuid

import pytest

from sandbox import executor, jobs
from sandbox.jobs import Job
from sandbox.verdict import Result, Status
from tests.sandbox.conftest import FAST, SHORT, assert_still_healthy


def b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def run(client, code: str, stdin: str = "", files: dict[str, str] | None = None, limits=FAST) -> Result:
    return client.grade(Job.script(code, stdin, files), limits)


def raw(client, job: dict) -> Result:
    """Send a job dict as it is, past Job's own checks: what another client could send the executor."""
    rid = uuid.uuid4().hex
    answer = client.send({"id": rid, "job": job, "limits": FAST.to_dict()})
    assert answer.pop("id") == rid
    return Result.from_dict(answer)


def script_dict(code: str, **fields) -> dict:
    return {**Job.script(code).to_dict(), **fields}


# --- exit codes and status ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("code, return_code, status", [
    ("print('ok')\n", 0, Status.PASSED),
    ("import sys\nsys.exit(3)\n", 3, Status.RUNTIME_ERROR),
    ("import sys\nsys.exit(0)\n", 0, Status.PASSED),
    ("import sys\nsys.exit(None)\n", 0, Status.PASSED),
    ("import sys\nsys.exit(256 + 7)\n", 7, Status.RUNTIME_ERROR),  # the kernel keeps the low 8 bits
    ("import os\nos._exit(5)\n", 5, Status.RUNTIME_ERROR),
    ("import os\nos._exit(0)\n", 0, Status.PASSED),
    ("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n", -9, Status.RUNTIME_ERROR),
])
def test_the_exit_code_is_the_programs(client, code, return_code, status):
    result = run(client, code)
    assert (result.status, result.return_code) == (status, return_code), result
    assert result.expected_tests == 0 and result.tests == [] and result.reward == 0.0  # never a graded pass


def test_an_uncaught_exception_prints_its_traceback_and_exits_1(client):
    result = run(client, "def f():\n    return 1 / 0\n\nf()\n")
    assert result.status is Status.RUNTIME_ERROR and result.return_code == 1, result
    assert result.error == "ZeroDivisionError: division by zero"
    assert result.stderr.startswith("Traceback (most recent call last):\n  File \"program.py\", line 4, in <module>")
    assert "    return 1 / 0\n" in result.stderr and "executor" not in result.stderr  # the program's frames only


def test_sys_exit_with_a_message_prints_it_and_exits_1(client):
    result = run(client, "import sys\nsys.exit('bad input')\n")
    assert (result.status, result.return_code, result.stderr) == (Status.RUNTIME_ERROR, 1, "bad input\n"), result
    assert result.error == "exit code 1"


def test_a_syntax_error_is_reported_on_stderr_with_exit_code_1(client):
    result = run(client, "print('a')\ndef f(:\n    pass\n")
    assert result.status is Status.SYNTAX_ERROR and result.return_code == 1, result
    assert result.stderr.endswith("SyntaxError: invalid syntax\n") and 'File "program.py", line 2' in result.stderr
    assert result.stdout == ""  # nothing ran


def test_the_main_block_runs_and_shutdown_joins_threads_and_runs_atexit(client):
    code = """
import atexit, threading, time
atexit.register(print, "atexit")
def late():
    time.sleep(0.2)
    print("thread")
if __name__ == "__main__":
    threading.Thread(target=late).start()
    print("main")
"""
    result = run(client, code)
    assert (result.status, result.stdout) == (Status.PASSED, "main\nthread\natexit\n"), result


def test_other_formats_still_skip_the_main_block_and_carry_no_return_code(client):
    program = "def add(a, b):\n    return a + b\nif __name__ == '__main__':\n    raise SystemExit(4)\n"
    result = client.grade(Job.mbpp(program, ["assert add(1, 2) == 3"]))
    assert result.status is Status.PASSED and result.return_code is None, result


# --- stdin and files ---------------------------------------------------------------------------------------------
def test_stdin_is_the_programs_standard_input(client):
    code = "import sys\nname = input()\nrest = sys.stdin.read()\nprint(name[::-1], len(rest.splitlines()))\n"
    result = run(client, code, stdin="olleh\nb\nc\n")
    assert (result.status, result.stdout) == (Status.PASSED, "hello 2\n"), result


def test_stdin_larger_than_a_pipe_is_read_whole(client):
    data = "".join(f"{i}\n" for i in range(200_000))  # 1.3 MB, 20 times a pipe's buffer
    code = "import sys\nnumbers = [int(x) for x in sys.stdin]\nprint(len(numbers), sum(numbers))\n"
    result = run(client, code, stdin=data)
    assert result.stdout == f"200000 {sum(range(200_000))}\n", result


def test_without_stdin_input_sees_end_of_file(client):
    result = run(client, "input()\n")
    assert result.return_code == 1 and result.error == "EOFError: EOF when reading a line", result


def test_files_are_written_in_the_working_dir(client):
    files = {"data.txt": b64("3 4\n"), "sub/dir/blob.bin": b64(bytes(range(256))), "./dot.txt": b64("")}
    code = """
import os
a, b = map(int, open("data.txt").read().split())
blob = open("sub/dir/blob.bin", "rb").read()
print(a * b, blob == bytes(range(256)), os.path.getsize("dot.txt"), sorted(os.listdir(".")))
"""
    result = run(client, code, files=files)
    assert result.stdout == "12 True 0 ['data.txt', 'dot.txt', 'sub']\n", result


def test_files_do_not_outlive_their_run(client):
    assert run(client, "open('left.txt', 'w').write('x')\n", files={"given.txt": b64("y")}).status is Status.PASSED
    result = run(client, "import os\nprint(os.listdir('.'))\n")
    assert result.stdout == "[]\n", result


@pytest.mark.parametrize("path, error", [
    ("/etc/passwd", "is absolute"),
    ("../outside.txt", "contains '..'"),
    ("a/./../../outside.txt", "contains '..'"),
    ("//outside.txt", "is absolute"),
    ("", "must be a non-empty string"),
    ("dir/", "names a directory"),
    (".", "names a directory"),
])
def test_a_file_path_outside_the_working_dir_is_refused(client, path, error):
    with pytest.raises(ValueError, match=error):
        Job.script("print(1)", files={path: b64("x")})
    result = raw(client, script_dict("print(1)", files={path: b64("x")}))  # past Job: the executor refuses too
    assert result.status is Status.SANDBOX_ERROR and repr(path) in result.error and result.stdout == "", result
    assert_still_healthy(client)


@pytest.mark.parametrize("files, error", [
    ({"a.txt": "not base64!"}, "files\\['a.txt'\\] is not valid base64"),
    ({"a": b64("x"), "a/b": b64("y")}, "'a' is also the directory of 'a/b'"),
    ({f"f{i}": "" for i in range(jobs.MAX_FILES + 1)}, "more than the 100 allowed"),
    ({"big": b64(b"\0" * (jobs.MAX_FILES_BYTES + 1))}, "more than 16777216 bytes in all"),
])
def test_bad_files_are_refused_with_the_field_named(files, error):
    with pytest.raises(ValueError, match=error):
        Job.script("print(1)", files=files)


def test_the_executor_refuses_bad_files_a_job_let_through(client):
    result = raw(client, script_dict("print(1)", files={"a.txt": "bm90IGI2NA=="[:-1]}))  # truncated base64
    assert result.status is Status.SANDBOX_ERROR and "files['a.txt'] is not valid base64" in result.error, result
    result = raw(client, script_dict("print(1)", files={"a": b64("x"), "a/b": b64("y")}))
    assert result.status is Status.SANDBOX_ERROR and "files['a/b']: cannot write it" in result.error, result
    result = raw(client, {**Job.mbpp("x = 1", ["assert x == 1"]).to_dict(), "stdin": "1\n"})
    assert result.status is Status.SANDBOX_ERROR and "stdin and files are for script jobs only" in result.error
    assert_still_healthy(client)


def test_the_executor_and_jobs_agree_on_the_bounds():
    assert (executor.SCRIPT_MAX_FILES, executor.SCRIPT_MAX_FILES_BYTES, executor.SCRIPT_MAX_STDIN_BYTES) == \
        (jobs.MAX_FILES, jobs.MAX_FILES_BYTES, jobs.MAX_STDIN_BYTES)


# --- the Job and Result schema -----------------------------------------------------------------------------------
def test_a_script_job_has_no_tests_and_other_jobs_no_stdin_or_files():
    with pytest.raises(ValueError, match="a script job has no tests"):
        Job(program="print(1)", format="script", tests=("assert True",))
    with pytest.raises(ValueError, match="tests must be a non-empty sequence"):
        Job(program="x = 1", format="generic", tests=())
    with pytest.raises(ValueError, match="stdin and files are for script jobs, not mbpp"):
        Job.mbpp("x = 1", ["assert x == 1"], stdin="1\n")
    with pytest.raises(ValueError, match="stdin must be a string"):
        Job.script("print(1)", stdin=b"1\n")


def test_jobs_round_trip_through_json_and_stay_hashable():
    job = Job.script("print(input())", stdin="x\n", files={"b.txt": b64("2"), "a.txt": b64("1")}, timeout_s=3.0,
                     job_id="s1")
    again = Job.from_dict(json.loads(json.dumps(job.to_dict())))
    assert again == job and hash(again) == hash(job)
    assert job.files == (("a.txt", b64("1")), ("b.txt", b64("2")))  # sorted pairs: equal whatever the order given
    assert job.to_dict()["files"] == {"a.txt": b64("1"), "b.txt": b64("2")}  # SandboxFusion's mapping on the wire
    graded = Job.mbpp("x = 1", ["assert x == 1"])
    assert Job.from_dict(json.loads(json.dumps(graded.to_dict()))) == graded and hash(graded) is not None
    assert set(graded.to_dict()).isdisjoint({"stdin", "files", "keep_output_bytes"})  # what /v1/grade accepts
    wide = Job.script("print(1)", keep_output_bytes=1 << 20)
    assert wide.to_dict()["keep_output_bytes"] == 1 << 20
    assert Job.from_dict(json.loads(json.dumps(wide.to_dict()))) == wide


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "8192", jobs.MAX_KEEP_OUTPUT_BYTES + 1])
def test_keep_output_bytes_is_a_positive_int_within_the_bound(bad):
    with pytest.raises(ValueError, match="keep_output_bytes must be an int in 1..4194304 or None"):
        Job.script("print(1)", keep_output_bytes=bad)


def test_return_code_round_trips_through_the_result_dict():
    result = Result(Status.RUNTIME_ERROR, return_code=-9)
    assert Result.from_dict(json.loads(json.dumps(result.to_dict()))).return_code == -9
    assert Result.from_dict(Result(Status.PASSED).to_dict()).return_code is None


# --- limits and confinement: the same as every program -----------------------------------------------------------
def test_a_busy_script_times_out_and_is_killed(client):
    started = time.monotonic()
    result = run(client, "while True:\n    pass\n", limits=SHORT)
    assert result.status is Status.TIMEOUT and result.return_code == -9, result
    assert time.monotonic() - started < 4
    assert_still_healthy(client)


def test_a_script_that_lingers_in_a_thread_times_out(client):
    result = run(client, "import threading, time\nthreading.Thread(target=time.sleep, args=(60,)).start()\n",
                 limits=SHORT)
    assert result.status is Status.TIMEOUT, result


def test_a_memory_hog_is_memory_exceeded(client):
    result = run(client, "x = bytearray(2 ** 31)\n", limits=SHORT)
    assert result.status is Status.MEMORY_EXCEEDED and result.return_code == 1, result
    assert "MemoryError" in result.stderr


def test_output_past_the_cap_is_counted_and_dropped(client):
    result = run(client, "import sys\nprint('x' * 100_000)\nsys.stderr.write('e' * 50_000)\n")
    assert result.status is Status.PASSED and result.return_code == 0, result
    assert result.stdout == "x" * FAST.keep_output_bytes and result.stderr == "e" * FAST.keep_output_bytes
    assert result.output_bytes == 150_001


def test_a_script_is_confined_like_any_program(client):
    code = """
import os
try:
    open("/tmp/score_sandbox_script_escape.txt", "w").write("x")
    print("written")
except OSError as exc:
    print(type(exc).__name__)
print(os.environ.get("SCORE_TEST_SECRET"))
"""
    result = run(client, code)
    assert result.stdout.endswith("\nNone\n"), result  # the executor's environment is not the program's
    if client.ready["landlock"]:
        assert result.stdout == "PermissionError\nNone\n", result


# --- through Docker -----------------------------------------------------------------------------------------------
@pytest.mark.docker
def test_docker_runs_a_script_with_stdin_and_files(docker_sandbox):
    code = """
import sys
n = int(input())
table = open("in/table.csv").read().splitlines()
print(sum(int(row.split(",")[1]) for row in table[:n]))
sys.exit(0 if n == 2 else 9)
"""
    job = Job.script(code, stdin="2\n", files={"in/table.csv": b64("a,1\nb,2\nc,3\n")}, timeout_s=5.0)
    result = docker_sandbox.run(job)
    assert (result.status, result.return_code, result.stdout) == (Status.PASSED, 0, "3\n"), result
    result = docker_sandbox.run(Job.script(code, stdin="3\n", files=dict(job.files), timeout_s=5.0))
    assert (result.status, result.return_code, result.stdout) == (Status.RUNTIME_ERROR, 9, "6\n"), result


@pytest.mark.docker
def test_docker_script_main_block_may_use_multiprocessing(docker_sandbox):
    code = """
import multiprocessing
def square(x):
    return x * x
if __name__ == "__main__":
    with multiprocessing.Pool(2) as pool:
        print(sum(pool.map(square, range(10))))
"""
    result = docker_sandbox.run(Job.script(code, timeout_s=10.0))
    assert (result.status, result.return_code, result.stdout) == (Status.PASSED, 0, "285\n"), result
