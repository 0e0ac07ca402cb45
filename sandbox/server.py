"""`sandbox serve`: the sandbox as an HTTP service, one warm pool per server (HTTP <-> Sandbox, nothing else).

    sandbox serve [--host 127.0.0.1] [--port 8080] [--backend docker|local] [--workers N] [--token-file F] ...
    app = create_app(sandbox, ServerSettings(...))   # for any ASGI server; tests use FastAPI's TestClient
    serve(settings, host=..., port=..., backend="docker")   # uvicorn, signal handling and the Sandbox's lifetime

Endpoints (JSON errors are always `{"detail": ...}`; a 422's detail lists each error with `field`, e.g. jobs[3].tests):
- POST /v1/grade: `{"jobs": [<Job.to_dict() form>]}` -> `{"results": [<Result.to_dict()>]}` in input order. Formats
  humaneval, mbpp and generic only: their verdicts come from trusted tests run apart from the program (see
  sandbox/executor.py), so a program cannot forge them. Script jobs are refused here (422 on `format`).
- POST /run_code: SandboxFusion's API for `language: python` (sandbox/fusion.py), one program per request, run as a
  script job: the answer is the program's exit code and output, which the program controls, so whoever judges it
  (e.g. verl comparing stdout) gets a forgeable verdict. Its stdout and stderr are kept up to max_output_bytes.
- GET /healthz (no token: load balancers probe it): status ready | draining | unavailable (503 unless ready),
  backend, image, workers, queue_jobs and the limits a client needs to size its batches. Nothing secret.
- GET /metrics: Prometheus text (sandbox/metrics.py). It needs the token when one is set: load and verdict counts
  are nobody else's business, and Prometheus sends bearer tokens (`authorization: credentials_file`).
- GET /openapi.json (no token): the spec, generated from the same models that validate requests.

What is covered:
- Auth: a bearer token compared in constant time, checked before any of the body is read; or the same token as the
  password of HTTP Basic (any user name), which is what a client sends for a URL like http://x:TOKEN@host/run_code
  (requests does, so verl, which sends no header of its own, can carry it). The default bind is loopback; serve()
  refuses a non-loopback address without a token.
- Limits: body size (the Content-Length and the bytes actually received, so a chunked body cannot pass it), jobs
  per request (max-batch), program size (`code` too), per-job timeout (over the cap is a 422 on /v1/grade, never
  silently clamped; /run_code cuts run_timeout to the cap and says so in `message`: see run_code's docstring).
- Backpressure: jobs admitted and not yet finished are counted; a request that would take the count past
  max_queue_jobs gets 429 with Retry-After (an estimate from the queue and recent program times) and is not held.
- A program's behaviour is never a 5xx: it is a Result (status sandbox_error when the infrastructure failed inside
  the pool). 503 only while draining, or once the pool has no workers left.
- SIGTERM/SIGINT: new requests get 503 + Retry-After and /healthz answers 503 "draining" so a load balancer takes
  the host out; in-flight jobs finish and are answered; then uvicorn stops and the Sandbox is closed, which removes
  its containers. A second signal forces the exit (the Sandbox is still closed).

Not covered: TLS (put a TLS-terminating proxy in front to cross an untrusted network), per-client quotas or fairness
(one FIFO queue for all), and rate limits on unauthenticated /healthz and /openapi.json probes.
"""
# No `from __future__ import annotations` here: FastAPI and pydantic read the annotations of the models and routes
# defined inside create_app at runtime, and string annotations could not see create_app's locals.
import asyncio
import base64
import binascii
import concurrent.futures
import contextlib
import hmac
import json
import logging
import math
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from importlib import metadata
from typing import Any, Literal

import uvicorn
from fastapi import Depends, FastAPI, HTTPException
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import HTTPBasic, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator
from pydantic_core import PydanticCustomError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request

