"""Side-by-side comparison of evaluation runs: the paper's table (docs/method.md §7.1) as markdown and a bar chart.

Each input is a directory holding a metrics.json written by `score-code eval` (two-attempt metrics) or by
`score-code repair-set eval` (`repair_accuracy`, the MBPP-R analogue). Runs are grouped by label: a repair run and
a two-attempt run with the same label fill one row, so one method's MBPP-R and Acc@t1/t2 sit side by side.
A label comes from `labels` when given, else from the run's config (the model it evaluated).

Runs of one kind (two-attempt, or repair) are comparable only on the same data with the same decoding: a run on
another dataset (its hash) or with other settings (COMPARED_SETTINGS) is refused, unless `allow_mismatch`, and
then the differences are printed under the table.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.errors import ScoreCodeError
from benchmarks.evaluate import config_fields
from benchmarks.report import PAPER_COLUMNS, markdown_table, paper_row
from sandbox.atomic import write_text_atomic

METRICS_FILE = "metrics.json"
TABLE_FILE, PLOT_FILE = "comparison.md", "comparison.png"
REPAIR_COLUMN = "MBPP-R"
# config.json fields that change what a run measures, besides the model being compared
COMPARED_SETTINGS = ("dtype", "chat", "attempts", "samples", "temperature", "top_p", "max_new_tokens",
                     "stop_repeats", "stop_rules_version", "feedback", "prompts_version", "timeout_rule")


class CompareError(ScoreCodeError):
    """A run directory cannot be compared; the message names the directory and what is missing."""

    hint = "each RUN_DIR must be an output directory of `score-code eval` or `score-code repair-set eval`"


@dataclass
class Run:
    label: str
    path: Path
    payload: dict  # metrics.json as written

    @property
    def metrics(self) -> dict:
        return self.payload["metrics"]

    @property
    def settings(self) -> dict:
        """The run's recorded config (fields added since it was written: as they were then); {} if none."""
        recorded = self.payload.get("config")
        return config_fields(recorded) if recorded else {}

    @property
    def is_repair(self) -> bool:
        return "repair_accuracy" in self.metrics

    @property
    def dataset(self) -> str:
        d = self.payload.get("dataset") or {}
        return f"{d.get('name') or '?'} (sha256 {str(d.get('hash') or '?')[:12]})"


def label_from_config(payload: dict, path: Path) -> str:
    """The evaluated model's name: a checkpoint keeps its run folder
    ('runs/star/checkpoint-30' -> 'star/checkpoint-30');
    no model recorded means the embedded default base model."""
    model = str((payload.get("config") or {}).get("model") or "")
    if not model:
        return "base model" if payload.get("config") else path.name
    parts = Path(model).parts
    if len(parts) >= 2 and parts[-1].startswith("checkpoint-"):
        return f"{parts[-2]}/{parts[-1]}"
    return parts[-1] if parts else model


