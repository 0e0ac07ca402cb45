"""Turn a model's raw text into the program to grade: `extract_program(text, task)`, over the pure
`extract_code(text, entry_point, prompt, roots)`.

What models actually write (see tests/benchmarks/fixtures/smollm2_outputs.jsonl): prose around markdown fences,
several blocks (the function, then "example usage"), a fence that never closes because generation stopped,
MBPP-style `[BEGIN] ... [DONE]`, bare code with a sentence after it, and for HumanEval a bare function body that
continues the prompt. The rules, in order:

1. MBPP markers: keep what lies between the last `[BEGIN]` and the first `[DONE]` after it.
2. Candidate blocks: the markdown fences (```python / ```py / ``` ; an unclosed fence runs to the end), or, when
   there are none, the stretches of raw text that parse as Python (prose lines before and after are dropped).
3. A body that continues the prompt (its first line is indented, it does not define entry_point) becomes
   prompt + body.
4. Pick the LAST complete block that defines entry_point (closed and parsing; else the last defining it that
   parses, else the last defining it; with none defining it, the longest block that parses): a correction that
   first quotes its old code or restates the prompt ends with the answer. Cut it to its longest parsing head
   when that still defines entry_point; imports, helpers and classes it uses, or that the tests use (`roots`,
   e.g. MBPP's `Node` built by an assert), but does not define are taken from the other blocks, then from the
   prompt (HumanEval prompts carry imports such as `from typing import List` and helpers such as `poly`).
5. Sanitize: drop top-level test code that could fail or hang a correct solution: asserts, statements that call
   print, input, unittest.main or doctest.testmod (or a top-level function that does), and the
   `if __name__ == "__main__":` block. Imports and every other top-level statement stay (a loop that fills a
   table, a call that sets one up), with the definitions that they, entry_point and the tests need; definitions
   nothing needs are dropped (a small model's repeated variants, whose class bodies could fail at import). A
   function or class defined twice keeps its first definition: small models often repeat the same function
   until max_new_tokens.

Code that does not parse is returned as found: the sandbox turns it into a syntax_error verdict.
"""
from __future__ import annotations

import ast
import functools
import re
import textwrap
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from benchmarks.tasks import Task

PYTHON_FENCE_LANGS = {"", "python", "py", "python3", "py3"}
_CODE_START = re.compile(r"^(async\s+def\s|def\s|class\s|import\s|from\s+\S+\s+import\s|@\w)")


@dataclass
class _Block:
    code: str
    closed: bool = True


def _mbpp_markers(text: str) -> str:
    done = text.find("[DONE]")
    head = text if done < 0 else text[:done]
    begin = head.rfind("[BEGIN]")
    return head if begin < 0 else head[begin + len("[BEGIN]"):]


def _fenced_blocks(text: str) -> list[tuple[str, _Block]]:
    """(language, block) for each markdown fence, line based so an unclosed last fence still counts."""
    blocks: list[tuple[str, _Block]] = []
    lang: str | None = None
    body: list[str] = []
    for line in text.split("\n"):
        stripped = line.strip()
        if lang is None:
            if stripped.startswith("```"):
                lang = stripped[3:].strip().lower()
                body = []
        elif stripped.startswith("```"):
            blocks.append((lang, _Block("\n".join(body) + "\n", closed=True)))
            lang = None
        else:
            body.append(line)
    if lang is not None and any(b.strip() for b in body):
        blocks.append((lang, _Block("\n".join(body) + "\n", closed=False)))
    return blocks


