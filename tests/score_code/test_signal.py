"""`score-code filter` (score_code.signal) and the training prompt form (mbpp_shots): per-task pass rates per
attempt, the 0 < p < 1 rule, the kept task file, resume, and the zero-shot prompt reaching the model."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from benchmarks import prompts
from benchmarks.generation import Dialogue, Generation, SamplingParams
from benchmarks.tasks import Task, load_mbpp, load_task_file
from sandbox import verdict
from sandbox.verdict import Result, Status
from score_code.cli import main
from score_code.config import ConfigError, DataConfig, ScoreConfig
from score_code.signal import FilterConfig, SignalError, estimate_signal
from score_code.train.common import TrainError, load_training_tasks
from tests.score_code.conftest import CharGenerator

MBPP_PATH = Path(os.environ["SCORE_CODE_MBPP"])  # set by tests/conftest.py


class CannedGenerator(CharGenerator):
    """CharGenerator whose answers come in call order (attempt 1 of every episode, then attempt 2); records the
    dialogues it was given."""

    chat = True

    def __init__(self, answers: list[str]) -> None:
        super().__init__(answers)
        self.seen: list[Dialogue] = []

    def generate(self, dialogues: list[Dialogue], params: SamplingParams) -> list[Generation]:
        self.seen.extend(dialogues)
        return super().generate(dialogues, params)


class WordGrader:
    """Verdicts from a word in the completion: PASS, SYNTAX (syntax error), ERR (sandbox error), else failed."""

    def __init__(self) -> None:
        self.calls = 0

    def grade(self, tasks, completions) -> list[Result]:
        self.calls += 1
        return [_verdict(c) for c in completions]


def _verdict(text: str) -> Result:
    if "PASS" in text:
        return Result(Status.PASSED, tests=[verdict.TestOutcome("assert 0", True)], expected_tests=1)
    if "SYNTAX" in text:
        return Result(Status.SYNTAX_ERROR, expected_tests=1)
    if "ERR" in text:
        return Result(Status.SANDBOX_ERROR, error="worker died")
    return Result(Status.FAILED, tests=[verdict.TestOutcome("assert 0", False)], expected_tests=1)


TASKS = [Task(task_id=f"t{i}", prompt=f"Write f{i}.", entry_point=f"f{i}", tests=(f"assert f{i}(1) == 1",),
              test_format="mbpp", test_list_for_prompt=(f"assert f{i}(1) == 1",)) for i in range(3)]


def _config(out: Path, **rollout) -> FilterConfig:
    config = FilterConfig()
    config.run.output, config.run.progress = str(out), False
    config.rollout.samples_per_prompt = 2
    for key, value in rollout.items():
        setattr(config.rollout, key, value)
    return config.validate()


def test_rates_summary_and_the_tasks_kept_by_the_0_lt_p_lt_1_rule(tmp_path):
    # attempt 1 of (t0 s0, t0 s1, t1 s0, t1 s1, t2 s0, t2 s1), then attempt 2 of the same episodes
    first = ["PASS", "PASS", "no", "SYNTAX", "PASS", "no"]
    second = ["PASS", "no", "no", "ERR", "PASS", "PASS"]
    generator = CannedGenerator(first + second)
    summary = estimate_signal(_config(tmp_path), TASKS, (), lambda: generator, WordGrader())

    rates = {r["task_id"]: r for r in map(json.loads, (tmp_path / "rates.jsonl").read_text().splitlines())}
    assert (rates["t0"]["p1"], rates["t0"]["p2"], rates["t0"]["signal"]) == (1.0, 0.5, True)
    assert (rates["t1"]["p1"], rates["t1"]["p2"], rates["t1"]["signal"]) == (0.0, 0.0, False)
    assert (rates["t2"]["p1"], rates["t2"]["p2"], rates["t2"]["signal"]) == (0.5, 1.0, True)
    # a sandbox error is neither a pass nor a failure: it leaves the denominator and is counted apart
    assert (rates["t1"]["graded2"], rates["t1"]["sandbox_errors"], rates["t1"]["syntax_errors1"]) == (1, 1, 1)
    assert rates["t0"]["mean_tokens1"] == 4.0 and rates["t1"]["mean_tokens1"] == (2 + 6) / 2

    assert [t.task_id for t in load_task_file(tmp_path / "tasks.jsonl")] == ["t0", "t2"]
    kept = load_task_file(tmp_path / "tasks.jsonl")[1]
    assert kept.test_format == "mbpp" and kept.tests == TASKS[2].tests
    assert kept.metadata["signal"] == {"k": 2, "p1": 0.5, "p2": 1.0}

    assert summary == json.loads((tmp_path / "summary.json").read_text())
    assert (summary["tasks"], summary["episodes"], summary["signal_tasks"]) == (3, 6, 2)
    assert summary["signal_fraction"] == pytest.approx(2 / 3)
    assert summary["pass_rate1"] == pytest.approx(3 / 6) and summary["pass_rate2"] == pytest.approx(3 / 5)
    assert summary["syntax_error_rate1"] == pytest.approx(1 / 6) and summary["sandbox_errors"] == 1
    assert summary["transitions"] == {"c->c": 2, "c->i": 1, "i->c": 1, "i->i": 1}
    assert summary["settings"]["prompt_form"] == "zero-shot"

    episodes = [json.loads(line) for line in (tmp_path / "episodes.jsonl").read_text().splitlines()]
    assert len(episodes) == 6
    e = episodes[1]  # the record shape the STaR / Pair-SFT data builders write
    assert (e["task_id"], e["sample_id"], e["y1"], e["y2"], e["kind"]) == ("t0", 1, "PASS", "no", "c->i")
    assert e["instruction"] == prompts.SELF_CORRECTION_INSTRUCTION
    assert e["y1_token_ids"] == [ord(c) for c in "PASS"] and e["status2"] == "failed"


def test_a_finished_run_is_skipped_and_other_settings_are_refused(tmp_path):
    generator = CannedGenerator(["PASS", "no"])
    estimate_signal(_config(tmp_path), TASKS, (), lambda: generator, WordGrader())
    calls = generator.calls

    def no_generator():
        raise AssertionError("a finished run loads no model")

    estimate_signal(_config(tmp_path), TASKS, (), no_generator, WordGrader())
    assert generator.calls == calls
    with pytest.raises(SignalError, match=r"temperature: 1.0 -> 0.6.*another --output"):
        estimate_signal(_config(tmp_path, temperature=0.6), TASKS, (), no_generator, WordGrader())


def test_missing_output_and_bad_values_name_the_flag(tmp_path):
    with pytest.raises(SignalError, match="--output DIR is required"):
        FilterConfig().validate()
    with pytest.raises(SignalError, match="--top_p"):
        _config(tmp_path, top_p=0.0)


class KilledGrader:
    """Grades by the parity of a completion's length (some tasks pass sometimes); dies at call `die_at`."""

    def __init__(self, die_at: int = 0) -> None:
        self.calls, self.die_at = 0, die_at

    def grade(self, tasks, completions) -> list[Result]:
        self.calls += 1
        if self.calls == self.die_at:
            raise KeyboardInterrupt
        return [_verdict("PASS" if len(c) % 2 else "no") for c in completions]


