"""`compare` on hand-made metrics.json files (fixtures/compare_*)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from benchmarks.compare import CompareError, compare, load_runs, table_rows

FIXTURES = Path(__file__).parent / "fixtures"
BASE = FIXTURES / "compare_base"  # Acc 50.0 -> 52.5, i->c 7.5, c->i 5.0, model "" (embedded default)
STAR = FIXTURES / "compare_star"  # Acc 55.0 -> 65.0, i->c 12.5, c->i 2.5, model runs/star/checkpoint-30
BASE_REPAIR = FIXTURES / "compare_base_repair"  # repair_accuracy 0.35, model ""


def test_two_evaluations_give_the_paper_table(tmp_path):
    text = compare([BASE, STAR], tmp_path, labels=["Self-Refine", "STaR"])
    assert "| method | Acc@t1 | Acc@t2 | Δ(t1,t2) | Δ i→c | Δ c→i |" in text
    assert "| Self-Refine | 50.0 | 52.5 | 2.5 | 7.5 | 5.0 |" in text
    assert "| STaR | 55.0 | 65.0 | 10.0 | 12.5 | 2.5 |" in text
    assert "MBPP-R" not in text
    assert (tmp_path / "comparison.md").read_text() == text
    png = (tmp_path / "comparison.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000


def test_labels_come_from_the_run_config_and_repair_runs_join_their_method_row(tmp_path):
    text = compare([BASE, BASE_REPAIR, STAR], tmp_path)
    header, rows = table_rows(load_runs([BASE, BASE_REPAIR, STAR]))
    assert header == ["method", "MBPP-R", "Acc@t1", "Acc@t2", "Δ(t1,t2)", "Δ i→c", "Δ c→i"]
    assert rows == [
        ["base model", "35.0", "50.0", "52.5", "2.5", "7.5", "5.0"],
        ["star/checkpoint-30", "-", "55.0", "65.0", "10.0", "12.5", "2.5"],
    ]
    assert "| base model | 35.0 | 50.0 | 52.5 | 2.5 | 7.5 | 5.0 |" in text
    assert f"`{BASE_REPAIR}` (repair," in text


def test_existing_output_is_refused_unless_overwritten(tmp_path):
    compare([BASE], tmp_path)
    with pytest.raises(CompareError, match="--overwrite"):
        compare([BASE], tmp_path)
    compare([BASE, STAR], tmp_path, overwrite=True)
    assert "star/checkpoint-30" in (tmp_path / "comparison.md").read_text()


def test_bad_inputs_name_the_problem(tmp_path):
    with pytest.raises(CompareError, match="2 labels for 1 run"):
        load_runs([BASE], labels=["a", "b"])
    with pytest.raises(CompareError, match="no metrics.json"):
        load_runs([tmp_path])
    with pytest.raises(CompareError, match="give distinct --labels"):
        table_rows(load_runs([BASE, STAR], labels=["same", "same"]))


def _variant(tmp_path: Path, name: str, dataset: dict | None = None, **config) -> Path:
    """A copy of the STaR run with another dataset or other config values."""
    run = tmp_path / name
    shutil.copytree(STAR, run)
    payload = json.loads((run / "metrics.json").read_text())
    payload["dataset"] = dataset or payload["dataset"]
    payload["config"].update(config)
    (run / "metrics.json").write_text(json.dumps(payload))
    return run


def test_runs_on_other_data_or_decoding_are_refused_unless_allowed_and_then_listed(tmp_path):
    sanitized = _variant(tmp_path, "sanitized", {"name": "mbpp-sanitized:test", "hash": "ef" * 32})
    with pytest.raises(CompareError, match=r"dataset differs between the two-attempt runs: .*mbpp:test \(sha256 "
                                           r"abababababab\).*mbpp-sanitized:test \(sha256 efefefefefef\)") as info:
        compare([BASE, sanitized], tmp_path / "out")
    assert "--allow-mismatch" in info.value.hint and not (tmp_path / "out").exists()
    sampled = _variant(tmp_path, "sampled", temperature=0.8)
    with pytest.raises(CompareError, match="temperature differs between the two-attempt runs: .*: 0.0; .*: 0.8"):
        compare([BASE, sampled], tmp_path / "out")
    flat = _variant(tmp_path, "flat", timeout_rule="flat 3 s")  # graded under other timeouts
    with pytest.raises(CompareError, match="timeout_rule differs between the two-attempt runs"):
        compare([BASE, flat], tmp_path / "out")
    older = _variant(tmp_path, "older", stop_rules_version="1")  # the exact-repeat rules only
    newer = _variant(tmp_path, "newer", stop_rules_version="2")
    with pytest.raises(CompareError, match="stop_rules_version differs between the two-attempt runs: .*: 1; .*: 2"):
        compare([older, newer], tmp_path / "out")
    text = compare([BASE, sanitized, sampled], tmp_path / "out", labels=["a", "b", "c"], allow_mismatch=True)
    assert "**Not like for like**" in text and "- dataset differs" in text and "- temperature differs" in text
    compare([BASE, BASE_REPAIR, STAR], tmp_path / "same")  # a repair run is checked against repair runs only
