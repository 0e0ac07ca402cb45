"""`sandbox` command: grade | serve | build-image | doctor | cleanup. Parsing, dispatch and printing only.

    sandbox build-image [--from-dockerfile] [--force]
    sandbox grade SAMPLES.jsonl --problems TASKS.jsonl [-o RESULTS.jsonl] [--backend docker|local|remote]
                  [--workers N] [--sandbox-url URL[,URL...]] [--sandbox-token-file F] [--timeout S] [--overwrite]
    sandbox serve [--host 127.0.0.1] [--port 8080] [--backend docker|local] [--workers N] [--timeout S]
                  [--token-file F] [--max-batch N] [--max-queue N] [--max-body-bytes N] [--max-program-bytes N]
                  [--max-timeout S] [--max-output-bytes N]
    sandbox doctor
    sandbox cleanup [--all]

`sandbox grade` knows no dataset: it grades against a generic task file (schema in sandbox/samples.py) and reports
pass@1. HumanEval, MBPP and pass@k for k > 1 are `score-code grade`'s (benchmarks/grade.py).

Library errors arrive as typed exceptions and leave here as `error: <what>` / `hint: <next command>` on
stderr with a non-zero exit code.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from . import remote_backend
from .atomic import write_text_atomic
from .errors import SandboxError, SandboxUnavailable
from .limits import Limits
from .samples import grade_samples, load_task_file, passes_by_task, read_samples
from .server_settings import ServerSettings
from .verdict import Result, Status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sandbox", description="Grade untrusted Python programs in Docker.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("grade", help="grade a samples JSONL file against a task file of your own",
                       description="Grade samples against a generic task file and print per-status counts and "
                       "pass@1. For HumanEval, MBPP and pass@k with k > 1 use `score-code grade SAMPLES --problems "
                       "humaneval|mbpp|PATH`.")
    p.add_argument("samples", type=Path, help="JSONL: task_id + solution (or completion), the whole program")
    p.add_argument("--problems", required=True, metavar="TASKS",
                   help="JSONL task file: task_id + tests (list of str) or test (str); schema: "
                   "`python3 -m pydoc sandbox.samples`")
    add_grading_arguments(p)

    add_serve_parser(sub)

    p = sub.add_parser("build-image", help="build the sandbox Docker image (offline by default)")
    p.add_argument("--from-dockerfile", action="store_true",
                   help="docker build from sandbox/image/Dockerfile (needs a registry) instead of debootstrap")
    p.add_argument("--force", action="store_true", help="rebuild even if current (and rebuild the base rootfs)")

    sub.add_parser("doctor", help="check Docker, the image and a hardened test container; say how to fix")

    p = sub.add_parser("cleanup", help="remove sandbox containers left behind by crashed processes")
    p.add_argument("--all", action="store_true", help="remove every score-sandbox container, even of live owners")

    args = parser.parse_args(argv)
    try:
        if args.command == "grade":
            return grade(args)
        if args.command == "serve":
            return serve(args)
        if args.command == "build-image":
            from .build import build_image

            build_image(from_dockerfile=args.from_dockerfile, force=args.force)
            return 0
        if args.command == "doctor":
            return doctor()
        from .docker_backend import cleanup_containers

        removed = cleanup_containers(all_owners=args.all)
        print(f"removed {removed} score-sandbox container(s)" + ("" if args.all else " of dead owners"))
        return 0
    except SandboxError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted (sandbox containers were shut down; no results file was written)",
              file=sys.stderr)
        return 130
    except OSError as exc:  # unreadable samples, unwritable results directory, ...
        print(f"error: {exc}", file=sys.stderr)
        return 1


def add_grading_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of every command that grades a samples file (`sandbox grade`, `score-code grade`)."""
    parser.add_argument("-o", "--output", type=Path, help="results JSONL (default: SAMPLES with .results.jsonl)")
    parser.add_argument("--backend", choices=("docker", "local", "remote"), default="docker",
                        help="docker (isolated, default), local (rlimits only, no isolation) or remote (grader hosts "
                        "running `sandbox serve`; implied by --sandbox-url)")
    parser.add_argument("--workers", type=positive(int), default=None,
                        help="parallel programs (default: one per core; remote: the hosts' own)")
    add_remote_arguments(parser)
    parser.add_argument("--timeout", type=positive(float), default=None,
                        help=f"wall-clock seconds per program (default: {Limits().timeout_s:g})")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing results file")


