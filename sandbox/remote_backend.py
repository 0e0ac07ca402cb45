"""The remote backend: the Pool's interface over HTTP, on grader hosts that run `sandbox serve`.

Isolation is the server's (its own docker backend); this client only spreads jobs over hosts and keeps every
result exactly once. Standard library only (http.client, keep-alive), so `pip install score-code` is a client.
Wire contract: `POST /v1/grade` {"jobs": [Job.to_dict()]} -> {"results": [Result.to_dict()]} in request order,
`Authorization: Bearer <token>` when there is a token; `GET /healthz` (no token) -> status, workers, max_batch,
max_timeout_s, queue_jobs, max_queue_jobs.

Policy, in numbers (the class attributes of RemoteBackend):
- Capacity: each host's /healthz gives `workers`, `max_batch` and `max_queue_jobs`. A host gets chunks of
  max(workers, MIN_CHUNK (8)) jobs, at most max_batch and half of max_queue_jobs (fewer at a batch's tail, so the
  last jobs spread over all hosts), and keeps max(2, ceil(2 x workers / chunk)) chunks in flight: at least 2 x
  workers jobs, one round queued behind the running one. A request has a fixed cost (HTTP parsing, routing, thread
  handoffs: about 0.4 ms of server CPU, perf/sandbox_throughput.py --remote), so chunks of 2 jobs on a 2-worker host
  ran at 0.87 of in-process throughput and chunks of 8 at 0.99.
  Hosts pull the next chunk from one shared queue as theirs finish, so faster and larger hosts take more, and a
  dead host loses at most its in-flight chunks, which are retried elsewhere.
- Failures: a connection error, reset, read timeout, 5xx or unreadable answer (a result count other than the
  request's included) fails the chunk on that host: each of its jobs spends one of ATTEMPTS (3) and goes back to
  the queue, preferring hosts that have not failed it. A host is set aside after SET_ASIDE_AFTER (2) failures in
  a row, at once on 503 (draining or out of workers; the jobs spend no attempt), and probed (GET /healthz) again
  after PROBE_BACKOFF_S (2 s, doubling to 60 s). A job out of attempts, or still queued when no host has been
  usable for NO_HOST_WAIT_S (60 s), comes back as Result.sandbox_error naming the hosts and how they failed.
- 429 (the server's queue is full) is not a failure: that host pauses for its Retry-After (at most 30 s) and the
  chunk goes back to the queue without spending an attempt.
- 400/401/403/404/405/413/422 are the caller's fault and every host would refuse the same: a SandboxError is raised
  with the server's detail (results already graded in that batch are lost with it).
- Read timeout per chunk: 2 x ceil(jobs / host workers) x its longest job timeout + 10 s.
A result is applied once per job (by index), results come back in input order, progress is called once per job
from the calling thread. Grading is idempotent, so a job whose host died mid-request is simply graded again.
"""
from __future__ import annotations

import http.client
import json
import logging
import math
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from .errors import SandboxError, SandboxUnavailable
from .jobs import Job
from .limits import Limits
from .pool import Progress
from .verdict import Result

logger = logging.getLogger(__name__)

URL_ENV = "SANDBOX_URL"  # comma-separated grader URLs
TOKEN_ENV = "SANDBOX_TOKEN"
MAX_RESPONSE_BYTES = 64 * 1024 * 1024  # an answer this large is a broken host, not verdicts
CALLER_ERRORS = frozenset({400, 401, 403, 404, 405, 413, 422})
PROBED = "probed"  # the tag of a probe's wake-up in a batch's outbox
SERVE_HINT = "start a grader with `sandbox serve --host 0.0.0.0 --port 8080 --token-file FILE` and pass its URL"


class HostFailure(Exception):
    """A host did not answer usably (unreachable, reset, timed out, 5xx, garbage): its jobs go elsewhere."""

    def __init__(self, message: str, draining: bool = False) -> None:
        super().__init__(message)
        self.draining = draining  # a 503: the host itself says it takes no work now


