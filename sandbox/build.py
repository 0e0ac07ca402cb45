"""Build the sandbox image: `score-sandbox:<hash12>`, carrying sandbox/executor.py at /opt/score-sandbox/, compiled
there by the image's python3 (containers run executor.pyc: see EXECUTOR_COMPILED_IN_IMAGE).

Two ways, same result:
- offline (default): a Debian bookworm rootfs from `debootstrap --variant=minbase --include=python3` (full python3:
  python3-minimal lacks unittest and fractions), imported once with `docker import` as `score-sandbox-base:bookworm`.
  The executor is then added and compiled by `docker create` + `docker cp` + `docker start` + `docker commit`,
  which needs no registry and no builder, so a rebuild after an executor change takes seconds. Needs root
  (debootstrap) and a Debian mirror (`$SCORE_SANDBOX_MIRROR`, default http://deb.debian.org/debian).
- `--from-dockerfile`: `docker build` with sandbox/image/Dockerfile (FROM python:3.11-slim), for machines that can
  pull from a registry.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from .docker_backend import (
    COMPILE_EXECUTOR,
    EXECUTOR_COMPILED_IN_IMAGE,
    EXECUTOR_IN_IMAGE,
    HASH_LABEL,
    SANDBOX_UID,
    docker_cli,
    executor_path,
    executor_sha256,
    image_exists,
    image_tag,
    require_engine,
)
from .errors import ImageBuildError, SandboxError

BASE_LAYOUT_VERSION = "2"  # bump when _prepare_rootfs changes, so a stale cached base is not reused
BASE_IMAGE = f"score-sandbox-base:bookworm-{BASE_LAYOUT_VERSION}"
DOCKERFILE = Path(__file__).with_name("image") / "Dockerfile"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# Large, unused by graded programs: dropped from the rootfs to keep the image small (about 260 MB -> 130 MB).
PRUNE = ("var/cache/apt", "var/lib/apt/lists", "usr/share/doc", "usr/share/man", "usr/share/locale",
         "usr/share/info")
Log = Callable[[str], None]


def build_image(from_dockerfile: bool = False, force: bool = False, log: Log = print) -> str:
    """Make sure the image for this executor exists; returns its tag. `force` also rebuilds the base rootfs."""
    require_engine()
    tag = image_tag()
    if image_exists(tag) and not force:
        log(f"{tag} is up to date (executor sha256 {executor_sha256()[:12]})")
        return tag
    if from_dockerfile:
        _build_from_dockerfile(tag, log)
    else:
        if force or not image_exists(BASE_IMAGE):
            build_base(log)
        else:
            log(f"reusing base image {BASE_IMAGE} (pass --force to rebuild it)")
        _add_executor(tag, log)
    _smoke_test(tag)
    log(f"built {tag}")
    return tag


def build_base(log: Log = print) -> None:
    """debootstrap a minimal bookworm with python3 and import it as BASE_IMAGE (about a minute)."""
    if os.geteuid() != 0:
        raise ImageBuildError("building the base rootfs with debootstrap needs root",
                              hint="run `sudo sandbox build-image`, or `sandbox build-image --from-dockerfile` "
                                   "if this machine can pull python:3.11-slim")
    if shutil.which("debootstrap") is None:
        raise ImageBuildError("debootstrap is not installed",
                              hint="`sudo apt-get install debootstrap`, or use `sandbox build-image --from-dockerfile`")
    mirror = os.environ.get("SCORE_SANDBOX_MIRROR", DEFAULT_MIRROR)
    with tempfile.TemporaryDirectory(prefix="score-sandbox-rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        log(f"debootstrap bookworm from {mirror} into {rootfs} (about a minute)")
        _run(["debootstrap", "--variant=minbase", "--include=python3", "bookworm", str(rootfs), mirror],
             "debootstrap", timeout_s=1800)
        _prepare_rootfs(rootfs)
        log(f"importing the rootfs as {BASE_IMAGE}")
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE)
        try:
            proc = subprocess.run(["docker", "import", "--change", "CMD [\"python3\"]", "-", BASE_IMAGE],
                                  stdin=tar.stdout, capture_output=True, timeout=900)
        finally:
            tar.stdout.close()
            tar.wait()
        if proc.returncode != 0 or tar.returncode != 0:
            raise ImageBuildError(f"docker import of {rootfs} failed (tar exit {tar.returncode}, docker exit "
                                  f"{proc.returncode}): {proc.stderr.decode(errors='replace').strip()}")


def _prepare_rootfs(rootfs: Path) -> None:
    """Add the sandbox user, the mount point and executor directory; drop caches and docs."""
    for rel in PRUNE:
        shutil.rmtree(rootfs / rel, ignore_errors=True)
    with open(rootfs / "etc/passwd", "a") as f:
        f.write(f"sandbox:x:{SANDBOX_UID}:{SANDBOX_UID}:score sandbox:/scratch:/usr/sbin/nologin\n")
    with open(rootfs / "etc/group", "a") as f:
        f.write(f"sandbox:x:{SANDBOX_UID}:\n")
    # Docker copies the mount point's mode onto the tmpfs, so /scratch itself must be world-writable + sticky.
    (rootfs / "scratch").mkdir(exist_ok=True)
    (rootfs / "scratch").chmod(0o1777)
    (rootfs / "opt/score-sandbox").mkdir(parents=True, exist_ok=True)


def _add_executor(tag: str, log: Log) -> None:
    """BASE_IMAGE + executor.py -> tag, with no registry and no builder (create, cp, commit)."""
    src = executor_path()
    sha = executor_sha256()
    log(f"adding {src} to {BASE_IMAGE} -> {tag}")
    cid = docker_cli(["create", "--network", "none", "--label", "score-sandbox.build=1", BASE_IMAGE,
                      *COMPILE_EXECUTOR]).stdout.decode().strip()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            staged = Path(tmp) / "executor.py"
            shutil.copyfile(src, staged)
            staged.chmod(0o644)
            docker_cli(["cp", str(staged), f"{cid}:{EXECUTOR_IN_IMAGE}"])
        docker_cli(["start", "--attach", cid], timeout_s=300)  # compiles it with the image's python3
        changes = [f"USER {SANDBOX_UID}", "WORKDIR /scratch", "ENV HOME=/scratch", "ENV TMPDIR=/scratch",
                   "ENV PYTHONDONTWRITEBYTECODE=1", "ENV PYTHONUNBUFFERED=1", f"LABEL {HASH_LABEL}={sha}",
                   f'CMD ["python3", "-u", "{EXECUTOR_COMPILED_IN_IMAGE}", "--mode", "container", "--scratch", '
                   '"/scratch"]']
        args = ["commit"]
        for change in changes:
            args += ["--change", change]
        docker_cli(args + [cid, tag])
    except SandboxError as exc:
        raise ImageBuildError(f"adding the executor to {BASE_IMAGE} failed: {exc}") from None
    finally:
        docker_cli(["rm", "-f", cid], check=False)


def _build_from_dockerfile(tag: str, log: Log) -> None:
    env = dict(os.environ)
    if docker_cli(["buildx", "version"], check=False).returncode != 0:
        env["DOCKER_BUILDKIT"] = "0"  # no buildx plugin: the classic builder still works
    with tempfile.TemporaryDirectory(prefix="score-sandbox-context-") as tmp:
        shutil.copyfile(DOCKERFILE, Path(tmp) / "Dockerfile")
        shutil.copyfile(executor_path(), Path(tmp) / "executor.py")
        (Path(tmp) / "executor.py").chmod(0o644)  # COPY keeps the mode; the sandbox user must be able to read it
        log(f"docker build {DOCKERFILE} -> {tag}")
        proc = docker_cli(["build", "--label", f"{HASH_LABEL}={executor_sha256()}", "-t", tag, tmp],
                          timeout_s=1800, check=False, env=env)
    if proc.returncode != 0:
        raise ImageBuildError(f"docker build of {DOCKERFILE} failed: "
                              f"{proc.stderr.decode(errors='replace').strip()[-2000:]}",
                              hint="without registry access, run `sandbox build-image` (offline, debootstrap)")


def _smoke_test(tag: str) -> None:
    """The image must have a full python3 (unittest, fractions) and the compiled executor must run."""
    probe = "import unittest, fractions, json"
    proc = docker_cli(["run", "--rm", "--network", "none", tag, "sh", "-c",
                       f"python3 -c '{probe}' && python3 {EXECUTOR_COMPILED_IN_IMAGE} --help >/dev/null"],
                      timeout_s=120, check=False)
    if proc.returncode != 0:
        raise ImageBuildError(f"the new image {tag} failed its smoke test: "
                              f"{proc.stderr.decode(errors='replace').strip()}")


def _run(argv: list[str], what: str, timeout_s: float) -> None:
    try:
        proc = subprocess.run(argv, capture_output=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise ImageBuildError(f"{what} did not finish within {timeout_s:.0f} s") from None
    if proc.returncode != 0:
        out = (proc.stdout + proc.stderr).decode(errors="replace").strip()[-2000:]
        raise ImageBuildError(f"{what} failed (exit {proc.returncode}): {out}",
                              hint="check the mirror ($SCORE_SANDBOX_MIRROR) is reachable")
