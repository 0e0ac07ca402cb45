"""A warm pool of executor workers: one long-lived process (a `docker run -i` or a local python3) per slot.

Each worker speaks JSON lines (see sandbox/executor.py): a `{"ready": true, ...}` line at start, then one response
line per request line, one request at a time, over the process's stdin/stdout or (Docker) a unix socket
bind-mounted into the container. Programs reuse a warm worker, so the per-program overhead is one round trip on
that channel, not a container start. The pool keeps its own deadline per request (the job's timeout + grace) on top
of the executor's: a worker that misses it, dies, or answers garbage is killed and replaced in the background, and
the job is retried once on another worker; a second failure gives a SANDBOX_ERROR result. A worker is also
recycled after `Limits.programs_per_container` programs, after a limit violation (timeout, memory) and after any
sandbox error.
"""
from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import json
import os
import queue
import select
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Sequence

from .errors import SandboxError
from .jobs import Job
from .limits import Limits
from .verdict import Result, Status

MAX_RESPONSE_BYTES = 64 * 1024 * 1024  # a response this large means a broken worker, not a verdict
RECYCLE_AFTER = frozenset({Status.TIMEOUT, Status.MEMORY_EXCEEDED, Status.SANDBOX_ERROR})  # a fresh worker
Progress = Callable[[int, int, Result], None]


class WorkerFailure(Exception):
    """The worker process itself failed (died, hung, spoke garbage): the job may be retried elsewhere."""


