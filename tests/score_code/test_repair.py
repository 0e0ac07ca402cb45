"""Repair set: built from the hand-made evaluation directory (fixtures/baselines_eval), evaluated with a scripted
generator and the local sandbox (real grading of the generic tasks `assert fN() == N`)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import prompts
from benchmarks.compare import load_runs, table_rows
from benchmarks.evaluate import EvalConfig
from benchmarks.generation import Dialogue, Generation, SamplingParams
from benchmarks.tasks import load_task_file
from score_code.baselines.repair import (
    RepairSetError,
    build_repair_set,
    evaluate_repair,
    load_repair_set,
    previous_answer,
)

FIXTURES = Path(__file__).parent / "fixtures"
EVAL_DIR = FIXTURES / "baselines_eval"
TASKS = load_task_file(FIXTURES / "baselines_tasks.jsonl")


class ScriptedRepairs:
    """Answers the repair turn with a correct function for the tasks in `fix`, a wrong one otherwise."""

    def __init__(self, fix: set[str]) -> None:
        self.fix = fix
        self.seen: list[list[dict]] = []

    def generate(self, dialogues: list[Dialogue], params: SamplingParams) -> list[Generation]:
        out = []
        for d in dialogues:
            self.seen.append(d.messages)
            n = next(t for t in TASKS if d.messages[0]["content"].startswith(t.prompt)).task_id[1:]
            text = f"```python\ndef f{n}():\n    return {n if f'T{n}' in self.fix else -1}\n```"
            reply = Dialogue(messages=[*d.messages, {"role": "assistant", "content": text}])
            out.append(Generation(text=text, token_ids=[1, 2], prompt_token_ids=[3], finish_reason="stop",
                                  dialogue=reply))
        return out


def test_build_takes_each_problems_first_failing_attempt1_program(tmp_path):
    manifest = build_repair_set(EVAL_DIR, TASKS, (), tmp_path / "set")
    tasks, shots, wrong, again = load_repair_set(tmp_path / "set")
    assert again == manifest and shots == ()
    assert [t.task_id for t in tasks] == ["T1", "T2", "T3", "T4"]
    heads = {tid: program.split("\n")[0] for tid, program in wrong.items()}
    assert heads == {"T1": "# T1 s0 a1 failed", "T2": "# T2 s0 a1 failed", "T3": "# T3 s1 a1 failed",
                     "T4": "# T4 s1 a1 failed"}
    assert manifest["counts"] == {"problems": 4, "attempt1_failing": 5, "sandbox_errors": 1, "empty_programs": 0,
                                  "items": 4}
    assert manifest["source_model"] == "hand-made"
    with pytest.raises(RepairSetError, match="fixed once built"):
        build_repair_set(EVAL_DIR, TASKS, (), tmp_path / "set")


def test_previous_answer_takes_the_shape_of_the_models_answers():
    assert previous_answer("def f():\n    pass\n", TASKS[0], chat=True) == "```python\ndef f():\n    pass\n```"
    mbpp_task = TASKS[0].__class__(**{**TASKS[0].to_dict(), "test_format": "mbpp"})
    assert previous_answer("x = 1", mbpp_task, chat=False) == "x = 1\n[DONE]"


def test_one_repair_attempt_is_graded_and_repair_accuracy_written(tmp_path, local_sandbox):
    build_repair_set(EVAL_DIR, TASKS, (), tmp_path / "set")
    generator = ScriptedRepairs(fix={"T1", "T3", "T4"})
    config = EvalConfig(model="scripted", chat=True)
    metrics = evaluate_repair(generator, tmp_path / "set", local_sandbox, tmp_path / "out", config, progress=False)
    assert metrics["repair_accuracy"] == pytest.approx(0.75)
    assert metrics["repaired"] == 3 and metrics["n_programs"] == 4
    assert metrics["wrong_program_passed_on_regrade"] == 0
    # The model saw: the first prompt, the wrong program as its own answer, p1; and answered once.
    assert len(generator.seen) == 4
    first = generator.seen[0]
    assert [m["role"] for m in first] == ["user", "assistant", "user"]
    assert first[0]["content"] == prompts.first_user_message(TASKS[0], (), chat=True)
    assert first[1]["content"].startswith("```python\n# T1 s0 a1 failed")
    assert first[2]["content"] == prompts.SELF_CORRECTION_INSTRUCTION
    payload = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert payload["kind"] == "repair" and payload["metrics"]["repair_accuracy"] == pytest.approx(0.75)
    assert payload["repair_set"]["source_model"] == "hand-made"
    results = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert sorted((r["task_id"], r["attempt"], r["passed"]) for r in results) == [
        ("T1", 1, False), ("T1", 2, True), ("T2", 1, False), ("T2", 2, False),
        ("T3", 1, False), ("T3", 2, True), ("T4", 1, False), ("T4", 2, True),
    ]
    # compare shows it as the MBPP-R column of the evaluated model's row.
    header, rows = table_rows(load_runs([tmp_path / "out"]))
    assert header[1] == "MBPP-R" and rows == [["scripted", "75.0", "-", "-", "-", "-", "-"]]


def test_build_command_keeps_the_evaluated_tasks(tmp_path, capsys):
    from score_code.cli import main

    assert main(["repair-set", "build", str(EVAL_DIR), "--tasks", str(FIXTURES / "baselines_tasks.jsonl"),
                 "--output", str(tmp_path / "set")]) == 0
    assert "4 wrong programs from 4 problems" in capsys.readouterr().out
    # None of the evaluated tasks is a HumanEval task: refused, not an empty set.
    argv = ["repair-set", "build", str(EVAL_DIR), "--tasks", "humaneval", "--output", str(tmp_path / "other")]
    assert main(argv) == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.slow
def test_eval_command_with_a_tiny_model_and_the_local_sandbox(tmp_path, tiny_model_dir, capsys):
    from score_code.cli import main

    build_repair_set(EVAL_DIR, TASKS, (), tmp_path / "set")
    argv = ["repair-set", "eval", str(tmp_path / "set"), "--model", str(tiny_model_dir), "--sandbox", "local",
            "--max-new-tokens", "4", "--output", str(tmp_path / "out"), "--no-progress"]
    assert main(argv) == 0
    assert "repair accuracy:" in capsys.readouterr().out
    payload = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert payload["kind"] == "repair" and payload["metrics"]["n_programs"] == 4
    assert 0.0 <= payload["metrics"]["repair_accuracy"] <= 1.0
    samples = [json.loads(line) for line in (tmp_path / "out" / "samples.jsonl").read_text().splitlines()]
    assert sorted({(s["task_id"], s["attempt"]) for s in samples}) == [(t, a) for t in ("T1", "T2", "T3", "T4")
                                                                        for a in (1, 2)]
    assert main(["compare", str(tmp_path / "out"), "--output", str(tmp_path / "cmp")]) == 0
    assert "| method | MBPP-R | Acc@t1 |" in (tmp_path / "cmp" / "comparison.md").read_text()