def _parse(code: str) -> ast.Module:
    """ast.parse without the SyntaxWarnings (invalid escapes, ...) that model code is full of."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ast.parse(code)


def _parses(code: str) -> bool:
    try:
        _parse(code)
    except (SyntaxError, ValueError):  # ValueError: null bytes
        return False
    return True


def _longest_parsing_prefix(lines: list[str], head: str = "") -> int:
    """Number of leading `lines` that parse (after `head`) with at least one non-blank line; 0 if none.

    Parsing is left to right, so no prefix that reaches the line a SyntaxError names can parse: each failure
    cuts the candidate before that line, which takes a few parses instead of one per line.
    """
    head_lines = head.count("\n")
    end = len(lines)
    while end > 0:
        while end > 0 and not lines[end - 1].strip():
            end -= 1
        if end == 0:
            break
        try:
            _parse(head + "\n".join(lines[:end]) + "\n")
            return end
        except SyntaxError as e:
            error_line = (e.lineno or end + head_lines) - head_lines  # 1-based within `lines`
            end = min(end - 1, max(error_line - 1, 0))
        except ValueError:  # null bytes
            return 0
    return 0


def _raw_code_blocks(text: str) -> list[_Block]:
    """Stretches of unfenced text that parse as Python: from a top-level def/class/import line as far down as
    the code still parses, and up over lines that parse with it (e.g. `R = 3` above a def); prose stops both."""
    if _parses(text):
        return [_Block(text.strip("\n") + "\n")] if text.strip() else []
    lines = text.split("\n")
    blocks: list[_Block] = []
    previous_end = 0
    i = 0
    while i < len(lines):
        if _CODE_START.match(lines[i]):
            n = _longest_parsing_prefix(lines[i:])
            if n:
                start = i
                while start > previous_end and (
                    not lines[start - 1].strip() or _parses("\n".join(lines[start - 1:i + n]) + "\n")
                ):
                    start -= 1
                blocks.append(_Block("\n".join(lines[start:i + n]).strip("\n") + "\n"))
                i = previous_end = i + n
                continue
        i += 1
    return blocks


def _defines(code: str, name: str) -> bool:
    return re.search(rf"^\s*(async\s+)?def\s+{re.escape(name)}\s*\(", code, re.M) is not None


def _prompt_completion(prompt: str | None, body: str, entry_point: str) -> str | None:
    """prompt + body when `body` is an indented continuation of the prompt's function (cut where it stops parsing)."""
    if not prompt or _defines(body, entry_point):
        return None
    first = next((line for line in body.split("\n") if line.strip()), "")
    if not first[:1].isspace():
        return None
    head = prompt if prompt.endswith("\n") else prompt + "\n"
    lines = body.split("\n")
    n = _longest_parsing_prefix(lines, head)
    return head + "\n".join(lines[:n]).rstrip() + "\n" if n else None


# --- dependency analysis on top-level statements -------------------------------------------------------------------


def _bound_names(node: ast.stmt) -> set[str]:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {node.name}
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return {(a.asname or a.name).split(".")[0] for a in node.names}
    targets: list[ast.expr] = []
    if isinstance(node, ast.Assign):
        targets = node.targets
    elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
        targets = [node.target]
    return {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}


def _used_names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _is_import_statement(node: ast.stmt) -> bool:
    """Imports, also wrapped in try/except (e.g. a fallback import that prints a warning)."""
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return True
    if isinstance(node, ast.Try):
        return any(isinstance(n, (ast.Import, ast.ImportFrom)) for n in node.body)
    return False


def _is_definition(node: ast.stmt) -> bool:
    return isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Assign, ast.AnnAssign))


def _source_of(node: ast.stmt, lines: list[str]) -> str:
    start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
    return "\n".join(lines[start - 1:node.end_lineno])


# Calls that only show or check results; a top-level statement making one (or calling a function that does) is
# test code. Compared with the call as written: a name, or module.attribute.
_TEST_CALLS = frozenset({"print", "input", "unittest.main", "doctest.testmod"})


def _call_name(node: ast.Call) -> str:
    f = node.func
    if isinstance(f, ast.Name):
        return f.id
    if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
        return f"{f.value.id}.{f.attr}"
    return ""


def _runs_now(nodes: list[ast.stmt]) -> Iterator[ast.AST]:
    """The nodes of `nodes` that run when they do: not the bodies of the functions, lambdas and classes they define."""
    todo: list[ast.AST] = list(nodes)
    while todo:
        node = todo.pop()
        yield node
        todo.extend(child for child in ast.iter_child_nodes(node)
                    if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)))