def _without_times(path: Path) -> list[dict]:
    records = [json.loads(line) for line in path.read_text().splitlines()]
    for r in records:
        r.pop("time_s", None)
    return records


def test_resume_after_a_kill_gives_the_files_of_an_uninterrupted_run(tmp_path, tiny_model, tokenizer):
    from score_code.generation import make_generator

    tasks = load_mbpp(MBPP_PATH, "train")[:4]

    def generator():
        return make_generator("hf", None, policy=tiny_model, tokenizer=tokenizer, batch_size=4)

    def config(out: Path) -> FilterConfig:
        return _config(out, max_new_tokens=12, generation_batch_size=4)  # 2 tasks x k=2 per batch: 2 batches

    whole = estimate_signal(config(tmp_path / "whole"), tasks, (), generator, KilledGrader())
    with pytest.raises(KeyboardInterrupt):
        estimate_signal(config(tmp_path / "cut"), tasks, (), generator, KilledGrader(die_at=2))
    episodes = tmp_path / "cut" / "episodes.jsonl"
    assert len(episodes.read_text().splitlines()) == 4 and not (tmp_path / "cut" / "summary.json").exists()
    with episodes.open("a") as f:
        f.write('{"task_id": "Mbpp/603", "sampl')  # a line torn by the kill
    resumed = estimate_signal(config(tmp_path / "cut"), tasks, (), generator, KilledGrader())

    for name in ("rates.jsonl", "tasks.jsonl"):
        assert (tmp_path / "cut" / name).read_text() == (tmp_path / "whole" / name).read_text()
    assert _without_times(episodes) == _without_times(tmp_path / "whole" / "episodes.jsonl")
    timing = {"generation_s", "grading_s", "tokens_per_s", "sampling_wall_s", "wall_s"}
    assert {k: v for k, v in resumed.items() if k not in timing} == {k: v for k, v in whole.items() if k not in timing}
    assert whole["episodes"] == 8 and 0 < whole["pass_rate1"] < 1  # the parity grader gives some signal


