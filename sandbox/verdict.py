"""What the sandbox says about a program: a Status, per-test outcomes and a reward."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class Status(str, Enum):
    PASSED = "passed"  # every test ran and passed; a script job: it exited 0 (its own choice, so no reward)
    FAILED = "failed"  # ran, but at least one test failed (or fewer tests ran than expected)
    TIMEOUT = "timeout"  # wall-clock or CPU-time limit
    RUNTIME_ERROR = "runtime_error"  # the program raised, or its process died, before the tests could pass; a
    # script job: it exited with another code than 0 (Result.return_code)
    SYNTAX_ERROR = "syntax_error"
    MEMORY_EXCEEDED = "memory_exceeded"
    SANDBOX_ERROR = "sandbox_error"  # the infrastructure failed: never a score, callers must mask it


@dataclass
class TestOutcome:
    name: str  # e.g. "check" for HumanEval, "assert 0" .. for MBPP, "test_foo" for generic
    passed: bool
    message: str = ""  # the failing assertion's source line or "ExcType: message"

    def to_dict(self) -> dict:
        return {"name": self.name, "passed": self.passed, "message": self.message}


@dataclass
class Result:
    status: Status
    tests: list[TestOutcome] = field(default_factory=list)  # tests that actually ran, in order
    expected_tests: int = 0  # how many the job defines; reward needs all of them to run and pass
    stdout: str = ""  # truncated to Limits.keep_output_bytes
    stderr: str = ""
    output_bytes: int = 0  # all the program wrote to stdout and stderr; past what is kept it was read and dropped
    wall_time_s: float = 0.0  # the program's own run inside the sandbox
    cpu_time_s: float = 0.0
    error: str = ""  # top-level exception of the program, or what went wrong in the infrastructure
    job_id: str = ""
    # Script jobs only (None otherwise): the program's exit code, as subprocess gives it: SystemExit(n) is n, an
    # uncaught exception 1, death by signal N (a timeout's kill included) -N. None when it could not be learned.
    return_code: int | None = None

    @property
    def passed_tests(self) -> int:
        return sum(t.passed for t in self.tests)

    @property
    def reward(self) -> float:
        """1.0 iff every expected test ran and passed; a sandbox error is 0 here and must be masked by callers. A
        script job expects no tests, so its reward is 0 whatever its exit code."""
        ok = (
            self.status is Status.PASSED
            and self.expected_tests > 0
            and len(self.tests) == self.expected_tests
            and all(t.passed for t in self.tests)
        )
        return 1.0 if ok else 0.0

    @property
    def pass_fraction(self) -> float:
        return self.passed_tests / self.expected_tests if self.expected_tests else 0.0

    @property
    def is_sandbox_error(self) -> bool:
        return self.status is Status.SANDBOX_ERROR

    @property
    def first_failure(self) -> str:
        for t in self.tests:
            if not t.passed:
                return f"{t.name}: {t.message}" if t.message else t.name
        return self.error

    def to_dict(self) -> dict:
        return {
            "job_id": self.job_id,
            "status": self.status.value,
            "reward": self.reward,
            "pass_fraction": self.pass_fraction,
            "expected_tests": self.expected_tests,
            "tests": [t.to_dict() for t in self.tests],
            "stdout": self.stdout,
            "stderr": self.stderr,
            "output_bytes": self.output_bytes,
            "wall_time_s": self.wall_time_s,
            "cpu_time_s": self.cpu_time_s,
            "error": self.error,
            "return_code": self.return_code,
        }

    @classmethod
    def from_dict(cls, data: dict) -> Result:
        return cls(
            status=Status(data["status"]),
            tests=[TestOutcome(t["name"], bool(t["passed"]), t.get("message", "")) for t in data.get("tests", [])],
            expected_tests=int(data.get("expected_tests", 0)),
            stdout=data.get("stdout", ""),
            stderr=data.get("stderr", ""),
            output_bytes=int(data.get("output_bytes", 0)),
            wall_time_s=float(data.get("wall_time_s", 0.0)),
            cpu_time_s=float(data.get("cpu_time_s", 0.0)),
            error=data.get("error", ""),
            job_id=data.get("job_id", ""),
            return_code=None if data.get("return_code") is None else int(data["return_code"]),
        )

    @classmethod
    def sandbox_error(cls, error: str, job_id: str = "", expected_tests: int = 0) -> Result:
        return cls(status=Status.SANDBOX_ERROR, error=error, job_id=job_id, expected_tests=expected_tests)
