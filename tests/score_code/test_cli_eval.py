"""`score-code eval`: argument errors printed as error/hint, default output names, and end-to-end runs with the tiny
model (local sandbox; the real Docker sandbox under the docker marker)."""
from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import pytest

from benchmarks.tasks import Task
from score_code.cli import build_parser, main
from score_code.cli.eval import dataset_name, default_output_dir

MBPP = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mbpp.jsonl"


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_help_lists_the_flags(capsys):
    with pytest.raises(SystemExit) as info:
        main(["eval", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--model", "--limit", "--attempts", "--samples", "--temperature", "--max-new-tokens", "--batch-size",
                 "--round-size", "--seed", "--backend", "--sandbox", "--workers", "--feedback", "--split", "--output",
                 "--mbpp-path"):
        assert flag in out


def test_missing_model_path_is_an_error_with_a_hint(tmp_path, capsys):
    code = main(["eval", "humaneval", "--limit", "1", "--model", str(tmp_path / "nope"), "--sandbox", "local",
                 "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert f"error: model path {tmp_path / 'nope'} does not exist" in err
    assert "hint: " in err and "omit --model" in err
    assert not (tmp_path / "out").exists()


def test_mbpp_without_a_data_file_says_where_to_point(monkeypatch, capsys):
    monkeypatch.delenv("SCORE_CODE_MBPP", raising=False)
    assert main(["eval", "mbpp", "--limit", "1"]) == 2
    err = capsys.readouterr().err
    assert "error: 'mbpp' needs the MBPP data file" in err and "--mbpp-path" in err


def test_several_greedy_samples_are_refused(capsys):
    assert main(["eval", "humaneval", "--samples", "3"]) == 2
    assert "temperature" in capsys.readouterr().err


def test_vllm_backend_without_vllm_says_how_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` raise ImportError
    assert main(["eval", "humaneval", "--limit", "1", "--backend", "vllm"]) == 2
    err = capsys.readouterr().err
    assert "error: the vLLM backend needs the vllm package" in err and "hint: pip install 'score-code[vllm]'" in err


def test_default_output_directory_names_dataset_limit_and_model():
    parser = build_parser()
    args = parser.parse_args(["eval", "humaneval", "--limit", "3"])
    assert default_output_dir(args, []) == Path("runs/eval-humaneval-limit3-SmolLM2-135M-Instruct")
    args = parser.parse_args(["eval", "mbpp", "--model", "/ckpts/run1/checkpoint-200"])
    mbpp = [Task("Mbpp/11", "p", "f", ("assert f()",), "mbpp", metadata={"mbpp_variant": "original"})]
    assert default_output_dir(args, mbpp) == Path("runs/eval-mbpp-original-test-checkpoint-200")


@pytest.mark.skipif(not MBPP.exists(), reason=f"{MBPP} not present (shared data beside the repo)")
def test_the_two_mbpp_releases_get_different_dataset_names():
    """Both were recorded as "mbpp:test", though they differ in tasks, wording and tests."""
    from benchmarks.tasks import load_tasks

    parser = build_parser()
    names = {}
    for file in ("mbpp.jsonl", "sanitized-mbpp.json"):
        args = parser.parse_args(["eval", "mbpp", "--mbpp-path", str(MBPP.parent / file)])
        names[file] = dataset_name(args, load_tasks(str(MBPP.parent / file), args.split))
    assert names == {"mbpp.jsonl": "mbpp-original:test", "sanitized-mbpp.json": "mbpp-sanitized:test"}
    args = parser.parse_args(["eval", str(MBPP.parent / "sanitized-mbpp.json")])
    assert dataset_name(args, []) == "sanitized-mbpp.json:test"  # a path keeps its file name


def _check_run(out: Path, n_tasks: int, stdout: str) -> None:
    assert "t1" in stdout and "t2" in stdout and "i→c" in stdout
    results, samples = _records(out / "results.jsonl"), _records(out / "samples.jsonl")
    assert len(results) == len(samples) == 2 * n_tasks
    assert {r["status"] for r in results} != {"sandbox_error"}
    by_key = {(s["task_id"], s["attempt"]): s for s in samples}
    for (task_id, attempt), s in by_key.items():
        if attempt == 2:  # attempt 2 is conditioned on attempt 1's prompt + completion + the instruction
            first = by_key[(task_id, 1)]
            assert s["n_prompt_tokens"] > first["n_prompt_tokens"] + first["n_tokens"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["metrics"]["n_tasks"] == n_tasks
    assert (out / "report.md").is_file()


@pytest.mark.slow
def test_eval_end_to_end_with_the_local_sandbox(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "he"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the local backend's "no isolation" warning
        code = main(["eval", "humaneval", "--model", str(tiny_model_dir), "--limit", "2", "--max-new-tokens", "8",
                     "--sandbox", "local", "--workers", "2", "--output", str(out), "--no-progress"])
    assert code == 0
    _check_run(out, 2, capsys.readouterr().out)
    config = json.loads((out / "config.json").read_text())["config"]
    assert config["model"] == str(tiny_model_dir) and config["chat"] is True and config["dataset"] == "humaneval"


def test_changed_settings_are_refused_before_the_model_loads(tiny_model_dir, tmp_path, capsys, monkeypatch):
    out = tmp_path / "he"
    args = ["eval", "humaneval", "--model", str(tiny_model_dir), "--limit", "1", "--sandbox", "local",
            "--output", str(out), "--no-progress"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        assert main([*args, "--max-new-tokens", "4"]) == 0
    capsys.readouterr()

    def no_model_load(*a, **k):
        raise AssertionError("the model was loaded before the output directory was checked")

    monkeypatch.setattr("score_code.models.load_model", no_model_load)
    assert main([*args, "--max-new-tokens", "5"]) == 2
    err = capsys.readouterr().err
    assert "max_new_tokens: 4 there, 5 now" in err and str(out) in err


def test_sandbox_url_reaches_a_remote_sandbox(tiny_model_dir, tmp_path, capsys, monkeypatch):
    from sandbox import SandboxError

    built = []

    def remote_sandbox(**kwargs):
        built.append(kwargs)
        raise SandboxError("no grader in this test")

    monkeypatch.setattr("sandbox.Sandbox", remote_sandbox)
    monkeypatch.setenv("SANDBOX_TOKEN", "from-the-env")
    code = main(["eval", "humaneval", "--model", str(tiny_model_dir), "--limit", "1", "--max-new-tokens", "4",
                 "--sandbox-url", "http://grader1:8080,http://grader2:8080", "--output", str(tmp_path / "he"),
                 "--no-progress"])
    assert code == 2 and "no grader in this test" in capsys.readouterr().err
    assert built == [{"backend": "remote", "urls": ["http://grader1:8080", "http://grader2:8080"], "token": None,
                      "workers": None}]  # token None: Sandbox reads $SANDBOX_TOKEN itself
    monkeypatch.setattr("score_code.models.load_tokenizer", lambda *a, **k: pytest.fail("loaded a tokenizer"))
    assert main(["eval", "humaneval", "--sandbox-url", "grader1:8080", "--output", str(tmp_path / "x")]) == 2
    assert "--sandbox-url: 'grader1:8080' is not a grader URL" in capsys.readouterr().err
    assert len(built) == 1  # refused before anything was loaded


@pytest.mark.slow
@pytest.mark.skipif(not MBPP.exists(), reason=f"{MBPP} not present (shared data beside the repo)")
def test_eval_mbpp_from_mbpp_path(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "mbpp"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        code = main(["eval", "mbpp", "--mbpp-path", str(MBPP), "--model", str(tiny_model_dir), "--limit", "1",
                     "--max-new-tokens", "4", "--sandbox", "local", "--output", str(out), "--no-progress"])
    assert code == 0
    _check_run(out, 1, capsys.readouterr().out)
    assert json.loads((out / "config.json").read_text())["config"]["dataset"] == "mbpp-original:test"


@pytest.mark.docker
@pytest.mark.slow
def test_eval_end_to_end_through_docker(docker_sandbox, tiny_model_dir, tmp_path, capsys):
    """Three HumanEval tasks through the real Docker sandbox (the CLI opens its own pool)."""
    out = tmp_path / "docker"
    code = main(["eval", "humaneval", "--model", str(tiny_model_dir), "--limit", "3", "--max-new-tokens", "16",
                 "--sandbox", "docker", "--workers", "2", "--output", str(out), "--no-progress"])
    assert code == 0
    _check_run(out, 3, capsys.readouterr().out)


def test_the_cli_shows_the_librarys_progress_lines_once(capsys):
    """Measuring timeouts or resuming a run takes a while: the CLI prints what the library logs at INFO, once."""
    import logging

    from score_code.cli import show_library_logs

    show_library_logs()
    show_library_logs()
    logging.getLogger("benchmarks.timeouts").info("measuring 3 reference solution(s)")
    assert capsys.readouterr().err.count("measuring 3 reference solution(s)") == 1


@pytest.mark.slow
def test_eval_takes_a_lora_checkpoint_as_model(tiny_model_dir, tmp_path, capsys):
    """`score-code eval --model RUN/checkpoint-N` of a LoRA run: the adapter over the base its trainer_state.json
    names (the tokenizer too comes from the checkpoint)."""
    from peft import LoraConfig, get_peft_model

    from score_code.models import load_model

    loaded = load_model(str(tiny_model_dir), dtype="float32", device="cpu")
    adapter = tmp_path / "run" / "checkpoint-2"
    get_peft_model(loaded.model, LoraConfig(r=2, target_modules="all-linear", task_type="CAUSAL_LM")
                   ).save_pretrained(adapter)
    loaded.tokenizer.save_pretrained(adapter)
    (adapter / "trainer_state.json").write_text(json.dumps({"base_model": str(tiny_model_dir)}))
    out = tmp_path / "he"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        code = main(["eval", "humaneval", "--model", str(adapter), "--limit", "2", "--max-new-tokens", "8",
                     "--sandbox", "local", "--output", str(out), "--no-progress"])
    assert code == 0
    _check_run(out, 2, capsys.readouterr().out)
    assert json.loads((out / "config.json").read_text())["config"]["model"] == str(adapter)
