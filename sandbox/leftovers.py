"""What a SIGKILLed Sandbox owner leaves behind, and how to tell that its owner is gone.

A Sandbox marks what it creates with its owner: containers carry a `host:pid:nonce` label and a start time, and the
temp directories it makes (protocol sockets of the Docker backend, the scratch root of the local backend) are named
<prefix><owner pid>@<host tag>-*. An owner that dies without cleaning up cannot remove them; the next Sandbox on this
host, or `sandbox cleanup`, does it for it. The host tag matters where several hosts share a temp directory (graders
in containers with one mounted socket directory): a pid says nothing about another host's processes, so only
directories of this host are judged.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import socket
import tempfile
from pathlib import Path

SOCKET_DIR_PREFIX = "score-sandbox-sockets-"  # + <owner pid>-: a temp dir of protocol sockets per Docker Sandbox
LOCAL_ROOT_PREFIX = "score-sandbox-local-"  # + <owner pid>-: the scratch root of a local-backend Sandbox
OWNED_DIR_PREFIXES = (SOCKET_DIR_PREFIX, LOCAL_ROOT_PREFIX)


def host_tag(host: str | None = None) -> str:
    """8 hex digits for a hostname: fixed length, because a unix socket's path must stay under 108 bytes."""
    return hashlib.sha256((host or socket.gethostname()).encode()).hexdigest()[:8]


def owned_temp_dir(prefix: str) -> str:
    """A new private temp directory named after this process and host, so `remove_dead_owners_dirs` can find it."""
    return tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}@{host_tag()}-")  # mode 0700


def owner_is_dead(owner: str, started: str) -> bool:
    """True if the owner process is on this host and gone (or its pid now belongs to a younger process)."""
    try:
        host, pid_s, _ = owner.split(":")
        pid = int(pid_s)
    except ValueError:
        return True  # unparseable owner: not one of ours to keep alive
    if host != socket.gethostname():
        return False  # another host sharing the engine: we cannot tell, leave it to `sandbox cleanup --all`
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, owned by another user
    proc_start_s = _process_start_time(pid)
    try:
        started_s = float(started)
    except ValueError:
        return False
    return proc_start_s is not None and proc_start_s > started_s + 1.0  # pid reused after the owner died


def _process_start_time(pid: int) -> float | None:
    """Unix time a process started (Linux /proc), or None when it cannot be read."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot_s = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                      if line.startswith("btime "))
    except (OSError, StopIteration, ValueError):
        return None
    start_ticks = int(stat.rsplit(")", 1)[1].split()[19])
    return boot_s + start_ticks / os.sysconf("SC_CLK_TCK")


def remove_dead_owners_dirs() -> int:
    """Remove this host's temp directories (OWNED_DIR_PREFIXES) whose owner process is gone; returns how many. A
    directory's mtime stands in for its owner's start in `owner_is_dead` (a pid reused by a younger process is told
    apart)."""
    root = tempfile.gettempdir()
    ours = host_tag()
    removed = 0
    for entry in os.listdir(root):
        prefix = next((p for p in OWNED_DIR_PREFIXES if entry.startswith(p)), None)
        if prefix is None:
            continue
        path = os.path.join(root, entry)
        pid, _, tag = entry[len(prefix):].split("-", 1)[0].partition("@")
        if tag != ours:
            continue  # another host's (or an older release's, without a tag): not ours to judge
        try:
            started = os.stat(path).st_mtime
        except OSError:
            continue
        if pid.isdigit() and owner_is_dead(f"{socket.gethostname()}:{pid}:", str(started)):
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
    return removed
