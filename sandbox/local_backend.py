"""The local backend: the executor as plain subprocesses (`--mode local`), for machines without Docker.

Weaker isolation, on purpose documented: each worker gets a private temp dir as cwd/HOME/TMPDIR, a scrubbed
environment and its own session, and the executor applies rlimits (CPU, data size, file size, open files) to
every program. There is NO network isolation and NO filesystem isolation: a program can read whatever the user
can read and connect anywhere. Use it for trusted code or for development, and the Docker backend for models.
"""
from __future__ import annotations

import itertools
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

from .docker_backend import executor_path
from .errors import SandboxUnavailable
from .leftovers import LOCAL_ROOT_PREFIX, owned_temp_dir, remove_dead_owners_dirs
from .pool import WorkerProcess

_warned = False


def warn_weak_isolation() -> None:
    """Warn once per process that the local backend does not isolate network or filesystem."""
    global _warned
    if not _warned:
        _warned = True
        warnings.warn("sandbox backend='local' runs programs as local subprocesses with rlimits only: no network "
                      "or filesystem isolation. Use backend='docker' for untrusted code.", RuntimeWarning,
                      stacklevel=3)


class LocalSpawner:
    """Starts local executor workers, each in its own private scratch directory under one temp root."""

    def __init__(self, executor: Path | None = None) -> None:
        self.executor = executor or executor_path()
        if not self.executor.is_file():
            raise SandboxUnavailable(f"the executor {self.executor} is missing",
                                     hint="reinstall score-code (pip install -e .)")
        remove_dead_owners_dirs()  # scratch roots of local Sandboxes that were SIGKILLed
        self.root = owned_temp_dir(LOCAL_ROOT_PREFIX)
        self._count = itertools.count(1)

    def __call__(self) -> WorkerProcess:
        n = next(self._count)
        scratch = tempfile.mkdtemp(prefix=f"worker{n}-", dir=self.root)
        env = {"PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"), "HOME": scratch, "TMPDIR": scratch,
               "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1"}
        argv = [sys.executable, "-u", str(self.executor), "--mode", "local", "--scratch", scratch]
        return WorkerProcess(argv, name=f"local-{os.getpid()}-{n}", env=env, cwd=scratch)

    def remove_all(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
