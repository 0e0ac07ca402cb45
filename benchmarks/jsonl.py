"""JSON and JSONL files for results: atomic writes, durable appends, and reads whose errors name file and line."""
from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.errors import ScoreCodeError
from sandbox.atomic import ENCODING_ERRORS, write_text_atomic


class JsonlError(ScoreCodeError):
    """A line of a JSONL file is not a JSON object; the message names the file and the 1-based line."""

    def __init__(self, path: str | os.PathLike, line_no: int, problem: str) -> None:
        self.path = str(path)
        self.line_no = line_no
        super().__init__(f"{path}:{line_no}: {problem}")


@dataclass
class JsonlContents:
    records: list[dict]
    partial_line_no: int | None = None  # set when the last line was cut short (e.g. a killed run) and was skipped
    complete_bytes: int = 0  # length of the file up to and including the last complete line


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON through a temporary file in the same directory and os.replace, so readers never see half a file."""
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False, ensure_ascii=False) + "\n")


def write_jsonl_atomic(path: str | os.PathLike, records: Iterable[dict]) -> None:
    """One JSON object per line, written atomically: an interrupted run leaves the old file, not half a new one."""
    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def append_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> None:
    """Append whole lines and fsync: after a kill, at most the last line of the file is partial."""
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    if not data:
        return
    with open(path, "a", encoding="utf-8", errors=ENCODING_ERRORS) as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: str | os.PathLike, tolerate_partial_last_line: bool = False) -> JsonlContents:
    """Read one JSON object per line (blank lines skipped).

    With `tolerate_partial_last_line`, a last line without its newline that does not parse is reported in
    `partial_line_no` instead of raised: that is what an interrupted append leaves behind.
    """
    raw = Path(path).read_bytes()
    text = raw.decode("utf-8", errors="replace")
    lines = text.split("\n")
    ends_with_newline = text.endswith("\n") or not text
    records: list[dict] = []
    partial: int | None = None
    complete_bytes = len(raw)
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        is_last_unterminated = i == len(lines) and not ends_with_newline
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            if is_last_unterminated and tolerate_partial_last_line:
                partial = i
                complete_bytes = raw.rfind(b"\n") + 1
                break
            raise JsonlError(path, i, f"invalid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(obj, dict):
            raise JsonlError(path, i, f"expected a JSON object, got {type(obj).__name__}")
        records.append(obj)
    return JsonlContents(records=records, partial_line_no=partial, complete_bytes=complete_bytes)
