"""Jobs: an untrusted program plus the trusted test code that judges it, in one of three formats."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

JobFormat = Literal["humaneval", "mbpp", "generic"]


@dataclass(frozen=True)
class Job:
    """One program to grade.

    `program` is untrusted. Everything else comes from the dataset and is trusted: it runs apart from the
    program (see sandbox/executor.py), which only ever answers calls with plain data.

    - humaneval: `tests` = [the dataset's `test` source defining check(candidate)]; `entry_point` is passed as
      `candidate`; `setup_code` = the task prompt, whose helpers (e.g. `poly`) the check may call. One test.
    - mbpp: `tests` = the assert strings, each its own test; `setup_code` = test_setup_code / test imports.
    - generic: `tests` = [test code]; its top-level `test_*` functions are the tests, or the whole code is one
      test when it has none. Names it uses but does not define are looked up in the program.
    """

    program: str
    format: JobFormat
    tests: tuple[str, ...]
    entry_point: str = ""
    setup_code: str = ""
    timeout_s: float | None = None  # overrides Limits.timeout_s, e.g. calibrated from the reference solution
    job_id: str = ""
    metadata: dict = field(default_factory=dict, compare=False)  # carried through untouched (task_id, ...)

    def __post_init__(self) -> None:
        if self.format not in ("humaneval", "mbpp", "generic"):
            raise ValueError(f"job {self.job_id!r}: unknown format {self.format!r} (humaneval, mbpp or generic)")
        if isinstance(self.tests, (str, bytes)) or not self.tests:
            raise ValueError(f"job {self.job_id!r}: tests must be a non-empty sequence of strings")
        object.__setattr__(self, "tests", tuple(self.tests))
        if self.format == "humaneval" and not self.entry_point:
            raise ValueError(f"job {self.job_id!r}: a humaneval job needs entry_point")

    @classmethod
    def humaneval(cls, program: str, test: str, entry_point: str, prompt: str = "", **kw) -> Job:
        return cls(program=program, format="humaneval", tests=(test,), entry_point=entry_point, setup_code=prompt, **kw)

    @classmethod
    def mbpp(cls, program: str, asserts: list[str], setup_code: str = "", **kw) -> Job:
        return cls(program=program, format="mbpp", tests=tuple(asserts), setup_code=setup_code, **kw)

    @classmethod
    def generic(cls, program: str, test_code: str, **kw) -> Job:
        return cls(program=program, format="generic", tests=(test_code,), **kw)

    def to_dict(self) -> dict:
        """The executor's request form. `metadata` stays with the caller: it may hold anything, and the executor
        never reads it. Built by hand, not with dataclasses.asdict, whose deep copy cost ~0.4 ms per program."""
        return {"program": self.program, "format": self.format, "tests": list(self.tests),
                "entry_point": self.entry_point, "setup_code": self.setup_code, "timeout_s": self.timeout_s,
                "job_id": self.job_id}

    @classmethod
    def from_dict(cls, data: dict) -> Job:
        return cls(**{**data, "tests": tuple(data["tests"])})
