"""Did the runaway stop rules (benchmarks.stopping) change what was graded? Two finished evaluations, side by side.

    python perf/stop_rule_check.py RUN_WITHOUT_RULES RUN_WITH_RULES

Both runs must share every setting but `stop_repeats` (e.g. `score-code eval humaneval --no-stop-repeats --output A`
and `score-code eval humaneval --output B`). For each attempt it counts the graded programs that are identical,
that differ only as two programs that do not parse (a syntax_error verdict either way: a loop cut at another
point), and that really differ, with their verdicts; then the tokens generated. Attempt t > 1 is conditioned on
attempt t-1's text, so where a rule cut attempt 1, attempt 2 saw another prompt: such units are counted apart.
Greedy decoding in bf16 also depends a little on which sequences share a batch, and a rule changes that, so a few
differences can come from numerics alone; the listing says which units were cut by a rule and which were not.
"""
from __future__ import annotations

import argparse
import ast
import json
import warnings
from collections import Counter
from pathlib import Path


def _read(run: Path, name: str) -> dict[tuple[str, int, int], dict]:
    records = (json.loads(line) for line in (run / name).read_text(encoding="utf-8").splitlines() if line.strip())
    return {(r["task_id"], int(r["sample_id"]), int(r["attempt"])): r for r in records}


def _parses(code: str) -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("without", type=Path, help="output dir of the run with --no-stop-repeats")
    parser.add_argument("with_rules", type=Path, help="output dir of the run with the rules (the default)")
    args = parser.parse_args()
    configs = [json.loads((run / "config.json").read_text(encoding="utf-8"))["config"]
               for run in (args.without, args.with_rules)]
    differing = sorted(k for k in configs[0] if k not in ("stop_repeats", "task_timeouts_s")
                       and configs[0][k] != configs[1].get(k))
    if differing:
        parser.error(f"the runs must differ in stop_repeats only; they also differ in {', '.join(differing)}")
    if configs[0]["stop_repeats"] or not configs[1]["stop_repeats"]:
        parser.error("the first run must be made with --no-stop-repeats, the second with the rules (the default)")
    samples = [_read(run, "samples.jsonl") for run in (args.without, args.with_rules)]
    results = [_read(run, "results.jsonl") for run in (args.without, args.with_rules)]
    keys = sorted(samples[0].keys() & samples[1].keys(), key=lambda k: (k[2], k))
    missing = len(samples[0].keys() ^ samples[1].keys())
    if missing:
        print(f"warning: {missing} (task, sample, attempt) units are in one run only; compared the rest")

    def cut_by_rule(key: tuple[str, int, int]) -> bool:
        return (samples[0][key]["n_tokens"] != samples[1][key]["n_tokens"]
                and samples[1][key]["finish_reason"] == "stop" and samples[0][key]["finish_reason"] == "length")

    print(f"{'attempt':>7} {'units':>6} {'cut':>5} {'same program':>13} {'both unparsed':>14} {'differ':>7} "
          f"{'verdict changed':>16} {'tokens without':>15} {'tokens with':>12} {'saved':>7}")
    details = []
    for attempt in sorted({k[2] for k in keys}):
        units = [k for k in keys if k[2] == attempt]
        count: Counter[str] = Counter()
        tokens = [sum(s[k]["n_tokens"] for k in units) for s in samples]
        for key in units:
            old, new = samples[0][key]["solution"], samples[1][key]["solution"]
            count["cut"] += cut_by_rule(key)
            earlier_cut = any(cut_by_rule((key[0], key[1], a)) for a in range(1, attempt))
            if old == new:
                count["same"] += 1
            elif not _parses(old) and not _parses(new):
                count["unparsed"] += 1
            else:
                count["differ"] += 1
                details.append((key, cut_by_rule(key), earlier_cut))
            if results[0][key]["passed"] != results[1][key]["passed"]:
                count["verdict"] += 1
        saved = 1 - tokens[1] / tokens[0] if tokens[0] else 0.0
        print(f"{attempt:>7} {len(units):>6} {count['cut']:>5} {count['same']:>13} {count['unparsed']:>14} "
              f"{count['differ']:>7} {count['verdict']:>16} {tokens[0]:>15} {tokens[1]:>12} {saved:>7.1%}")
    for (task_id, sample_id, attempt), cut, earlier in details:
        why = ("cut by a rule" if cut else "attempt 1 was cut, so attempt 2 saw another prompt" if earlier
               else "not cut: batch numerics")
        verdicts = " -> ".join(results[i][(task_id, sample_id, attempt)]["status"] for i in (0, 1))
        print(f"  differs: {task_id} sample {sample_id} attempt {attempt} ({why}; {verdicts})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
