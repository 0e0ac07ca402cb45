"""SandboxFusion's `POST /run_code` for `language: "python"`, mapped onto script jobs (what `sandbox serve` answers).

So verl's `sandbox_fusion_url` can point at this sandbox unchanged. The models copy the field names and enum strings
of bytedance/SandboxFusion (sandbox/server/sandbox_api.py: RunCodeRequest, RunStatus, RunCodeResponse;
sandbox/runners/types.py: CommandRunStatus, CommandRunResult). Needs pydantic (the `serve` extra): import this module
from the server only, never from the rest of the package.

Request fields:
- supported: `code`; `language` ("python" only: SandboxFusion has no "python3"); `stdin` (None is empty);
  `run_timeout` (seconds; over the server's maximum it is cut to it, and the response's `message` says so);
  `files` (relative path -> base64; entries whose content is None are skipped, as SandboxFusion does).
- accepted and ignored: `compile_timeout` (Python has no compile step, as in SandboxFusion's python runner),
  `memory_limit_MB` (the server's Limits bound memory; verl sends 1024), any field this module does not name.
- refused: a non-empty `fetch_files` (no files come back from this sandbox; the response's `files` is always {}).
Every refusal is a validation error naming the field (files, fetch_files, stdin checked as Job.script checks them),
so a server answers it 422 as SandboxFusion (FastAPI too) answers a malformed body.
verl sends (verl/utils/reward_score/sandbox_fusion/utils.py, call_sandbox_api): compile_timeout, run_timeout, code,
stdin, memory_limit_MB, language, files {}, fetch_files [].

Response: `status` Success (exit 0) | Failed (another exit code, a time limit, a syntax error, a memory limit) |
SandboxError (the infrastructure failed: `message` says why); `message` (also says when run_timeout was cut);
`compile_result` None (python has no compile step); `run_result` {status Finished | TimeLimitExceeded | Error,
execution_time, return_code (None on a time limit, as SandboxFusion), stdout, stderr}; `executor_pod_name` None;
`files` {}. verl reads status and run_result: SandboxError -> -1, Failed with TimeLimitExceeded -> -3 (timeout),
Failed with Finished and return_code != 0 or Error -> -2 (runtime error), Success with Finished -> it compares
run_result.stdout with the expected output. So stdout must be whole: job_from_request's keep_output_bytes (the
server's --max-output-bytes) must exceed the longest expected output; Limits' default 8 KiB keeps only the start, and
a right answer past the cut would compare wrong.

The verdict is the program's own exit code: /run_code is not a graded result, and its Result's reward is 0.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .jobs import Job, check_script_inputs
from .verdict import Result, Status


class RunCodeRequest(BaseModel):
    """SandboxFusion's request body; unknown fields are ignored, as verl may send more than these."""

    model_config = ConfigDict(extra="ignore")

    code: str = Field(..., description="the Python program, run as a script")
    language: Literal["python"] = Field(..., description="only python is served here")
    stdin: str | None = Field(None, description="the program's standard input")
    run_timeout: float = Field(10, gt=0, description="seconds; capped at the server's maximum")
    compile_timeout: float = Field(10, description="ignored: Python has no compile step")
    memory_limit_MB: int = Field(-1, description="ignored: the server's limits bound memory")
    files: dict[str, str | None] = Field({}, description="relative path -> base64 content, written beside the program")
    fetch_files: list[str] = Field([], description="must be empty: no files come back")

    @field_validator("stdin")
    @classmethod
    def _stdin_fits(cls, stdin: str | None) -> str | None:
        check_script_inputs(stdin or "", (), "stdin")
        return stdin

    @field_validator("files")
    @classmethod
    def _files_are_safe(cls, files: dict[str, str | None]) -> dict[str, str | None]:
        check_script_inputs("", tuple((path, data) for path, data in files.items() if data is not None), "files")
        return files

    @field_validator("fetch_files")
    @classmethod
    def _no_fetch_files(cls, fetch_files: list[str]) -> list[str]:
        if fetch_files:
            raise ValueError(f"fetch_files {fetch_files!r}: not supported, no files come back from this sandbox")
        return fetch_files


CommandRunStatus = Literal["Finished", "Error", "TimeLimitExceeded"]
RunStatus = Literal["Success", "Failed", "SandboxError"]


class CommandRunResult(BaseModel):
    status: CommandRunStatus
    execution_time: float | None = None  # seconds
    return_code: int | None = None  # None when the run hit its time limit
    stdout: str | None = None
    stderr: str | None = None


class RunCodeResponse(BaseModel):
    status: RunStatus
    message: str
    compile_result: CommandRunResult | None = None
    run_result: CommandRunResult | None = None
    executor_pod_name: str | None = None
    files: dict[str, str] = {}


def job_from_request(req: RunCodeRequest, max_timeout_s: float, keep_output_bytes: int | None = None) -> Job:
    """The script job for a validated request: run_timeout cut to max_timeout_s (timeout_note says so), stdout and
    stderr kept up to keep_output_bytes each (None: the sandbox's Limits)."""
    files = {path: content for path, content in req.files.items() if content is not None}
    return Job.script(req.code, stdin=req.stdin or "", files=files, timeout_s=min(req.run_timeout, max_timeout_s),
                      keep_output_bytes=keep_output_bytes)


def timeout_note(req: RunCodeRequest, max_timeout_s: float) -> str:
    """The response's `message` when run_timeout was cut, so the cut is seen; "" otherwise."""
    if req.run_timeout <= max_timeout_s:
        return ""
    return (f"run_timeout {req.run_timeout:g} s is over this server's max-timeout: the program ran with "
            f"{max_timeout_s:g} s")


def response_from_result(result: Result, note: str = "") -> RunCodeResponse:
    """SandboxFusion's answer for a script job's Result: Success iff it exited 0. `note` goes in `message` (after
    the error of a SandboxError)."""
    if result.status is Status.SANDBOX_ERROR:
        return error_response("; ".join(filter(None, (result.error, note))))
    if result.status is Status.TIMEOUT:
        run = CommandRunResult(status="TimeLimitExceeded", execution_time=result.wall_time_s, stdout=result.stdout,
                               stderr=result.stderr)
        return RunCodeResponse(status="Failed", message=note, run_result=run)
    if result.return_code is None:
        raise ValueError(f"a {result.status.value} result without a return_code is not a script job's")
    run = CommandRunResult(status="Finished", execution_time=result.wall_time_s, return_code=result.return_code,
                           stdout=result.stdout, stderr=result.stderr)
    return RunCodeResponse(status="Success" if result.status is Status.PASSED else "Failed", message=note,
                           run_result=run)


def error_response(message: str) -> RunCodeResponse:
    """SandboxFusion's answer when a run could not happen: status SandboxError, and the reason in `message` and in
    run_result.stderr (as its runners report their own exceptions)."""
    return RunCodeResponse(status="SandboxError", message=message,
                           run_result=CommandRunResult(status="Error", stderr=message))
