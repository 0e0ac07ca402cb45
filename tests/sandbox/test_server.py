"""`sandbox serve` (sandbox/server.py): the wire format, validation that names the field, auth, limits, backpressure,
/healthz and /metrics, and the SIGTERM drain.

Validation and the wire format run in-process (FastAPI's TestClient over a local-backend Sandbox). Token, body caps,
the queue flood and the drain run against real `sandbox serve` subprocesses on free loopback ports (--port 0; the
port is read from uvicorn's startup line); the drain uses Docker and checks that no container of the server is left.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from sandbox import Job, Result, Sandbox, SandboxError
from sandbox.cli import main, read_token
from sandbox.server import ResultOut, create_app, field_name
from sandbox.server_settings import ServerSettings, is_loopback, require_token_off_loopback
from tests.conftest import ADD_BAD, ADD_OK
from tests.sandbox.serving import AUTH, SETTINGS, TOKEN, Server, errors_by_field, require_docker, running_server

ADD_TESTS = ["assert add(1, 2) == 3", "assert add(0, 0) == 0"]
HUMANEVAL_TEST = "def check(candidate):\n    assert candidate(2, 3) == 5\n"
SLEEP_ADD = "import time\ntime.sleep({s})\n" + ADD_OK
def job(program: str = ADD_OK, **kw) -> dict:
    return {"program": program, "format": "mbpp", "tests": ADD_TESTS, **kw}


@pytest.fixture(scope="module")
def client(local_sandbox: Sandbox) -> TestClient:
    return TestClient(create_app(local_sandbox, SETTINGS))


# --- the wire format -------------------------------------------------------------------------------------------------
def test_grade_returns_results_in_job_order_that_result_from_dict_reads_back(client: TestClient) -> None:
    jobs = [Job.mbpp(ADD_OK, ADD_TESTS, job_id="ok"), Job.mbpp(ADD_BAD, ADD_TESTS, job_id="bad"),
            Job.humaneval(ADD_OK, HUMANEVAL_TEST, "add", job_id="he"), Job.generic("def f(:", "assert f()", job_id="s")]
    response = client.post("/v1/grade", json={"jobs": [j.to_dict() for j in jobs]}, headers=AUTH)
    assert response.status_code == 200, response.text
    rows = response.json()["results"]
    assert [r["job_id"] for r in rows] == ["ok", "bad", "he", "s"]
    assert [r["status"] for r in rows] == ["passed", "failed", "passed", "syntax_error"]
    assert [r["reward"] for r in rows] == [1.0, 0.0, 1.0, 0.0]
    assert rows[1]["tests"][0] == {"name": "assert 0", "passed": False, "message": "assert add(1, 2) == 3"}
    for row in rows:
        assert Result.from_dict(row).to_dict() == row
        assert set(row) == set(ResultOut.model_fields)  # the spec documents exactly what is sent


def test_an_empty_batch_is_an_empty_answer(client: TestClient) -> None:
    response = client.post("/v1/grade", json={"jobs": []}, headers=AUTH)
    assert response.status_code == 200 and response.json() == {"results": []}


def test_a_lone_surrogate_in_a_job_id_comes_back_escaped_not_as_a_500(client: TestClient) -> None:
    body = json.dumps({"jobs": [job(job_id="x\ud800")]})  # valid JSON, not encodable as UTF-8
    response = client.post("/v1/grade", content=body, headers={**AUTH, "content-type": "application/json"})
    assert response.status_code == 200
    assert response.json()["results"][0]["job_id"] == "x\ud800"


# --- validation names the field -------------------------------------------------------------------------------------
def test_malformed_jobs_get_a_422_naming_each_bad_field(client: TestClient) -> None:
    jobs = [job(tests=[]), job(format="cobol"), {"format": "mbpp", "tests": ADD_TESTS}, job(timeout="5")]
    fields = errors_by_field(client.post("/v1/grade", json={"jobs": jobs}, headers=AUTH))
    assert set(fields) == {"jobs[0].tests", "jobs[1].format", "jobs[2].program", "jobs[3].timeout"}
    assert "'humaneval', 'mbpp' or 'generic'" in fields["jobs[1].format"]


def test_a_timeout_over_the_cap_is_refused_not_clamped(client: TestClient) -> None:
    fields = errors_by_field(client.post("/v1/grade", json={"jobs": [job(), job(timeout_s=10.5)]}, headers=AUTH))
    assert list(fields) == ["jobs[1].timeout_s"] and "10" in fields["jobs[1].timeout_s"]
    for bad in (0, -1, "2", True):
        assert "jobs[0].timeout_s" in errors_by_field(client.post("/v1/grade", json={"jobs": [job(timeout_s=bad)]},
                                                                  headers=AUTH))


def test_script_jobs_are_refused_a_forgeable_verdict_never_enters_grading(client: TestClient) -> None:
    """/run_code's mode (the program's exit code and output) must not pass for a graded verdict."""
    script = {**Job.script("print(1)", stdin="1\n").to_dict(), "tests": ADD_TESTS}
    fields = errors_by_field(client.post("/v1/grade", json={"jobs": [job(), script]}, headers=AUTH))
    assert set(fields) == {"jobs[1].format", "jobs[1].stdin", "jobs[1].files"}
    assert "'humaneval', 'mbpp' or 'generic'" in fields["jobs[1].format"]
    output_override = Job.mbpp(ADD_OK, ADD_TESTS, keep_output_bytes=1 << 20).to_dict()
    assert set(errors_by_field(client.post("/v1/grade", json={"jobs": [output_override]}, headers=AUTH))) == {
        "jobs[0].keep_output_bytes"}


def test_jobs_own_rules_are_a_422_naming_the_job(client: TestClient) -> None:
    humaneval = {"program": ADD_OK, "format": "humaneval", "tests": [HUMANEVAL_TEST], "job_id": "h"}
    fields = errors_by_field(client.post("/v1/grade", json={"jobs": [job(), humaneval]}, headers=AUTH))
    assert fields == {"jobs[1]": "job 'h': a humaneval job needs entry_point"}


def test_too_many_jobs_name_max_batch(client: TestClient) -> None:
    fields = errors_by_field(client.post("/v1/grade", json={"jobs": [job()] * 5}, headers=AUTH))
    assert fields == {"jobs": "5 jobs in one request, over this server's max-batch (4): split the batch"}


def test_program_size_is_counted_in_utf8_bytes(client: TestClient) -> None:
    long = "# " + "x" * 1000 + "\n" + ADD_OK  # over 1024 characters
    fields = errors_by_field(client.post("/v1/grade", json={"jobs": [job(long)]}, headers=AUTH))
    assert "jobs[0].program" in fields
    wide = "# " + "é" * 600 + "\n" + ADD_OK  # under 1024 characters, over 1024 bytes
    assert len(wide) < 1024 < len(wide.encode())
    fields = errors_by_field(client.post("/v1/grade", json={"jobs": [job(wide)]}, headers=AUTH))
    assert "max-program-bytes (1024)" in fields["jobs[0].program"]


def test_bodies_that_are_not_a_request_name_the_body(client: TestClient) -> None:
    headers = {**AUTH, "content-type": "application/json"}
    assert "invalid JSON" in errors_by_field(client.post("/v1/grade", content=b'{"jobs": [', headers=headers))["body"]
    not_utf8 = errors_by_field(client.post("/v1/grade", content=b'{"jobs": ["\xff"]}', headers=headers))["body"]
    assert not_utf8 == "invalid JSON: the body is not UTF-8 (invalid start byte at byte 11)"
    assert "jobs" in errors_by_field(client.post("/v1/grade", json={"job": []}, headers=AUTH))
    assert "jobs[0]" in errors_by_field(client.post("/v1/grade", json={"jobs": ["x"]}, headers=AUTH))


def test_field_names_read_like_the_request() -> None:
    assert field_name(("body", "jobs", 3, "tests")) == "jobs[3].tests"
    assert field_name(("body", "jobs", 0, "tests", 2)) == "jobs[0].tests[2]"
    assert field_name(("body",)) == "body"


def test_a_rejected_program_is_not_echoed_back(client: TestClient) -> None:
    response = client.post("/v1/grade", json={"jobs": [job(program=["secret"])]}, headers=AUTH)
    assert response.status_code == 422 and "secret" not in response.text


# --- auth, limits, health, metrics in-process ----------------------------------------------------------------------
BAD_AUTH = [{}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": f"Basic {TOKEN}"},
            {"Authorization": f"Bearer {TOKEN}x"}, {"Authorization": "Bearer é".encode("latin-1")}]


@pytest.mark.parametrize("headers", BAD_AUTH, ids=["none", "wrong", "basic", "longer", "latin1"])
def test_grading_and_metrics_need_the_token(client: TestClient, headers: dict) -> None:
    for response in (client.post("/v1/grade", json={"jobs": [job()]}, headers=headers),
                     client.get("/metrics", headers=headers)):
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert "Authorization: Bearer" in response.json()["detail"]


def test_token_is_checked_before_the_body(client: TestClient) -> None:
    """An unauthenticated client cannot make the server read (or hold) a body: 401 even for an oversized one."""
    response = client.post("/v1/grade", content=b"x" * (SETTINGS.max_body_bytes + 1))
    assert response.status_code == 401


def test_healthz_and_the_spec_are_public_and_the_spec_carries_the_caps(client: TestClient) -> None:
    health = client.get("/healthz")
    assert health.status_code == 200
    assert health.json() | {"version": "-"} == {
        "status": "ready", "backend": "local", "image": None, "workers": 2, "queue_jobs": 0, "max_queue_jobs": 8,
        "max_batch": 4, "max_timeout_s": 10.0, "default_timeout_s": 10.0, "max_program_bytes": 1024,
        "max_body_bytes": 65536, "max_output_bytes": 1048576, "version": "-"}
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    assert schemas["GradeRequest"]["properties"]["jobs"]["maxItems"] == 4
    assert schemas["GradeJob"]["properties"]["timeout_s"]["anyOf"][0]["maximum"] == 10.0
    assert spec["paths"]["/v1/grade"]["post"]["security"] == [{"HTTPBearer": []}, {"HTTPBasic": []}]
    assert "/docs" not in [route.path for route in client.app.routes]  # no UI that pulls scripts from a CDN


def test_bodies_over_the_cap_are_413_declared_or_streamed(client: TestClient) -> None:
    too_big = b"x" * (SETTINGS.max_body_bytes + 1)
    declared = client.post("/v1/grade", content=too_big, headers=AUTH)
    assert declared.status_code == 413 and "65537 bytes" in declared.json()["detail"]
    streamed = client.post("/v1/grade", content=iter([too_big[:40_000], too_big[40_000:]]), headers=AUTH)
    assert streamed.request.headers.get("transfer-encoding") == "chunked"
    assert streamed.status_code == 413 and "max-body-bytes (65536)" in streamed.json()["detail"]


def test_metrics_count_verdicts_requests_and_restarts(local_sandbox: Sandbox) -> None:
    client = TestClient(create_app(local_sandbox, SETTINGS))  # its own counters
    client.post("/v1/grade", json={"jobs": [job(), job(ADD_BAD), job()]}, headers=AUTH)
    client.post("/v1/grade", json={"jobs": [job(tests=[])]}, headers=AUTH)
    client.post("/v1/grade", json={"jobs": [job()]})
    response = client.get("/metrics", headers=AUTH)
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    lines = set(response.text.splitlines())
    for line in ('sandbox_programs_total{status="passed"} 2', 'sandbox_programs_total{status="failed"} 1',
                 'sandbox_programs_total{status="timeout"} 0', 'sandbox_requests_total{path="/v1/grade",code="200"} 1',
                 'sandbox_requests_total{path="/v1/grade",code="422"} 1',
                 'sandbox_requests_total{path="/v1/grade",code="401"} 1', 'sandbox_request_seconds_count{'
                 'path="/v1/grade"} 3', 'sandbox_request_seconds_bucket{path="/v1/grade",le="+Inf"} 3',
                 "sandbox_program_seconds_count 3", "sandbox_queue_jobs 0", "sandbox_queue_capacity_jobs 8",
                 "sandbox_workers 2", "sandbox_draining 0",
                 f"sandbox_container_restarts_total {local_sandbox.replaced_workers}"):
        assert line in lines, line
    assert "# TYPE sandbox_request_seconds histogram" in lines


def test_a_sandbox_without_workers_is_a_503_and_healthz_says_unavailable() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        sandbox = Sandbox(backend="local", workers=1)
    client = TestClient(create_app(sandbox, SETTINGS))
    sandbox.close()
    response = client.post("/v1/grade", json={"jobs": [job()]}, headers=AUTH)
    assert response.status_code == 503 and "closed" in response.json()["detail"]
    health = client.get("/healthz")
    assert health.status_code == 503 and health.json()["status"] == "unavailable"
    assert client.app.state.grader.queue_jobs == 0


# --- settings, binding and the token -------------------------------------------------------------------------------
def test_settings_refuse_what_cannot_work(local_sandbox: Sandbox) -> None:
    with pytest.raises(ValueError, match="max_queue_jobs .* must be >= max_jobs_per_request"):
        ServerSettings(max_jobs_per_request=10, max_queue_jobs=5)
    with pytest.raises(ValueError, match="fewer than 16"):
        ServerSettings(token="short")
    with pytest.raises(ValueError, match="whitespace"):
        ServerSettings(token="0123456789 abcdefgh")
    with pytest.raises(ValueError, match="max_timeout_s must be > 0"):
        ServerSettings(max_timeout_s=0)
    with pytest.raises(ValueError, match="default timeout"):
        create_app(local_sandbox, ServerSettings(max_timeout_s=5.0))  # jobs without timeout_s would get 10 s
    assert TOKEN not in repr(SETTINGS)


def test_only_loopback_may_be_bound_without_a_token() -> None:
    for host in ("127.0.0.1", "127.8.0.1", "::1", "localhost"):
        assert is_loopback(host), host
        require_token_off_loopback(host, None)
    for host in ("0.0.0.0", "::", "192.0.2.1"):
        assert not is_loopback(host)
        with pytest.raises(SandboxError, match="without a token") as refused:
            require_token_off_loopback(host, None)
        assert "--token-file" in refused.value.hint and "SANDBOX_TOKEN" in refused.value.hint
        require_token_off_loopback(host, TOKEN)


def test_serve_refuses_a_public_address_without_a_token_before_starting(capsys, monkeypatch) -> None:
    monkeypatch.delenv("SANDBOX_TOKEN", raising=False)
    assert main(["serve", "--host", "0.0.0.0", "--backend", "local"]) == 1
    err = capsys.readouterr().err
    assert "refusing to listen on '0.0.0.0' without a token" in err
    assert "hint: make one (`openssl rand -hex 32 > grader.token`) and pass --token-file grader.token" in err


def test_the_token_comes_from_the_file_or_the_environment(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "token"
    path.write_text(f"  {TOKEN}\n")
    monkeypatch.delenv("SANDBOX_TOKEN", raising=False)
    assert read_token(path) == TOKEN
    assert read_token(None) is None
    monkeypatch.setenv("SANDBOX_TOKEN", f"{TOKEN}\n")
    assert read_token(None) == TOKEN
    assert "SANDBOX_TOKEN" not in os.environ  # taken out: the workers and their children never see it
    monkeypatch.setenv("SANDBOX_TOKEN", TOKEN)
    with pytest.raises(SandboxError, match="both --token-file and \\$SANDBOX_TOKEN"):
        read_token(path)
    path.write_text("\n")
    with pytest.raises(SandboxError, match="is empty"):
        read_token(path)


# --- real servers ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A local-backend server with small caps: 2 workers, 4 jobs per request, 4 in the queue, 64 KiB bodies."""
    tmp = tmp_path_factory.mktemp("server")
    (tmp / "token").write_text(TOKEN + "\n")
    with running_server(tmp, "--backend", "local", "--workers", "2", "--token-file", str(tmp / "token"), "--max-batch",
                        "4", "--max-queue", "4", "--max-body-bytes", "65536", "--max-timeout", "10") as running:
        yield running


