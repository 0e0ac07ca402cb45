"""The warm pool: order, concurrency, recycling, hung/dead workers, stale containers, nothing left after close.

Unit tests drive the pool with a protocol-compatible fake executor (job.program is a command, not Python), so
they test the pool alone and take seconds. The `docker` tests use the real image and the real executor.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from sandbox import Job, Limits, Sandbox, SandboxError, Status
from sandbox.docker_backend import executor_path
from sandbox.pool import Pool, WorkerProcess

FAKE_EXECUTOR = r'''
import json, os, sys, time
print(json.dumps({"ready": True, "version": "fake", "pid": os.getpid()}), flush=True)
for line in sys.stdin:
    req = json.loads(line)
    if req.get("op") == "ping":
        print(json.dumps({"op": "pong"}), flush=True)
        continue
    cmd = req["job"]["program"]
    status, out = "passed", ""
    if cmd.startswith("sleep:"):
        time.sleep(float(cmd.split(":", 1)[1]))
    elif cmd == "hang":
        time.sleep(3600)
    elif cmd == "die":
        os._exit(3)
    elif cmd.startswith("die-once:"):  # dies the first time (leaves a flag file), passes on the retry
        flag = cmd.split(":", 1)[1]
        if not os.path.exists(flag):
            open(flag, "w").close()
            os._exit(3)
    elif cmd == "garbage":
        print("this is not json", flush=True)
        continue
    elif cmd == "timeout":
        status = "timeout"
    out = str(os.getpid())
    print(json.dumps({"id": req["id"], "status": status, "expected_tests": 1, "stdout": out,
                      "tests": [{"name": "check", "passed": status == "passed"}]}), flush=True)
'''


@pytest.fixture
def fake_spawn(tmp_path: Path):
    script = tmp_path / "fake_executor.py"
    script.write_text(FAKE_EXECUTOR)
    return lambda: WorkerProcess([sys.executable, "-u", str(script)], name="fake")


def make_pool(spawn, size: int = 2, **limits) -> Pool:
    return Pool(spawn, size, Limits(**{"timeout_s": 1.0, **limits}), grace_s=0.5)


def job(cmd: str, job_id: str = "") -> Job:
    return Job.generic(cmd, "unused by the fake executor", job_id=job_id)


def test_batch_results_come_back_in_input_order(fake_spawn):
    pool = make_pool(fake_spawn)
    try:
        jobs = [job(f"sleep:{d}", job_id=str(i)) for i, d in enumerate([0.3, 0.0, 0.2, 0.0, 0.1])]
        results = pool.run_batch(jobs)
    finally:
        pool.close()
    assert [r.job_id for r in results] == ["0", "1", "2", "3", "4"]
    assert all(r.status is Status.PASSED for r in results)


def test_batch_runs_concurrently_over_workers(fake_spawn):
    pool = make_pool(fake_spawn, size=2)
    try:
        start = time.monotonic()
        pool.run_batch([job("sleep:0.4")] * 4)
        elapsed_s = time.monotonic() - start
    finally:
        pool.close()
    assert elapsed_s < 1.4, f"4 x 0.4 s on 2 workers took {elapsed_s:.2f} s: not concurrent"


def test_progress_is_called_once_per_job(fake_spawn):
    pool = make_pool(fake_spawn)
    calls = []
    try:
        pool.run_batch([job("sleep:0")] * 5, progress=lambda done, total, r: calls.append((done, total)))
    finally:
        pool.close()
    assert calls == [(i, 5) for i in range(1, 6)]


def test_worker_is_recycled_after_programs_per_container(fake_spawn):
    pool = make_pool(fake_spawn, size=1, programs_per_container=3)
    try:
        pids = [pool.run(job("pid")).stdout for _ in range(7)]
    finally:
        pool.close()
    assert [pids.count(p) for p in dict.fromkeys(pids)] == [3, 3, 1]


def test_worker_is_recycled_after_a_limit_violation(fake_spawn):
    pool = make_pool(fake_spawn, size=1)
    try:
        first = pool.run(job("timeout"))
        second = pool.run(job("pid"))
    finally:
        pool.close()
    assert first.status is Status.TIMEOUT
    assert first.stdout != second.stdout, "the worker that hit a limit served the next program"


def test_hung_worker_gives_sandbox_error_after_one_retry(fake_spawn):
    pool = make_pool(fake_spawn, size=2)
    try:
        start = time.monotonic()
        result = pool.run(job("hang"))
        elapsed_s = time.monotonic() - start
    finally:
        pool.close()
    assert result.status is Status.SANDBOX_ERROR
    assert result.error.count("did not answer before the deadline") == 2, result.error
    assert elapsed_s < 2 * (1.0 + 0.5) + 1.5, f"took {elapsed_s:.1f} s"


def test_pool_keeps_serving_after_hung_and_dead_workers(fake_spawn):
    pool = make_pool(fake_spawn, size=2)
    try:
        assert pool.run(job("hang")).status is Status.SANDBOX_ERROR
        assert pool.run(job("die")).status is Status.SANDBOX_ERROR
        results = pool.run_batch([job("sleep:0")] * 6)
    finally:
        pool.close()
    assert [r.status for r in results] == [Status.PASSED] * 6
    assert pool.replaced >= 4


def test_worker_dying_mid_program_is_replaced_and_job_retried(fake_spawn, tmp_path):
    pool = make_pool(fake_spawn, size=1)
    try:
        result = pool.run(job(f"die-once:{tmp_path / 'flag'}"))
    finally:
        pool.close()
    assert result.status is Status.PASSED
    assert pool.replaced == 1


def test_unreadable_response_counts_as_worker_failure(fake_spawn):
    pool = make_pool(fake_spawn, size=1)
    try:
        result = pool.run(job("garbage"))
        after = pool.run(job("sleep:0"))
    finally:
        pool.close()
    assert result.status is Status.SANDBOX_ERROR and "unreadable response" in result.error
    assert after.status is Status.PASSED


def test_worker_that_never_becomes_ready_fails_pool_start_with_its_stderr():
    def spawn() -> WorkerProcess:
        return WorkerProcess([sys.executable, "-c", "import sys; sys.stderr.write('no executor here'); sys.exit(2)"],
                             name="broken")

    with pytest.raises(SandboxError, match="no executor here"):
        Pool(spawn, 1, Limits())


def test_round_trip_pings_an_idle_worker(fake_spawn):
    pool = make_pool(fake_spawn, size=1)
    try:
        times_s = pool.round_trip_s(5)
        after = pool.run(job("sleep:0"))
    finally:
        pool.close()
    assert len(times_s) == 5 and all(0 < t < 1 for t in times_s)
    assert after.status is Status.PASSED, "the worker must go back to the pool after the pings"


def test_pool_that_cannot_replace_its_workers_raises_instead_of_hanging(tmp_path):
    script = tmp_path / "fake_executor.py"
    script.write_text(FAKE_EXECUTOR)
    starts = []

    def spawn_once() -> WorkerProcess:
        starts.append(1)
        argv = [sys.executable, "-u", str(script)] if len(starts) == 1 else [sys.executable, "-c", "pass"]
        return WorkerProcess(argv, name=f"once-{len(starts)}")

    pool = make_pool(spawn_once, size=1)
    try:
        with pytest.raises(SandboxError, match="no sandbox workers are left"):
            pool.run(job("die"))
    finally:
        pool.close()


def test_run_after_close_raises(fake_spawn):
    pool = make_pool(fake_spawn, size=1)
    pool.close()
    with pytest.raises(SandboxError, match="closed"):
        pool.run(job("sleep:0"))


def test_close_stops_every_worker_process(fake_spawn):
    pool = make_pool(fake_spawn, size=2)
    procs = [w.proc for w in pool._workers]
    pool.close()
    assert all(p.poll() is not None for p in procs)


# --- the protocol channel: a socket the worker connects to, or stdin/stdout -------------------------------------
ADD = "def add(a, b):\n    return a + b\n"
ADD_TEST = "assert add(2, 3) == 5\n"


def socket_worker(tmp_path: Path, connect: str) -> tuple[WorkerProcess, str]:
    """A real local executor told to connect to `connect`, with a listener bound at tmp_path/w.sock."""
    path = str(tmp_path / "w.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    argv = [sys.executable, "-u", str(executor_path()), "--mode", "local", "--connect", connect or path]
    return WorkerProcess(argv, name="sock", listener=listener), path


def test_worker_speaks_over_the_socket_and_nothing_else_can_connect_after_it(tmp_path):
    worker, path = socket_worker(tmp_path, connect="")
    pool = Pool(lambda: worker, 1, Limits(timeout_s=5.0))
    try:
        assert worker.channel == "socket"
        assert not os.path.exists(path), "the socket must be unlinked once the executor connected"
        ok, bad = pool.run(Job.generic(ADD, ADD_TEST)), pool.run(Job.generic(ADD.replace("+", "-"), ADD_TEST))
        assert (ok.status, bad.status) == (Status.PASSED, Status.FAILED)
    finally:
        pool.close()
    assert worker.proc.poll() is not None, "closing the socket must end the executor"


def test_worker_falls_back_to_stdio_when_the_socket_is_out_of_reach(tmp_path):
    worker, path = socket_worker(tmp_path, connect=str(tmp_path / "elsewhere.sock"))
    pool = Pool(lambda: worker, 1, Limits(timeout_s=5.0))
    try:
        assert worker.channel == "stdio"
        assert pool.run(Job.generic(ADD, ADD_TEST)).status is Status.PASSED
        assert "cannot connect" in worker.stderr_tail()
        assert not os.path.exists(path)
    finally:
        pool.close()


def test_worker_restarts_on_stdio_when_its_process_ends_before_connecting(tmp_path):
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(tmp_path / "w.sock"))
    listener.listen(1)
    reasons = []
    cannot_mount = [sys.executable, "-c", "import sys; sys.exit('bind source path does not exist')"]
    stdio = [sys.executable, "-u", str(executor_path()), "--mode", "local"]
    worker = WorkerProcess(cannot_mount, name="mountless", listener=listener, stdio_argv=stdio, on_stdio=reasons.append)
    pool = Pool(lambda: worker, 1, Limits(timeout_s=5.0))
    try:
        assert worker.channel == "stdio"
        assert pool.run(Job.generic(ADD, ADD_TEST)).status is Status.PASSED
    finally:
        pool.close()
    assert reasons == ["bind source path does not exist"]


# --- Docker ------------------------------------------------------------------------------------------------------


def containers(label: str) -> list[str]:
    out = subprocess.run(["docker", "ps", "-aq", "--filter", f"label={label}"], capture_output=True, text=True,
                         check=True).stdout
    return out.split()


@pytest.fixture
def own_docker_sandbox(docker_sandbox):
    """A private 2-worker Docker sandbox (after docker_sandbox proved Docker and the image are there)."""
    with Sandbox(backend="docker", workers=2, limits=Limits(programs_per_container=3)) as sb:
        yield sb


@pytest.mark.docker
def test_docker_batch_in_order_and_all_pass(docker_sandbox):
    jobs = [Job.generic(ADD, f"assert add({i}, 1) == {i + 1}\n", job_id=str(i)) for i in range(8)]
    results = docker_sandbox.run_batch(jobs)
    assert [r.job_id for r in results] == [str(i) for i in range(8)]
    assert [r.status for r in results] == [Status.PASSED] * 8


@pytest.mark.docker
def test_docker_workers_speak_over_a_bind_mounted_socket_that_is_gone_from_the_host(own_docker_sandbox):
    assert [w.channel for w in own_docker_sandbox._pool._workers] == ["socket", "socket"]
    assert os.listdir(own_docker_sandbox._spawner._socket_dir) == [], "accepted sockets must be unlinked"


@pytest.mark.docker
def test_engine_that_cannot_mount_the_socket_falls_back_to_stdio_with_a_warning(engine_without_socket_mounts):
    with pytest.warns(RuntimeWarning, match="could not start a sandbox container with its protocol socket"):
        sb = Sandbox(backend="docker", workers=2, limits=Limits(programs_per_container=1))
    with sb:
        assert [w.channel for w in sb._pool._workers] == ["stdio", "stdio"]
        results = sb.run_batch([Job.generic(ADD, ADD_TEST)] * 3)  # each worker is recycled after one program
        assert [r.status for r in results] == [Status.PASSED] * 3
        assert not sb._spawner._mount_sockets


@pytest.mark.docker
def test_docker_container_recycled_after_programs_per_container(own_docker_sandbox):
    before = own_docker_sandbox.replaced_workers
    results = own_docker_sandbox.run_batch([Job.generic(ADD, ADD_TEST)] * 8)
    assert all(r.status is Status.PASSED for r in results)
    assert own_docker_sandbox.replaced_workers - before >= 2  # 8 programs, 3 per container


@pytest.mark.docker
def test_docker_container_killed_mid_program_is_replaced_and_job_retried(docker_sandbox):
    with Sandbox(backend="docker", workers=1) as sb:
        victim = containers(f"score-sandbox.owner={sb._spawner.owner}")
        program = "import time\ntime.sleep(1.5)\n" + ADD
        killer = threading.Timer(0.7, lambda: subprocess.run(["docker", "kill", *victim], capture_output=True))
        killer.start()
        result = sb.run(Job.generic(program, ADD_TEST, timeout_s=5))
        killer.join()
        assert result.status is Status.PASSED, result.error
        assert sb.replaced_workers == 1
        assert containers(f"score-sandbox.owner={sb._spawner.owner}") != victim
        assert sb.run(Job.generic(ADD, ADD_TEST)).status is Status.PASSED


@pytest.mark.docker
def test_docker_hung_worker_is_killed_at_the_pool_deadline_and_job_retried(docker_sandbox):
    with Sandbox(backend="docker", workers=1, grace_s=1.0) as sb:
        victim = containers(f"score-sandbox.owner={sb._spawner.owner}")
        # SIGSTOP every process of the sandbox user in the container: the executor can no longer answer
        freeze = threading.Timer(0.5, lambda: subprocess.run(
            ["docker", "exec", *victim, "sh", "-c", "kill -STOP -1"], capture_output=True))
        freeze.start()
        start = time.monotonic()
        result = sb.run(Job.generic("import time\ntime.sleep(1.5)\n" + ADD, ADD_TEST, timeout_s=2))
        elapsed_s = time.monotonic() - start
        freeze.join()
        assert result.status is Status.PASSED, result.error
        assert sb.replaced_workers == 1
        assert 3.0 <= elapsed_s < 15, f"the retry should start at the pool deadline (3 s), took {elapsed_s:.1f} s"
        assert containers(f"score-sandbox.owner={sb._spawner.owner}") != victim


@pytest.mark.docker
def test_no_container_left_after_close(docker_sandbox):
    sb = Sandbox(backend="docker", workers=2)
    owner = sb._spawner.owner
    assert len(containers(f"score-sandbox.owner={owner}")) == 2
    sb.run(Job.generic(ADD, ADD_TEST))
    sb.close()
    assert containers(f"score-sandbox.owner={owner}") == []


@pytest.mark.docker
def test_stale_container_of_dead_owner_is_removed_at_start(docker_sandbox):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    owner = f"{os.uname().nodename}:{dead.pid}:stale{dead.pid}"
    live_owner = f"{os.uname().nodename}:{os.getpid()}:liveowner"
    started = []
    for label in (owner, live_owner):
        started.append(subprocess.run(
            ["docker", "run", "-d", "--rm", "--network", "none", "--label", "score-sandbox=1",
             "--label", f"score-sandbox.owner={label}", "--label", f"score-sandbox.started={time.time() - 5:.3f}",
             docker_sandbox.image, "sleep", "300"], capture_output=True, text=True, check=True).stdout.strip())
    try:
        with Sandbox(backend="docker", workers=1):
            assert containers(f"score-sandbox.owner={owner}") == []
            assert len(containers(f"score-sandbox.owner={live_owner}")) == 1, "a live owner's container was removed"
    finally:
        subprocess.run(["docker", "rm", "-f", *started], capture_output=True)


@pytest.mark.docker
def test_missing_image_raises_sandbox_unavailable_with_hint(docker_sandbox):
    from sandbox import SandboxUnavailable

    with pytest.raises(SandboxUnavailable) as info:
        Sandbox(backend="docker", workers=1, image="score-sandbox:does-not-exist")
    assert "not found" in str(info.value) and info.value.hint


def test_docker_backend_without_docker_cli_raises_unavailable_not_local(monkeypatch, tmp_path):
    from sandbox import SandboxUnavailable

    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no docker binary
    with pytest.raises(SandboxUnavailable, match="docker CLI was not found") as info:
        Sandbox(backend="docker", workers=1)
    assert "install Docker" in info.value.hint


def test_docker_backend_with_unreachable_engine_says_how_to_start_it(monkeypatch, tmp_path):
    from sandbox import SandboxUnavailable

    if shutil.which("docker") is None:
        pytest.skip("needs the docker CLI (not the engine)")
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-such.sock")
    with pytest.raises(SandboxUnavailable, match="not reachable") as info:
        Sandbox(backend="docker", workers=1)
    assert "dockerd" in info.value.hint


def test_unknown_backend_is_a_value_error():
    with pytest.raises(ValueError, match="unknown sandbox backend"):
        Sandbox(backend="podman")  # type: ignore[arg-type]



@pytest.mark.docker
def test_containers_go_away_when_the_owner_is_killed(docker_sandbox):
    owner_proc = subprocess.Popen(
        [sys.executable, "-c", "import time\nfrom sandbox import Sandbox\nsb = Sandbox(backend='docker', workers=1)\n"
         "print(sb._spawner.owner, flush=True)\ntime.sleep(120)\n"], stdout=subprocess.PIPE, text=True,
        cwd=Path(__file__).resolve().parents[2])
    owner = owner_proc.stdout.readline().strip()
    assert containers(f"score-sandbox.owner={owner}"), "the owner did not start its container"
    owner_proc.kill()  # SIGKILL: no atexit, no close()
    owner_proc.wait()
    deadline = time.monotonic() + 20
    while containers(f"score-sandbox.owner={owner}") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert containers(f"score-sandbox.owner={owner}") == [], "a container outlived its SIGKILLed owner"


# --- local backend --------------------------------------------------------------------------------------------
def test_local_backend_grades_programs(local_sandbox):
    ok, bad = local_sandbox.run_batch([Job.generic(ADD, ADD_TEST), Job.generic(ADD.replace("+", "-"), ADD_TEST)])
    assert (ok.status, bad.status) == (Status.PASSED, Status.FAILED)
