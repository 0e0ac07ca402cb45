"""`sandbox serve`'s POST /run_code (SandboxFusion's API, python): validation and mapping in-process over a local
Sandbox, then a real `sandbox serve --backend docker` answering verl's requests as verl would score them.

verl's payload and its reading of an answer (`verl_payload`, `verl_outcome`) are in tests/sandbox/verl_client.py.
"""
from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import requests
from fastapi.testclient import TestClient

from sandbox import Job, Sandbox
from sandbox.server import create_app
from sandbox.server_settings import ServerSettings
from tests.sandbox.serving import AUTH, SETTINGS, TOKEN, Server, errors_by_field, require_docker, running_server
from tests.sandbox.verl_client import verl_outcome, verl_payload

BIG = "import sys\nsys.stdout.write('x' * 200_000 + '\\n')\n"  # 200 KB: past the 8 KiB Limits keep


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.fixture(scope="module")
def client(local_sandbox: Sandbox) -> TestClient:
    return TestClient(create_app(local_sandbox, SETTINGS))


def run_code(client: TestClient, code: str, headers: dict = AUTH, **fields) -> dict:
    response = client.post("/run_code", json={**verl_payload(code), **fields}, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


# --- in-process: the mapping -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("code, stdin, expected, outcome", [
    ("print(input()[::-1])", "abc\n", "cba", True),
    ("print(input())", "abc\n", "cba", False),
    ("import sys\nprint('partial')\nsys.exit(3)\n", None, "partial", -2),
    ("raise ValueError('no')\n", None, "", -2),
    ("import time\ntime.sleep(5)\n", None, "", -3),
])
def test_verl_scores_answers_over_http_as_it_scores_sandbox_fusions(client: TestClient, code, stdin, expected,
                                                                     outcome) -> None:
    body = run_code(client, code, stdin=stdin, run_timeout=1)
    assert verl_outcome(body, expected) == outcome, body


def test_a_script_runs_as_main_with_its_stdin_and_files(client: TestClient) -> None:
    code = ("import sys\nif __name__ == '__main__':\n    data = sys.stdin.read()\n"
            "    print(data.upper() + open('in/data.txt').read())\n    sys.exit(3)\n")
    body = run_code(client, code, stdin="abc", files={"in/data.txt": b64("from a file"), "unused": None})
    assert (body["status"], body["message"]) == ("Failed", "")
    run = body["run_result"]
    assert (run["status"], run["return_code"], run["stdout"]) == ("Finished", 3, "ABCfrom a file\n")
    assert run["execution_time"] > 0


def test_a_timeout_is_time_limit_exceeded_without_a_return_code(client: TestClient) -> None:
    body = run_code(client, "print('started', flush=True)\nwhile True:\n    pass\n", run_timeout=0.5)
    assert body["status"] == "Failed" and body["run_result"]["status"] == "TimeLimitExceeded"
    assert body["run_result"]["return_code"] is None and body["run_result"]["stdout"] == "started\n"


def test_run_timeout_over_the_cap_is_cut_and_the_message_says_so(client: TestClient) -> None:
    body = run_code(client, "import time\ntime.sleep(0.2)\nprint('ok')", run_timeout=SETTINGS.max_timeout_s + 20)
    assert body["status"] == "Success" and body["run_result"]["stdout"] == "ok\n"
    assert body["message"] == "run_timeout 30 s is over this server's max-timeout: the program ran with 10 s"
    assert run_code(client, "pass", run_timeout=SETTINGS.max_timeout_s)["message"] == ""


def test_run_code_keeps_max_output_bytes_while_grading_keeps_the_limits_cut(client: TestClient) -> None:
    assert run_code(client, BIG)["run_result"]["stdout"] == "x" * 200_000 + "\n"
    graded = Job.generic(BIG + "def f():\n    return 1\n", "assert f() == 1").to_dict()
    result = client.post("/v1/grade", json={"jobs": [graded]}, headers=AUTH).json()["results"][0]
    assert result["status"] == "passed" and len(result["stdout"]) == 8 * 1024 and result["output_bytes"] == 200_001


def test_output_past_max_output_bytes_is_cut(local_sandbox: Sandbox) -> None:
    small = TestClient(create_app(local_sandbox, ServerSettings(max_output_bytes=1000, token=TOKEN)))
    assert run_code(small, BIG)["run_result"]["stdout"] == "x" * 1000


