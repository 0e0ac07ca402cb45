"""Turn a model's raw text into the program to grade: pure `extract_code(text, entry_point, prompt)`.

What models actually write (see tests/benchmarks/fixtures/smollm2_outputs.jsonl): prose around markdown fences,
several blocks (the function, then "example usage"), a fence that never closes because generation stopped,
MBPP-style `[BEGIN] ... [DONE]`, bare code with a sentence after it, and for HumanEval a bare function body that
continues the prompt. The rules, in order:

1. MBPP markers: keep what lies between the last `[BEGIN]` and the first `[DONE]` after it.
2. Candidate blocks: the markdown fences (```python / ```py / ``` ; an unclosed fence runs to the end), or, when
   there are none, the stretches of raw text that parse as Python (prose lines before and after are dropped).
3. A body that continues the prompt (its first line is indented, it does not define entry_point) becomes
   prompt + body.
4. Pick the first block that defines entry_point (else the longest one that parses), cut to its longest parsing
   head when that still defines entry_point; imports and helpers it uses
   but does not define are taken from the other blocks, then from the prompt (HumanEval prompts carry imports
   such as `from typing import List` and helpers such as `poly`).
5. Sanitize: keep imports and the definitions reachable from entry_point, drop top-level test code (prints,
   asserts, `if __name__ == "__main__":`) that could fail or hang a correct solution. A function defined twice
   keeps its first definition: small models often repeat the same function until max_new_tokens.

Code that does not parse is returned as found: the sandbox turns it into a syntax_error verdict.
"""
from __future__ import annotations

import ast
import re
import textwrap
import warnings
from dataclasses import dataclass

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
    """Imports, also wrapped in try/except (e.g. a fallback import)."""
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


def _sanitize(code: str, entry_point: str) -> str:
    """Keep imports and the top-level definitions entry_point needs (transitively); drop the rest."""
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
    keep = {i for i, node in enumerate(tree.body) if _is_import_statement(node)}
    todo = [entry_point]
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen or name not in defs:
            continue
        seen.add(name)
        for i in defs[name]:
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


def _add_missing_context(code: str, sources: list[str]) -> str:
    """Prepend imports and helpers from `sources` that `code` uses but does not bind itself."""
    try:
        tree = _parse(code)
    except (SyntaxError, ValueError):
        return code
    bound = set().union(*(_bound_names(n) for n in tree.body)) if tree.body else set()
    needed = _used_names(tree) - bound
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
    for b in blocks:
        if _defines(b.code, entry_point) and _parses(b.code):
            return b
    for b in blocks:
        if _defines(b.code, entry_point):
            return b
    parsing = [b for b in blocks if _parses(b.code)]
    if parsing:
        return max(parsing, key=lambda b: len(b.code))
    return blocks[0] if blocks else None


def extract_code(text: str, entry_point: str, prompt: str | None = None) -> str:
    """The program to grade from a model's raw `text` (rules in the module docstring); never raises."""
    text = _mbpp_markers(text.replace("\r\n", "\n"))
    fenced = _fenced_blocks(text)
    if fenced:
        pythonic = [b for lang, b in fenced if lang in PYTHON_FENCE_LANGS]
        blocks = pythonic or [b for _, b in fenced]
    else:
        whole = _prompt_completion(prompt, text, entry_point)
        if whole is not None:
            return _sanitize(whole, entry_point)
        blocks = _raw_code_blocks(text)
        if not blocks:
            blocks = [_Block(textwrap.dedent(text).strip() + "\n")] if text.strip() else []
    for b in blocks:
        whole = _prompt_completion(prompt, b.code, entry_point)
        if whole is not None and not any(_defines(o.code, entry_point) for o in blocks):
            return _sanitize(whole, entry_point)
    chosen = _choose([_Block(textwrap.dedent(b.code), b.closed) for b in blocks], entry_point)
    if chosen is None:
        return ""
    if not _parses(chosen.code):  # e.g. a broken "example usage" line or a cut-off second function after it
        lines = chosen.code.split("\n")
        head = "\n".join(lines[:_longest_parsing_prefix(lines)]) + "\n"
        if _defines(head, entry_point):
            chosen = _Block(head, chosen.closed)
    others = [textwrap.dedent(b.code) for b in blocks if textwrap.dedent(b.code) != chosen.code]
    code = _add_missing_context(chosen.code, others + ([prompt] if prompt else []))
    return _sanitize(code, entry_point)