def add_remote_arguments(parser: argparse.ArgumentParser) -> None:
    """The remote grader flags of every command that builds a Sandbox; remote_backend.sandbox_options reads them."""
    parser.add_argument("--sandbox-url", metavar="URL[,URL...]", default=None,
                        help="grade on these `sandbox serve` hosts (the remote backend; default: $SANDBOX_URL)")
    parser.add_argument("--sandbox-token-file", metavar="FILE", default=None,
                        help="file holding the graders' bearer token (default: $SANDBOX_TOKEN)")


def positive(kind: type) -> Callable[[str], float]:
    """An argparse type: a number of `kind` above zero, refused at parse time rather than deep in a run."""
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    return parse


# --- grade -----------------------------------------------------------------------------------------------------
DATASET_HINT = "grade HumanEval and MBPP with `score-code grade SAMPLES --problems humaneval|mbpp|PATH`"


def grade(args: argparse.Namespace) -> int:
    from . import Sandbox

    if args.problems in ("humaneval", "mbpp"):
        raise SandboxError(f"`sandbox grade` grades generic task files only, not the {args.problems} dataset",
                           hint=DATASET_HINT)
    output = args.output or args.samples.with_suffix(".results.jsonl")
    if output.exists() and not args.overwrite:
        raise SandboxError(f"results file {output} already exists", hint="pass --overwrite or another -o path")
    if not output.parent.is_dir():
        raise SandboxError(f"the results directory {output.parent} does not exist", hint=f"mkdir -p {output.parent}")
    if not args.samples.is_file():
        raise SandboxError(f"samples file {args.samples} not found")
    problems_path = Path(args.problems)
    if not problems_path.is_file():
        raise SandboxError(f"task file {problems_path} not found", hint=f"--problems takes a JSONL task file; "
                           f"{DATASET_HINT}")
    options = remote_backend.sandbox_options(args.backend, args.sandbox_url, args.sandbox_token_file)
    problems = load_task_file(problems_path)
    samples, errors = read_samples(args.samples, problems)
    for err in errors:
        print(f"error: {err}", file=sys.stderr)
    limits = Limits() if args.timeout is None else Limits().with_timeout(args.timeout)
    rows = []
    if samples:
        with Sandbox(**options, workers=args.workers, limits=limits) as sb:
            rows = grade_samples(sb, samples, progress=_progress if sys.stderr.isatty() else None)
        if sys.stderr.isatty():
            print(file=sys.stderr)
    write_text_atomic(output, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))

    per_task = passes_by_task(samples, rows)
    print(f"graded {len(samples)} sample(s) of {len(per_task)} task(s) from {args.samples}; "
          f"rejected {len(errors)} line(s); results in {output}")
    unsampled = sorted(set(problems) - {s.problem.task_id for s in samples})
    if unsampled:
        print(f"note: {len(unsampled)} of {len(problems)} tasks have no samples (first: {unsampled[0]}); pass@1 covers "
              "the graded tasks only")
    statuses = collections.Counter(row["status"] for row in rows)
    breakdown = ", ".join(f"{name} {count}" for name, count in statuses.most_common())
    print(f"status: {breakdown or 'none'}" + (f", rejected {len(errors)}" if errors else ""))
    print(f"passed: {sum(row['passed'] for row in rows)}/{len(rows)} sample(s)")
    if per_task:  # the mean over tasks of passed/total is exactly the unbiased pass@1
        print(f"pass@1: {sum(sum(v) / len(v) for v in per_task.values()) / len(per_task):.4f} "
              f"(mean over {len(per_task)} task(s); pass@k for k > 1: `score-code grade`)")
    sandbox_errors = statuses.get(Status.SANDBOX_ERROR.value, 0)
    if sandbox_errors:
        print(f"warning: {sandbox_errors} sandbox error(s) left out of pass@1 (never scored); see `sandbox doctor`",
              file=sys.stderr)
    return 1 if errors else 0