from . import Sandbox, fusion
from .errors import SandboxError
from .fusion import RunCodeResponse, job_from_request, response_from_result, timeout_note
from .jobs import Job
from .limits import Limits
from .metrics import CONTENT_TYPE, Metrics
from .server_settings import ServerSettings, require_token_off_loopback
from .verdict import Result, Status

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PUBLIC_PATHS = frozenset({"/healthz", "/openapi.json"})
GRADING_PATHS = frozenset({"/v1/grade", "/run_code"})
KNOWN_PATHS = PUBLIC_PATHS | GRADING_PATHS | {"/metrics"}  # metric labels: anything else is "other"
RESPONSE_GRACE_S = 30.0  # after the drain, how long uvicorn waits for the last responses to be written
log = logging.getLogger("uvicorn.error")  # uvicorn configures this one; ours appear beside its own lines


# --- grading -----------------------------------------------------------------------------------------------------
class Grader:
    """Admits jobs against the queue bound and runs them on the Sandbox, from threads as many as its workers (the
    pool is thread-safe), so jobs of all requests wait in one FIFO queue and the event loop never blocks."""

    def __init__(self, sandbox: Sandbox, settings: ServerSettings, metrics: Metrics) -> None:
        self.sandbox = sandbox
        self.settings = settings
        self.metrics = metrics
        self.draining = False  # set by a signal handler: a plain store, never under the lock (no deadlock there)
        self.unavailable = ""  # why the pool cannot grade any more (no workers left), once seen
        self.version = _version()
        self._lock = threading.Lock()
        self._queued = 0  # admitted and not finished
        self._mean_program_s = 1.0  # moving average, for Retry-After
        self._threads = concurrent.futures.ThreadPoolExecutor(max_workers=sandbox.workers,
                                                              thread_name_prefix="grade")

    @property
    def queue_jobs(self) -> int:
        return self._queued

    def retry_after_s(self) -> int:
        """Seconds until the queue has drained at the recent pace, at least 1."""
        return max(1, math.ceil(self._queued * self._mean_program_s / self.sandbox.workers))

    def _admit(self, count: int) -> None:
        with self._lock:
            if self.draining:
                raise HTTPException(503, "this grader is shutting down (draining): send the request to another one",
                                    headers={"Retry-After": str(self.retry_after_s())})
            if self.unavailable:
                raise HTTPException(503, f"this grader cannot grade: {self.unavailable}")
            if self._queued + count > self.settings.max_queue_jobs:
                raise HTTPException(429, f"the queue is full: {self._queued} job(s) waiting or running, and {count} "
                                    f"more would pass max-queue ({self.settings.max_queue_jobs}); retry later",
                                    headers={"Retry-After": str(self.retry_after_s())})
            self._queued += count

    def _finished(self, _future: concurrent.futures.Future) -> None:
        """Done callback of every admitted job: also runs for a job cancelled before it started."""
        with self._lock:
            self._queued -= 1

    def _run(self, job: Job) -> Result:
        start = time.monotonic()
        result = self.sandbox.run(job)
        elapsed = time.monotonic() - start
        with self._lock:
            self._mean_program_s += 0.2 * (elapsed - self._mean_program_s)
        self.metrics.program_done(result.status.value, elapsed)
        return result

    async def grade(self, jobs: list[Job]) -> list[Result]:
        """Results in input order; 429/503 as HTTPException when the jobs cannot be admitted or graded."""
        self._admit(len(jobs))
        futures = []
        for job in jobs:
            future = self._threads.submit(self._run, job)
            future.add_done_callback(self._finished)
            futures.append(asyncio.wrap_future(future))
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, SandboxError):  # the pool is closed or has no workers left: not the program's doing
                self.unavailable = str(outcome)
                raise HTTPException(503, f"this grader cannot grade: {outcome}")
            if isinstance(outcome, BaseException):
                raise outcome
        return outcomes

    def health(self) -> dict:
        status = "draining" if self.draining else "unavailable" if self.unavailable else "ready"
        return {"status": status, "backend": self.sandbox.backend, "image": self.sandbox.image,
                "workers": self.sandbox.workers, "queue_jobs": self._queued,
                "max_queue_jobs": self.settings.max_queue_jobs, "max_batch": self.settings.max_jobs_per_request,
                "max_timeout_s": self.settings.max_timeout_s, "default_timeout_s": self.sandbox.limits.timeout_s,
                "max_program_bytes": self.settings.max_program_bytes, "max_body_bytes": self.settings.max_body_bytes,
                "max_output_bytes": self.settings.max_output_bytes, "version": self.version}

    def close(self) -> None:
        """Drop jobs that never started (a forced exit); the ones running end when the Sandbox closes."""
        self._threads.shutdown(wait=False, cancel_futures=True)


