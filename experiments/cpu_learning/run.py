"""Issue #16, one command: does SCoRe teach a small model to self-correct, against the baselines and ablations?

    bash experiments/cpu_learning/run.sh                       # = python experiments/cpu_learning/run.py --config ...

Steps, in order; each is skipped when its final output exists, so a killed run is continued by running the same
command again (steps.jsonl under output_root logs every step: the command, ran / skipped / killed,
wall seconds; a killed step up to its last heartbeat, so a run's wall time counts every session it took):

 1. filter            `score-code filter`: k base-model episodes per candidate done: filter/summary.json
                      task at the training setting (recipe); resumes itself
 2. train tasks       the kept tasks (0 < p < 1 on some attempt; keep: all    rewritten each run (seconds)
                      takes every candidate) as one task file
 3. train, per row    LoRA, same base model, tasks and budget (below):        done: train/ROW/DONE.json
                      score (stage I -> II, alpha 10), stage2_only, alpha0,   killed: rerun with --resume from its
                      star, pair_sft                                          last checkpoint-N
 4. select, per row   each checkpoint-N greedy on `selection_set` (MBPP       done: select/ROW/selected.json
                      validation: the only set a choice may look at); the
                      highest Acc@t2 wins, ties to the later checkpoint; the
                      adapter is copied to adapters_dir/ROW, and the chosen
                      checkpoint's eval is the row's eval on that set
 5. eval              base and every row (its copied adapter), greedy, on     done: evals/ROW/SET/metrics.json
                      every set of `evals` plus the training tasks, set by    (a killed eval resumes itself)
                      set (every row on one set before the next: a session
                      that ends mid-way leaves whole sets to compare)
 6. report            results_dir: results.md (the table with paired          rewritten each run (seconds)
                      bootstrap intervals), compare/SET/ (score-code
                      compare), curves/ROW.png (score-code plot)

`--report-only` runs nothing and writes step 6 from what has finished so far: results.md then opens by naming the
rows and sets still missing. `--rows base score ...` runs only those rows' steps (the filter first if needed), e.g.
base's evaluations in the time left of a session that could not finish a training row; the rest are skipped as
if absent, and a later full run skips what they wrote.

Budget (sampled two-attempt episodes per row): B = (stage1_steps + stage2_steps) x prompts_per_step x
samples_per_prompt of the recipe. score and alpha0 run that schedule; stage2_only runs stage1_steps + stage2_steps
stage-II steps. STaR and Pair-SFT are built from the same base-model samples: their first round is the filter's
episodes on the kept tasks (E = kept tasks x filter_samples); Pair-SFT has that one round; STaR's later rounds
sample k' per task so that E + (iterations - 1) x kept x k' is as near B as whole samples allow. Set filter_samples
near B / kept tasks to give Pair-SFT the same budget; results.md lists every row's episodes.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROWS = ("score", "stage2_only", "alpha0", "star", "pair_sft")
RL_ROWS = ("score", "stage2_only", "alpha0")
TRAIN_SET = "train"  # the eval set of the training tasks themselves
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "trainer_state.json")


class DriverError(Exception):
    """A step failed or the config is wrong; the message names the step or key."""


@dataclass
class Experiment:
    """The driver's config (a flat YAML mapping of these keys); the training recipe holds the trainers' settings."""

    model: str = ""  # base model of every row ('' = the embedded SmolLM2-135M-Instruct)
    recipe: str = "score_code/recipes/cpu_learn.yaml"  # trainer settings shared by every row
    train_overrides: dict[str, Any] = field(default_factory=dict)  # recipe keys set for every row (smoke runs)
    tasks: str = "experiments/cpu_learning/synth/train.jsonl"  # candidate training tasks: a task file or 'mbpp'
    mbpp_path: str = ""  # MBPP file (shots, 'mbpp' tasks and eval sets); '' = $SCORE_CODE_MBPP
    train_split: str = "all"  # of `tasks`: a task file has the one split 'all'
    max_train_tasks: int = 0  # first N candidates (0 = all)
    keep: str = "signal"  # 'signal': train on tasks with 0 < p < 1 on some attempt; 'all': every candidate
    filter_samples: int = 4  # base-model episodes per candidate task (the filter and STaR/Pair-SFT round 1)
    star_iterations: int = 3
    seed: int = 0
    evals: list[dict[str, Any]] = field(default_factory=lambda: [
        {"name": "humaneval", "dataset": "humaneval"},
        {"name": "mbpp_test", "dataset": "mbpp", "split": "test"},
        {"name": "mbpp_validation", "dataset": "mbpp", "split": "validation"}])
    selection_set: str = "mbpp_validation"
    eval_max_new_tokens: int = 512
    eval_dtype: str = "auto"
    sandbox: str = "docker"  # docker | local | remote, for every step
    sandbox_workers: int = 0  # 0 = one per core
    timeout_s: float = 0.0  # 0 = per task, calibrated; > 0 flat, for every step
    bootstrap_resamples: int = 10_000
    output_root: str = "experiments/cpu_learning/runs"  # git-ignored
    results_dir: str = "experiments/cpu_learning/results"
    adapters_dir: str = "experiments/cpu_learning/adapters"

    @classmethod
    def load(cls, path: str | Path) -> Experiment:
        import yaml

        values = yaml.safe_load(Path(path).read_text()) or {}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise DriverError(f"{path}: unknown key(s) {unknown}; known: {sorted(known)}")
        config = cls(**values)
        if config.keep not in ("signal", "all"):
            raise DriverError(f"{path}: keep must be 'signal' or 'all', got {config.keep!r}")
        names = [e["name"] for e in config.evals]
        if config.selection_set not in names or TRAIN_SET in names:
            raise DriverError(f"{path}: selection_set {config.selection_set!r} must be one of the evals {names} "
                              f"(and no eval may be named {TRAIN_SET!r})")
        return config


# --- steps: run a `score-code` command unless its output exists, log it ------------------------------------------


class Steps:
    """Runs `score-code` commands in this process and logs each step to steps.jsonl (command, ran, skipped or
    killed). While a step runs, running.json says which and since when, refreshed every HEARTBEAT_S: a session that
    ends mid-step leaves it behind, and the next driver logs that step as killed with the seconds it had run. A fresh
    heartbeat means another driver is running: a second one is refused; a reader (`driving=False`, --report-only)
    only reads."""

    HEARTBEAT_S = 30.0
    STALE_S = 3 * HEARTBEAT_S  # a heartbeat this old is a killed driver's

    def __init__(self, root: Path, driving: bool = True) -> None:
        self.root = root
        self.log_path = root / "steps.jsonl"
        self.running_path = root / "running.json"
        if not driving:
            return
        root.mkdir(parents=True, exist_ok=True)
        if self.running_path.exists():
            last = json.loads(self.running_path.read_text())
            if time.time() - last["alive"] < self.STALE_S:
                raise DriverError(f"another driver is running step {last['step']} in {root} (heartbeat "
                                  f"{time.time() - last['alive']:.0f} s ago, {self.running_path}); wait for it or "
                                  "stop it first")
            self._log(step=last["step"], status="killed", command=last["command"],
                      seconds=last["alive"] - last["started"])
            self.running_path.unlink()

    def _log(self, **entry: Any) -> None:
        with open(self.log_path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"time": time.time(), **entry}) + "\n")

    def run(self, name: str, done: Path, argv: list[str]) -> bool:
        """Run `score-code ARGV` unless `done` exists; True when it ran. A failure stops the driver."""
        from score_code.cli import main

        command = "score-code " + " ".join(_quote(a) for a in argv)
        if done.exists():
            print(f"[skip] {name}: {done} exists", file=sys.stderr)
            self._log(step=name, status="skipped", command=command)
            return False
        print(f"[run] {name}: {command}", file=sys.stderr)
        start = time.perf_counter()
        with self._heartbeat(name, command):
            code = main(argv)
        seconds = time.perf_counter() - start
        if code != 0:
            self._log(step=name, status="failed", command=command, seconds=seconds)
            raise DriverError(f"step {name} failed (exit {code}): {command}")
        self._log(step=name, status="ran", command=command, seconds=seconds)
        return True

    @contextmanager
    def _heartbeat(self, name: str, command: str) -> Iterator[None]:
        from benchmarks.jsonl import write_json_atomic

        started = time.time()
        stop = threading.Event()

        def beat() -> None:
            write_json_atomic(self.running_path, {"step": name, "command": command, "started": started,
                                                  "alive": time.time()})

        def beat_until_stopped() -> None:
            while not stop.wait(self.HEARTBEAT_S):
                beat()

        beat()
        thread = threading.Thread(target=beat_until_stopped, name="steps-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            self.running_path.unlink()

    def _entries(self) -> list[dict[str, Any]]:
        if not self.log_path.is_file():
            return []
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line.strip()]

    def commands(self) -> dict[str, str]:
        """Step -> the command it was first run with (a resumed training adds --resume), in the order they ran."""
        commands: dict[str, str] = {}
        for r in self._entries():
            if r["status"] in ("ran", "killed"):
                commands.setdefault(r["step"], r["command"])
        return commands

    def wall_seconds(self, name: str) -> float:
        """Seconds the step ran over all its invocations: finished ones, and killed ones up to their last
        heartbeat."""
        return sum(r.get("seconds", 0.0) for r in self._entries()
                   if r["step"] == name and r["status"] in ("ran", "killed"))


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)


# --- the experiment ----------------------------------------------------------------------------------------------


class Driver:
    rows = ROWS
    rl_rows = RL_ROWS  # the rows with an RL training log (report.py's training-log table)

    def __init__(self, config: Experiment, driving: bool = True) -> None:
        self.c = config
        self.root = Path(config.output_root)
        self.steps = Steps(self.root, driving)
        self.score = self._score_config()
        self.selection_evals: dict[str, Path] = {}  # row -> its chosen checkpoint's eval on the selection set

    # --- settings shared by the steps ----------------------------------------------------------------------------

    def _score_config(self) -> Any:
        """The recipe + overrides as the SCoRe trainer resolves them: the training setting the filter samples at."""
        from score_code.config import ScoreConfig, load_recipe

        config = ScoreConfig()
        config.apply(load_recipe(self.c.recipe), source=self.c.recipe, skip_other_trainers=True)
        config.apply(self.c.train_overrides, source="train_overrides", skip_other_trainers=True)
        return config

    def budget(self) -> int:
        s, r = self.score.schedule, self.score.rollout
        return (s.stage1_steps + s.stage2_steps) * r.prompts_per_step * r.samples_per_prompt

    def _sandbox_flags(self, style: str) -> list[str]:
        """Grader flags for trainers and the filter (`--sandbox_backend`) or eval (`--sandbox`)."""
        if style == "train":
            flags = ["--sandbox_backend", self.c.sandbox]
            flags += ["--sandbox_workers", str(self.c.sandbox_workers)] if self.c.sandbox_workers else []
            return flags + (["--sandbox_timeout_s", str(self.c.timeout_s)] if self.c.timeout_s else [])
        flags = ["--sandbox", self.c.sandbox] + (["--workers", str(self.c.sandbox_workers)]
                                                  if self.c.sandbox_workers else [])
        return flags + (["--timeout-s", str(self.c.timeout_s)] if self.c.timeout_s else [])

    def _mbpp_flags(self, spelling: str = "--mbpp_path") -> list[str]:
        return [spelling, self.c.mbpp_path] if self.c.mbpp_path else []

    # --- 1-3: tasks -----------------------------------------------------------------------------------------------

    def filter(self, spec: str, split: str) -> Path:
        out = self.root / "filter"
        d, r = self.score.data, self.score.rollout
        argv = ["filter", "--tasks", spec, "--train_split", split, "--max_train_tasks", str(self.c.max_train_tasks),
                "--mbpp_shots", str(d.mbpp_shots), "--samples_per_prompt", str(self.c.filter_samples),
                "--max_new_tokens", str(r.max_new_tokens), "--temperature", str(r.temperature),
                "--top_p", str(r.top_p), "--generation_batch_size", str(r.generation_batch_size),
                "--model", self.c.model, "--dtype", self.score.model.dtype, "--seed", str(self.c.seed),
                "--output", str(out), "--no-progress", *self._mbpp_flags(), *self._sandbox_flags("train")]
        self.steps.run("filter", out / "summary.json", argv)
        return out

    def train_tasks(self, spec: str, split: str, filter_dir: Path) -> tuple[Path, int]:
        """The training task file (kept candidates, in candidate order) and its size."""
        from benchmarks.tasks import load_tasks

        rates = [json.loads(line) for line in (filter_dir / "rates.jsonl").read_text().splitlines() if line]
        kept = {r["task_id"] for r in rates if self.c.keep == "all" or r["signal"]}
        tasks = [t for t in load_tasks(self.c.mbpp_path if spec == "mbpp" and self.c.mbpp_path else spec, split)
                 if t.task_id in kept]
        if not tasks:
            raise DriverError(f"{filter_dir}: no candidate task has signal (0 < p < 1) under the base model; "
                              "raise filter_samples or the temperature, or set keep: all")
        path = self.root / "train_tasks.jsonl"
        path.write_text("".join(json.dumps(t.to_dict()) + "\n" for t in tasks))
        return path, len(tasks)

    # --- 4: training -----------------------------------------------------------------------------------------------

    def star_samples(self, n_tasks: int) -> int:
        """k' of STaR's later rounds: the filter's round plus theirs as near the budget B as whole samples allow."""
        later = self.c.star_iterations - 1
        if later < 1:
            return self.c.filter_samples
        return max(1, round((self.budget() - n_tasks * self.c.filter_samples) / (later * n_tasks)))

    def episodes(self, row: str, n_tasks: int) -> int:
        """Sampled two-attempt episodes a row trains from (the budget rule of the module docstring)."""
        if row in RL_ROWS:
            return self.budget()
        first = n_tasks * self.c.filter_samples
        return first if row == "pair_sft" else first + (self.c.star_iterations - 1) * n_tasks * self.star_samples(
            n_tasks)

    def train(self, row: str, task_file: Path, n_tasks: int, filter_dir: Path) -> Path:
        from score_code.config import ScoreConfig, SFTConfig
        from score_code.train.checkpoint import latest_checkpoint

        run_dir = self.root / "train" / row
        done = run_dir / "DONE.json"
        if not done.exists() and run_dir.exists() and latest_checkpoint(run_dir) is None:
            shutil.rmtree(run_dir)  # killed before its first checkpoint: nothing to resume
        rl = row in RL_ROWS
        keys = ScoreConfig.keys() if rl else SFTConfig.keys()
        overrides = [f for k, v in self.c.train_overrides.items() if k in keys for f in _flag(k, v)]
        common = ["--config", self.c.recipe, "--model", self.c.model, "--tasks", str(task_file), "--train_split",
                  "all", "--max_train_tasks", "0", "--lora", "--seed", str(self.c.seed), "--output_dir", str(run_dir),
                  "--no-progress", *self._mbpp_flags(), *self._sandbox_flags("train"), *overrides,
                  *(["--resume"] if run_dir.exists() else [])]
        s = self.score.schedule
        argv = {
            "score": ["train", "score", *common, "--alpha", "10"],
            "stage2_only": ["train", "stage2", *common, "--stage2_steps", str(s.stage1_steps + s.stage2_steps)],
            "alpha0": ["train", "score", *common, "--alpha", "0"],
            "star": ["train", "star", *common, "--iterations", str(self.c.star_iterations), "--samples_per_prompt",
                     str(self.star_samples(n_tasks)), "--first_round_episodes", str(filter_dir)],
            "pair_sft": ["train", "pair-sft", *common, "--first_round_episodes", str(filter_dir)],
        }[row]
        if self.steps.run(f"train/{row}", done, argv):
            done.write_text(json.dumps({"episodes": self.episodes(row, n_tasks)}) + "\n")
        return run_dir

    # --- 4-5: selection and evaluation ----------------------------------------------------------------------------

    def eval_argv(self, spec: dict[str, Any], model: str, out: Path) -> list[str]:
        dataset = spec["dataset"]
        argv = ["eval", dataset, "--split", spec.get("split", "test"), "--max-new-tokens",
                str(self.c.eval_max_new_tokens), "--dtype", self.c.eval_dtype, "--seed", str(self.c.seed),
                "--output", str(out), "--no-progress", *self._sandbox_flags("eval")]
        argv += ["--limit", str(spec["limit"])] if spec.get("limit") else []
        argv += self._mbpp_flags("--mbpp-path") if dataset == "mbpp" else []
        return argv + (["--model", model] if model else [])

    def select(self, row: str, run_dir: Path) -> Path:
        """The checkpoint of `run_dir` with the best Acc@t2 on the selection set (ties: the later), copied to
        adapters_dir/ROW; returns the copy. The chosen checkpoint's eval stands for the row's on the selection set
        (the same weights, greedy: the same outputs), so that set is not evaluated twice."""
        from score_code.train.checkpoint import checkpoint_step, list_checkpoints

        out = self.root / "select" / row
        chosen_file = out / "selected.json"
        if not chosen_file.exists():
            candidates = list_checkpoints(run_dir)
            if not candidates:
                raise DriverError(f"{run_dir}: no checkpoint-N to select from")
            spec = self._eval_spec(self.c.selection_set)
            scores = {}
            for ckpt in candidates:
                if len(candidates) > 1:
                    self.steps.run(f"select/{row}/{ckpt.name}", out / ckpt.name / "metrics.json",
                                   self.eval_argv(spec, str(ckpt), out / ckpt.name))
                    metrics = json.loads((out / ckpt.name / "metrics.json").read_text())["metrics"]
                    scores[ckpt.name] = metrics["accuracy"]["t2"]
            best = max(candidates, key=lambda p: (scores.get(p.name, 0.0), checkpoint_step(p)))
            out.mkdir(parents=True, exist_ok=True)
            chosen_file.write_text(json.dumps({"checkpoint": str(best), "selection_set": self.c.selection_set,
                                               "acc_t2": scores}, indent=2) + "\n")
        chosen = Path(json.loads(chosen_file.read_text())["checkpoint"])
        self._note_selection_eval(row)
        adapter = Path(self.c.adapters_dir) / row
        source = adapter / "SOURCE.json"
        if not source.exists() or json.loads(source.read_text())["checkpoint"] != str(chosen):
            if not chosen.is_dir():
                raise DriverError(f"{chosen_file} chose {chosen}, which is gone, and {adapter} does not hold its "
                                  "copy: remove the row's select/ and train/ directories to retrain it")
            adapter.mkdir(parents=True, exist_ok=True)
            for name in ADAPTER_FILES:
                shutil.copy2(chosen / name, adapter / name)
            source.write_text(json.dumps({"checkpoint": str(chosen)}) + "\n")
        return adapter

    def _note_selection_eval(self, row: str) -> None:
        """Remember the chosen checkpoint's eval on the selection set, when there was a choice to make."""
        out = self.root / "select" / row
        chosen = Path(json.loads((out / "selected.json").read_text())["checkpoint"])
        if (out / chosen.name / "metrics.json").exists():
            self.selection_evals[row] = out / chosen.name

    def _eval_dir(self, row: str, name: str) -> Path:
        """Where `row`'s eval on set `name` is: the chosen checkpoint's selection eval on the selection set."""
        if name == self.c.selection_set and row in self.selection_evals:
            return self.selection_evals[row]
        return self.root / "evals" / row / name

    def set_names(self) -> list[str]:
        """The eval sets in evaluation order: the config's, then the training tasks."""
        return [e["name"] for e in self.c.evals] + [TRAIN_SET]

    def _eval_spec(self, name: str) -> dict[str, Any]:
        return next(e for e in self.c.evals if e["name"] == name)

    def evaluate(self, models: dict[str, str], task_file: Path) -> None:
        """Greedy evaluations (the harness's two attempts) of every row in `models`, every row on a set before the
        next set, in the order of `evals`, then the training tasks."""
        sets = [*self.c.evals, {"name": TRAIN_SET, "dataset": str(task_file), "split": "all"}]
        for spec in sets:
            for row, model in models.items():
                out = self._eval_dir(row, spec["name"])
                if out != self.selection_evals.get(row):  # the selection eval is done already
                    self.steps.run(f"eval/{row}/{spec['name']}", out / "metrics.json",
                                   self.eval_argv(spec, model, out))

    # --- the whole run ---------------------------------------------------------------------------------------------

    def finished(self) -> tuple[dict[str, dict[str, Path]], int]:
        """What has finished so far, running nothing: row -> set -> eval directory for base and every selected
        row (only the sets evaluated), and the number of training tasks."""
        task_file = self.root / "train_tasks.jsonl"
        if not task_file.exists():
            raise DriverError(f"{task_file} does not exist: the filter has not finished, there is nothing to report")
        names = self.set_names()
        evals: dict[str, dict[str, Path]] = {}
        for row in ("base", *ROWS):
            if row != "base":
                if not (self.root / "train" / row / "DONE.json").exists() or not (
                        self.root / "select" / row / "selected.json").exists():
                    continue
                self._note_selection_eval(row)
            dirs = {name: self._eval_dir(row, name) for name in names}
            evals[row] = {name: d for name, d in dirs.items() if (d / "metrics.json").exists()}
        return evals, sum(1 for line in task_file.read_text().splitlines() if line.strip())

    def run(self, rows: tuple[str, ...] = ("base", *ROWS)) -> Path:
        """Every step of `rows` (base: its evaluations only), then the report of all that has finished."""
        spec, split = self.c.tasks, self.c.train_split
        filter_dir = self.filter(spec, split)
        task_file, n_tasks = self.train_tasks(spec, split, filter_dir)
        models = {"base": self.c.model} if "base" in rows else {}
        for row in (r for r in ROWS if r in rows):
            run_dir = self.train(row, task_file, n_tasks, filter_dir)
            models[row] = str(self.select(row, run_dir))
        self.evaluate(models, task_file)
        from report import write_results  # experiments/cpu_learning/report.py, beside this file

        return write_results(self, *self.finished())


def _flag(key: str, value: Any) -> list[str]:
    if isinstance(value, bool):
        return [f"--{key}" if value else f"--no-{key}"]
    return [f"--{key}", str(value)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(Path(__file__).parent / "config.yaml"),
                        help="the experiment's YAML (keys: the Experiment dataclass in this file)")
    parser.add_argument("--report-only", action="store_true",
                        help="run nothing: write results_dir from what has finished so far (a partial table says "
                             "which rows and sets are still missing)")
    parser.add_argument("--rows", nargs="+", choices=("base", *ROWS), default=("base", *ROWS),
                        help="run only these rows' steps (base: its evaluations), in the usual order; the report "
                             "still covers every row that has finished (default: all)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).parent))
    try:
        driver = Driver(Experiment.load(args.config), driving=not args.report_only)
        if args.report_only:
            from report import write_results

            results = write_results(driver, *driver.finished())
        else:
            results = driver.run(tuple(args.rows))
    except DriverError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"results: {results}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
