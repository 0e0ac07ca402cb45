"""The package layering, enforced: sandbox <- benchmarks <- score_code, torch only in score_code, no cycles.

The rules live here rather than in a README so that a change that breaks them fails CI where it is made:
- sandbox/ is the standard library only (it must install and run on a bare grading host), except for the optional
  serve extra in the modules behind `sandbox serve`;
- benchmarks/ uses sandbox/ and never score_code/ or the ML stack (the harness stays torch-free);
- the light entry points (`import benchmarks.evaluate`, every `score-code ... --help`, `sandbox --help`) load no
  torch, transformers, accelerate or peft, so help and evaluation setup answer in well under a second;
- no import cycles between the project's modules, so each module can be read and tested after its imports;
- the perf scripts stay in the top-level perf/ folder, which is not installed, and no installed package imports it.

Static rules read every module's AST (imports inside functions included); the entry-point rules run a fresh
interpreter, one per entry point, because a module already imported by this test session would hide a violation.
"""
from __future__ import annotations

import ast
import fnmatch
import json
import subprocess
import sys
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("sandbox", "benchmarks", "score_code")
ML_STACK = frozenset({"torch", "transformers", "accelerate", "peft", "vllm", "gguf", "tensorboard"})
HEAVY_AT_STARTUP = frozenset({"torch", "transformers", "accelerate", "peft"})
# The optional `serve` extra (`sandbox serve`): the HTTP framework, allowed in the modules that serve HTTP only.
SERVE_EXTRA = frozenset({"fastapi", "uvicorn", "starlette", "pydantic", "pydantic_core"})
SERVE_MODULES = frozenset({"sandbox.server", "sandbox.fusion"})


@dataclass(frozen=True)
class Import:
    """One imported module as the importing file names it, with absolute names for relative imports."""

    module: str  # e.g. "score_code.train.sft" (a `from pkg import name` is resolved to pkg.name when that exists)
    path: Path
    line: int

    @property
    def top(self) -> str:
        return self.module.split(".")[0]

    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


def module_name(path: Path) -> str:
    """Dotted name of a project file: score_code/train/__init__.py -> score_code.train."""
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_modules(package: str) -> dict[str, Path]:
    """Every module of a package directory on disk, by dotted name."""
    return {module_name(p): p for p in sorted((REPO / package).rglob("*.py")) if "__pycache__" not in p.parts}


def is_project_module(name: str) -> bool:
    """True when `name` is a module or package of the repository on disk (pkg/name.py or pkg/name/)."""
    base = REPO.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or base.is_dir()


