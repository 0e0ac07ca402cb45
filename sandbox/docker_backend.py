"""The Docker backend: the docker CLI (no SDK), the hardened `docker run -i` line, image naming and stale cleanup.

Every container runs the executor as one long-lived worker (see pool.py) with all of these, taken from Limits:
no network, read-only root, size- and inode-limited tmpfs mounts at /scratch and /dev/shm (multiprocessing's
semaphores and shared memory) as the only writable places, both emptied after each program, a non-root uid, no
capabilities, no-new-privileges, pids/memory(no swap)/cpus limits, nofile/fsize ulimits, an init process as PID 1, owner
labels and --rm. Its one way out is the protocol socket, bind-mounted read-only, which the executor connects to
before any program runs (programs cannot create unix sockets: see the executor's seccomp filter).
"""
from __future__ import annotations

import hashlib
import itertools
import os
import shutil
import socket
import subprocess
import time
import uuid
import warnings
from pathlib import Path

from .errors import SandboxError, SandboxUnavailable
from .leftovers import SOCKET_DIR_PREFIX, owned_temp_dir, owner_is_dead, remove_dead_owners_dirs
from .limits import Limits
from .pool import WorkerProcess

IMAGE_REPO = "score-sandbox"
IMAGE_LAYOUT_VERSION = "3"  # bump when the image layout (paths, user, env) changes without an executor change
EXECUTOR_IN_IMAGE = "/opt/score-sandbox/executor.py"
# Compiled at build time by the image's own python3, and what containers run: compiling the source at every start
# would leave ~5 MB of heap in the executor that every per-program fork then copies and tears down (~0.3 ms).
EXECUTOR_COMPILED_IN_IMAGE = "/opt/score-sandbox/executor.pyc"
COMPILE_EXECUTOR = ["python3", "-c", f"import py_compile; py_compile.compile({EXECUTOR_IN_IMAGE!r}, "
                    f"cfile={EXECUTOR_COMPILED_IN_IMAGE!r}, doraise=True)"]
CHANNEL_IN_CONTAINER = "/run/score-sandbox.sock"  # where the protocol socket is bind-mounted
SANDBOX_UID = 10001  # non-root and matching no host account
LABEL = "score-sandbox"  # every container carries score-sandbox=1
OWNER_LABEL = "score-sandbox.owner"  # <host>:<pid>:<uuid> of the process that started it
STARTED_LABEL = "score-sandbox.started"  # unix time (s) the container was started
HASH_LABEL = "score-sandbox.executor-sha256"  # on the image: which executor it carries
DOCKER_HINT = "start the engine (e.g. `sudo systemctl start docker`, or `sudo dockerd &`), then run `sandbox doctor`"


def executor_path() -> Path:
    """sandbox/executor.py: the program baked into the image and run by the local backend."""
    return Path(__file__).with_name("executor.py")


def executor_sha256(path: Path | None = None) -> str:
    path = path or executor_path()
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SandboxUnavailable(f"the executor {path} is missing from the sandbox package",
                                 hint="reinstall score-code (pip install -e .)") from None
    return hashlib.sha256(IMAGE_LAYOUT_VERSION.encode() + b"\0" + data).hexdigest()


def image_tag(path: Path | None = None) -> str:
    """score-sandbox:<hash12>: a changed executor gets a new tag, so a stale image is never used by mistake."""
    return f"{IMAGE_REPO}:{executor_sha256(path)[:12]}"


