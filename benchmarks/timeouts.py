"""Per-task timeouts calibrated from the reference solutions, cached per machine and sandbox.

A flat timeout lets a correct but slow program flip between attempts: the reference of Mbpp/123 took 5.9 to 9.8 s
on a busy machine and 3 of 8 identical gradings of it hit the flat 10 s, a fake i->c or c->i. So each task's
reference runs once in the sandbox, with MEASURE_TIMEOUT_S to finish, and the task gets
max(the sandbox's default, sandbox.limits.calibrated_timeout(runtime, factor=FACTOR)). The default is never lowered
(a slower-but-correct program that passes today keeps passing), so only tasks with slow references get more time;
tasks without a passing reference keep the default.

Runtimes are cached in $SCORE_CODE_CACHE/timeouts/<machine>.json (benchmarks.cache), one entry per task keyed by a
hash of what decides its runtime (reference, tests, setup code, format, entry point): a subset (--limit) or another
split reuses them and a changed task is measured again. The file records the machine (host, CPU model, cores) and
the sandbox (image tag or backend); a file for another machine, or one that does not parse, is measured again and
replaced, never trusted.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from benchmarks.cache import cache_root
from benchmarks.errors import ScoreCodeError
from benchmarks.jsonl import write_json_atomic
from benchmarks.tasks import Task
from sandbox.jobs import Job
from sandbox.limits import Limits, calibrated_timeout
from sandbox.verdict import Result, Status

logger = logging.getLogger(__name__)

FACTOR = 4.0  # EvalPlus's: a reference measured on a quiet machine still passes on a loaded one
MEASURE_TIMEOUT_S = 120.0  # a reference gets this long when measured, so a slow one is measured, not cut at 10 s
RULE = f"per task: max(sandbox default, {FACTOR:g} x reference runtime)"  # recorded in a run's config
CACHE_VERSION = 1


class BatchSandbox(Protocol):
    def run_batch(self, jobs: list[Job]) -> list[Result]: ...


def default_timeout_s(sandbox: BatchSandbox) -> float:
    """The timeout a job without its own gets: the sandbox's limit (a Sandbox has `limits`; a stand-in may not)."""
    limits = getattr(sandbox, "limits", None)
    return (limits if isinstance(limits, Limits) else Limits()).timeout_s


def machine_key(sandbox: BatchSandbox) -> dict[str, Any]:
    """What a reference's runtime depends on besides the task: this machine and the sandbox that runs it."""
    return {
        "host": socket.gethostname(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count() or 1,
        # the image tag is the executor's hash (sandbox/build.py); the local backend has none
        "sandbox": getattr(sandbox, "image", None) or getattr(sandbox, "backend", None) or type(sandbox).__name__,
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def task_key(task: Task) -> str:
    """Hash of what decides a reference's runtime; the cache's key for that task."""
    payload = [task.reference_solution, list(task.tests), task.setup_code, task.test_format, task.entry_point]
    return hashlib.sha256(json.dumps(payload, ensure_ascii=False).encode("utf-8")).hexdigest()


def cache_path(machine: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(machine, sort_keys=True).encode("utf-8")).hexdigest()[:16]
    return cache_root() / "timeouts" / f"{digest}.json"


def _read_cache(path: Path, machine: dict[str, Any]) -> dict[str, float | None]:
    """The cached runtimes, or {} for a missing, corrupt or foreign file (which is then measured again)."""
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        runtimes = data["runtimes_s"]
        valid = (data["version"] == CACHE_VERSION and data["machine"] == machine and isinstance(runtimes, dict)
                 and all(v is None or (isinstance(v, (int, float)) and v >= 0) for v in runtimes.values()))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
        logger.warning("%s: unreadable timeout cache (%s); measuring the references again", path, e)
        return {}
    if not valid:
        logger.warning("%s: timeout cache of another machine or version; measuring the references again", path)
        return {}
    return runtimes


def reference_runtimes(sandbox: BatchSandbox, tasks: Sequence[Task]) -> dict[str, float | None]:
    """task_key -> wall time of the task's reference in `sandbox` (None: it did not pass), for the tasks that have
    one; measured for the tasks missing from the cache, which is then rewritten (atomically)."""
    machine = machine_key(sandbox)
    path = cache_path(machine)
    cached = _read_cache(path, machine)
    todo = {task_key(t): t for t in tasks if t.reference_solution and task_key(t) not in cached}
    if todo:
        logger.info("measuring %d reference solution(s) for per-task timeouts (cached in %s)", len(todo), path)
        jobs = [t.to_job(t.reference_solution, MEASURE_TIMEOUT_S, job_id=f"{t.task_id}/reference")
                for t in todo.values()]
        results = sandbox.run_batch(jobs)
        if len(results) != len(jobs):
            raise ScoreCodeError(f"the sandbox returned {len(results)} results for {len(jobs)} jobs")
        failed = [t.task_id for t, r in zip(todo.values(), results, strict=True)
                  if not r.is_sandbox_error and r.status is not Status.PASSED]
        if failed:
            logger.warning("%d reference solution(s) did not pass, so their tasks keep the default timeout: %s",
                           len(failed), ", ".join(failed[:10]) + (" ..." if len(failed) > 10 else ""))
        # a sandbox error says nothing about the reference: left out, so the next run measures it again
        measured = {key: (r.wall_time_s if r.status is Status.PASSED else None)
                    for key, r in zip(todo, results, strict=True) if not r.is_sandbox_error}
        cached = {**cached, **measured}
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, {"version": CACHE_VERSION, "machine": machine, "runtimes_s": cached})
    return {key: cached[key] for key in (task_key(t) for t in tasks) if key in cached}


def calibrated_timeouts(sandbox: BatchSandbox, tasks: Sequence[Task]) -> dict[str, float]:
    """task_id -> timeout for the tasks whose reference earns more than the sandbox's default (RULE); every other
    task keeps the default, so its jobs need no timeout of their own."""
    default = default_timeout_s(sandbox)
    runtimes = reference_runtimes(sandbox, tasks)
    timeouts = {}
    for task in tasks:
        runtime = runtimes.get(task_key(task))
        if runtime is None:
            continue
        timeout = round(calibrated_timeout(runtime, floor_s=default, factor=FACTOR), 1)  # readable in configs
        if timeout > default:
            timeouts[task.task_id] = timeout
    return timeouts
