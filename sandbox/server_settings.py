"""What a grader server (`sandbox serve`, sandbox/server.py) accepts, and where it may listen.

Standard library only, apart from the server: the CLI shows these defaults and refuses a bad configuration before
the serve extra (fastapi, uvicorn) is even imported.
"""
from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field

from .errors import SandboxError
from .jobs import MAX_KEEP_OUTPUT_BYTES

MIN_TOKEN_CHARS = 16


@dataclass(frozen=True)
class ServerSettings:
    """The server's caps; each default holds a large training batch of LM-written programs with room to spare."""

    max_body_bytes: int = 16 * 1024 * 1024
    max_jobs_per_request: int = 256  # --max-batch
    max_program_bytes: int = 256 * 1024  # UTF-8 bytes of one program
    max_timeout_s: float = 60.0  # the most a job may ask for in timeout_s
    max_queue_jobs: int = 1024  # jobs admitted and not finished, over all requests
    # /run_code only: stdout and stderr kept per program. Its caller compares the whole stdout with an expected
    # answer, so a cut answer would score wrong; /v1/grade keeps the sandbox's Limits.keep_output_bytes.
    max_output_bytes: int = 1024 * 1024
    token: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_jobs_per_request", "max_program_bytes", "max_timeout_s", "max_queue_jobs",
                     "max_output_bytes"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.max_output_bytes > MAX_KEEP_OUTPUT_BYTES:
            raise ValueError(f"max_output_bytes ({self.max_output_bytes}) is over {MAX_KEEP_OUTPUT_BYTES}: a worker's "
                             "answer carries stdout and stderr, and the pool refuses answers past 64 MiB")
        if self.max_queue_jobs < self.max_jobs_per_request:
            raise ValueError(f"max_queue_jobs ({self.max_queue_jobs}) must be >= max_jobs_per_request "
                             f"({self.max_jobs_per_request}): a full batch could never be admitted")
        if self.token is not None:
            if len(self.token) < MIN_TOKEN_CHARS:
                raise ValueError(f"the token has {len(self.token)} characters, fewer than {MIN_TOKEN_CHARS}: "
                                 "make a guess-proof one, e.g. `openssl rand -hex 32`")
            if any(c.isspace() or not c.isprintable() for c in self.token):
                raise ValueError("the token must not contain whitespace or control characters (it travels in an "
                                 "HTTP header)")


def is_loopback(host: str) -> bool:
    """True when every address `host` names is a loopback one (127.0.0.0/8, ::1; a name is resolved)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback for info in infos)


def require_token_off_loopback(host: str, token: str | None) -> None:
    """Grading runs code on this host's CPUs: an address others can reach needs a token."""
    if token is None and not is_loopback(host):
        raise SandboxError(f"refusing to listen on {host!r} without a token: anyone who reaches that address could "
                           "run programs here",
                           hint="make one (`openssl rand -hex 32 > grader.token`) and pass --token-file grader.token "
                           "(or set SANDBOX_TOKEN), or listen on 127.0.0.1")