def parse_urls(value: str | Sequence[str], source: str = "sandbox URLs") -> list[str]:
    """Grader URLs from a comma-separated string or a list, validated; `source` names the flag or field in errors."""
    items = value.split(",") if isinstance(value, str) else list(value)
    urls = [item.strip().rstrip("/") for item in items if item.strip()]
    if not urls:
        raise SandboxError(f"{source}: no grader URL given", hint=SERVE_HINT)
    for url in urls:
        parts = urlsplit(url)
        try:
            parts.port  # noqa: B018 - raises on a port that is not a number in range
        except ValueError as exc:
            raise SandboxError(f"{source}: bad port in {url!r} ({exc})") from None
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise SandboxError(f"{source}: {url!r} is not a grader URL; expected http(s)://HOST[:PORT][/PATH]")
        if parts.username or parts.password:
            raise SandboxError(f"{source}: {parts.hostname}: no credentials in a URL; the token goes in "
                               f"${TOKEN_ENV} or a token file")
    if len(set(urls)) < len(urls):
        raise SandboxError(f"{source}: a URL is listed twice: {', '.join(urls)}")
    return urls


def read_token_file(path: str | os.PathLike, source: str = "sandbox token file") -> str:
    """The bearer token in `path` (surrounding whitespace dropped); an unreadable or empty file is an error."""
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise SandboxError(f"{source} {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if not token:
        raise SandboxError(f"{source} {path} is empty")
    return token


def sandbox_options(backend: str, urls: str | Sequence[str] | None = None,
                    token_file: str | os.PathLike | None = None, *, url_source: str = "--sandbox-url",
                    token_source: str = "--sandbox-token-file") -> dict:
    """Sandbox(**options) from a command's or a config's grader settings: the one rule of every entry point.

    URLs (the flag or config field, else $SANDBOX_URL) make the backend remote, and so does backend "remote"; with
    "local" they are an error (a URL in $SANDBOX_URL only is left unused there). The token is the token file's,
    else $SANDBOX_TOKEN (read by Sandbox), else none. `url_source` / `token_source` name the flag or field."""
    if not urls and backend != "local" and os.environ.get(URL_ENV, "").strip():
        urls, url_source = os.environ[URL_ENV], f"${URL_ENV}"
    if urls and backend == "local":
        raise SandboxError(f"{url_source} is for the remote backend; the backend is 'local'",
                           hint="drop the URL, or choose the remote backend")
    if not urls:
        if backend == "remote":
            raise SandboxError(f"the remote backend needs grader URLs: {url_source} URL[,URL...] or ${URL_ENV}",
                               hint=SERVE_HINT)
        if token_file:
            raise SandboxError(f"{token_source} is for the remote backend (with {url_source})")
        return {"backend": backend}
    return {"backend": "remote", "urls": parse_urls(urls, url_source),
            "token": read_token_file(token_file, token_source) if token_file else None}


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    retry_after: str | None


class Connection:
    """One keep-alive HTTP connection to a host, reopened after any error."""

    def __init__(self, url: str, token: str | None, connect_timeout_s: float) -> None:
        parts = urlsplit(url)
        self.url = url
        self._cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        self._host, self._port, self._prefix = parts.hostname, parts.port, parts.path
        self._headers = {"Content-Type": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._connect_timeout_s = connect_timeout_s
        self._conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: bytes | None, timeout_s: float) -> Answer:
        reused = self._conn is not None
        try:
            return self._once(method, path, body, timeout_s)
        except ConnectionError as exc:  # includes RemoteDisconnected
            if not reused:
                raise HostFailure(f"{self.url}: {_describe(exc)}") from None
        except (OSError, http.client.HTTPException) as exc:
            raise HostFailure(f"{self.url}: {_describe(exc)}") from None
        try:  # the host closed an idle keep-alive connection: once more on a new one
            return self._once(method, path, body, timeout_s)
        except (OSError, http.client.HTTPException) as exc:
            raise HostFailure(f"{self.url}: {_describe(exc)}") from None

    def _once(self, method: str, path: str, body: bytes | None, timeout_s: float) -> Answer:
        if self._conn is None:
            self._conn = self._cls(self._host, self._port, timeout=self._connect_timeout_s)
        try:
            if self._conn.sock is None:
                self._conn.connect()
            self._conn.sock.settimeout(timeout_s)
            self._conn.request(method, self._prefix + path, body=body, headers=self._headers)
            response = self._conn.getresponse()
            data = response.read(MAX_RESPONSE_BYTES + 1)
            if len(data) > MAX_RESPONSE_BYTES:
                raise HostFailure(f"{self.url}: an answer over {MAX_RESPONSE_BYTES} bytes")
            if response.will_close:
                self.close()
            return Answer(response.status, data, response.getheader("Retry-After"))
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _detail(answer: Answer) -> str:
    """The server's own words for a refusal (FastAPI's {"detail": ...}), else the start of the body."""
    try:
        detail = json.loads(answer.body)["detail"]
    except (ValueError, KeyError, TypeError):
        return answer.body[:300].decode(errors="replace")
    return detail if isinstance(detail, str) else json.dumps(detail)[:1000]


def _retry_after_s(value: str | None, cap_s: float) -> float:
    """Seconds from a Retry-After header (the HTTP-date form is not used by `sandbox serve`: 1 s)."""
    try:
        return min(cap_s, max(0.0, float(value))) if value is not None else 1.0
    except ValueError:
        return 1.0


@dataclass(frozen=True)
class Capacity:
    workers: int
    max_batch: int
    max_timeout_s: float
    max_queue_jobs: int


def read_health(answer: Answer, url: str) -> Capacity:
    """A ready host's capacity from its /healthz answer; anything else is a HostFailure."""
    if answer.status == 503:
        raise HostFailure(f"{url}: draining (503 on /healthz)", draining=True)
    if answer.status != 200:
        raise HostFailure(f"{url}: /healthz answered HTTP {answer.status}: {_detail(answer)}")
    try:
        data = json.loads(answer.body)
        capacity = Capacity(int(data["workers"]), int(data["max_batch"]), float(data["max_timeout_s"]),
                            int(data["max_queue_jobs"]))
        status = data["status"]
    except (ValueError, KeyError, TypeError):
        raise HostFailure(f"{url}: /healthz is not a sandbox server's: {answer.body[:200]!r}") from None
    if status != "ready":
        raise HostFailure(f"{url}: status {status!r}", draining=True)
    if capacity.workers < 1 or capacity.max_batch < 1 or capacity.max_timeout_s <= 0 or capacity.max_queue_jobs < 1:
        raise HostFailure(f"{url}: /healthz gives no capacity: {data}")
    return capacity


class Slot:
    """One request in flight to a host at a time, on its own keep-alive connection and thread."""

    def __init__(self, host: Host, connection: Connection, release: Callable[[Slot], None]) -> None:
        self.host = host
        self.connection = connection
        self._release = release
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._serve, name=f"sandbox-remote-{connection.url}", daemon=True).start()

    def submit(self, task: Callable[[Connection], object], tag: object, outbox: queue.SimpleQueue) -> None:
        """Run task(connection) on this slot's thread; (host, tag, its value or exception) lands in `outbox`."""
        self._inbox.put((task, tag, outbox))

    def stop(self) -> None:
        self._inbox.put(None)

    def _serve(self) -> None:
        while (item := self._inbox.get()) is not None:
            task, tag, outbox = item
            try:
                outcome: object = task(self.connection)
            except Exception as exc:  # noqa: BLE001 - handed to the batch that asked, which decides
                outcome = exc
            self._release(self)  # idle again before the batch sees the outcome, so it can reuse the slot at once
            outbox.put((self.host, tag, outcome))
        self.connection.close()


