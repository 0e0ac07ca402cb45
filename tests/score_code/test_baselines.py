"""STaR / Pair-SFT builders on a hand-made evaluation directory (fixtures/baselines_eval).

The fixture: 4 generic tasks, 2 samples each; (attempt-1 status, attempt-2 status) per sample:
    T1 s0 failed -> passed        T1 s1 passed -> passed
    T2 s0 failed -> failed        T2 s1 syntax_error -> failed      (no correct attempt at all)
    T3 s0 passed -> failed        T3 s1 failed -> sandbox_error
    T4 s0 sandbox_error -> passed T4 s1 failed -> passed
Every raw text starts with "# <task> s<sample> a<attempt> <status>" inside its code block.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from benchmarks import prompts
from benchmarks.tasks import load_task_file
from score_code.baselines.data import (
    BaselineDataError,
    build,
    build_pair_sft,
    build_star,
    load_traces,
    read_dataset,
    write_dataset,
)

FIXTURES = Path(__file__).parent / "fixtures"
EVAL_DIR = FIXTURES / "baselines_eval"
TASKS = load_task_file(FIXTURES / "baselines_tasks.jsonl")


def src(record: dict, which: str) -> tuple[int, int]:
    return record["source"][which]["sample_id"], record["source"][which]["attempt"]


def pairs_of(records: list[dict]) -> list[tuple[str, str, tuple[int, int], tuple[int, int]]]:
    return [(r["task_id"], r["kind"], src(r, "y1"), src(r, "y2")) for r in records]


def test_star_keeps_only_incorrect_to_correct_traces():
    records, stats = build("star", EVAL_DIR, TASKS)
    assert pairs_of(records) == [("T1", "i->c", (0, 1), (0, 2)), ("T4", "i->c", (1, 1), (1, 2))]
    s = stats.to_dict()
    assert s["records"] == {"i->c": 2, "c->c": 0}
    assert s["transitions"] == {"i->i": 2, "i->c": 2, "c->i": 1, "c->c": 1}
    assert s["excluded_traces"] == 2  # T3 s1 and T4 s0 each have a sandbox-error attempt
    assert s["sandbox_error_attempts"] == 2
    assert s["problems_without_correct"] == ["T2"]
    assert s["problems"] == 4 and s["traces"] == 8 and s["problems_with_records"] == 2


def test_star_plus_adds_correct_to_correct_traces():
    records, stats = build("star+", EVAL_DIR, TASKS)
    assert pairs_of(records) == [
        ("T1", "i->c", (0, 1), (0, 2)),
        ("T1", "c->c", (1, 1), (1, 2)),
        ("T4", "i->c", (1, 1), (1, 2)),
    ]
    assert stats.to_dict()["records"] == {"i->c": 2, "c->c": 1}


def test_record_carries_prompt_texts_instruction_and_sources():
    records, _ = build("star", EVAL_DIR, TASKS)
    r = records[0]
    assert r["messages"] == prompts.first_dialogue(TASKS[0], (), chat=True).messages
    assert r["y1"].startswith("```python\n# T1 s0 a1 failed")
    assert r["y2"].startswith("```python\n# T1 s0 a2 passed")
    assert r["instruction"] == prompts.SELF_CORRECTION_INSTRUCTION
    assert "y1_token_ids" not in r  # the evaluation did not store token ids


def test_pair_sft_pairs_every_incorrect_attempt_with_a_correct_one_of_its_problem():
    records, stats = build("pair-sft", EVAL_DIR, TASKS, seed=0)
    got = pairs_of(records)
    # One pair per incorrect attempt (sandbox-error attempts left out); T2 has no correct attempt: no pair.
    assert [(t, k, y1) for t, k, y1, _ in got] == [
        ("T1", "i->c", (0, 1)),
        ("T3", "i->c", (0, 2)),
        ("T3", "i->c", (1, 1)),
        ("T4", "i->c", (1, 1)),
    ]
    correct = {"T1": {(0, 2), (1, 1), (1, 2)}, "T3": {(0, 1)}, "T4": {(0, 2), (1, 2)}}
    for task_id, _, _, y2 in got:
        assert y2 in correct[task_id]
    for r in records:
        assert "passed" in r["y2"].split("\n")[1] and "passed" not in r["y1"].split("\n")[1]
    s = stats.to_dict()
    assert s["records"] == {"i->c": 4, "c->c": 0}
    assert s["problems_without_correct"] == ["T2"]
    assert s["sandbox_error_attempts"] == 2 and s["seed"] == 0


def test_pair_sft_plus_adds_one_correct_pair_per_correct_attempt_avoiding_itself():
    records, stats = build("pair-sft+", EVAL_DIR, TASKS, seed=0)
    plus = [(t, y1, y2) for t, k, y1, y2 in pairs_of(records) if k == "c->c"]
    assert [(t, y1) for t, y1, _ in plus] == [
        ("T1", (0, 2)), ("T1", (1, 1)), ("T1", (1, 2)),
        ("T3", (0, 1)),
        ("T4", (0, 2)), ("T4", (1, 2)),
    ]
    for t, y1, y2 in plus:
        if t == "T3":
            assert y2 == y1  # the only correct attempt of T3 is paired with itself
        else:
            assert y2 != y1
    assert ("T4", (0, 2), (1, 2)) in plus and ("T4", (1, 2), (0, 2)) in plus
    assert stats.to_dict()["records"] == {"i->c": 4, "c->c": 6}


def test_pair_sft_is_seeded_per_problem_independent_of_task_order():
    traces = load_traces(EVAL_DIR)
    forward, _ = build_pair_sft(traces, TASKS, include_correct=True, seed=7)
    again, _ = build_pair_sft(traces, TASKS, include_correct=True, seed=7)
    backward, _ = build_pair_sft(traces, list(reversed(TASKS)), include_correct=True, seed=7)
    assert forward == again
    key = lambda r: (r["task_id"], r["kind"], src(r, "y1"))  # noqa: E731
    assert sorted(pairs_of(forward)) == sorted(pairs_of(backward))
    assert {key(r): src(r, "y2") for r in forward} == {key(r): src(r, "y2") for r in backward}
    # T1's three correct attempts leave a real choice: some seed must pick differently.
    choices = {tuple(src(r, "y2") for r in build_pair_sft(traces, TASKS, include_correct=True, seed=s)[0]
                     if r["task_id"] == "T1")
               for s in range(20)}
    assert len(choices) > 1


def test_star_without_traces_for_a_task_skips_it():
    traces = load_traces(EVAL_DIR)
    del traces.by_task["T1"]
    records, stats = build_star(traces, TASKS)
    assert [r["task_id"] for r in records] == ["T4"]
    assert stats.problems == 3


def test_write_and_read_dataset_round_trip(tmp_path):
    records, stats = build("pair-sft+", EVAL_DIR, TASKS, seed=3)
    path = write_dataset(tmp_path / "data", records, stats)
    assert read_dataset(path) == records
    assert read_dataset(tmp_path / "data") == records
    saved = json.loads((tmp_path / "data" / "stats.json").read_text())
    assert saved["records_total"] == 10 and saved["builder"] == "pair-sft+"


def test_token_ids_are_carried_when_samples_have_them(tmp_path):
    eval_dir = tmp_path / "eval"
    shutil.copytree(EVAL_DIR, eval_dir)
    lines = [json.loads(line) for line in (eval_dir / "samples.jsonl").read_text().splitlines()]
    for i, r in enumerate(lines):
        r["token_ids"] = [i, i + 1]
    (eval_dir / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    records, _ = build("star", eval_dir, TASKS)
    assert records[0]["y1_token_ids"] == [0, 1] and records[0]["y2_token_ids"] == [1, 2]


def test_other_tasks_than_the_evaluation_used_are_refused():
    with pytest.raises(BaselineDataError, match="dataset_hash"):
        build("star", EVAL_DIR, TASKS[:3])


def test_unfinished_trace_is_refused(tmp_path):
    eval_dir = tmp_path / "eval"
    shutil.copytree(EVAL_DIR, eval_dir)
    lines = (eval_dir / "results.jsonl").read_text().splitlines()
    (eval_dir / "results.jsonl").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(BaselineDataError, match="T4 sample 1 has attempts \\[1\\]"):
        load_traces(eval_dir)


def test_feedback_evaluations_are_refused(tmp_path):
    eval_dir = tmp_path / "eval"
    shutil.copytree(EVAL_DIR, eval_dir)
    config = json.loads((eval_dir / "config.json").read_text())
    config["config"]["feedback"] = "tests"
    (eval_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(BaselineDataError, match="feedback"):
        load_traces(eval_dir)


def _episode(task, sample_id: int, reward1, reward2, chat: bool = True, shots=()) -> dict:
    """A `score-code filter` episodes.jsonl record (score_code.signal), the fields the builders read."""
    return {"task_id": task.task_id, "sample_id": sample_id, "messages": prompts.first_dialogue(task, shots, chat)
            .messages, "y1": f"# {task.task_id} s{sample_id} a1", "instruction": prompts.SELF_CORRECTION_INSTRUCTION,
            "y2": f"# {task.task_id} s{sample_id} a2", "y1_token_ids": [1, 2], "y2_token_ids": [3],
            "reward1": reward1, "reward2": reward2}


def test_filter_episodes_are_traces_of_the_tasks_given(tmp_path):
    """episodes.jsonl of `score-code filter`: only the tasks given are read (the filter kept a subset), a sandbox
    error is neither pass nor fail, and the builders and metrics work on them as on an evaluation's traces."""
    from score_code.baselines.data import build_from_traces, load_episode_traces, trace_metrics

    episodes = [_episode(TASKS[0], 0, 0.0, 1.0), _episode(TASKS[0], 1, 1.0, 1.0), _episode(TASKS[1], 0, 0.0, None),
                _episode(TASKS[2], 0, 1.0, 0.0)]
    (tmp_path / "episodes.jsonl").write_text("".join(json.dumps(e) + "\n" for e in episodes))
    traces = load_episode_traces(tmp_path, TASKS[:2], (), chat=True)
    assert sorted(traces.by_task) == ["T1", "T2"]  # T3 is not among the tasks given
    assert traces.by_task["T2"][0][2].sandbox_error and traces.by_task["T1"][0][1].token_ids == (1, 2)
    records, stats = build_from_traces("star", traces, TASKS[:2])
    assert pairs_of(records) == [("T1", "i->c", (0, 1), (0, 2))] and stats.excluded_traces == 1
    metrics = trace_metrics(traces)
    assert metrics["n_samples"] == 3 and metrics["accuracy"]["t1"] == pytest.approx(0.25)  # T1 0.5, T2 0
    with pytest.raises(BaselineDataError, match="prompt differs"):
        load_episode_traces(tmp_path / "episodes.jsonl", TASKS[:2], (), chat=False)
    with pytest.raises(BaselineDataError, match="no episodes of the 1 tasks"):
        load_episode_traces(tmp_path, TASKS[3:], (), chat=True)