class WorkerProcess:
    """One executor process and its protocol channel. `kill` is the backend's hard stop (docker kill, or killpg).

    With a `listener` (a listening unix socket bind-mounted into the container), the channel is the first
    connection on it, if the executor reaches it; otherwise, and without a listener, the process's stdin/stdout.
    If the process ends before it connects (an engine on another host or in a VM cannot mount a path of this
    machine), `stdio_argv` is started in its place, and `on_stdio(reason)` is called once that one is ready."""

    def __init__(self, argv: list[str], name: str, kill: Callable[[], None] | None = None,
                 env: dict[str, str] | None = None, cwd: str | None = None,
                 listener: socket.socket | None = None, stdio_argv: list[str] | None = None,
                 on_stdio: Callable[[str], None] | None = None) -> None:
        self.name = name
        self.programs = 0  # programs run on this worker so far
        self._kill_backend = kill
        self._env, self._cwd = env, cwd
        self._listener = listener
        self._stdio_argv, self._on_stdio = stdio_argv, on_stdio
        self._conn: socket.socket | None = None
        self.channel = ""  # how requests reach the executor, once it is ready: "socket" or "stdio"
        self._start(argv)

    def _start(self, argv: list[str]) -> None:
        # A new session: Ctrl-C in the terminal reaches only us, and we close the workers in order.
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     bufsize=0, env=self._env, cwd=self._cwd, start_new_session=True)
        self._out_fd = self.proc.stdout.fileno()
        self._in_fd = self.proc.stdin.fileno()
        os.set_blocking(self._in_fd, False)
        self._buf = bytearray()
        self._stderr_tail: collections.deque[bytes] = collections.deque(maxlen=16)
        self._stderr_thread = threading.Thread(target=self._drain_stderr, name=f"{self.name}-stderr", daemon=True)
        self._stderr_thread.start()

    def _drain_stderr(self) -> None:
        fd = self.proc.stderr.fileno()
        try:
            for chunk in iter(lambda: os.read(fd, 4096), b""):
                self._stderr_tail.append(chunk)
        except OSError:
            pass  # closed under us by kill(): nothing more to keep
        else:
            self.proc.stderr.close()  # EOF: the process is gone and its last words are kept

    def stderr_tail(self) -> str:
        if self.proc.poll() is not None:
            self._stderr_thread.join(timeout=1.0)  # the process is gone: let the drain catch its last words
        return b"".join(self._stderr_tail).decode(errors="replace").strip()[-2000:]

    def wait_ready(self, timeout_s: float) -> dict:
        deadline = time.monotonic() + timeout_s
        if self._listener is not None:
            self._accept(deadline)
        fallback_reason = ""
        try:
            line = self._read_line(deadline)
        except WorkerFailure as exc:
            if self._conn is not None or self._stdio_argv is None or self.proc.poll() is None:
                raise
            fallback_reason = self.stderr_tail() or str(exc)
            for pipe in (self.proc.stdin, self.proc.stdout):
                pipe.close()
            self._start(self._stdio_argv)
            line = self._read_line(deadline)
        try:
            hello = json.loads(line)
        except ValueError:
            hello = None
        if not isinstance(hello, dict) or hello.get("ready") is not True:
            raise WorkerFailure(f"worker {self.name} sent {line[:200]!r} instead of its ready line; "
                                f"stderr: {self.stderr_tail() or '(empty)'}")
        self.channel = "socket" if self._conn is not None else "stdio"
        if fallback_reason and self._on_stdio is not None:
            self._on_stdio(fallback_reason)
        return hello

    def _accept(self, deadline: float) -> None:
        """Take the executor's connection, or notice it fell back to stdout (it says so before its ready line).
        The listener is closed either way: nothing can connect after the executor, before any program ran."""
        listener, self._listener = self._listener, None
        path = listener.getsockname()
        try:
            while True:
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    raise WorkerFailure(f"worker {self.name} did not start before the deadline; "
                                        f"stderr: {self.stderr_tail() or '(empty)'}")
                readable, _, _ = select.select([listener, self._out_fd], [], [], timeout)
                if listener in readable:
                    self._conn, _ = listener.accept()
                    self._in_fd = self._out_fd = self._conn.fileno()
                    os.set_blocking(self._in_fd, False)
                    return
                if readable:
                    return  # stdout has data: the executor could not reach the socket and uses stdin/stdout
        finally:
            listener.close()
            try:
                os.unlink(path)
            except OSError:
                pass

    def request(self, job: Job, limits: Limits, deadline: float) -> Result:
        """Send one job and wait for its result until `deadline` (time.monotonic)."""
        request_id = uuid.uuid4().hex[:16]
        line = json.dumps({"id": request_id, "job": job.to_dict(), "limits": limits.to_dict()},
                          separators=(",", ":")) + "\n"
        self._write_all(line.encode(), deadline)
        raw = self._read_line(deadline)
        try:
            data = json.loads(raw)
            if data.get("id") != request_id:
                raise WorkerFailure(f"worker {self.name} answered request {data.get('id')!r}, expected {request_id}")
            result = Result.from_dict(data)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise WorkerFailure(f"worker {self.name} sent an unreadable response ({exc}): {raw[:200]!r}") from None
        self.programs += 1
        result.job_id = job.job_id
        return result

    def ping(self, deadline: float) -> None:
        """One protocol round trip with no program: what the transport alone costs."""
        self._write_all(b'{"op":"ping"}\n', deadline)
        line = self._read_line(deadline)
        try:
            pong = json.loads(line)
        except ValueError:
            pong = None
        if pong != {"op": "pong"}:
            raise WorkerFailure(f"worker {self.name} answered a ping with {line[:200]!r}")

    def _write_all(self, data: bytes, deadline: float) -> None:
        view = memoryview(data)
        while view:
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                raise WorkerFailure(f"worker {self.name} did not take its request before the deadline")
            try:
                _, writable, _ = select.select([], [self._in_fd], [], timeout)
            except (OSError, ValueError) as exc:  # the pipe was closed under us (close() from another thread)
                raise WorkerFailure(f"worker {self.name} is gone ({exc})") from None
            if not writable:
                continue
            try:
                view = view[os.write(self._in_fd, view):]
            except BlockingIOError:
                continue
            except (BrokenPipeError, OSError) as exc:
                raise WorkerFailure(f"worker {self.name} is gone ({exc}); {self.stderr_tail()}") from None

    def _read_line(self, deadline: float) -> str:
        while True:
            newline = self._buf.find(b"\n")
            if newline >= 0:
                line = bytes(self._buf[:newline])
                del self._buf[: newline + 1]
                return line.decode(errors="replace")
            if len(self._buf) > MAX_RESPONSE_BYTES:
                raise WorkerFailure(f"worker {self.name} sent a line over {MAX_RESPONSE_BYTES} bytes")
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                raise WorkerFailure(f"worker {self.name} did not answer before the deadline")
            try:
                readable, _, _ = select.select([self._out_fd], [], [], timeout)
                if not readable:
                    continue
                chunk = os.read(self._out_fd, 1 << 16)
            except BlockingIOError:  # the socket is non-blocking (it is also the write end)
                continue
            except (OSError, ValueError) as exc:  # the pipe was closed under us (close() from another thread)
                raise WorkerFailure(f"worker {self.name} is gone ({exc})") from None
            if not chunk:
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
                raise WorkerFailure(f"worker {self.name} exited (code {self.proc.poll()}); "
                                    f"stderr: {self.stderr_tail() or '(empty)'}")
            self._buf += chunk

    def end_input(self) -> None:
        """EOF on the channel: the executor finishes and exits (and with --rm its container goes)."""
        if self._conn is not None:
            self._conn.close()
        try:
            self.proc.stdin.close()
        except OSError:
            pass

    def close(self, timeout_s: float = 5.0) -> None:
        """Graceful stop: end_input, then a hard kill if the executor lingers."""
        self.end_input()
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            return
        self.release()

    def kill(self) -> None:
        """Hard stop: the backend's kill (docker kill / killpg), then reap the client process."""
        if self._kill_backend is not None:
            self._kill_backend()
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, 9)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        self.release()

    def release(self) -> None:
        """Close this side's channel ends once the process is stopped (stderr is closed by its drain at EOF)."""
        for pipe in (self.proc.stdin, self.proc.stdout, self._conn, self._listener):
            try:
                if pipe is not None:
                    pipe.close()
            except OSError:
                pass


