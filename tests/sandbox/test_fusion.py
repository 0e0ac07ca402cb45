"""sandbox/fusion.py: SandboxFusion's /run_code request and response, mapped to and from script jobs.

The payloads are the ones verl sends and `verl_outcome` is verl's reading of a response (tests/sandbox/verl_client.py),
so these tests pin what a verl run would score. The end-to-end cases run through the local executor (no Docker).
"""
from __future__ import annotations

import base64

import pytest
from pydantic import ValidationError

from sandbox import fusion
from sandbox.fusion import RunCodeRequest, job_from_request, response_from_result
from sandbox.verdict import Result, Status
from tests.sandbox.conftest import FAST
from tests.sandbox.verl_client import verl_outcome, verl_payload


# --- request -> Job ----------------------------------------------------------------------------------------------
def test_verls_request_becomes_a_script_job_with_the_timeout_capped():
    job = job_from_request(RunCodeRequest.model_validate(verl_payload("print(input())", "7\n", timeout=30)), 20.0)
    assert (job.format, job.program, job.stdin, job.files, job.timeout_s) == ("script", "print(input())", "7\n", (),
                                                                                20.0)
    assert job_from_request(RunCodeRequest.model_validate(verl_payload("pass")), 20.0).timeout_s == 10.0
    assert job_from_request(RunCodeRequest.model_validate(verl_payload("pass")), 20.0).stdin == ""  # None: empty


def test_files_are_carried_and_none_contents_skipped():
    payload = {**verl_payload("pass"), "files": {"a.txt": base64.b64encode(b"1").decode(), "skip.txt": None}}
    assert job_from_request(RunCodeRequest.model_validate(payload), 10.0).files == (("a.txt", "MQ=="),)


def test_unknown_fields_are_ignored_and_defaults_are_sandbox_fusions():
    request = RunCodeRequest.model_validate({"code": "pass", "language": "python", "someday": 1})
    assert (request.run_timeout, request.compile_timeout, request.memory_limit_MB, request.stdin) == (10, 10, -1, None)


@pytest.mark.parametrize("change", [{"language": "cpp"}, {"language": "python3"}, {"code": None},
                                    {"run_timeout": 0}, {"files": {"a": 1}}])
def test_malformed_requests_fail_validation(change):
    with pytest.raises(ValidationError):
        RunCodeRequest.model_validate({**verl_payload("pass"), **change})


@pytest.mark.parametrize("change, error", [
    ({"files": {"../x": "eA=="}}, "contains '..'"),
    ({"files": {"/tmp/x": "eA=="}}, "is absolute"),
    ({"files": {"x": "%%%"}}, "files\\['x'\\] is not valid base64"),
    ({"fetch_files": ["out.txt"]}, "fetch_files \\['out.txt'\\]: not supported"),
])
def test_requests_that_cannot_run_fail_validation_on_the_field(change, error):
    with pytest.raises(ValidationError, match=error) as caught:
        RunCodeRequest.model_validate({**verl_payload("pass"), **change})
    assert [e["loc"] for e in caught.value.errors()] == [(next(iter(change)),)]


def test_a_cut_timeout_is_said_in_the_message_and_the_output_cap_is_the_jobs():
    request = RunCodeRequest.model_validate(verl_payload("pass", timeout=30))
    note = fusion.timeout_note(request, 20.0)
    assert note == "run_timeout 30 s is over this server's max-timeout: the program ran with 20 s"
    assert fusion.timeout_note(request, 30.0) == ""
    assert response_from_result(Result(Status.PASSED, return_code=0), note).message == note
    assert response_from_result(Result.sandbox_error("worker died"), note).message == f"worker died; {note}"
    assert job_from_request(request, 20.0, keep_output_bytes=1 << 20).keep_output_bytes == 1 << 20
    assert job_from_request(request, 20.0).keep_output_bytes is None  # the sandbox's Limits


# --- Result -> response ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("result, status, run_status, return_code", [
    (Result(Status.PASSED, stdout="3\n", return_code=0), "Success", "Finished", 0),
    (Result(Status.RUNTIME_ERROR, stderr="Traceback ...", return_code=1), "Failed", "Finished", 1),
    (Result(Status.RUNTIME_ERROR, return_code=-9), "Failed", "Finished", -9),
    (Result(Status.SYNTAX_ERROR, stderr="SyntaxError: invalid syntax\n", return_code=1), "Failed", "Finished", 1),
    (Result(Status.MEMORY_EXCEEDED, stderr="MemoryError\n", return_code=1), "Failed", "Finished", 1),
    (Result(Status.TIMEOUT, stdout="partial", return_code=-9), "Failed", "TimeLimitExceeded", None),
])
def test_each_status_maps_to_sandbox_fusions_answer(result, status, run_status, return_code):
    result.wall_time_s = 0.25
    response = response_from_result(result)
    assert (response.status, response.message, response.compile_result) == (status, "", None)
    run = response.run_result
    assert (run.status, run.return_code, run.execution_time) == (run_status, return_code, 0.25)
    assert (run.stdout, run.stderr) == (result.stdout, result.stderr)


def test_a_sandbox_error_is_sandbox_fusions_sandbox_error():
    response = response_from_result(Result.sandbox_error("the worker died twice"))
    assert (response.status, response.message) == ("SandboxError", "the worker died twice")
    assert (response.run_result.status, response.run_result.stderr) == ("Error", "the worker died twice")
    error = fusion.CommandRunResult(status="Error", stderr="bad files")
    assert fusion.error_response("bad files") == fusion.RunCodeResponse(status="SandboxError", message="bad files",
                                                                        run_result=error)


def test_a_result_of_another_format_is_refused():
    with pytest.raises(ValueError, match="not a script job's"):
        response_from_result(Result(Status.PASSED))


def test_the_response_has_sandbox_fusions_fields():
    body = response_from_result(Result(Status.PASSED, return_code=0)).model_dump(mode="json")
    assert set(body) == {"status", "message", "compile_result", "run_result", "executor_pod_name", "files"}
    assert set(body["run_result"]) == {"status", "execution_time", "return_code", "stdout", "stderr"}
    assert body["files"] == {} and fusion.RunCodeResponse.model_validate(body).status == "Success"


# --- end to end, as verl would score it ----------------------------------------------------------------------------
@pytest.mark.parametrize("code, stdin, expected, outcome", [
    ("a, b = map(int, input().split())\nprint(a + b)\n", "2 3\n", "5", True),
    ("a, b = map(int, input().split())\nprint(a - b)\n", "2 3\n", "5", False),
    ("import sys\nprint('partial')\nsys.exit(2)\n", None, "partial", -2),
    ("print(1 / 0)\n", None, "", -2),
    ("print(\n", None, "", -2),  # SandboxFusion runs python on the file: a syntax error is a failed run
    ("while True:\n    pass\n", None, "", -3),
])
def test_verl_scores_our_answers_as_it_scores_sandbox_fusions(client, code, stdin, expected, outcome):
    request = RunCodeRequest.model_validate(verl_payload(code, stdin, timeout=1))
    result = client.grade(job_from_request(request, max_timeout_s=FAST.timeout_s), FAST)
    response = response_from_result(result).model_dump(mode="json")
    assert verl_outcome(response, expected) == outcome, response
    assert result.reward == 0.0  # the caller judges /run_code; the sandbox never grades it