# --- the prompt form ----------------------------------------------------------------------------------------------


def test_zero_shot_training_prompt_shows_the_asserts_and_no_shots():
    tasks, shots = load_training_tasks(DataConfig(tasks=str(MBPP_PATH), max_train_tasks=1, mbpp_shots=0))
    assert shots == ()
    text = prompts.first_user_message(tasks[0], shots)
    assert all(a in text for a in tasks[0].test_list_for_prompt)
    assert text.count("[BEGIN]") == 1 and "[DONE]" not in text and text.endswith("[BEGIN]\n")

    _, three = load_training_tasks(DataConfig(tasks=str(MBPP_PATH), max_train_tasks=1))
    assert [s.metadata["mbpp_task_id"] for s in three] == [2, 3, 4]
    assert prompts.first_user_message(tasks[0], three).count("[BEGIN]") == 4
    _, one = load_training_tasks(DataConfig(tasks=str(MBPP_PATH), max_train_tasks=1, mbpp_shots=1))
    assert [s.metadata["mbpp_task_id"] for s in one] == [2]


def test_a_task_file_of_mbpp_tasks_takes_its_prompt_form_from_the_option(tmp_path, monkeypatch):
    path = tmp_path / "kept.jsonl"
    path.write_text("".join(json.dumps(t.to_dict()) + "\n" for t in load_mbpp(MBPP_PATH, "train")[:2]))
    monkeypatch.delenv("SCORE_CODE_MBPP")
    assert load_training_tasks(DataConfig(tasks=str(path), train_split="all", mbpp_shots=0))[1] == ()
    with pytest.raises(TrainError, match=r"--mbpp_path .*--mbpp_shots 0"):
        load_training_tasks(DataConfig(tasks=str(path), train_split="all"))
    _, shots = load_training_tasks(DataConfig(tasks=str(path), train_split="all", mbpp_path=str(MBPP_PATH)))
    assert len(shots) == 3


def test_mbpp_shots_out_of_range_is_a_config_error():
    with pytest.raises(ConfigError, match="mbpp_shots"):
        ScoreConfig.from_flat({"mbpp_shots": 4})


def test_cli_filter_on_mbpp_with_the_local_sandbox(tmp_path, tiny_model_dir, capsys):
    out = tmp_path / "filter"
    argv = ["filter", "--tasks", str(MBPP_PATH), "--max_train_tasks", "2", "--mbpp_shots", "0",
            "--samples_per_prompt", "2", "--max_new_tokens", "8", "--model", str(tiny_model_dir),
            "--dtype", "float32", "--sandbox_backend", "local", "--sandbox_workers", "2",
            "--sandbox_timeout_s", "5", "--no-progress", "--output", str(out)]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["tasks"] == 2
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["prompt_form"] == "zero-shot" and summary["episodes"] == 4
    episodes = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    first = episodes[0]["messages"][0]["content"]
    assert first.startswith("You are an expert Python programmer") and first.count("[BEGIN]") == 1
    assert all(e["status1"] != "sandbox_error" for e in episodes)
    assert main(argv) == 0  # finished: skipped
    assert "finished already" in capsys.readouterr().err


def test_cli_filter_without_output_names_the_flag(capsys):
    assert main(["filter", "--tasks", str(MBPP_PATH)]) == 2
    assert "--output" in capsys.readouterr().err
