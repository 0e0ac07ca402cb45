"""JSONL helpers: errors name file and line, a cut last line is tolerated only when asked, writes are atomic."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from benchmarks.jsonl import JsonlError, append_jsonl, read_jsonl, write_json_atomic, write_jsonl_atomic


def test_round_trip_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    write_jsonl_atomic(path, [{"a": 1}, {"b": "é"}])
    append_jsonl(path, [{"c": [1, 2]}])
    append_jsonl(path, [])
    path.write_text(path.read_text() + "\n")
    contents = read_jsonl(path)
    assert contents.records == [{"a": 1}, {"b": "é"}, {"c": [1, 2]}] and contents.partial_line_no is None


def test_bad_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}\n{"a": \n{"a": 3}\n')
    with pytest.raises(JsonlError, match=r"x.jsonl:2: invalid JSON"):
        read_jsonl(path, tolerate_partial_last_line=True)  # a bad line in the middle is never tolerated
    path.write_text('{"a": 1}\n[1, 2]\n')
    with pytest.raises(JsonlError, match=r"x.jsonl:2: expected a JSON object, got list"):
        read_jsonl(path)


def test_partial_last_line(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}\n{"a": ')
    with pytest.raises(JsonlError, match=r"x.jsonl:3"):
        read_jsonl(path)
    contents = read_jsonl(path, tolerate_partial_last_line=True)
    assert contents.records == [{"a": 1}, {"a": 2}] and contents.partial_line_no == 3
    assert contents.complete_bytes == len('{"a": 1}\n{"a": 2}\n')


def test_atomic_write_replaces_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    write_json_atomic(path, {"v": 1})
    write_json_atomic(path, {"v": 2})
    assert path.read_text() == '{\n  "v": 2\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]
    assert os.stat(path).st_mode & 0o777 == 0o644
    with pytest.raises(TypeError):
        write_json_atomic(path, {"v": object()})  # a failed write keeps the old file
    assert path.read_text() == '{\n  "v": 2\n}\n' and sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]


def test_lone_surrogates_round_trip_through_every_writer(tmp_path: Path) -> None:
    """Program output may hold lone surrogates, which UTF-8 cannot encode; no writer may fail on them."""
    record = {"error": "ValueError: \udc80", "text": "\ud800 ok"}
    write_jsonl_atomic(tmp_path / "a.jsonl", [record])
    append_jsonl(tmp_path / "a.jsonl", [record])
    write_json_atomic(tmp_path / "b.json", record)
    assert read_jsonl(tmp_path / "a.jsonl").records == [record, record]
    assert json.loads((tmp_path / "b.json").read_text(encoding="utf-8")) == record
