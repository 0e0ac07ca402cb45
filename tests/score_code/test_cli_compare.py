"""`score-code compare` on the hand-made evaluation runs of tests/benchmarks/fixtures/compare_*."""
from __future__ import annotations

import json
from pathlib import Path

from score_code.cli import main

FIXTURES = Path(__file__).parents[1] / "benchmarks" / "fixtures"
BASE = FIXTURES / "compare_base"  # Acc 50.0 -> 52.5
STAR = FIXTURES / "compare_star"  # Acc 55.0 -> 65.0, i->c 12.5, c->i 2.5


def test_compare_command_prints_and_writes(tmp_path, capsys):
    argv = ["compare", str(BASE), str(STAR), "--labels", "base", "star", "--output", str(tmp_path / "cmp")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "| star | 55.0 | 65.0 | 10.0 | 12.5 | 2.5 |" in out
    assert (tmp_path / "cmp" / "comparison.png").is_file()
    assert main(argv) == 2  # a second run refuses to replace the comparison
    assert "error:" in capsys.readouterr().err and main([*argv, "--overwrite"]) == 0


def test_compare_command_refuses_other_decoding_unless_allowed(tmp_path, capsys):
    sampled = tmp_path / "sampled"
    sampled.mkdir()
    payload = json.loads((STAR / "metrics.json").read_text())
    payload["config"]["max_new_tokens"] = 256
    (sampled / "metrics.json").write_text(json.dumps(payload))
    argv = ["compare", str(BASE), str(sampled), "--output", str(tmp_path / "cmp")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "max_new_tokens differs" in err and "hint:" in err and "--allow-mismatch" in err
    assert main([*argv, "--allow-mismatch"]) == 0
    assert "max_new_tokens differs between the two-attempt runs" in capsys.readouterr().out
