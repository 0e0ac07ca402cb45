"""Do the runaway stop rules (benchmarks.stopping) change what is graded? Measured on a finished evaluation.

    python perf/stop_rule_check.py RUN_WITHOUT_RULES [--with RUN_WITH_RULES] [--tasks humaneval] [--split test]

RUN_WITHOUT_RULES is an output directory of `score-code eval ... --no-stop-repeats`, or of a run under an older
version of the rules (config.json's stop_rules_version): then the count is what the newer rules add. Each of its
completions is tokenized again, cut where the rules would have stopped it (benchmarks.stopping.runaway_cut, what the
generator does token by token), and its program extracted again: the count of graded programs that stay the same,
that differ only as two programs that do not parse (a syntax_error either way), and that really differ. This
isolates the rules: the completions are the same ones, so nothing else moves. Attempt t > 1 is conditioned on
attempt t-1's text, so it is checked only where the rules left attempt 1 alone.

With --with RUN_WITH_RULES (the same settings, the rules on), it also compares the two runs end to end: accuracy per
attempt and every verdict that changed, with whether a rule cut that unit. In bf16, greedy decoding also depends on
which sequences share a batch (near-tie argmaxes flip), and the rules change the batches, so there most
differences come from numerics, not from the rules; the offline count above is the rules' own effect.
"""
from __future__ import annotations

import argparse
import os
from collections import Counter
from pathlib import Path

from benchmarks.evaluate import RESULTS_FILE, SAMPLES_FILE, read_config
from benchmarks.extract import _parses, extract_program
from benchmarks.jsonl import read_jsonl
from benchmarks.stopping import STOP_RULES_VERSION, runaway_cut
from benchmarks.tasks import load_tasks
from score_code.generation.encoding import digit_ids


def _read(run: Path, name: str) -> dict[tuple[str, int, int], dict]:
    return {(r["task_id"], int(r["sample_id"]), int(r["attempt"])): r for r in read_jsonl(run / name).records}


def offline(run: Path, tasks: dict, tokenizer) -> set[tuple[str, int, int]]:
    """Print the rules' effect on RUN's own completions; returns the units they cut."""
    samples = _read(run, SAMPLES_FILE)

    def decode(ids: list[int]) -> str:
        return tokenizer.decode(ids, skip_special_tokens=True)

    digits = digit_ids(tokenizer)
    cut_units: set[tuple[str, int, int]] = set()
    print(f"the rules applied to the completions of {run} (offline):")
    print(f"{'attempt':>7} {'checked':>8} {'cut':>5} {'same program':>13} {'both unparsed':>14} {'differ':>7} "
          f"{'tokens':>8} {'after cut':>10} {'saved':>7}")
    differing = []
    for attempt in sorted({key[2] for key in samples}):
        count: Counter[str] = Counter()
        tokens = kept = 0
        for key in sorted(k for k in samples if k[2] == attempt):
            if any((key[0], key[1], a) in cut_units for a in range(1, attempt)):
                continue  # its prompt would have been another one
            record = samples[key]
            ids = tokenizer(record["raw"], add_special_tokens=False)["input_ids"]
            count["checked"] += 1
            tokens += len(ids)
            cut = runaway_cut(ids, decode, digits)
            cut = None if cut is not None and cut >= len(ids) else cut  # where an older rule stopped it already
            kept += len(ids) if cut is None else cut
            if cut is None:
                count["same"] += 1
                continue
            cut_units.add(key)
            count["cut"] += 1
            task = tasks[key[0]]
            before = extract_program(decode(ids), task)
            after = extract_program(decode(ids[:cut]), task)
            if before == after:
                count["same"] += 1
            elif not _parses(before) and not _parses(after):
                count["unparsed"] += 1
            else:
                count["differ"] += 1
                differing.append((key, before, after))
        print(f"{attempt:>7} {count['checked']:>8} {count['cut']:>5} {count['same']:>13} {count['unparsed']:>14} "
              f"{count['differ']:>7} {tokens:>8} {kept:>10} {1 - kept / max(tokens, 1):>7.1%}")
    if differing:  # grade both versions of each changed program, in the Docker sandbox as the harness does
        from sandbox import Sandbox

        jobs = [tasks[key[0]].to_job(program) for key, before, after in differing for program in (before, after)]
        with Sandbox(backend="docker") as sandbox:
            verdicts = [r.status for r in sandbox.run_batch(jobs)]
        for i, ((task_id, sample_id, attempt), _, _) in enumerate(differing):
            print(f"  graded program changed: {task_id} sample {sample_id} attempt {attempt}: "
                  f"{verdicts[2 * i].value} -> {verdicts[2 * i + 1].value}")
    return cut_units