# --- in-process: errors ----------------------------------------------------------------------------------------------
def test_requests_that_cannot_run_get_a_422_naming_each_field(client: TestClient) -> None:
    bad = {"language": "cpp", "stdin": 5, "run_timeout": 0, "memory_limit_MB": False, "files": {"../up": b64("x")},
           "fetch_files": ["out"]}
    fields = errors_by_field(client.post("/run_code", json={**verl_payload("pass"), **bad}, headers=AUTH))
    assert set(fields) == set(bad)
    assert "'python'" in fields["language"] and "contains '..'" in fields["files"]
    assert "no files come back" in fields["fetch_files"]
    fields = errors_by_field(client.post("/run_code", json={**verl_payload(3), "files": {"a": "%%"}}, headers=AUTH))
    assert set(fields) == {"code", "files"} and "files['a'] is not valid base64" in fields["files"]
    assert set(errors_by_field(client.post("/run_code", json={"language": "python"}, headers=AUTH))) == {"code"}
    surrogate = b'{"code": "pass", "language": "python", "files": {"a\\ud800": "eA=="}}'  # valid JSON, no file name
    json_auth = {**AUTH, "content-type": "application/json"}
    fields = errors_by_field(client.post("/run_code", content=surrogate, headers=json_auth))
    assert "is not valid UTF-8" in fields["files"]


def test_code_is_held_to_max_program_bytes(client: TestClient) -> None:
    wide = "# " + "é" * 600 + "\nprint(1)\n"  # under 1024 characters, over 1024 bytes
    fields = errors_by_field(client.post("/run_code", json=verl_payload(wide), headers=AUTH))
    assert "max-program-bytes (1024)" in fields["code"]


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong-token-0123456789"},
                                     {"Authorization": f"Basic {b64('verl:wrong-token-0123456789')}"},
                                     {"Authorization": f"Basic {b64(TOKEN)}"}],  # no user:password colon
                         ids=["none", "wrong", "basic-wrong", "basic-no-colon"])
def test_run_code_needs_the_token(client: TestClient, headers: dict) -> None:
    response = client.post("/run_code", json=verl_payload("print(1)"), headers=headers)
    assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"


def test_the_token_may_come_as_the_basic_password_of_the_url(client: TestClient) -> None:
    response = client.post("/run_code", json=verl_payload("print(1)"), auth=("verl", TOKEN))
    assert response.status_code == 200 and response.json()["status"] == "Success"


def test_a_full_queue_is_429_and_draining_is_503(local_sandbox: Sandbox) -> None:
    settings = ServerSettings(max_jobs_per_request=1, max_queue_jobs=1, token=TOKEN)
    app = create_app(local_sandbox, settings)
    held: dict[str, httpx.Response] = {}
    holder = threading.Thread(target=lambda: held.setdefault("r", TestClient(app).post(
        "/run_code", json=verl_payload("import time\ntime.sleep(1.5)"), headers=AUTH)))
    holder.start()
    deadline = time.monotonic() + 20
    while app.state.grader.queue_jobs < 1:
        assert time.monotonic() < deadline, "the first request was never admitted"
        time.sleep(0.02)
    full = TestClient(app).post("/run_code", json=verl_payload("print(1)"), headers=AUTH)
    assert full.status_code == 429 and int(full.headers["retry-after"]) >= 1 and "max-queue (1)" in full.text
    holder.join()
    assert held["r"].status_code == 200 and held["r"].json()["status"] == "Success"
    app.state.grader.draining = True
    refused = TestClient(app).post("/run_code", json=verl_payload("print(1)"), headers=AUTH)
    assert refused.status_code == 503 and "draining" in refused.json()["detail"]


def test_metrics_count_run_code_requests_programs_and_latency(local_sandbox: Sandbox) -> None:
    client = TestClient(create_app(local_sandbox, SETTINGS))  # its own counters
    run_code(client, "print(1)")
    run_code(client, "raise SystemExit(2)")
    client.post("/run_code", json={"code": "pass"}, headers=AUTH)
    lines = set(client.get("/metrics", headers=AUTH).text.splitlines())
    for line in ('sandbox_requests_total{path="/run_code",code="200"} 2',
                 'sandbox_requests_total{path="/run_code",code="422"} 1',
                 'sandbox_request_seconds_count{path="/run_code"} 3', 'sandbox_programs_total{status="passed"} 1',
                 'sandbox_programs_total{status="runtime_error"} 1', "sandbox_program_seconds_count 2"):
        assert line in lines, line


