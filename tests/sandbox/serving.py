"""Shared by the server tests (test_server*.py, test_remote.py, test_docker_adversarial.py): a real `sandbox serve`
subprocess on a free loopback port, the test token and caps, and the Docker precondition of the Docker-backed ones.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from sandbox import SandboxError
from sandbox.server_settings import ServerSettings
from tests.conftest import docker_unavailable

TOKEN = "test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SETTINGS = ServerSettings(max_body_bytes=64 * 1024, max_jobs_per_request=4, max_program_bytes=1024,
                          max_timeout_s=10.0, max_queue_jobs=8, token=TOKEN)


def errors_by_field(response: httpx.Response) -> dict[str, str]:
    assert response.status_code == 422, response.text
    return {error["field"]: error["msg"] for error in response.json()["detail"]}


@dataclass
class Server:
    proc: subprocess.Popen
    url: str
    log: Path


@contextmanager
def running_server(tmp_path: Path, *args: str) -> Iterator[Server]:
    """`sandbox serve --port 0 ARGS` as a subprocess; stopped (SIGTERM, then SIGKILL) unless the test stopped it."""
    log = tmp_path / f"server-{time.monotonic_ns()}.log"
    env = {k: v for k, v in os.environ.items() if k != "SANDBOX_TOKEN"}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "sandbox.cli", "serve", "--port", "0", *args],
                                stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 60
        while not (match := re.search(r"running on (http://127\.0\.0\.1:\d+)", log.read_text())):
            assert proc.poll() is None, f"the server exited with {proc.returncode}:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"the server did not start:\n{log.read_text()}"
            time.sleep(0.05)
        yield Server(proc, match.group(1), log)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def require_docker() -> None:
    """Docker and the image: missing fails under CI (never a silent skip) and skips elsewhere."""
    from sandbox import docker_backend

    try:
        docker_backend.require_image(None)
    except SandboxError as exc:
        docker_unavailable(exc)