def _version() -> str:
    try:
        return metadata.version("score-code")
    except metadata.PackageNotFoundError:
        return "unknown"


# --- the wire format -----------------------------------------------------------------------------------------------
class TestOutcomeOut(BaseModel):
    name: str
    passed: bool
    message: str


class ResultOut(BaseModel):
    """Result.to_dict(); Result.from_dict reads it back unchanged."""

    job_id: str
    status: Literal[tuple(s.value for s in Status)]  # type: ignore[valid-type]
    reward: float = Field(description="1.0 iff every expected test ran and passed; a sandbox_error must be masked")
    pass_fraction: float
    expected_tests: int
    tests: list[TestOutcomeOut]
    stdout: str
    stderr: str
    output_bytes: int
    wall_time_s: float
    cpu_time_s: float
    error: str
    return_code: int | None = Field(description="a script job's exit code: always null here, /v1/grade runs none")


class GradeResponse(BaseModel):
    results: list[ResultOut]


class Health(BaseModel):
    status: Literal["ready", "draining", "unavailable"]
    backend: str
    image: str | None
    workers: int
    queue_jobs: int
    max_queue_jobs: int
    max_batch: int
    max_timeout_s: float
    default_timeout_s: float
    max_program_bytes: int
    max_body_bytes: int
    max_output_bytes: int = Field(description="/run_code: bytes of stdout and of stderr sent back per program")
    version: str


class ErrorDetail(BaseModel):
    detail: str


def request_models(settings: ServerSettings) -> type[BaseModel]:
    """The /v1/grade request model with this server's caps in it, so the OpenAPI spec states them too."""
    max_jobs, max_program = settings.max_jobs_per_request, settings.max_program_bytes

    class GradeJob(BaseModel):
        """One job, as Job.to_dict() writes it (sandbox/jobs.py says what each format expects)."""

        model_config = ConfigDict(extra="forbid", strict=True, title="Job")
        program: str = Field(max_length=max_program, description=f"untrusted; at most {max_program} UTF-8 bytes")
        format: Literal["humaneval", "mbpp", "generic"]
        tests: list[str] = Field(min_length=1)
        entry_point: str = ""
        setup_code: str = ""
        timeout_s: float | None = Field(default=None, gt=0, le=settings.max_timeout_s,
                                        description="wall-clock seconds; the server's default when null")
        job_id: str = ""
        _job: Job = PrivateAttr()

        @field_validator("program")
        @classmethod
        def _program_bytes(cls, program: str) -> str:
            return check_program_bytes(program, max_program)

        @model_validator(mode="after")
        def _as_job(self) -> "GradeJob":
            try:
                self._job = Job(program=self.program, format=self.format, tests=tuple(self.tests),
                                entry_point=self.entry_point, setup_code=self.setup_code, timeout_s=self.timeout_s,
                                job_id=self.job_id)
            except ValueError as exc:  # e.g. a humaneval job without entry_point
                raise PydanticCustomError("invalid_job", "{reason}", {"reason": str(exc)}) from None
            return self

    class GradeRequest(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)
        jobs: list[GradeJob] = Field(max_length=max_jobs, description=f"at most {max_jobs} (max-batch)")

        @field_validator("jobs", mode="before")
        @classmethod
        def _batch_size(cls, jobs: Any) -> Any:  # before the jobs are validated one by one: a cheap refusal
            if isinstance(jobs, list) and len(jobs) > max_jobs:
                raise PydanticCustomError("too_many_jobs", "{count} jobs in one request, over this server's max-batch "
                                          "({limit}): split the batch", {"count": len(jobs), "limit": max_jobs})
            return jobs

        def to_jobs(self) -> list[Job]:
            return [job._job for job in self.jobs]

    return GradeRequest


