"""verl's side of SandboxFusion's /run_code, for test_fusion.py and test_server_run_code.py: the payload verl sends
(verl/utils/reward_score/sandbox_fusion/utils.py, call_sandbox_api) and its reading of a response in the same file
(_process_single_case).
"""
from __future__ import annotations


def verl_payload(code: str, stdin: str | None = None, timeout: int = 10) -> dict:
    return {"compile_timeout": timeout, "run_timeout": timeout, "code": code, "stdin": stdin, "memory_limit_MB": 1024,
            "language": "python", "files": {}, "fetch_files": []}


def verl_outcome(response: dict, expected_output: str) -> object:
    """verl's result for one test case: True/False (answer right or wrong), -1 sandbox error, -2 runtime error,
    -3 timeout (python has no compile step, so never -4)."""
    run = response.get("run_result")
    if response["status"] == "SandboxError":
        return -1
    if response["status"] == "Failed":
        if run["status"] == "TimeLimitExceeded":
            return -3
        if run["status"] == "Error" or (run["status"] == "Finished" and run.get("return_code") != 0):
            return -2
        return -1
    if response["status"] == "Success" and run and run["status"] == "Finished":
        return str(run["stdout"] or "").rstrip("\n") == expected_output.rstrip("\n")
    return -1