def end_to_end(without: Path, with_rules: Path) -> None:
    samples = [_read(run, SAMPLES_FILE) for run in (without, with_rules)]
    results = [_read(run, RESULTS_FILE) for run in (without, with_rules)]
    keys = sorted(results[0].keys() & results[1].keys(), key=lambda k: (k[2], k))
    unmatched = len(results[0].keys() ^ results[1].keys())
    if unmatched:
        print(f"warning: {unmatched} (task, sample, attempt) units are in one run only; compared the rest")
    print(f"\nend to end, {without} (no rules) against {with_rules} (rules):")
    print(f"{'attempt':>7} {'units':>6} {'passed without':>15} {'passed with':>12} {'verdict changed':>16} "
          f"{'tokens without':>15} {'tokens with':>12}")
    changed = []
    for attempt in sorted({k[2] for k in keys}):
        units = [k for k in keys if k[2] == attempt]
        passed = [sum(r[k]["passed"] for k in units) for r in results]
        tokens = [sum(s[k]["n_tokens"] for k in units if k in s) for s in samples]
        flips = [k for k in units if results[0][k]["passed"] != results[1][k]["passed"]]
        changed += flips
        print(f"{attempt:>7} {len(units):>6} {passed[0]:>15} {passed[1]:>12} {len(flips):>16} {tokens[0]:>15} "
              f"{tokens[1]:>12}")
    for key in changed:
        ended = [samples[i].get(key, {}).get("finish_reason") for i in (0, 1)]
        cut = ended == ["length", "stop"] and samples[0][key]["n_tokens"] != samples[1][key]["n_tokens"]
        verdicts = " -> ".join(results[i][key]["status"] for i in (0, 1))
        print(f"  verdict changed: {key[0]} sample {key[1]} attempt {key[2]} ({verdicts}; "
              f"{'a rule cut it' if cut else 'no rule fired on it: decoding numerics or an earlier attempt'})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("without", type=Path, help="output dir of a run made with --no-stop-repeats")
    parser.add_argument("--with", dest="with_rules", type=Path, default=None,
                        help="output dir of the same run with the rules (the default), for the end-to-end comparison")
    parser.add_argument("--tasks", default="humaneval", help="the run's tasks: humaneval, mbpp or a task file")
    parser.add_argument("--split", default="test")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from score_code.models import DEFAULT_MODEL_NAME, load_tokenizer

    config = read_config(args.without)
    if config.stop_repeats and config.stop_rules_version == STOP_RULES_VERSION:
        parser.error(f"{args.without} was made with the current rules on; rerun it with --no-stop-repeats")
    if config.stop_repeats:
        print(f"{args.without} ran under stop rules version {config.stop_rules_version}: the count is what version "
              f"{STOP_RULES_VERSION} adds")
    if args.with_rules is not None:
        other = read_config(args.with_rules)
        mine, theirs = config.to_dict(), other.to_dict()
        ignored = ("stop_repeats", "stop_rules_version", "task_timeouts_s")  # the rules are off in RUN_WITHOUT_RULES
        differing = sorted(k for k in mine if k not in ignored and mine[k] != theirs[k])
        if not other.stop_repeats or other.stop_rules_version != STOP_RULES_VERSION:
            differing.append(f"its rules (version {other.stop_rules_version if other.stop_repeats else 'off'}, "
                             f"the offline count applies version {STOP_RULES_VERSION})")
        if differing:
            parser.error(f"--with must be the same run with the current rules on; it differs in "
                         f"{', '.join(differing)}")
    model = config.model
    tokenizer = load_tokenizer(None if model == DEFAULT_MODEL_NAME else model)
    tasks = {task.task_id: task for task in load_tasks(args.tasks, args.split)}
    offline(args.without, tasks, tokenizer)
    if args.with_rules is not None:
        end_to_end(args.without, args.with_rules)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