def run_code_model(settings: ServerSettings) -> type[fusion.RunCodeRequest]:
    """SandboxFusion's request with this server's program cap on `code`, stated in the spec too. Strict, as
    /v1/grade is: a value of the wrong type (false for memory_limit_MB, "10" for run_timeout) is a 422, not coerced
    as SandboxFusion's lax pydantic would; what verl sends (numbers, strings, null, {} and []) passes."""
    max_program = settings.max_program_bytes

    class RunCodeRequest(fusion.RunCodeRequest):
        model_config = ConfigDict(strict=True)
        code: str = Field(..., max_length=max_program,
                          description=f"the Python program, run as a script; at most {max_program} UTF-8 bytes")

        @field_validator("code")
        @classmethod
        def _code_bytes(cls, code: str) -> str:
            return check_program_bytes(code, max_program)

    return RunCodeRequest


def check_program_bytes(program: str, limit: int) -> str:
    """The program, unless its UTF-8 size is over max-program-bytes (a validation error then)."""
    size = len(program.encode("utf-8", "surrogatepass"))
    if size > limit:
        raise PydanticCustomError("program_too_large", "the program is {size} bytes, over this server's "
                                  "max-program-bytes ({limit})", {"size": size, "limit": limit})
    return program


def field_name(loc: tuple | list) -> str:
    """('body', 'jobs', 3, 'tests') -> 'jobs[3].tests'."""
    text = ""
    for part in loc[1:] if loc and loc[0] == "body" else loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text or "body"


class AsciiJSONResponse(JSONResponse):
    """JSON escaped to ASCII: a lone surrogate in a job_id, a test line or a key (valid JSON, invalid UTF-8) cannot
    turn an answer into a 500."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, separators=(",", ":")).encode()


def _validation_errors(_request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422 shape plus `field`, without `input`: a rejected program is not echoed back."""
    errors = []
    for error in exc.errors():
        loc = list(error["loc"])
        if error["type"] == "json_invalid":
            errors.append({"loc": ["body"], "field": "body", "type": "json_invalid",
                           "msg": f"invalid JSON at byte {loc[-1]}: {error.get('ctx', {}).get('error', '')}"})
        else:
            errors.append({"loc": loc, "field": field_name(loc), "type": error["type"], "msg": error["msg"]})
    return AsciiJSONResponse({"detail": errors}, status_code=422)


def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
    cause = exc.__cause__
    if exc.status_code == 400 and isinstance(cause, UnicodeDecodeError):  # FastAPI's vague "error parsing the body"
        detail = [{"loc": ["body"], "field": "body", "type": "json_invalid",
                   "msg": f"invalid JSON: the body is not UTF-8 ({cause.reason} at byte {cause.start})"}]
        return AsciiJSONResponse({"detail": detail}, status_code=422)
    return AsciiJSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


# --- middleware ------------------------------------------------------------------------------------------------------
async def send_error(send: Send, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    extra = [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *extra]})
    await send({"type": "http.response.body", "body": body})


class Gate:
    """The token and the body size, checked before a route reads any body (pure ASGI, ahead of FastAPI's parsing):
    an unauthenticated client cannot make the server hold a body, and no body over the cap is ever held whole."""

    def __init__(self, app: ASGIApp, settings: ServerSettings) -> None:
        self.app = app
        self.max_body = settings.max_body_bytes
        self.token = settings.token.encode() if settings.token is not None else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])  # the last of repeated headers wins; HTTP servers pick one either way
        if self.token is not None and scope["path"] not in PUBLIC_PATHS and not self._authorized(headers):
            await send_error(send, 401, "missing or wrong token: send `Authorization: Bearer <token>` (or the token as "
                             "the password of HTTP Basic)", {"www-authenticate": "Bearer"})
            return
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_body:
            await send_error(send, 413, f"the body is {int(declared)} bytes, over this server's max-body-bytes "
                             f"({self.max_body})", {"connection": "close"})
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_body:
                await send_error(send, 413, f"the body is over this server's max-body-bytes ({self.max_body})",
                                 {"connection": "close"})
                return
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(bytes(body), receive), send)

    def _authorized(self, headers: dict[bytes, bytes]) -> bool:
        scheme, _, credentials = headers.get(b"authorization", b"").partition(b" ")
        if scheme.lower() == b"basic":  # user:token, any user (ASCII, as FastAPI's HTTPBasic reads it)
            try:
                user_pass = base64.b64decode(credentials.strip(), validate=True).decode("ascii")
            except (binascii.Error, UnicodeDecodeError):
                return False
            _user, colon, password = user_pass.partition(":")
            return bool(colon) and hmac.compare_digest(password.encode(), self.token)
        return scheme.lower() == b"bearer" and hmac.compare_digest(credentials.strip(), self.token)


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body read by Gate, once, then the real channel (for http.disconnect)."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replayed() -> Message:
        return pending.pop() if pending else await receive()

    return replayed