def imports_of(name: str, path: Path) -> list[Import]:
    """Every import in the file, at any depth, with relative imports made absolute."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [Import(alias.name, path, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                target = submodule if alias.name != "*" and is_project_module(submodule) else base
                found.append(Import(target, path, node.lineno))
    return found


def all_imports(packages: tuple[str, ...] = PACKAGES) -> dict[str, list[Import]]:
    """module -> its imports, for every module of `packages` (read from disk, so unimportable code is checked too)."""
    return {name: imports_of(name, path) for pkg in packages for name, path in package_modules(pkg).items()}


def listing(bad: list[Import]) -> str:
    """One offending import per line, with file and line, for the assertion message."""
    return "\n".join(f"  {imp.where()}: import {imp.module}" for imp in bad)


# --- static rules -------------------------------------------------------------------------------------------------


def test_the_packages_are_where_the_rules_look() -> None:
    for package in PACKAGES:
        assert (REPO / package / "__init__.py").is_file(), f"{package}/ is not a package under {REPO}"
        assert package_modules(package), f"no modules found under {package}/"


def test_sandbox_imports_only_the_standard_library() -> None:
    bad = [imp for name, imports in all_imports(("sandbox",)).items() for imp in imports
           if imp.top != "sandbox" and imp.top not in sys.stdlib_module_names
           and not (name in SERVE_MODULES and imp.top in SERVE_EXTRA)]
    assert not bad, (f"sandbox/ must depend on the standard library only (the serve extra {sorted(SERVE_EXTRA)} "
                     f"only in {sorted(SERVE_MODULES)}):\n{listing(bad)}")


def test_benchmarks_imports_only_sandbox_and_no_ml_stack() -> None:
    bad = [imp for imports in all_imports(("benchmarks",)).values() for imp in imports
           if imp.top in ML_STACK or (imp.top in PACKAGES and imp.top not in ("sandbox", "benchmarks"))]
    assert not bad, f"benchmarks/ may import sandbox/ but not score_code/ or {sorted(ML_STACK)}:\n{listing(bad)}"


def test_no_installed_package_imports_perf() -> None:
    bad = [imp for imports in all_imports().values() for imp in imports if imp.top == "perf"]
    assert not bad, f"perf/ is not installed, so installed code cannot import it:\n{listing(bad)}"


def test_perf_scripts_live_outside_the_installed_packages() -> None:
    nested = [str(p.relative_to(REPO)) for pkg in PACKAGES for p in (REPO / pkg).rglob("perf") if p.is_dir()
              and any(p.rglob("*.py"))]
    assert not nested, f"perf scripts belong in the top-level perf/ folder, found: {nested}"
    assert any((REPO / "perf").glob("*.py")), "the perf scripts are expected in the top-level perf/ folder"
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    include = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    assert not any(fnmatch.fnmatch("perf", pattern) for pattern in include), f"perf/ would be installed: {include}"


def import_graph() -> dict[str, dict[str, Import]]:
    """module -> {project module it imports: the first such import}; implicit parent-package edges left out."""
    graph: dict[str, dict[str, Import]] = {}
    for name, imports in all_imports().items():
        edges = graph.setdefault(name, {})
        for imp in imports:
            if imp.top in PACKAGES and imp.module != name and imp.module not in edges:
                edges[imp.module] = imp
    return graph


def reachable(graph: dict[str, dict[str, Import]], start: str) -> set[str]:
    """Modules reachable from `start`, itself included; two modules share a cycle when each reaches the other."""
    seen, todo = {start}, [start]
    while todo:
        for nxt in graph.get(todo.pop(), {}):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def cycle_through(graph: dict[str, dict[str, Import]], start: str, component: set[str]) -> list[Import]:
    """A shortest cycle from `start` back to itself inside its strongly connected component, as its imports."""
    previous: dict[str, tuple[str, Import]] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for nxt, imp in graph.get(node, {}).items():
            if nxt not in component or nxt in previous:
                continue
            previous[nxt] = (node, imp)
            if nxt == start:
                path, at = [], start
                while True:
                    at, step = previous[at]
                    path.append(step)
                    if at == start:
                        return path[::-1]
            queue.append(nxt)
    raise AssertionError(f"{start} is in a component but on no cycle")


def test_no_import_cycles_between_project_modules() -> None:
    graph = import_graph()
    reach = {node: reachable(graph, node) for node in graph}
    components, placed = [], set()
    for node in sorted(graph):
        if node not in placed:
            component = {other for other in reach[node] if node in reach.get(other, ())}
            placed |= component
            if len(component) > 1:
                components.append((node, component))
    messages = []
    for start, component in components:
        cycle = cycle_through(graph, start, component)
        hops = "\n".join(f"    {imp.where()}: import {imp.module}" for imp in cycle)
        messages.append(f"  {' -> '.join([start, *(imp.module for imp in cycle)])}\n{hops}")
    assert not messages, "import cycles between project modules (one cycle per tangle):\n" + "\n".join(messages)


# --- entry points in a fresh interpreter --------------------------------------------------------------------------

# Runs each step with stdout captured and prints, as the last line, what each step loaded and how it exited.
PROBE_PRELUDE = '''
import argparse, contextlib, importlib, io, json, sys
steps = []

def step(label, action):
    before = set(sys.modules)
    code = None
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            action()
        except SystemExit as exit_:
            code = exit_.code
    steps.append({"label": label, "exit": code, "loaded": sorted(set(sys.modules) - before)})

def command_paths(parser, prefix=()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*prefix, name)
                yield from command_paths(sub, (*prefix, name))
'''
PROBE_EPILOGUE = "\nprint(json.dumps(steps))\n"

EVALUATE_PROBE = 'step("import benchmarks.evaluate", lambda: importlib.import_module("benchmarks.evaluate"))'
SCORE_CODE_PROBE = '''
step("score-code --help", lambda: importlib.import_module("score_code.cli").main(["--help"]))
cli = importlib.import_module("score_code.cli")
for path in command_paths(cli.build_parser()):
    step(f"score-code {' '.join(path)} --help", lambda path=path: cli.main([*path, "--help"]))
'''
SANDBOX_PROBE = 'step("sandbox --help", lambda: importlib.import_module("sandbox.cli").main(["--help"]))'


def probe(body: str) -> list[dict]:
    """Run the steps in a fresh interpreter started in the repository root; its steps' records."""
    result = subprocess.run([sys.executable, "-c", PROBE_PRELUDE + body + PROBE_EPILOGUE], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"the probe itself failed (exit {result.returncode}):\n{result.stderr[-4000:]}"
    return json.loads(result.stdout.strip().splitlines()[-1])


def heavy_imports(steps: list[dict]) -> str:
    """'<step>: torch (312 modules), ...' for each step that loaded part of the heavy stack, '' when none did."""
    lines = []
    for s in steps:
        tops = sorted({m.split(".")[0] for m in s["loaded"]} & HEAVY_AT_STARTUP)
        if tops:
            counts = ", ".join(f"{t} ({sum(m.split('.')[0] == t for m in s['loaded'])} modules)" for t in tops)
            lines.append(f"  {s['label']}: {counts}")
    return "\n".join(lines)


@pytest.mark.parametrize("body, expected_exit", [(EVALUATE_PROBE, None), (SANDBOX_PROBE, 0)],
                         ids=["import-benchmarks.evaluate", "sandbox-help"])
def test_light_entry_point_loads_no_ml_stack(body: str, expected_exit: int | None) -> None:
    steps = probe(body)
    assert [s["exit"] for s in steps] == [expected_exit], steps[0]["label"]
    heavy = heavy_imports(steps)
    assert not heavy, f"modules of {sorted(HEAVY_AT_STARTUP)} loaded (first by the step shown):\n{heavy}"


def test_every_score_code_help_loads_no_ml_stack() -> None:
    steps = probe(SCORE_CODE_PROBE)
    assert len(steps) > 1, "walking score_code.cli.build_parser() found no subcommands"
    bad_exits = [f"  {s['label']}: exit {s['exit']!r}" for s in steps if s["exit"] != 0]
    assert not bad_exits, "every --help must exit 0:\n" + "\n".join(bad_exits)
    heavy = heavy_imports(steps)
    assert not heavy, f"modules of {sorted(HEAVY_AT_STARTUP)} loaded (first by the step shown):\n{heavy}"
