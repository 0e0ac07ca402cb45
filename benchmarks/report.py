"""Reports from metrics: the paper-style table (markdown and plain text) and the attempt-transition heat map."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

PAPER_COLUMNS = ("Acc@t1", "Acc@t2", "Δ(t1,t2)", "Δ i→c", "Δ c→i")


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def paper_row(metrics: dict, first: str = "t1", second: str = "t2") -> list[str]:
    """Acc@first, Acc@second, Delta, Delta i->c, Delta c->i in percent (the paper's table, docs/method.md §7.1)."""
    acc = metrics["accuracy"]
    tr = metrics["transitions"].get(f"{first}->{second}")
    if tr is None:
        return [_pct(acc[first]), "-", "-", "-", "-"]
    return [_pct(acc[first]), _pct(acc[second]), _pct(tr["delta"]), _pct(tr["i_to_c"]), _pct(tr["c_to_i"])]


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _sandbox_error_line(metrics: dict) -> str:
    errors = metrics["sandbox_errors"]
    return (
        f"{metrics['n_tasks']} problems, {metrics['n_samples']} samples, all in the denominator; sandbox errors "
        f"left after retries: {errors['attempts']} attempts, counted as not passed ({errors['samples']} samples, "
        f"{errors['tasks']} problems)"
    )


def summary_table(metrics: dict) -> str:
    """A plain-text table for the terminal: accuracy per attempt and the transitions between consecutive ones."""
    names = list(metrics["accuracy"])
    lines = [f"{'attempt':<10}{'accuracy %':>12}"]
    lines += [f"{n:<10}{_pct(metrics['accuracy'][n]):>12}" for n in names]
    if metrics["transitions"]:
        lines.append("")
        lines.append(f"{'transition':<12}{'Δ %':>8}{'i→c %':>8}{'c→i %':>8}{'edit ratio':>12}")
        for key, tr in metrics["transitions"].items():
            edit = metrics["edit_ratio"].get(key)
            edit_text = f"{edit:.3f}" if edit is not None else "-"
            lines.append(f"{key:<12}{_pct(tr['delta']):>8}{_pct(tr['i_to_c']):>8}{_pct(tr['c_to_i']):>8}{edit_text:>12}")
    for attempt, by_k in metrics["pass_at_k"].items():
        if by_k:
            lines.append(f"pass@k {attempt}: " + ", ".join(f"pass@{k} {_pct(v)}" for k, v in by_k.items()))
    lines.append(_sandbox_error_line(metrics))
    return "\n".join(lines)


def markdown_report(metrics: dict, header: dict[str, str], plot_name: str | None = None) -> str:
    """report.md: provenance header, the paper's table, then per-attempt detail, pass@k and the edit ratio."""
    out = ["# Self-correction evaluation", ""]
    out += [f"- **{k}**: {v}" for k, v in header.items()]
    out += ["", "## Two attempts (paper table, %)", "", markdown_table(PAPER_COLUMNS, [paper_row(metrics)])]
    out += [_sandbox_error_line(metrics) + ".", ""]
    if len(metrics["accuracy"]) > 2:
        out += ["## Every attempt (%)", ""]
        rows = [[key, *paper_row(metrics, *key.split("->"))] for key in metrics["transitions"]]
        out += [markdown_table(["transition", *PAPER_COLUMNS], rows)]
    if metrics["transitions"]:
        rows = [[key, *(str(tr["counts"][c]) for c in ("i->i", "i->c", "c->i", "c->c")),
                 f"{metrics['edit_ratio'][key]:.3f}" if key in metrics["edit_ratio"] else "-"]
                for key, tr in metrics["transitions"].items()]
        out += ["## Transition counts (samples)", "",
                markdown_table(["transition", "i→i", "i→c", "c→i", "c→c", "edit ratio"], rows)]
        out += ["Edit ratio: character Levenshtein distance between consecutive programs / their total length "
                "(near 0 means the model barely changed its answer).", ""]
    if any(metrics["pass_at_k"].values()):
        ks = list(next(iter(metrics["pass_at_k"].values())))
        rows = [[a, *(_pct(by_k[k]) for k in ks)] for a, by_k in metrics["pass_at_k"].items()]
        out += ["## pass@k (unbiased estimator, %)", "", markdown_table(["attempt", *(f"pass@{k}" for k in ks)], rows)]
    if plot_name:
        out += [f"![attempt 1 to attempt 2 transitions]({plot_name})", ""]
    return "\n".join(out)


def plot_transitions(metrics: dict, path: str | Path, title: str = "", key: str = "t1->t2") -> None:
    """A 2x2 heat map of attempt-1 vs attempt-2 correctness, each cell labelled with its count and percentage."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    fig = transition_figure(metrics, title, key)
    fig.savefig(path)
    plt.close(fig)


def transition_figure(metrics: dict, title: str = "", key: str = "t1->t2") -> Any:
    """The matplotlib Figure that plot_transitions saves (its colour bar counts samples: integer ticks only)."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    counts = metrics["transitions"][key]["counts"]
    grid = [[counts["i->i"], counts["i->c"]], [counts["c->i"], counts["c->c"]]]
    total = sum(map(sum, grid)) or 1
    first, second = key.split("->")
    fig, ax = plt.subplots(figsize=(5.6, 4.8), dpi=120)
    image = ax.imshow(grid, cmap="Blues", vmin=0, vmax=max(max(map(max, grid)), 1))
    labels = {(0, 0): "stays wrong", (0, 1): "fixed (i→c)", (1, 0): "broken (c→i)", (1, 1): "stays right"}
    for r in range(2):
        for c in range(2):
            value = grid[r][c]
            dark = value > 0.6 * max(max(map(max, grid)), 1)
            ax.text(c, r, f"{labels[(r, c)]}\n{value}\n{100 * value / total:.1f}%", ha="center", va="center",
                    fontsize=11, color="white" if dark else "black")
    ax.set_xticks([0, 1], [f"{second} wrong", f"{second} right"])
    ax.set_yticks([0, 1], [f"{first} wrong", f"{first} right"])
    ax.set_xlabel(f"attempt {second[1:]}")
    ax.set_ylabel(f"attempt {first[1:]}")
    acc = metrics["accuracy"]
    tr = metrics["transitions"][key]
    subtitle = (f"Acc@{first} {_pct(acc[first])}%  Acc@{second} {_pct(acc[second])}%  "
                f"Δ {100 * tr['delta']:+.1f} pts  (n={total})")
    ax.set_title(f"{title}\n{subtitle}" if title else subtitle, fontsize=10)
    colorbar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="samples")
    colorbar.locator = MaxNLocator(integer=True)  # counts of samples: no 0.5 ticks on a small run
    colorbar.update_ticks()
    fig.tight_layout()
    return fig