def load_runs(paths: Sequence[str | Path], labels: Sequence[str] | None = None) -> list[Run]:
    if labels is not None and len(labels) != len(paths):
        raise CompareError(f"{len(labels)} labels for {len(paths)} run directories; give one label per directory")
    runs = []
    for i, p in enumerate(paths):
        path = Path(p)
        file = path / METRICS_FILE if path.is_dir() else path
        if not file.is_file():
            raise CompareError(f"{path}: no {METRICS_FILE} (is it the output directory of `score-code eval`?)")
        try:
            payload = json.loads(file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise CompareError(f"{file}: not valid JSON ({e})") from None
        metrics = payload.get("metrics") if isinstance(payload, dict) else None
        if not isinstance(metrics, dict) or not ("repair_accuracy" in metrics or "accuracy" in metrics):
            raise CompareError(f"{file}: no 'metrics' with 'accuracy' or 'repair_accuracy'")
        label = labels[i] if labels is not None else label_from_config(payload, path)
        runs.append(Run(label=label, path=path, payload=payload))
    return runs


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def differences(runs: Sequence[Run]) -> list[str]:
    """One line per dataset (by hash) or setting that differs between runs of the same kind, with each run's value."""
    lines = []
    for kind in ("two-attempt", "repair"):
        group = [r for r in runs if r.is_repair == (kind == "repair")]
        hashes = {str((r.payload.get("dataset") or {}).get("hash")) for r in group}
        if len(hashes) > 1:
            lines.append(f"dataset differs between the {kind} runs: "
                         + "; ".join(f"{r.label} ({r.path}): {r.dataset}" for r in group))
        for key in COMPARED_SETTINGS:
            values = [(r, r.settings.get(key, "?")) for r in group]
            if len({repr(v) for _, v in values}) > 1:
                lines.append(f"{key} differs between the {kind} runs: "
                             + "; ".join(f"{r.label} ({r.path}): {v}" for r, v in values))
    return lines


def table_rows(runs: Sequence[Run]) -> tuple[list[str], list[list[str]]]:
    """Header and one row per label (first-seen order); '-' where a label has no run of that kind."""
    labels = list(dict.fromkeys(r.label for r in runs))
    with_repair = any(r.is_repair for r in runs)
    header = ["method", *([REPAIR_COLUMN] if with_repair else []), *PAPER_COLUMNS]
    rows = []
    for label in labels:
        mine = [r for r in runs if r.label == label]
        repair = [r for r in mine if r.is_repair]
        two = [r for r in mine if not r.is_repair]
        if len(repair) > 1 or len(two) > 1:
            raise CompareError(f"label {label!r} names {len(two)} evaluation and {len(repair)} repair runs "
                               f"({', '.join(str(r.path) for r in mine)}); give distinct --labels")
        row = [label]
        if with_repair:
            row.append(_pct(repair[0].metrics["repair_accuracy"]) if repair else "-")
        row += paper_row(two[0].metrics) if two else ["-"] * len(PAPER_COLUMNS)
        rows.append(row)
    return header, rows


def markdown(runs: Sequence[Run], mismatches: Sequence[str] = ()) -> str:
    header, rows = table_rows(runs)
    lines = ["# Self-correction comparison (%)", "", markdown_table(header, rows).rstrip("\n"), ""]
    lines.append("Accuracies are fractions of all problems; Δ = Acc@t2 - Acc@t1 = Δ i→c - Δ c→i."
                 + (f" {REPAIR_COLUMN}: one repair attempt on a fixed set of wrong programs." if
                    any(r.is_repair for r in runs) else ""))
    lines += ["", "Runs:", ""]
    for r in runs:
        n = r.metrics.get("n_tasks", "?")
        kind = "repair" if r.is_repair else "two-attempt"
        lines.append(f"- {r.label}: `{r.path}` ({kind}, {r.dataset}, {n} problems)")
    if mismatches:
        lines += ["", "**Not like for like** (compared with --allow-mismatch):", ""]
        lines += [f"- {m}" for m in mismatches]
    return "\n".join(lines) + "\n"


def plot(runs: Sequence[Run], path: str | Path) -> None:
    """Grouped bars: one group per column of the table, one bar per method, each bar labelled with its value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    header, rows = table_rows(runs)
    columns = header[1:]
    fig, ax = plt.subplots(figsize=(3.0 + len(columns) * max(1.2, 0.45 * len(rows)), 4.8), dpi=120)
    width = 0.8 / max(len(rows), 1)
    for i, row in enumerate(rows):
        xs, ys = [], []
        for j, cell in enumerate(row[1:]):
            if cell != "-":
                xs.append(j + (i - (len(rows) - 1) / 2) * width)
                ys.append(float(cell))
        bars = ax.bar(xs, ys, width=width * 0.95, label=row[0])
        ax.bar_label(bars, labels=[f"{y:.1f}" for y in ys], fontsize=8, padding=2)
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(columns)), columns)
    ax.set_ylabel("% of problems")
    ax.set_title("Self-correction: accuracy per attempt and transitions")
    ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.margins(y=0.15)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def compare(paths: Sequence[str | Path], output_dir: str | Path, labels: Sequence[str] | None = None,
            overwrite: bool = False, allow_mismatch: bool = False) -> str:
    """Write comparison.md and comparison.png into `output_dir`; returns the markdown.

    Runs on other data or with other decoding settings are refused unless `allow_mismatch` (then the markdown lists
    the differences); an existing comparison in `output_dir` is replaced only with `overwrite`."""
    runs = load_runs(paths, labels)
    mismatches = differences(runs)
    if mismatches and not allow_mismatch:
        raise CompareError("the runs were not made on the same data with the same decoding:\n  "
                           + "\n  ".join(mismatches),
                           hint="compare runs of one dataset and decoding, or pass --allow-mismatch to show them "
                                "side by side anyway (the differences are printed with the table)")
    out = Path(output_dir)
    existing = [out / n for n in (TABLE_FILE, PLOT_FILE) if (out / n).exists()]
    if existing and not overwrite:
        raise CompareError(f"{existing[0]} exists; pass --overwrite to replace it or choose another --output")
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(runs, mismatches)
    write_text_atomic(out / TABLE_FILE, text)
    plot(runs, out / PLOT_FILE)
    return text
