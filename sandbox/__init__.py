"""sandbox: run untrusted Python programs against trusted tests and return a verdict.

    from sandbox import Sandbox, Job, Limits
    with Sandbox(backend="docker", workers=None, limits=Limits()) as sb:
        result = sb.run(Job.humaneval(program, test, entry_point, prompt))
        results = sb.run_batch(jobs, progress=lambda done, total, result: ...)   # input order
    Sandbox(backend="remote", urls=["http://grader1:8080"], token=...)   # the same API on `sandbox serve` hosts

A failing program is a Result (Status + per-test outcomes + reward), never an exception. Infrastructure
failures are Status.SANDBOX_ERROR results (callers must mask them, never score them) or a raised SandboxError;
SandboxUnavailable says what is missing and the command that fixes it (`sandbox build-image`, `sandbox doctor`).

What is covered (backend="docker", the default):
- A warm pool of long-lived containers (one per core by default), each running sandbox/executor.py, which runs
  every program in its own processes with the trusted test code apart from it: the tests see only plain data
  from the program, so a program cannot forge its verdict (see the executor's docstring).
- Per container: no network (--network none); read-only root; the only writable places are tmpfs mounts at /scratch
  and /dev/shm with size and inode limits (the second for multiprocessing, which works in containers); a private IPC
  namespace (--ipc none); non-root uid 10001; all capabilities dropped; no-new-privileges; pids limit (fork and
  thread bombs); memory limit with no swap; CPU quota; nofile and fsize ulimits; an init as PID 1 that reaps
  orphans; owner labels; --rm.
- Per program: wall-clock and CPU-time limits, a data-size limit (RLIMIT_DATA, by the executor); stdout and
  stderr are kept up to Limits.keep_output_bytes (or the job's own) and the rest is read and dropped, never a failure
  (Result.output_bytes counts it); `if __name__ == "__main__":` blocks do not run (the program is module
  __program__), except in script jobs (Job.script, `sandbox serve`'s /run_code), which run as a program run from
  the command line and whose exit code and output are no verdict (their caller judges them: forgeable); the pool
  also keeps its own deadline, kills a container that does not answer, replaces it and retries the job once.
- No state survives a program in a warm container: its scratch dir and /dev/shm are wiped, and System V IPC,
  POSIX message queues and keyrings (kernel objects that outlive a process) are refused to programs.
- A container is recycled after Limits.programs_per_container programs and after any limit violation.
- No container outlives its owner: close()/context manager/atexit; if the owner is killed outright, its
  containers see EOF and exit; containers of dead owners, and the temp dirs they leave (protocol sockets, the local
  backend's scratch root: sandbox/leftovers.py), are removed when a new Sandbox starts; and `sandbox cleanup`
  removes any left after a crash.
- tests/sandbox/test_docker_adversarial.py lists the attacks checked, one per test.

backend="remote" (sandbox/remote_backend.py, standard library only): the same API over HTTP, on grader hosts that
run `sandbox serve`. Isolation, limits other than the timeout and everything above are the server's (its own
docker backend); the client spreads a batch over the hosts by capacity, grades a failed host's jobs again on
another, sets a failing host aside and probes it later, and returns every result exactly once, in order; a job no
host could grade is a SANDBOX_ERROR result. `workers` is then the ready hosts' total at start; replaced_workers
counts hosts set aside. Requests carry the token as a bearer header: use https or a trusted network.

What is NOT covered:
- Kernel or container-runtime exploits: containers share the host kernel (Docker's default seccomp and
  AppArmor profiles apply; no gVisor or VM). Anyone who can run docker is root-equivalent on the host.
- Timing and cache side channels, disk I/O bandwidth, and fairness beyond --cpus.
- backend="local": only rlimits, a private temp dir and a scrubbed environment. NO network and NO filesystem
  isolation (a RuntimeWarning says so once per process). Use it for development or trusted code only.
"""
from __future__ import annotations

import atexit
import os
from collections.abc import Sequence
from typing import Literal

from .errors import ImageBuildError, SandboxError, SandboxUnavailable
from .jobs import Job
from .limits import Limits, calibrated_timeout
from .pool import Pool, Progress
from .verdict import Result, Status, TestOutcome

__all__ = ["Sandbox", "Job", "Result", "Status", "TestOutcome", "Limits", "calibrated_timeout", "SandboxError",
           "SandboxUnavailable", "ImageBuildError"]

Backend = Literal["docker", "local", "remote"]


class Sandbox:
    """A pool of sandbox workers behind one API; use it as a context manager (or call close())."""

    def __init__(self, backend: Backend = "docker", workers: int | None = None, limits: Limits = Limits(),
                 image: str | None = None, grace_s: float = 5.0, urls: Sequence[str] | str | None = None,
                 token: str | None = None) -> None:
        """`workers`: parallel programs (default one per core); `grace_s`: slack past a job's timeout before
        the pool declares its worker hung. backend="docker" never falls back to local: it raises
        SandboxUnavailable when Docker or the image is missing. backend="remote": `urls` (default $SANDBOX_URL,
        comma-separated) and `token` (default $SANDBOX_TOKEN); `workers`, `image` and `grace_s` are the servers'."""
        self.backend = backend
        self.limits = limits
        if backend == "remote":
            from . import remote_backend as rb

            urls = urls if urls is not None else os.environ.get(rb.URL_ENV, "")
            self.image = None
            self._pool = rb.RemoteBackend(urls, token if token is not None else os.environ.get(rb.TOKEN_ENV) or None,
                                          limits)
            self.workers = self._pool.workers
            atexit.register(self.close)
            return
        self.workers = workers if workers is not None else (os.cpu_count() or 1)
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if backend == "docker":
            from . import docker_backend

            self.image = docker_backend.require_image(image)
            docker_backend.cleanup_containers(all_owners=False)  # leftovers of crashed owners on this host
            self._spawner = docker_backend.DockerSpawner(self.image, limits)
        elif backend == "local":
            from . import local_backend

            local_backend.warn_weak_isolation()
            self.image = None
            self._spawner = local_backend.LocalSpawner()
        else:
            raise ValueError(f"unknown sandbox backend {backend!r}: expected 'docker', 'local' or 'remote'")
        try:
            self._pool = Pool(self._spawner, self.workers, limits, grace_s=grace_s)
        except BaseException:
            self._spawner.remove_all()
            raise
        atexit.register(self.close)

    def run(self, job: Job) -> Result:
        return self._pool.run(job)

    def run_batch(self, jobs: Sequence[Job], progress: Progress | None = None) -> list[Result]:
        """Run concurrently over the workers; results in input order; progress(done, total, result) per job."""
        return self._pool.run_batch(list(jobs), progress)

    def round_trip_s(self, count: int = 100) -> list[float]:
        """Ping/pong times through one idle worker: the transport's share of the per-program overhead (remote:
        GET /healthz round trips to one host)."""
        return self._pool.round_trip_s(count)

    @property
    def replaced_workers(self) -> int:
        """Workers replaced so far after a failure or a recycle (remote: times a host was set aside)."""
        return self._pool.replaced

    def close(self) -> None:
        """Stop all workers and remove their containers / temp dirs. Safe to call twice."""
        atexit.unregister(self.close)
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.close()
        if self.backend != "remote":
            self._spawner.remove_all()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