def docker_cli(args: list[str], *, timeout_s: float = 120.0, input_bytes: bytes | None = None,
               check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run `docker ARGS`; typed errors for a missing CLI, a hang, or (with check) a non-zero exit."""
    try:
        proc = subprocess.run(["docker", *args], input=input_bytes, capture_output=True, timeout=timeout_s,
                              env=env)
    except FileNotFoundError:
        raise SandboxUnavailable("the docker CLI was not found on PATH",
                                 hint="install Docker (Debian/Ubuntu: `sudo apt-get install docker.io`)") from None
    except subprocess.TimeoutExpired:
        raise SandboxError(f"`docker {' '.join(args[:3])}` did not answer within {timeout_s:.0f} s",
                           hint=DOCKER_HINT) from None
    if check and proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()
        if "Cannot connect to the Docker daemon" in err or "permission denied" in err.lower():
            raise SandboxUnavailable(f"the Docker engine is not reachable: {err}", hint=DOCKER_HINT)
        raise SandboxError(f"`docker {' '.join(args[:3])}` failed (exit {proc.returncode}): {err}")
    return proc


def require_engine() -> str:
    """Return the engine version, or raise SandboxUnavailable saying why Docker cannot be used."""
    proc = docker_cli(["version", "--format", "{{.Server.Version}}"], timeout_s=30, check=False)
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()
        raise SandboxUnavailable(f"the Docker engine is not reachable: {err}", hint=DOCKER_HINT)
    return proc.stdout.decode().strip()


def image_exists(image: str) -> bool:
    return docker_cli(["image", "inspect", image], timeout_s=30, check=False).returncode == 0


def require_image(image: str | None = None) -> str:
    """The image to run: `image` if given and present, else the tag matching this package's executor."""
    require_engine()
    if image is not None:
        if not image_exists(image):
            raise SandboxUnavailable(f"sandbox image {image} not found", hint=f"docker pull/build {image}, "
                                     "or drop image= to use the image `sandbox build-image` makes")
        return image
    tag = image_tag()
    if image_exists(tag):
        return tag
    older = docker_cli(["image", "ls", IMAGE_REPO, "--format", "{{.Repository}}:{{.Tag}}"], timeout_s=30,
                       check=False).stdout.decode().split()
    why = f" (found {', '.join(older)}, built for another executor version)" if older else ""
    raise SandboxUnavailable(f"sandbox image {tag} not found{why}", hint="run `sandbox build-image`")


def new_owner() -> str:
    """<host>:<pid>:<uuid>: who started a container, so a later process can tell whether that owner is dead."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def run_argv(image: str, limits: Limits, name: str, owner: str, channel: str = "") -> list[str]:
    """The full hardened `docker run -i` command line for one worker container. `channel`: a host unix socket to
    bind-mount read-only for the protocol (see WorkerProcess); without it the protocol goes through stdin/stdout."""
    mount = ["--mount", f"type=bind,source={channel},target={CHANNEL_IN_CONTAINER},readonly"] if channel else []
    connect = ["--connect", CHANNEL_IN_CONTAINER] if channel else []
    scratch = f"/scratch:rw,nosuid,nodev,size={limits.scratch_mb}m,nr_inodes={limits.scratch_inodes},mode=1777"
    # --ipc none gives no /dev/shm; this one is emptied by the executor after each program, like the scratch dir
    shm = f"/dev/shm:rw,nosuid,nodev,noexec,size={limits.shm_mb}m,nr_inodes=1024,mode=1777"
    fsize_bytes = limits.file_size_mb * 1024 * 1024
    return [
        "docker", "run", "-i", "--rm", "--init",
        "--name", name,
        "--label", f"{LABEL}=1", "--label", f"{OWNER_LABEL}={owner}", "--label", f"{STARTED_LABEL}={time.time():.3f}",
        "--network", "none",
        "--read-only", "--tmpfs", scratch, "--workdir", "/scratch",
        "--ipc", "none", "--tmpfs", shm,  # a private IPC namespace (System V IPC is refused to programs anyway)
        "--user", f"{SANDBOX_UID}:{SANDBOX_UID}",
        "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
        "--pids-limit", str(limits.pids),
        "--memory", f"{limits.memory_mb}m", "--memory-swap", f"{limits.memory_mb}m",
        "--cpus", str(limits.cpus),
        "--ulimit", f"nofile={limits.open_files}:{limits.open_files}",
        "--ulimit", f"fsize={fsize_bytes}:{fsize_bytes}",
        "--env", "HOME=/scratch", "--env", "TMPDIR=/scratch", "--env", "PYTHONDONTWRITEBYTECODE=1",
        "--log-driver", "none",  # the executor's stdout may be our protocol channel; nothing to keep on disk
        *mount,
        image, "python3", "-u", EXECUTOR_COMPILED_IN_IMAGE, "--mode", "container", "--scratch", "/scratch", *connect,
    ]


class DockerSpawner:
    """Starts warm worker containers for one Sandbox; all share one owner label.

    Each container gets its own listening unix socket, in a directory only this user can enter, bind-mounted
    read-only: the protocol then skips the docker CLI/daemon/shim relay of `docker run -i`, about 1 ms of CPU per
    program. Where that cannot work, the executor stays on stdin/stdout: it cannot reach the socket (a VM-based
    engine), or the engine cannot mount it at all (an engine on another host or in another container), in which
    case this spawner warns once and stops mounting sockets."""

    def __init__(self, image: str, limits: Limits) -> None:
        self.image = image
        self.limits = limits
        self.owner = new_owner()
        self._count = itertools.count(1)  # next() is atomic: workers are started from several threads
        self._socket_dir = owned_temp_dir(SOCKET_DIR_PREFIX)
        self._mount_sockets = True

    def __call__(self) -> WorkerProcess:
        pid, tag = self.owner.split(":")[1:]
        n = next(self._count)
        name = f"score-sandbox-{pid}-{tag[:6]}-{n}"
        stdio_argv = run_argv(self.image, self.limits, name, self.owner)
        if not self._mount_sockets:
            return WorkerProcess(stdio_argv, name=name, kill=lambda: _docker_kill(name))
        path = os.path.join(self._socket_dir, f"{n}.sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(path)
            os.chmod(path, 0o666)  # the container's uid must be able to connect; the directory keeps others out
            listener.listen(1)
            return WorkerProcess(run_argv(self.image, self.limits, name, self.owner, channel=path), name=name,
                                 kill=lambda: _docker_kill(name), listener=listener, stdio_argv=stdio_argv,
                                 on_stdio=self._stop_mounting_sockets)
        except BaseException:
            listener.close()
            raise

    def _stop_mounting_sockets(self, reason: str) -> None:
        if self._mount_sockets:
            self._mount_sockets = False
            warnings.warn(f"the Docker engine could not start a sandbox container with its protocol socket mounted "
                          f"({reason[-300:]}); requests go through `docker run -i` instead, about 1 ms more CPU per "
                          "program", RuntimeWarning, stacklevel=2)

    def remove_all(self) -> None:
        """Force-remove any container of this owner that is still around (after the workers were closed)."""
        remove_containers(list_containers(owner=self.owner))
        shutil.rmtree(self._socket_dir, ignore_errors=True)


def _docker_kill(name: str) -> None:
    docker_cli(["kill", name], timeout_s=30, check=False)


def list_containers(owner: str | None = None) -> list[dict[str, str]]:
    """Containers labelled score-sandbox=1 (optionally of one owner): id, name, owner, started."""
    label = f"{OWNER_LABEL}={owner}" if owner else f"{LABEL}=1"
    fmt = "\t".join(["{{.ID}}", "{{.Names}}", f'{{{{.Label "{OWNER_LABEL}"}}}}', f'{{{{.Label "{STARTED_LABEL}"}}}}'])
    out = docker_cli(["ps", "-a", "--filter", f"label={label}", "--format", fmt], timeout_s=30).stdout.decode()
    rows = []
    for line in out.splitlines():
        cid, name, own, started = (line.split("\t") + ["", "", ""])[:4]
        rows.append({"id": cid, "name": name, "owner": own, "started": started})
    return rows


def remove_containers(rows: list[dict[str, str]]) -> int:
    if rows:
        docker_cli(["rm", "-f", *[r["id"] for r in rows]], timeout_s=120, check=False)
    return len(rows)


def cleanup_containers(all_owners: bool = False) -> int:
    """Remove score-sandbox containers whose owner died (or all of them), and the temp directories that dead owners
    left (sockets, local scratch roots); returns how many containers were removed."""
    rows = list_containers()
    if not all_owners:
        rows = [r for r in rows if owner_is_dead(r["owner"], r["started"])]
    remove_dead_owners_dirs()
    return remove_containers(rows)