def _tests_something(nodes: list[ast.stmt], test_functions: set[str]) -> bool:
    """An assert, or a call to print/input/unittest.main/doctest.testmod or to a function in `test_functions`."""
    return any(isinstance(n, ast.Assert)
               or isinstance(n, ast.Call) and (_call_name(n) in _TEST_CALLS or _call_name(n) in test_functions)
               for n in _runs_now(nodes))


def _is_main_guard(node: ast.stmt) -> bool:
    return isinstance(node, ast.If) and "__name__" in _used_names(node.test)


def _test_functions(tree: ast.Module) -> set[str]:
    """Top-level functions that assert or print when called, directly or through each other (e.g. `check`)."""
    functions = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    found: set[str] = set()
    changed = True
    while changed:
        changed = False
        for f in functions:
            if f.name not in found and _tests_something(f.body, found):
                found.add(f.name)
                changed = True
    return found


def _sanitize(code: str, entry_point: str, roots: Iterable[str] = ()) -> str:
    """Keep imports, top-level statements that are not test code (setup: a loop filling a table, a call), and the
    definitions that entry_point, the tests (`roots`) and those statements need, transitively; drop the rest."""
    try:
        tree = _parse(code)
    except (SyntaxError, ValueError):
        return code
    defs: dict[str, list[int]] = {}
    for i, node in enumerate(tree.body):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defs.setdefault(node.name, [i])  # the first definition: later ones are a small model's repetitions
        elif _is_definition(node):
            for name in _bound_names(node):
                defs.setdefault(name, []).append(i)
    if entry_point not in defs:
        return code
    test_functions = _test_functions(tree)
    testing = {i for i, node in enumerate(tree.body)  # never kept, also when an assignment's name is used
               if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
               and (_is_main_guard(node) or _tests_something([node], test_functions))}
    keep: set[int] = set()
    todo = [entry_point, *roots]
    for i, node in enumerate(tree.body):
        if _is_import_statement(node):
            keep.add(i)
        elif not _is_definition(node) and i not in testing:
            keep.add(i)
            todo.extend(_used_names(node))
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen or name not in defs:
            continue
        seen.add(name)
        for i in defs[name]:
            if i not in testing:
                keep.add(i)
                todo.extend(_used_names(tree.body[i]) - seen)
    # delete the dropped statements' lines, so the kept code keeps its own comments and spacing
    kept_lines: set[int] = set()
    dropped_lines: set[int] = set()
    for i, node in enumerate(tree.body):
        start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
        (kept_lines if i in keep else dropped_lines).update(range(start, node.end_lineno + 1))
    last_kept = max(kept_lines)  # comments after the last kept statement belong to dropped test code
    lines = code.split("\n")[:last_kept]
    out = [line for n, line in enumerate(lines, start=1) if n not in dropped_lines or n in kept_lines]
    return re.sub(r"\n{3,}", "\n\n\n", "\n".join(out)).strip("\n") + "\n"


def _add_missing_context(code: str, sources: list[str], roots: Iterable[str] = ()) -> str:
    """Prepend imports and helpers from `sources` that `code`, or the tests (`roots`), use but `code` does not bind."""
    try:
        tree = _parse(code)
    except (SyntaxError, ValueError):
        return code
    bound = set().union(*(_bound_names(n) for n in tree.body)) if tree.body else set()
    needed = (_used_names(tree) | set(roots)) - bound
    imports: list[str] = []
    helpers: list[str] = []
    parsed = []
    for source in sources:
        try:
            parsed.append((_parse(source).body, source.split("\n")))
        except (SyntaxError, ValueError):
            continue
    changed = True
    while changed:  # a helper taken from a source may need an import or helper met earlier in it
        changed = False
        for body, lines in parsed:
            for node in body:
                names = _bound_names(node)
                if not names & needed:
                    continue
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    imports.append(_source_of(node, lines))
                elif _is_definition(node):
                    helpers.append(_source_of(node, lines))
                    needed |= _used_names(node) - bound - names
                else:
                    continue
                bound |= names
                needed -= names
                changed = True
    if not imports and not helpers:
        return code
    # definitions may use imports when they are defined (annotations, defaults): every import goes first
    code_lines = code.split("\n")
    own_imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    drop = {k for n in own_imports for k in range(n.lineno - 1, n.end_lineno)}
    imports += [_source_of(n, code_lines) for n in own_imports]
    rest = "\n".join(line for k, line in enumerate(code_lines) if k not in drop).strip("\n")
    parts = ["\n".join(imports)] + helpers + [rest]
    return "\n\n".join(p for p in parts if p).rstrip() + "\n"


