"""SandboxFusion's `POST /run_code` for `language: "python"`, mapped onto script jobs (what `sandbox serve` answers).

So verl's `sandbox_fusion_url` can point at this sandbox unchanged. The models copy the field names and enum strings
of bytedance/SandboxFusion (sandbox/server/sandbox_api.py: RunCodeRequest, RunStatus, RunCodeResponse;
sandbox/runners/types.py: CommandRunStatus, CommandRunResult). Needs pydantic (the `serve` extra): import this module
from the server only, never from the rest of the package.

Request fields:
- supported: `code`; `language` ("python" only: SandboxFusion has no "python3"); `stdin` (None is empty);
  `run_timeout` (seconds, capped at the server's maximum); `files` (relative path -> base64; entries whose content is
  None are skipped, as SandboxFusion does).
- accepted and ignored: `compile_timeout` (Python has no compile step, as in SandboxFusion's python runner),
  `memory_limit_MB` (the server's Limits bound memory; verl sends 1024), any field this module does not name.
- refused: a non-empty `fetch_files` (no files come back from this sandbox; the response's `files` is always {}).
verl sends (verl/utils/reward_score/sandbox_fusion/utils.py, call_sandbox_api): compile_timeout, run_timeout, code,
stdin, memory_limit_MB, language, files {}, fetch_files [].

Response: `status` Success (exit 0) | Failed (another exit code, a time limit, a syntax error, a memory limit) |
SandboxError (the infrastructure failed, or the request could not run: `message` says why); `message`;
`compile_result` None (python has no compile step); `run_result` {status Finished | TimeLimitExceeded | Error,
execution_time, return_code (None on a time limit, as SandboxFusion), stdout, stderr}; `executor_pod_name` None;
`files` {}. verl reads status and run_result: SandboxError -> -1, Failed with TimeLimitExceeded -> -3 (timeout),
Failed with Finished and return_code != 0 or Error -> -2 (runtime error), Success with Finished -> it compares
run_result.stdout with the expected output. So stdout must be whole: the server's Limits.keep_output_bytes must exceed
the longest expected output (the default 8 KB keeps only the start, and a right answer past it would compare wrong).

The verdict is the program's own exit code: /run_code is not a graded result, and its Result's reward is 0.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .jobs import Job
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


def job_from_request(req: RunCodeRequest, max_timeout_s: float) -> Job:
    """The script job for a request. Raises ValueError naming the field when it cannot run (a file path outside the
    working dir, bad base64, too many or too large files, fetch_files); answer it with error_response."""
    if req.fetch_files:
        raise ValueError(f"fetch_files {req.fetch_files!r}: not supported, no files come back from this sandbox")
    files = {path: content for path, content in req.files.items() if content is not None}
    return Job.script(req.code, stdin=req.stdin or "", files=files, timeout_s=min(req.run_timeout, max_timeout_s))


def response_from_result(result: Result) -> RunCodeResponse:
    """SandboxFusion's answer for a script job's Result: Success iff it exited 0."""
    if result.status is Status.SANDBOX_ERROR:
        return error_response(result.error)
    if result.status is Status.TIMEOUT:
        run = CommandRunResult(status="TimeLimitExceeded", execution_time=result.wall_time_s, stdout=result.stdout,
                               stderr=result.stderr)
        return RunCodeResponse(status="Failed", message="", run_result=run)
    if result.return_code is None:
        raise ValueError(f"a {result.status.value} result without a return_code is not a script job's")
    run = CommandRunResult(status="Finished", execution_time=result.wall_time_s, return_code=result.return_code,
                           stdout=result.stdout, stderr=result.stderr)
    return RunCodeResponse(status="Success" if result.status is Status.PASSED else "Failed", message="",
                           run_result=run)


def error_response(message: str) -> RunCodeResponse:
    """SandboxFusion's answer when a run could not happen: status SandboxError, and the reason in `message` and in
    run_result.stderr (as its runners report their own exceptions)."""
    return RunCodeResponse(status="SandboxError", message=message,
                           run_result=CommandRunResult(status="Error", stderr=message))