def grade(server: Server, jobs: list[dict], headers: dict = AUTH, timeout: float = 30) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/grade", json={"jobs": jobs}, headers=headers, timeout=timeout)


def assert_serving(server: Server) -> None:
    response = grade(server, [job()])
    assert response.status_code == 200 and response.json()["results"][0]["status"] == "passed", response.text


def test_a_real_server_refuses_requests_without_the_token(server: Server) -> None:
    for headers in ({}, {"Authorization": "Bearer nope-nope-nope-nope"}):
        response = grade(server, [job()], headers=headers)
        assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
    assert httpx.get(f"{server.url}/metrics").status_code == 401
    assert httpx.get(f"{server.url}/healthz").json()["max_batch"] == 4
    assert_serving(server)


def test_a_real_server_answers_oversized_bodies_413_and_keeps_serving(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1])), timeout=10) as sock:
        sock.sendall(f"POST /v1/grade HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: "
                     "application/json\r\nContent-Length: 1000000000\r\n\r\n".encode())
        assert sock.recv(4096).startswith(b"HTTP/1.1 413 ")  # answered from the header alone: no body was sent
    chunks = (b" " * 8192 for _ in range(1000))  # 8 MB, chunked, no Content-Length
    headers = {**AUTH, "content-type": "application/json"}
    response = httpx.post(f"{server.url}/v1/grade", content=chunks, headers=headers)
    assert response.status_code == 413 and "max-body-bytes (65536)" in response.json()["detail"]
    assert_serving(server)