def _progress(done: int, total: int, result: Result) -> None:
    """A one-line counter on a terminal; stdlib only (the sandbox must run on a bare grading host)."""
    print(f"\rgrading {done}/{total}", end="", file=sys.stderr, flush=True)


# --- serve -----------------------------------------------------------------------------------------------------
TOKEN_ENV = remote_backend.TOKEN_ENV  # the servers' and the clients' token come from the same variable
SERVE_EXTRA = ("fastapi", "uvicorn", "starlette", "pydantic", "pydantic_core")


def add_serve_parser(sub: argparse._SubParsersAction) -> None:
    defaults = ServerSettings()
    p = sub.add_parser("serve", help="grade over HTTP: POST /v1/grade, POST /run_code, GET /healthz, GET /metrics "
                       "(serve extra)",
                       description="Serve a warm sandbox pool over HTTP until SIGTERM/SIGINT, which drains it: "
                       "in-flight jobs finish, new requests get 503, then its containers are removed. Endpoints, "
                       "limits and auth: `python3 -m pydoc sandbox.server`.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only; any other "
                   "address needs a token)")
    p.add_argument("--port", type=int, default=8080, help="TCP port (default: 8080; 0 picks a free one)")
    p.add_argument("--backend", choices=("docker", "local"), default="docker",
                   help="docker (isolated, default) or local (rlimits only, no isolation: trusted code only)")
    p.add_argument("--workers", type=positive(int), default=None, help="parallel programs (default: one per core)")
    p.add_argument("--timeout", type=positive(float), default=None,
                   help=f"wall-clock seconds for a job that sets no timeout_s (default: {Limits().timeout_s:g})")
    p.add_argument("--token-file", type=Path, default=None,
                   help=f"file holding the bearer token clients must send (stripped; at least 16 characters); "
                   f"without it, ${TOKEN_ENV} if set. Make one with `openssl rand -hex 32 > FILE`")
    p.add_argument("--max-batch", type=positive(int), default=defaults.max_jobs_per_request,
                   help=f"jobs per request (default: {defaults.max_jobs_per_request})")
    p.add_argument("--max-queue", type=positive(int), default=defaults.max_queue_jobs,
                   help=f"jobs admitted and not finished, over all requests; past it 429 + Retry-After "
                   f"(default: {defaults.max_queue_jobs})")
    p.add_argument("--max-body-bytes", type=positive(int), default=defaults.max_body_bytes,
                   help=f"request body size (default: {defaults.max_body_bytes})")
    p.add_argument("--max-program-bytes", type=positive(int), default=defaults.max_program_bytes,
                   help=f"UTF-8 bytes of one program (default: {defaults.max_program_bytes})")
    p.add_argument("--max-timeout", type=positive(float), default=defaults.max_timeout_s,
                   help=f"the most timeout_s a job may ask for; more is refused, not clamped "
                   f"(default: {defaults.max_timeout_s:g}); /run_code's run_timeout is cut to it instead, and "
                   "its response says so (SandboxFusion's clients send one fixed timeout)")
    p.add_argument("--max-output-bytes", type=positive(int), default=defaults.max_output_bytes,
                   help=f"/run_code only: bytes of stdout (and of stderr) sent back per program, whose caller "
                   f"compares the whole stdout (default: {defaults.max_output_bytes}); /v1/grade keeps "
                   f"{Limits().keep_output_bytes}")


def serve(args: argparse.Namespace) -> int:
    try:
        from .server import serve as run_server
    except ImportError as exc:
        if (exc.name or "").split(".")[0] not in SERVE_EXTRA:
            raise
        raise SandboxUnavailable(f"`sandbox serve` needs {exc.name}, which is not installed",
                                 hint="pip install 'score-code[serve]'") from None
    try:
        settings = ServerSettings(max_body_bytes=args.max_body_bytes, max_jobs_per_request=args.max_batch,
                                  max_program_bytes=args.max_program_bytes, max_timeout_s=args.max_timeout,
                                  max_queue_jobs=args.max_queue, max_output_bytes=args.max_output_bytes,
                                  token=read_token(args.token_file))
    except ValueError as exc:
        raise SandboxError(str(exc)) from None
    limits = Limits() if args.timeout is None else Limits().with_timeout(args.timeout)
    if limits.timeout_s > settings.max_timeout_s:
        raise SandboxError(f"--timeout {limits.timeout_s:g} is over --max-timeout {settings.max_timeout_s:g}")
    run_server(settings, host=args.host, port=args.port, backend=args.backend, workers=args.workers, limits=limits)
    return 0


