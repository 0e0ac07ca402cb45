"""Confinement by sandbox/executor.py: the grader cannot be killed, files, processes and environment do not outlive
or leak into a program, and ordinary Python still works."""
from __future__ import annotations

import json
import os
import time

import pytest

from sandbox.limits import Limits
from sandbox.verdict import Status
from tests.sandbox.conftest import GOOD_ADD, SHORT, Client, assert_still_healthy, children, mbpp


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