def test_a_real_server_names_the_bad_field_and_keeps_serving(server: Server) -> None:
    response = grade(server, [job(), job(), job(timeout_s=11)])
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["detail"]] == ["jobs[2].timeout_s"]
    assert_serving(server)


def test_a_flood_past_the_queue_gets_429_with_retry_after_and_the_server_keeps_serving(server: Server) -> None:
    first: dict[str, httpx.Response] = {}
    holder = threading.Thread(target=lambda: first.setdefault("r", grade(server, [job(SLEEP_ADD.format(s=1.5))] * 4)))
    holder.start()
    deadline = time.monotonic() + 20
    while httpx.get(f"{server.url}/healthz").json()["queue_jobs"] < 4:
        assert time.monotonic() < deadline, "the first request was never admitted"
        time.sleep(0.02)
    flood: list[httpx.Response] = []
    threads = [threading.Thread(target=lambda: flood.append(grade(server, [job()]))) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [r.status_code for r in flood] == [429] * 12
    assert all(int(r.headers["retry-after"]) >= 1 for r in flood)
    assert "max-queue (4)" in flood[0].json()["detail"]
    holder.join()
    assert first["r"].status_code == 200
    assert [r["status"] for r in first["r"].json()["results"]] == ["passed"] * 4
    assert_serving(server)
    metrics = httpx.get(f"{server.url}/metrics", headers=AUTH).text
    assert 'sandbox_requests_total{path="/v1/grade",code="429"} 12' in metrics


@pytest.fixture
def docker_ready() -> None:
    require_docker()


def containers_of(pid: int) -> list[str]:
    """Names of score-sandbox containers whose owner label names process `pid` on this host."""
    out = subprocess.run(["docker", "ps", "-a", "--filter", "label=score-sandbox", "--format",
                          '{{.Names}}\t{{.Label "score-sandbox.owner"}}'], capture_output=True, text=True, check=True)
    rows = [line.split("\t") for line in out.stdout.splitlines()]
    return [name for name, owner in rows if owner.startswith(f"{socket.gethostname()}:{pid}:")]


@pytest.mark.docker
def test_sigterm_drains_in_flight_jobs_refuses_new_ones_and_leaves_no_container(tmp_path: Path,
                                                                                   docker_ready: None) -> None:
    with running_server(tmp_path, "--backend", "docker", "--workers", "1") as server:
        assert containers_of(server.proc.pid), "the server's worker container is not there to be removed"
        answer: dict[str, httpx.Response] = {}
        slow = threading.Thread(target=lambda: answer.setdefault("r", grade(server, [job(SLEEP_ADD.format(s=2))],
                                                                            headers={})))
        slow.start()
        while httpx.get(f"{server.url}/healthz").json()["queue_jobs"] == 0:
            time.sleep(0.02)
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)  # the next tick of the server's loop notices
        health = httpx.get(f"{server.url}/healthz")
        assert health.status_code == 503 and health.json()["status"] == "draining"
        refused = grade(server, [job()], headers={})
        assert refused.status_code == 503 and int(refused.headers["retry-after"]) >= 1
        assert "draining" in refused.json()["detail"]
        slow.join()
        assert answer["r"].status_code == 200, answer["r"].text
        assert answer["r"].json()["results"][0]["status"] == "passed"
        assert server.proc.wait(timeout=30) == 0, server.log.read_text()
        assert containers_of(server.proc.pid) == []
        assert "stopped; the sandbox is closed" in server.log.read_text()