@dataclass(eq=False)
class Host:
    """One grader and what this client knows of it; mutable fields are guarded by RemoteBackend._lock."""

    url: str
    capacity: Capacity | None = None  # from the last good /healthz
    slots: list[Slot] = field(default_factory=list)
    idle: list[Slot] = field(default_factory=list)
    failures: int = 0  # in a row
    set_aside_until: float | None = None  # monotonic time of the next probe; None: usable
    backoff_s: float = 0.0
    paused_until: float = 0.0  # after a 429
    probing: bool = False
    last_error: str = ""

    def usable(self, now: float) -> bool:
        return self.set_aside_until is None and self.paused_until <= now and self.capacity is not None

    @property
    def chunk_cap(self) -> int:
        assert self.capacity is not None
        c = self.capacity
        return max(1, min(max(c.workers, RemoteBackend.MIN_CHUNK), c.max_batch, c.max_queue_jobs // 2))


class RemoteBackend:
    """Grader hosts behind the Pool's interface (run, run_batch, round_trip_s, close); safe from several threads."""

    ATTEMPTS = 3
    MIN_CHUNK = 8  # jobs per request at least, where the host's caps allow: a request's fixed cost spread thin
    SET_ASIDE_AFTER = 2
    PROBE_BACKOFF_S = (2.0, 60.0)
    NO_HOST_WAIT_S = 60.0
    RETRY_AFTER_CAP_S = 30.0
    CONNECT_TIMEOUT_S = 5.0
    HEALTH_TIMEOUT_S = 5.0
    READ_SLACK_S = 10.0

    def __init__(self, urls: str | Sequence[str], token: str | None, limits: Limits) -> None:
        """`urls`: a list or a comma-separated string. Probes every host once; raises SandboxUnavailable when none
        is ready (the others are probed again later). Only `limits.timeout_s` travels (as the timeout of jobs that
        have none); the other limits are the servers'."""
        self.urls = parse_urls(urls)
        self.limits = limits
        self._token = token
        self._lock = threading.Lock()
        self._closed = False
        self.replaced = 0  # times a host was set aside: the remote analogue of the Pool's replaced workers
        self.hosts = [Host(url) for url in self.urls]
        with ThreadPoolExecutor(max_workers=len(self.hosts)) as probe:
            outcomes = list(probe.map(self._health, self.hosts))
        now = time.monotonic()
        for host, outcome in zip(self.hosts, outcomes, strict=True):
            if isinstance(outcome, Capacity):
                self._set_capacity(host, outcome)
            else:
                self._failed(host, outcome, now, set_aside=True)
        if all(host.capacity is None for host in self.hosts):
            raise SandboxUnavailable("no sandbox server is ready: " + self._host_errors(), hint=SERVE_HINT)

    @property
    def workers(self) -> int:
        """Programs the ready hosts run at once, by their last /healthz."""
        return sum(host.capacity.workers for host in self.hosts if host.capacity and host.set_aside_until is None)

    # --- hosts ---------------------------------------------------------------------------------------------------
    def _health(self, host: Host, connection: Connection | None = None) -> Capacity | HostFailure:
        own = connection is None
        connection = connection or Connection(host.url, None, self.CONNECT_TIMEOUT_S)
        try:
            return read_health(connection.request("GET", "/healthz", None, self.HEALTH_TIMEOUT_S), host.url)
        except HostFailure as exc:
            return exc
        finally:
            if own:
                connection.close()

    def _probe(self, host: Host, outbox: queue.SimpleQueue) -> None:
        """A set-aside host's /healthz, on its own thread: back in use, or set aside for longer. Applied here, not
        by the batch that asked, so a batch that ends meanwhile cannot leave the host marked as being probed."""
        outcome = self._health(host)
        if isinstance(outcome, Capacity):
            self._set_capacity(host, outcome)
        else:
            self._failed(host, outcome, time.monotonic(), set_aside=True)
        with self._lock:
            host.probing = False
        outbox.put((host, PROBED, None))

    def _set_capacity(self, host: Host, capacity: Capacity) -> None:
        """Ready: usable again, with slots enough for about 2 x workers jobs in flight."""
        with self._lock:
            if host.set_aside_until is not None and host.capacity is not None:
                logger.warning("sandbox host %s is back (%d workers)", host.url, capacity.workers)
            host.capacity, host.failures, host.set_aside_until, host.backoff_s = capacity, 0, None, 0.0
            wanted = max(2, math.ceil(2 * capacity.workers / host.chunk_cap))
            while len(host.slots) < wanted and not self._closed:
                slot = Slot(host, Connection(host.url, self._token, self.CONNECT_TIMEOUT_S), self._release)
                host.slots.append(slot)
                host.idle.append(slot)

    def _failed(self, host: Host, exc: HostFailure, now: float, set_aside: bool = False) -> None:
        with self._lock:
            host.failures += 1
            host.last_error = str(exc)
            if not (set_aside or exc.draining or host.failures >= self.SET_ASIDE_AFTER):
                return
            first, most = self.PROBE_BACKOFF_S
            host.backoff_s = min(most, host.backoff_s * 2) if host.backoff_s else first
            if host.set_aside_until is None:
                self.replaced += 1
                logger.warning("sandbox host %s set aside, probed again in %.1f s: %s", host.url, host.backoff_s, exc)
            host.set_aside_until = now + host.backoff_s

    def _release(self, slot: Slot) -> None:
        with self._lock:
            if not self._closed:
                slot.host.idle.append(slot)

    def _host_errors(self) -> str:
        return "; ".join(f"{host.url}: {host.last_error or 'ok'}" for host in self.hosts)

    # --- jobs ----------------------------------------------------------------------------------------------------
    def run(self, job: Job) -> Result:
        return self.run_batch([job])[0]

    def run_batch(self, jobs: Sequence[Job], progress: Progress | None = None) -> list[Result]:
        """Results in input order, each exactly once; progress(done, total, result) once per job, from this thread."""
        if self._closed:
            raise SandboxError("the sandbox is closed")
        return _Batch(self, list(jobs), progress).run() if jobs else []

    def round_trip_s(self, count: int = 100) -> list[float]:
        """GET /healthz round trips to the first ready host over one keep-alive connection: the transport's cost."""
        host = next((h for h in self.hosts if h.capacity and h.set_aside_until is None), None)
        if host is None:
            raise SandboxError("no sandbox host is ready: " + self._host_errors())
        connection = Connection(host.url, None, self.CONNECT_TIMEOUT_S)
        times = []
        try:
            for _ in range(count):
                start = time.perf_counter()
                outcome = self._health(host, connection)
                if isinstance(outcome, HostFailure):
                    raise SandboxError(f"a round trip failed: {outcome}")
                times.append(time.perf_counter() - start)
        finally:
            connection.close()
        return times

    def close(self) -> None:
        """Stop the connection threads; requests in flight are abandoned (the servers finish and drop them)."""
        with self._lock:
            self._closed = True
            slots = [slot for host in self.hosts for slot in host.slots]
            for host in self.hosts:
                host.idle.clear()
        for slot in slots:
            slot.stop()


class _Batch:
    """One run_batch: the shared queue of job indices, handed to idle host slots in chunks from the calling thread,
    which alone applies outcomes (so no job is applied twice and progress runs on the caller's thread)."""

    def __init__(self, backend: RemoteBackend, jobs: list[Job], progress: Progress | None) -> None:
        self.backend, self.jobs, self.progress = backend, jobs, progress
        self.results: list[Result | None] = [None] * len(jobs)
        self.done = 0
        self.fresh: deque[int] = deque(range(len(jobs)))
        self.retry: list[int] = []  # sent before fresh jobs
        self.attempts = [0] * len(jobs)
        self.failed_on: list[set[str]] = [set() for _ in jobs]
        self.errors: list[list[str]] = [[] for _ in jobs]
        self.in_flight = 0
        self.outbox: queue.SimpleQueue = queue.SimpleQueue()
        self.stalled_since: float | None = None
        self.clamped = False

    def run(self) -> list[Result]:
        while self.done < len(self.jobs):
            self._dispatch()
            try:
                host, tag, outcome = self.outbox.get(timeout=0.25)
            except queue.Empty:
                self._check_stall()
                continue
            if tag != PROBED:  # a probe only wakes this loop: the host is usable again or set aside for longer
                self.in_flight -= 1
                self._graded(host, tag, outcome)
        return self.results  # type: ignore[return-value]

    # --- handing out work ----------------------------------------------------------------------------------------
    def _dispatch(self) -> None:
        backend, now = self.backend, time.monotonic()
        with backend._lock:
            if backend._closed:
                raise SandboxError("the sandbox was closed during a batch")
            for host in backend.hosts:
                if host.set_aside_until is not None and host.set_aside_until <= now and not host.probing:
                    host.probing = True
                    threading.Thread(target=backend._probe, args=(host, self.outbox), daemon=True,
                                     name=f"sandbox-probe-{host.url}").start()
            while self.fresh or self.retry:
                usable = [h for h in backend.hosts if h.usable(now)]
                given = 0
                for host in usable:
                    chunk = self._take(host, usable) if host.idle else []
                    if chunk:
                        self._submit(host, self._grade_task(host, chunk), chunk)
                        given += 1
                if not given:
                    break

    def _submit(self, host: Host, task: Callable[[Connection], object], chunk: list[int]) -> None:
        host.idle.pop().submit(task, chunk, self.outbox)
        self.in_flight += 1
        self.stalled_since = None

    def _take(self, host: Host, usable: list[Host]) -> list[int]:
        """The next chunk for `host`: retried jobs first (not back to a host that failed them while another
        usable host has not), then fresh ones; capped so that the tail spreads over every usable slot."""
        slots = sum(len(h.slots) for h in usable)
        cap = min(host.chunk_cap, max(1, math.ceil((len(self.fresh) + len(self.retry)) / slots)))
        urls = {h.url for h in usable}
        chunk = [i for i in self.retry if host.url not in self.failed_on[i] or urls <= self.failed_on[i]][:cap]
        if chunk:
            taken = set(chunk)
            self.retry = [i for i in self.retry if i not in taken]
        while len(chunk) < cap and self.fresh:
            chunk.append(self.fresh.popleft())
        return chunk

    def _grade_task(self, host: Host, chunk: list[int]) -> Callable[[Connection], object]:
        assert host.capacity is not None
        max_timeout_s = host.capacity.max_timeout_s
        timeouts, payload = [], []
        for i in chunk:
            job = self.jobs[i].to_dict()
            timeout_s = job["timeout_s"] if job["timeout_s"] is not None else self.backend.limits.timeout_s
            if timeout_s > max_timeout_s:  # refused by that host otherwise; the cut is said once per batch
                if not self.clamped:
                    logger.warning("job %r asks for %.0f s; %s grades at most %.0f s per program",
                                   job["job_id"], timeout_s, host.url, max_timeout_s)
                    self.clamped = True
                timeout_s = max_timeout_s
            job["timeout_s"] = timeout_s
            timeouts.append(timeout_s)
            payload.append(job)
        body = json.dumps({"jobs": payload}, separators=(",", ":")).encode()
        read_timeout_s = (2 * math.ceil(len(chunk) / host.capacity.workers) * max(timeouts)
                          + self.backend.READ_SLACK_S)

        def grade(connection: Connection) -> object:
            answer = connection.request("POST", "/v1/grade", body, read_timeout_s)
            return answer if answer.status != 200 else _read_results(answer, host.url, len(chunk))

        return grade

    # --- outcomes ------------------------------------------------------------------------------------------------
    def _graded(self, host: Host, chunk: list[int], outcome: object) -> None:
        if isinstance(outcome, list):
            with self.backend._lock:
                host.failures = 0
            for i, result in zip(chunk, outcome, strict=True):
                self._finish(i, result)
            return
        if isinstance(outcome, Answer):
            if outcome.status == 429:
                with self.backend._lock:
                    host.paused_until = time.monotonic() + _retry_after_s(outcome.retry_after,
                                                                          self.backend.RETRY_AFTER_CAP_S)
                self.retry[:0] = chunk
                return
            if outcome.status in CALLER_ERRORS:
                raise SandboxError(f"{host.url} refused the jobs (HTTP {outcome.status}): {_detail(outcome)}",
                                   hint="set the token in $SANDBOX_TOKEN or --sandbox-token-file"
                                   if outcome.status == 401 else "")
            outcome = HostFailure(f"{host.url}: HTTP {outcome.status}: {_detail(outcome)}",
                                  draining=outcome.status == 503)
        if not isinstance(outcome, HostFailure):
            outcome = HostFailure(f"{host.url}: {_describe(outcome)}")  # type: ignore[arg-type]
        self.backend._failed(host, outcome, time.monotonic())
        for i in chunk:
            self.failed_on[i].add(host.url)
            self.errors[i].append(str(outcome))
            if not outcome.draining:
                self.attempts[i] += 1
            if self.attempts[i] >= self.backend.ATTEMPTS:
                self._finish(i, Result.sandbox_error(f"no sandbox host could grade it in {self.attempts[i]} "
                                                     f"attempts: " + " | ".join(self.errors[i]),
                                                     job_id=self.jobs[i].job_id))
            else:
                self.retry.append(i)

    def _finish(self, index: int, result: Result) -> None:
        if self.results[index] is not None:
            return
        result.job_id = self.jobs[index].job_id
        self.results[index] = result
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, len(self.jobs), result)

    def _check_stall(self) -> None:
        """Jobs waiting while nothing is in flight and no host is usable: after NO_HOST_WAIT_S they fail."""
        backend, now = self.backend, time.monotonic()
        with backend._lock:
            waiting = (self.fresh or self.retry) and not self.in_flight
            if not waiting or any(h.usable(now) or h.paused_until > now for h in backend.hosts):
                self.stalled_since = None
                return
        if self.stalled_since is None:
            self.stalled_since = now
            return
        if now - self.stalled_since < backend.NO_HOST_WAIT_S:
            return
        error = f"no sandbox host was usable for {backend.NO_HOST_WAIT_S:.0f} s: {backend._host_errors()}"
        for i in [*self.retry, *self.fresh]:
            self._finish(i, Result.sandbox_error(error, job_id=self.jobs[i].job_id))
        self.retry, self.fresh = [], deque()


def _read_results(answer: Answer, url: str, count: int) -> list[Result]:
    try:
        rows = json.loads(answer.body)["results"]
        results = [Result.from_dict(row) for row in rows]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise HostFailure(f"{url}: an unreadable answer ({_describe(exc)}): {answer.body[:200]!r}") from None
    if len(results) != count:
        raise HostFailure(f"{url}: {len(results)} results for {count} jobs")
    return results
