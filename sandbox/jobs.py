"""Jobs: an untrusted program plus the trusted test code that judges it, in one of three formats (graded, unforgeable);
or a script, run as from the command line with its stdin and files, whose exit code and output the caller judges
(SandboxFusion's /run_code mode: forgeable by the program, so never a verdict here)."""
from __future__ import annotations

import base64
import binascii
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

JobFormat = Literal["humaneval", "mbpp", "generic", "script"]
FORMATS = ("humaneval", "mbpp", "generic", "script")
# Bounds on what a script job carries into the sandbox (sandbox/executor.py checks the same numbers: it imports
# nothing of the package). The request is one JSON line to the executor and the files land in the scratch tmpfs
# (Limits.scratch_mb, Limits.scratch_inodes) that the program itself also writes to.
MAX_FILES = 100
MAX_FILES_BYTES = 16 * 1024 * 1024  # decoded, all files together
MAX_STDIN_BYTES = 16 * 1024 * 1024  # UTF-8 encoded
# keep_output_bytes bound: stdout and stderr each, JSON-escaped up to 6 characters a byte, must stay well inside the
# pool's 64 MiB cap on one executor answer (sandbox/pool.py MAX_RESPONSE_BYTES).
MAX_KEEP_OUTPUT_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class Job:
    """One program to grade, or to run.

    `program` is untrusted. Everything else comes from the dataset and is trusted: it runs apart from the
    program (see sandbox/executor.py), which only ever answers calls with plain data.

    - humaneval: `tests` = [the dataset's `test` source defining check(candidate)]; `entry_point` is passed as
      `candidate`; `setup_code` = the task prompt, whose helpers (e.g. `poly`) the check may call. One test.
    - mbpp: `tests` = the assert strings, each its own test; `setup_code` = test_setup_code / test imports.
    - generic: `tests` = [test code]; its top-level `test_*` functions are the tests, or the whole code is one
      test when it has none. Names it uses but does not define are looked up in the program.
    - script: no tests. The program runs as `python program.py < stdin` would (`__name__ == "__main__"`, so its
      main block runs), in a working dir holding `files`; the Result carries its exit code (`return_code`) and its
      status says only how it ended: exit 0 is PASSED, any other exit RUNTIME_ERROR. The program chooses its exit
      code, so that is no verdict: a script job defines no tests, and its reward is always 0 (the SandboxFusion
      `/run_code` mode, where the caller judges the output; sandbox/fusion.py).

    `files` maps a relative path (no `..`, not absolute) to its content in base64, as SandboxFusion sends it; a
    mapping is kept as sorted (path, content) pairs, so a Job stays hashable.

    `keep_output_bytes` overrides Limits.keep_output_bytes for this job, as `timeout_s` overrides the timeout: a
    script's caller compares its whole stdout, graded jobs never need it. Local and docker backends; `/v1/grade`
    does not take it (its results keep the server's cut).
    """

    program: str
    format: JobFormat
    tests: tuple[str, ...]
    entry_point: str = ""
    setup_code: str = ""
    timeout_s: float | None = None  # overrides Limits.timeout_s, e.g. calibrated from the reference solution
    job_id: str = ""
    metadata: dict = field(default_factory=dict, compare=False)  # carried through untouched (task_id, ...)
    stdin: str = ""  # script only: the program's standard input
    files: tuple[tuple[str, str], ...] = ()  # script only: (relative path, base64 content) pairs
    keep_output_bytes: int | None = None  # overrides Limits.keep_output_bytes (bytes kept of stdout and of stderr)

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"job {self.job_id!r}: unknown format {self.format!r} ({', '.join(FORMATS)})")
        if isinstance(self.tests, (str, bytes)):
            raise ValueError(f"job {self.job_id!r}: tests must be a sequence of strings, not one string")
        object.__setattr__(self, "tests", tuple(self.tests))
        if self.keep_output_bytes is not None and (type(self.keep_output_bytes) is not int
                                                   or not 0 < self.keep_output_bytes <= MAX_KEEP_OUTPUT_BYTES):
            raise ValueError(f"job {self.job_id!r}: keep_output_bytes must be an int in 1..{MAX_KEEP_OUTPUT_BYTES} "
                             f"or None, got {self.keep_output_bytes!r}")
        files = tuple(self.files.items() if isinstance(self.files, Mapping) else self.files)
        if self.format == "script":
            if self.tests:
                raise ValueError(f"job {self.job_id!r}: a script job has no tests (its exit code is no verdict)")
            check_script_inputs(self.stdin, files, f"job {self.job_id!r}")
            object.__setattr__(self, "files", tuple(sorted(files)))
            return
        if not self.tests:
            raise ValueError(f"job {self.job_id!r}: tests must be a non-empty sequence of strings")
        if self.stdin or files:
            raise ValueError(f"job {self.job_id!r}: stdin and files are for script jobs, not {self.format}")
        object.__setattr__(self, "files", ())  # from_dict gives {}
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

    @classmethod
    def script(cls, code: str, stdin: str = "", files: Mapping[str, str] | None = None, **kw) -> Job:
        """Run `code` as a script with `stdin`, in a working dir holding `files` (relative path -> base64)."""
        return cls(program=code, format="script", tests=(), stdin=stdin, files=tuple((files or {}).items()), **kw)

    def to_dict(self) -> dict:
        """The executor's request form, and /v1/grade's job. `metadata` stays with the caller: it may hold anything,
        and the executor never reads it. stdin and files appear only in a script job's dict, keep_output_bytes only
        when set: a graded job's dict is the one every `sandbox serve` accepts. Built by hand, not with
        dataclasses.asdict, whose deep copy cost ~0.4 ms per program."""
        data = {"program": self.program, "format": self.format, "tests": list(self.tests),
                "entry_point": self.entry_point, "setup_code": self.setup_code, "timeout_s": self.timeout_s,
                "job_id": self.job_id}
        if self.format == "script":
            data["stdin"], data["files"] = self.stdin, dict(self.files)
        if self.keep_output_bytes is not None:
            data["keep_output_bytes"] = self.keep_output_bytes
        return data

    @classmethod
    def from_dict(cls, data: dict) -> Job:
        return cls(**{**data, "tests": tuple(data["tests"])})