def read_token(path: Path | None) -> str | None:
    """The token from --token-file or $SANDBOX_TOKEN (taken out of the environment, so no child process inherits
    it); both at once is refused rather than guessing which one the clients hold."""
    from_env = os.environ.pop(TOKEN_ENV, None)
    if path is not None:
        if from_env is not None:
            raise SandboxError(f"both --token-file and ${TOKEN_ENV} are set", hint="give the token one way")
        return remote_backend.read_token_file(path, "--token-file")
    token = None if from_env is None else from_env.strip()
    if token == "":
        raise SandboxError(f"${TOKEN_ENV} is empty", hint="`openssl rand -hex 32 > FILE` makes a token")
    return token


# --- doctor ----------------------------------------------------------------------------------------------------
def doctor() -> int:
    """Check each layer in order and say in plain words what is wrong and how to fix it."""
    from . import Job, Sandbox, Status
    from . import docker_backend as db

    def report(ok: bool, what: str, fix: str = "", fatal: bool = True) -> bool:
        print(f"{'ok  ' if ok else 'FAIL' if fatal else 'warn'} {what}")
        if not ok and fix:
            print(f"     {'fix' if fatal else 'note'}: {fix}")
        return ok

    if not report(shutil.which("docker") is not None, "docker CLI on PATH",
                  "install Docker (Debian/Ubuntu: `sudo apt-get install docker.io`)"):
        return 1
    try:
        version = db.require_engine()
    except SandboxError as exc:
        report(False, f"Docker engine reachable: {exc}", exc.hint)
        return 1
    report(True, f"Docker engine reachable (server {version})")
    tag = db.image_tag()
    if not report(db.image_exists(tag), f"image {tag} present and built from this executor",
                  "run `sandbox build-image`"):
        return 1
    try:
        with Sandbox(backend="docker", workers=1) as sb:
            result = sb.run(Job.generic("def add(a, b):\n    return a + b\n", "assert add(2, 3) == 5\n",
                                        job_id="doctor"))
            problems = _hardening_problems(db, sb._spawner.owner)
            channels = {w.channel for w in sb._pool._workers}
    except SandboxError as exc:
        report(False, f"a sandbox container starts and answers: {exc}",
               "run `sandbox build-image --force`; if it persists, the worker's stderr above says why")
        return 1
    ok = report(not problems, "the container runs with the hardening flags",
                "; ".join(problems) + " (is this an old or patched Docker engine?)")
    report(channels == {"socket"}, "requests reach the executor over a bind-mounted socket (not relayed by the "
           "docker daemon)", "only speed is lost (about 1 ms of CPU per program): this engine cannot bind-mount a "
           "unix socket of this machine into containers (another host, docker-in-docker, a VM), so requests go "
           "through `docker run -i`", fatal=False)
    ok &= report(result.status is Status.PASSED, f"a trivial program passes (got {result.status.value}"
                 f"{': ' + result.first_failure if result.first_failure else ''})",
                 "run `sandbox build-image --force`; if it persists, the executor is broken")
    return 0 if ok else 1


def _hardening_problems(db, owner: str) -> list[str]:
    """Compare `docker inspect` of a live worker with the flags we asked for."""
    import json

    rows = db.list_containers(owner=owner)
    if not rows:
        return ["no running worker container found to inspect"]
    host = json.loads(db.docker_cli(["inspect", rows[0]["id"]]).stdout)[0]["HostConfig"]
    expected = {"NetworkMode": "none", "ReadonlyRootfs": True, "CapDrop": ["ALL"], "Init": True,
                "SecurityOpt": ["no-new-privileges"], "IpcMode": "none"}
    problems = [f"{key} is {host.get(key)!r}, expected {value!r}" for key, value in expected.items()
                if host.get(key) != value]
    if not host.get("PidsLimit") or not host.get("Memory") or host.get("MemorySwap") != host.get("Memory"):
        problems.append("pids/memory/swap limits are not set as requested")
    return problems


if __name__ == "__main__":
    raise SystemExit(main())