def test_the_spec_documents_run_code_with_its_caps(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    operation = spec["paths"]["/run_code"]["post"]
    assert set(operation["responses"]) == {"200", "401", "413", "422", "429", "503"}
    assert operation["security"] == [{"HTTPBearer": []}, {"HTTPBasic": []}]
    assert spec["components"]["schemas"]["RunCodeRequest"]["properties"]["code"]["maxLength"] == 1024
    assert client.get("/healthz").json()["max_output_bytes"] == SETTINGS.max_output_bytes


def test_settings_bound_max_output_bytes() -> None:
    with pytest.raises(ValueError, match="max_output_bytes must be > 0"):
        ServerSettings(max_output_bytes=0)
    with pytest.raises(ValueError, match=r"max_output_bytes \(4194305\) is over 4194304"):
        ServerSettings(max_output_bytes=4 * 1024 * 1024 + 1)


# --- a real server over Docker -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def docker_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`sandbox serve --backend docker` with one worker and the token; fails under CI without Docker."""
    require_docker()
    tmp = tmp_path_factory.mktemp("run-code")
    (tmp / "token").write_text(TOKEN + "\n")
    with running_server(tmp, "--backend", "docker", "--workers", "1", "--token-file", str(tmp / "token"),
                        "--max-timeout", "5", "--timeout", "5") as running:
        yield running


def post(server: Server, code: str, auth: tuple[str, str] | None = ("verl", TOKEN), **fields) -> requests.Response:
    """As verl posts (requests, the token in the URL's user:password as `sandbox_fusion.url` would carry it)."""
    url = server.url.replace("http://", f"http://{auth[0]}:{auth[1]}@") if auth else server.url
    return requests.post(f"{url}/run_code", json={**verl_payload(code), **fields}, timeout=60)


@pytest.mark.docker
def test_docker_run_code_needs_the_token(docker_server: Server) -> None:
    assert post(docker_server, "print(1)", auth=None).status_code == 401
    assert post(docker_server, "print(1)", auth=("verl", "wrong-token-0123456789")).status_code == 401
    assert post(docker_server, "print(1)").json()["status"] == "Success"


@pytest.mark.docker
@pytest.mark.parametrize("code, stdin, expected, outcome", [
    ("a, b = map(int, input().split())\nprint(a + b)\n", "2 3\n", "5", True),
    ("a, b = map(int, input().split())\nprint(a - b)\n", "2 3\n", "5", False),
    ("print(1 / 0)\n", None, "", -2),
    ("print(\n", None, "", -2),
])
def test_docker_verl_scores_as_with_sandbox_fusion(docker_server: Server, code, stdin, expected, outcome) -> None:
    body = post(docker_server, code, stdin=stdin).json()
    assert verl_outcome(body, expected) == outcome, body


@pytest.mark.docker
def test_docker_stdin_is_echoed_and_an_exit_code_is_the_programs(docker_server: Server) -> None:
    echo = post(docker_server, "import sys\nsys.stdout.write(sys.stdin.read())", stdin="line 1\nline 2\n").json()
    assert echo["status"] == "Success" and echo["run_result"]["stdout"] == "line 1\nline 2\n"
    three = post(docker_server, "import sys\nif __name__ == '__main__':\n    sys.exit(3)\n").json()
    assert three["status"] == "Failed" and three["run_result"]["return_code"] == 3


@pytest.mark.docker
def test_docker_a_timeout_is_time_limit_exceeded(docker_server: Server) -> None:
    body = post(docker_server, "while True:\n    pass\n", run_timeout=1).json()
    assert body["status"] == "Failed" and body["run_result"]["status"] == "TimeLimitExceeded", body
    assert verl_outcome(body, "") == -3


@pytest.mark.docker
def test_docker_files_are_readable_beside_the_program(docker_server: Server) -> None:
    code = "print(open('data/in.txt').read().strip())"
    body = post(docker_server, code, files={"data/in.txt": b64("hello\n")}).json()
    assert body["status"] == "Success" and body["run_result"]["stdout"] == "hello\n", body


@pytest.mark.docker
def test_docker_big_output_comes_back_whole_and_grading_keeps_its_cut(docker_server: Server) -> None:
    assert post(docker_server, BIG).json()["run_result"]["stdout"] == "x" * 200_000 + "\n"
    graded = Job.generic(BIG + "def f():\n    return 1\n", "assert f() == 1").to_dict()
    response = httpx.post(f"{docker_server.url}/v1/grade", json={"jobs": [graded]}, headers=AUTH, timeout=60)
    result = response.json()["results"][0]
    assert result["status"] == "passed" and len(result["stdout"]) == 8 * 1024, result["error"]