class Metered:
    """Counts every answer by path and code (401s and 413s of Gate included) and times the grading ones."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.monotonic(), 500  # stays 500 if the app raises (Starlette then answers 500)

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        path = scope["path"] if scope["path"] in KNOWN_PATHS else "other"
        try:
            await self.app(scope, receive, send_and_note)
        finally:
            seconds = time.monotonic() - start if path in GRADING_PATHS else None
            self.metrics.request_done(path, status, seconds)


# --- the app ---------------------------------------------------------------------------------------------------------
def create_app(sandbox: Sandbox, settings: ServerSettings) -> FastAPI:
    """The ASGI app over a running Sandbox, which the caller owns (and closes). app.state.grader drains it."""
    if sandbox.limits.timeout_s > settings.max_timeout_s:
        raise ValueError(f"the sandbox's default timeout ({sandbox.limits.timeout_s:g} s) is over max_timeout_s "
                         f"({settings.max_timeout_s:g} s): jobs without timeout_s would get more than the cap")
    metrics = Metrics(s.value for s in Status)
    grader = Grader(sandbox, settings, metrics)
    app = FastAPI(title="score-code sandbox", version=grader.version, docs_url=None, redoc_url=None,
                  description="Grades untrusted Python programs against trusted tests in a hardened sandbox.")
    app.state.grader = grader
    app.add_exception_handler(RequestValidationError, _validation_errors)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_middleware(Gate, settings=settings)
    app.add_middleware(Metered, metrics=metrics)  # added last: the outer one, so it sees Gate's answers too
    # Documents the scheme in the spec; Gate enforces it, before the body is read.
    authenticated = ([Depends(HTTPBearer(auto_error=False)), Depends(HTTPBasic(auto_error=False))]
                     if settings.token is not None else [])
    denied = {401: {"model": ErrorDetail, "description": "no token or a wrong one"}} if authenticated else {}
    GradeRequest = request_models(settings)  # noqa: N806 (a class)
    RunCodeRequest = run_code_model(settings)  # noqa: N806 (a class)
    busy = {413: {"model": ErrorDetail, "description": "the body is over max-body-bytes"},
            429: {"model": ErrorDetail, "description": "the queue is full; see Retry-After"},
            503: {"model": ErrorDetail, "description": "draining, or no workers left"}}

    @app.post("/v1/grade", dependencies=authenticated, response_model=None,
              responses={200: {"model": GradeResponse}, **denied, **busy})
    async def grade(body: GradeRequest) -> JSONResponse:
        """Grade a batch; results in the order of the jobs."""
        results = await grader.grade(body.to_jobs())
        return AsciiJSONResponse({"results": [result.to_dict() for result in results]})

    @app.post("/run_code", dependencies=authenticated, response_model=None,
              responses={200: {"model": RunCodeResponse}, **denied, **busy})
    async def run_code(body: RunCodeRequest) -> JSONResponse:
        """SandboxFusion's /run_code, python only: run one program as a script; status Success iff it exited 0.

        The program chooses its exit code and output, so a verdict drawn from them is forgeable: /v1/grade is the
        endpoint whose verdicts a program cannot forge.

        Errors: a body that fails validation (a missing or mistyped field, a language other than python, an unsafe
        files path or bad base64, fetch_files) is a 422 naming the field, as on /v1/grade and as SandboxFusion's own
        FastAPI answers a malformed body; verl reads any 4xx and a SandboxError alike (a -1 case, no retry), so a
        200 SandboxError would gain nothing there and would pass a client's mistake off as an infrastructure
        failure. SandboxError means only that the sandbox failed.

        run_timeout over max-timeout is cut to it, and `message` says so; not a 422 as on /v1/grade: SandboxFusion
        has no cap, and verl sends one fixed timeout for every sample and scores a refused request 0, so a 422
        would zero a whole run while a cut only times out the programs slower than the cap.
        """
        job = job_from_request(body, settings.max_timeout_s, settings.max_output_bytes)
        [result] = await grader.grade([job])
        response = response_from_result(result, timeout_note(body, settings.max_timeout_s))
        return AsciiJSONResponse(response.model_dump(mode="json"))

    @app.get("/healthz", response_model=None,
             responses={200: {"model": Health}, 503: {"model": Health, "description": "draining or unavailable"}})
    async def healthz() -> JSONResponse:
        """Readiness and the limits a client sizes its batches by; 503 unless ready."""
        health = grader.health()
        return JSONResponse(health, status_code=200 if health["status"] == "ready" else 503)

    json_denied = {code: {"description": entry["description"], "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/ErrorDetail"}}}} for code, entry in denied.items()}

    @app.get("/metrics", dependencies=authenticated, response_class=PlainTextResponse, responses=json_denied)
    async def prometheus() -> PlainTextResponse:
        """Prometheus text format 0.0.4."""
        gauges = [("sandbox_queue_jobs", "Jobs admitted and not finished.", grader.queue_jobs),
                  ("sandbox_queue_capacity_jobs", "max-queue: jobs the server admits at once.",
                   settings.max_queue_jobs),
                  ("sandbox_workers", "Parallel programs (warm workers).", sandbox.workers),
                  ("sandbox_draining", "1 while shutting down.", int(grader.draining))]
        return PlainTextResponse(metrics.render(gauges, sandbox.replaced_workers), media_type=CONTENT_TYPE)

    return app


# --- serving ---------------------------------------------------------------------------------------------------------
class DrainingServer(uvicorn.Server):
    """uvicorn whose first SIGTERM/SIGINT drains instead of stopping: uvicorn's own handler would stop listening at
    once (new requests refused, not answered 503). It exits when no admitted job is left; a second signal forces."""

    def __init__(self, config: uvicorn.Config, grader: Grader) -> None:
        super().__init__(config)
        self.grader = grader
        self._announced = False

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Ours, restored afterwards; unlike uvicorn's, it does not re-raise the signal after the shutdown, which
        would kill the process before serve() closes the Sandbox."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: object) -> None:
        if self.grader.draining:
            self.force_exit = self.should_exit = True
        else:
            self.grader.draining = True  # only stores here: a signal handler must not take locks or log

    async def on_tick(self, counter: int) -> bool:
        if self.grader.draining:
            if not self._announced:
                self._announced = True
                log.info("draining: %d job(s) in flight; new requests get 503 (signal again to force)",
                         self.grader.queue_jobs)
            if self.grader.queue_jobs == 0:
                self.should_exit = True
        return await super().on_tick(counter)


def serve(settings: ServerSettings, *, host: str = "127.0.0.1", port: int = 8080, backend: str = "docker",
          workers: int | None = None, limits: Limits = Limits()) -> None:
    """Start the Sandbox, then serve until SIGTERM/SIGINT; drain, stop, close the Sandbox (its containers go)."""
    require_token_off_loopback(host, settings.token)
    with Sandbox(backend=backend, workers=workers, limits=limits) as sandbox:  # type: ignore[arg-type]
        app = create_app(sandbox, settings)
        config = uvicorn.Config(app, host=host, port=port, lifespan="off", server_header=False,
                                timeout_graceful_shutdown=RESPONSE_GRACE_S)
        server = DrainingServer(config, app.state.grader)
        log.info("grading with %d %s worker(s)%s; token %s", sandbox.workers, backend,
                 f" (image {sandbox.image})" if sandbox.image else "",
                 "required" if settings.token is not None else "not required (loopback only)")
        try:
            server.run()
        finally:
            app.state.grader.close()
    log.info("stopped; the sandbox is closed")