class Pool:
    """`size` warm workers from `spawn`; `run` and `run_batch` are safe to call from several threads."""

    def __init__(self, spawn: Callable[[], WorkerProcess], size: int, limits: Limits, *,
                 grace_s: float = 5.0, start_timeout_s: float = 60.0) -> None:
        if size < 1:
            raise ValueError(f"a pool needs at least one worker, got workers={size}")
        self.size = size
        self.limits = limits
        self.grace_s = grace_s  # on top of the job's timeout before the pool gives up on a worker
        self.start_timeout_s = start_timeout_s
        self._spawn = spawn
        self._idle: queue.Queue[WorkerProcess] = queue.Queue()
        self._lock = threading.Lock()
        self._live = 0  # workers idle, busy or starting
        self._workers: set[WorkerProcess] = set()
        self._background: set[threading.Thread] = set()
        self._closed = False
        self.last_start_error = ""
        self.replaced = 0  # workers replaced after a failure or a recycle, for tests and reports
        with concurrent.futures.ThreadPoolExecutor(max_workers=size) as starter:
            started = list(starter.map(lambda _: self._try_start(), range(size)))
        if not all(started):
            self.close()
            raise SandboxError(f"could not start sandbox workers: {self.last_start_error}",
                               hint="run `sandbox doctor`")

    # --- workers -----------------------------------------------------------------------------------------------
    def _try_start(self) -> bool:
        with self._lock:
            if self._closed:
                return False
            self._live += 1
        try:
            worker = self._spawn()
        except (OSError, SandboxError) as exc:
            return self._start_failed(f"{exc}")
        with self._lock:
            self._workers.add(worker)
        try:
            worker.wait_ready(self.start_timeout_s)
        except WorkerFailure as exc:
            self._discard(worker, hard=True)
            return self._start_failed(str(exc))
        with self._lock:
            closed = self._closed
        if closed:
            self._discard(worker, hard=False)
            return self._start_failed("the pool was closed while this worker started")
        self._idle.put(worker)
        return True

    def _start_failed(self, error: str) -> bool:
        with self._lock:
            self._live -= 1
            self.last_start_error = error
        return False

    def _discard(self, worker: WorkerProcess, hard: bool) -> None:
        with self._lock:
            self._workers.discard(worker)
        if hard:
            worker.kill()
        else:
            worker.close()

    def _in_background(self, target: Callable[[], None], name: str) -> None:
        """Run `target` in a thread that close() waits for."""
        def run() -> None:
            try:
                target()
            finally:
                with self._lock:
                    self._background.discard(threading.current_thread())

        thread = threading.Thread(target=run, name=name, daemon=True)
        with self._lock:
            self._background.add(thread)
        thread.start()

    def _replace(self, worker: WorkerProcess, hard: bool) -> None:
        """Stop `worker` and start a successor at the same time, in the background; the others keep serving."""
        def start_successor() -> None:
            if not self._try_start() and not self._closed:
                time.sleep(1.0)  # one more try: a transient engine hiccup should not shrink the pool
                self._try_start()

        with self._lock:
            self._workers.discard(worker)
            self._live -= 1
            self.replaced += 1
        self._in_background(lambda: self._discard(worker, hard), f"stop-{worker.name}")
        self._in_background(start_successor, f"replace-{worker.name}")

    def _checkout(self) -> WorkerProcess:
        while True:
            if self._closed:
                raise SandboxError("the sandbox is closed")
            try:
                return self._idle.get(timeout=0.5)
            except queue.Empty:
                with self._lock:
                    if self._closed:
                        raise SandboxError("the sandbox is closed") from None
                    if self._live == 0:
                        raise SandboxError(f"no sandbox workers are left: {self.last_start_error}",
                                           hint="run `sandbox doctor`") from None

    # --- jobs --------------------------------------------------------------------------------------------------
    def run(self, job: Job) -> Result:
        timeout_s = job.timeout_s if job.timeout_s is not None else self.limits.timeout_s
        limits = self.limits if job.timeout_s is None else self.limits.with_timeout(job.timeout_s)
        if job.keep_output_bytes is not None:
            limits = dataclasses.replace(limits, keep_output_bytes=job.keep_output_bytes)
        errors = []
        for _attempt in range(2):
            worker = self._checkout()
            try:
                result = worker.request(job, limits, time.monotonic() + timeout_s + self.grace_s)
            except WorkerFailure as exc:
                errors.append(str(exc))
                self._replace(worker, hard=True)
                continue
            if result.status in RECYCLE_AFTER or worker.programs >= self.limits.programs_per_container:
                self._replace(worker, hard=result.status in RECYCLE_AFTER)
            else:
                self._idle.put(worker)
            return result
        return Result.sandbox_error("worker failed twice: " + " | then: ".join(errors), job_id=job.job_id)

    def round_trip_s(self, count: int = 100) -> list[float]:
        """Ping/pong times of one idle worker: the pool's own per-program cost, without the executor's work."""
        worker = self._checkout()
        times = []
        try:
            for _ in range(count):
                start = time.perf_counter()
                worker.ping(time.monotonic() + self.grace_s)
                times.append(time.perf_counter() - start)
        except WorkerFailure:
            self._replace(worker, hard=True)
            raise SandboxError(f"worker {worker.name} failed a ping") from None
        self._idle.put(worker)
        return times

    def run_batch(self, jobs: Sequence[Job], progress: Progress | None = None) -> list[Result]:
        """Run jobs concurrently over the workers; results come back in input order."""
        results: list[Result | None] = [None] * len(jobs)
        if not jobs:
            return []
        with concurrent.futures.ThreadPoolExecutor(max_workers=self.size, thread_name_prefix="sandbox") as ex:
            futures = {ex.submit(self.run, job): i for i, job in enumerate(jobs)}
            try:
                for done, future in enumerate(concurrent.futures.as_completed(futures), start=1):
                    index = futures[future]
                    results[index] = future.result()
                    if progress is not None:
                        progress(done, len(jobs), results[index])
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
        return results  # type: ignore[return-value]

    # --- shutdown ----------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop every worker (graceful EOF first, then kill) and wait for background replacements."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            background = list(self._background)
        for thread in background:
            thread.join(timeout=self.start_timeout_s + 10)
        with self._lock:
            workers = list(self._workers)
            self._workers.clear()
        while not self._idle.empty():
            self._idle.get_nowait()
        for worker in workers:
            worker.end_input()
        deadline = time.monotonic() + 5.0
        for worker in workers:
            try:
                worker.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker.kill()
            else:
                worker.release()