def check_script_inputs(stdin: object, files: tuple, where: str) -> None:
    """Raise ValueError, naming the field, unless stdin is a str and every file a safe relative path with base64
    content, within MAX_FILES, MAX_FILES_BYTES and MAX_STDIN_BYTES."""
    if not isinstance(stdin, str):
        raise ValueError(f"{where}: stdin must be a string, got {type(stdin).__name__}")
    if len(stdin) > MAX_STDIN_BYTES or len(stdin.encode("utf-8", "surrogatepass")) > MAX_STDIN_BYTES:
        raise ValueError(f"{where}: stdin is larger than {MAX_STDIN_BYTES} bytes")
    if len(files) > MAX_FILES:
        raise ValueError(f"{where}: {len(files)} files, more than the {MAX_FILES} allowed")
    total, seen = 0, set()
    for item in files:
        if not isinstance(item, tuple) or len(item) != 2:
            raise ValueError(f"{where}: files must map paths to base64 strings, got the item {item!r}")
        path, content = item
        check_file_path(path, where)
        seen.add(posixpath.normpath(path))
        if not isinstance(content, str):
            raise ValueError(f"{where}: files[{path!r}] must be a base64 string, got {type(content).__name__}")
        try:
            total += len(base64.b64decode(content, validate=True))
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"{where}: files[{path!r}] is not valid base64 ({exc})") from None
        if total > MAX_FILES_BYTES:
            raise ValueError(f"{where}: the files hold more than {MAX_FILES_BYTES} bytes in all")
    if len(seen) < len(files):
        raise ValueError(f"{where}: two files have the same path")
    for path in seen:
        parent = posixpath.dirname(path)
        while parent:
            if parent in seen:
                raise ValueError(f"{where}: file path {parent!r} is also the directory of {path!r}")
            parent = posixpath.dirname(parent)


def check_file_path(path: object, where: str) -> None:
    """A file path must stay inside the program's working dir: relative, without `..`, not empty."""
    if not isinstance(path, str) or not path or "\0" in path:
        raise ValueError(f"{where}: file path {path!r} must be a non-empty string without NUL")
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{where}: file path {path!r} is not valid UTF-8 (a lone surrogate)") from None
    if path.startswith("/"):
        raise ValueError(f"{where}: file path {path!r} is absolute; files go in the program's working dir")
    if ".." in path.split("/"):
        raise ValueError(f"{where}: file path {path!r} contains '..'; files stay in the program's working dir")
    if posixpath.normpath(path) == "." or path.endswith("/"):
        raise ValueError(f"{where}: file path {path!r} names a directory, not a file")
