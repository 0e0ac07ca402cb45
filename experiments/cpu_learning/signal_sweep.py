"""Where the signal is (issue #16, item 1): `score-code filter` over a grid of sampling settings and prompt forms on
a fixed sample of MBPP train tasks, then one table, signal/summary.md.

    python experiments/cpu_learning/signal_sweep.py --mbpp_path /work/shared/data/mbpp.jsonl      # run (resumable)
    python experiments/cpu_learning/signal_sweep.py --table_only                                    # rewrite the table

Settings run in a fixed priority order, so a sweep cut short still answers the first questions: zero-shot against
3-shot at T = 0.6 and 1.0 (zero-shot first: a fifth of the tokens, so the cheaper candidate); the other temperatures
on zero-shot; one nucleus setting (top_p 0.95 at T = 1.0, for information: SCoRe's loss needs top_p 1.0); the token
budgets 128 and 192. Sized for a shared 2-core CPU, where decoding ran at 10-20 tok/s beside other work: N_TASKS
tasks x K samples x 2 attempts per setting. Each setting is one `score-code filter` run under signal/runs/NAME
(episodes.jsonl stays out of git).
"""
from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

from summary_table import replace_table  # beside this script

HERE = Path(__file__).parent
OUT = HERE / "signal"
SAMPLE_FILE = OUT / "sample_tasks.jsonl"
SAMPLE_SIZE, N_TASKS, SHUFFLE_SEED, K, BUDGET = 40, 16, 0, 4, 160
FORMS = {"3-shot": 3, "zero-shot": 0}


def name(form: str, temperature: float, top_p: float = 1.0, tokens: int = BUDGET) -> str:
    return f"{form}_t{temperature:g}_p{top_p:g}_n{tokens}"


def write_sample(mbpp_path: str) -> None:
    """SAMPLE_SIZE MBPP train tasks (601-974) in a seeded shuffle, as a task file (its prompt form follows
    --mbpp_shots); every setting uses its first N_TASKS."""
    from benchmarks.tasks import load_mbpp

    tasks = load_mbpp(mbpp_path, "train")
    sample = random.Random(SHUFFLE_SEED).sample(tasks, SAMPLE_SIZE)
    OUT.mkdir(parents=True, exist_ok=True)
    SAMPLE_FILE.write_text("".join(json.dumps(t.to_dict()) + "\n" for t in sample))


def run(mbpp_path: str, form: str, temperature: float, top_p: float = 1.0, tokens: int = BUDGET) -> dict:
    """One setting through the CLI (resumes a cut run, skips a finished one); its summary."""
    out = OUT / "runs" / name(form, temperature, top_p, tokens)
    command = ["score-code", "filter", "--tasks", str(SAMPLE_FILE), "--train_split", "all", "--mbpp_path", mbpp_path,
               "--max_train_tasks", str(N_TASKS),
               "--mbpp_shots", str(FORMS[form]), "--samples_per_prompt", str(K), "--temperature", str(temperature),
               "--top_p", str(top_p), "--max_new_tokens", str(tokens), "--generation_batch_size", "16",
               "--sandbox_workers", "2", "--seed", "0", "--output", str(out)]
    while subprocess.run(["pgrep", "-f", "perf/"], capture_output=True).returncode == 0:
        time.sleep(15)  # a timing benchmark of another engineer is running: leave it the CPU
    print(" ".join(command), flush=True)
    subprocess.run(command, check=True)
    write_table()
    return json.loads((out / "summary.json").read_text())


def write_table() -> None:
    rows = []
    for path in sorted((OUT / "runs").glob("*/summary.json")):
        s = json.loads(path.read_text())
        st = s["settings"]
        rows.append((st["prompt_form"], st["temperature"], st["top_p"], st["max_new_tokens"], s))
    lines = ["| prompt | T | top_p | max tokens | pass@t1 | pass@t2 | signal fraction (tasks) | signal t1 / t2 | "
             "i->c / c->i | syntax err t1 / t2 | mean prompt tokens | mean tokens t1 / t2 | truncated t1 / t2 | "
             "tok/s | wall s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for form, t, p, n, s in sorted(rows, key=lambda r: (r[0], r[1], r[2], r[3])):
        tr = s["transitions"]
        lines.append(
            f"| {form} | {t:g} | {p:g} | {n} | {s['pass_rate1']:.3f} | {s['pass_rate2']:.3f} | "
            f"{s['signal_fraction']:.3f} ({s['signal_tasks']}/{s['tasks']}) | {s['signal_fraction1']:.3f} / "
            f"{s['signal_fraction2']:.3f} | {tr.get('i->c', 0)} / {tr.get('c->i', 0)} | "
            f"{s['syntax_error_rate1']:.3f} / {s['syntax_error_rate2']:.3f} | {s['mean_prompt_tokens']:.0f} | "
            f"{s['mean_tokens1']:.0f} / {s['mean_tokens2']:.0f} | {s['truncated1']} / {s['truncated2']} | "
            f"{s['tokens_per_s']} | {s['sampling_wall_s']:.0f} |")
    table = "\n".join(lines)
    replace_table(OUT / "summary.md", "Signal sweep (issue #16)", table)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mbpp_path", default="/work/shared/data/mbpp.jsonl")
    parser.add_argument("--table_only", action="store_true", help="rewrite signal/summary.md from finished runs")
    args = parser.parse_args()
    if args.table_only:
        write_table()
        return 0
    if not SAMPLE_FILE.exists():
        write_sample(args.mbpp_path)
    for form, temperature in (("zero-shot", 0.6), ("zero-shot", 1.0), ("3-shot", 0.6), ("zero-shot", 0.8),
                              ("3-shot", 1.0), ("zero-shot", 0.4)):
        run(args.mbpp_path, form, temperature)
    run(args.mbpp_path, "zero-shot", 1.0, top_p=0.95)
    for tokens in (128, 192):
        run(args.mbpp_path, "zero-shot", 1.0, tokens=tokens)
    print(f"done: {OUT / 'summary.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