def _choose(blocks: list[_Block], entry_point: str) -> _Block | None:
    """The last complete block that defines entry_point (closed and parsing), else the last one defining it that
    parses, else the last one defining it; without any, the longest block that parses (module docstring, rule 4)."""
    defining = [b for b in blocks if _defines(b.code, entry_point)]
    for good in (lambda b: b.closed and _parses(b.code), lambda b: _parses(b.code), lambda b: True):
        candidates = [b for b in defining if good(b)]
        if candidates:
            return candidates[-1]
    parsing = [b for b in blocks if _parses(b.code)]
    if parsing:
        return max(parsing, key=lambda b: len(b.code))
    return blocks[0] if blocks else None


@functools.lru_cache(maxsize=4096)
def _names_in(sources: tuple[str, ...]) -> frozenset[str]:
    names: set[str] = set()
    for source in sources:
        try:
            names |= _used_names(_parse(source))
        except (SyntaxError, ValueError):
            continue  # trusted code that does not parse fails in the sandbox, whatever the program
    return frozenset(names)


def tested_names(task: Task) -> frozenset[str]:
    """Names the task's tests and setup code take from the program (MBPP, task files): they must survive extraction
    even when entry_point never uses them (Mbpp/927's asserts build a `Node`). HumanEval's check sees only the
    entry point (as `candidate`), so it has none."""
    if task.test_format == "humaneval":
        return frozenset()
    return _names_in((*task.tests, task.setup_code))


def extract_program(text: str, task: Task) -> str:
    """The program to grade for `task` from a model's `text`: the HumanEval prompt completes a bare body, and the
    names the tests use are kept (tested_names). The one entry point for graders: the harness and training rewards."""
    prompt = task.prompt if task.test_format == "humaneval" else None
    return extract_code(text, task.entry_point, prompt, tested_names(task))


def extract_code(text: str, entry_point: str, prompt: str | None = None, roots: Iterable[str] = ()) -> str:
    """The program to grade from a model's raw `text` (rules in the module docstring); never raises."""
    text = _mbpp_markers(text.replace("\r\n", "\n"))
    fenced = _fenced_blocks(text)
    if fenced:
        pythonic = [b for lang, b in fenced if lang in PYTHON_FENCE_LANGS]
        blocks = pythonic or [b for _, b in fenced]
    else:
        whole = _prompt_completion(prompt, text, entry_point)
        if whole is not None:
            return _sanitize(whole, entry_point, roots)
        blocks = _raw_code_blocks(text)
        if not blocks:
            blocks = [_Block(textwrap.dedent(text).strip() + "\n")] if text.strip() else []
    for b in blocks:
        whole = _prompt_completion(prompt, b.code, entry_point)
        if whole is not None and not any(_defines(o.code, entry_point) for o in blocks):
            return _sanitize(whole, entry_point, roots)
    chosen = _choose([_Block(textwrap.dedent(b.code), b.closed) for b in blocks], entry_point)
    if chosen is None:
        return ""
    if not _parses(chosen.code):  # e.g. a broken "example usage" line or a cut-off second function after it
        lines = chosen.code.split("\n")
        head = "\n".join(lines[:_longest_parsing_prefix(lines)]) + "\n"
        if _defines(head, entry_point):
            chosen = _Block(head, chosen.closed)
    others = [textwrap.dedent(b.code) for b in blocks if textwrap.dedent(b.code) != chosen.code]
    code = _add_missing_context(chosen.code, others + ([prompt] if prompt else []), roots)
    return _sanitize(code, entry_point, roots)
