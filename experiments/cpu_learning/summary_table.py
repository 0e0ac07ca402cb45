"""Rewrites the generated table of a results page between its markers, keeping the hand-written prose around it."""
from __future__ import annotations

from pathlib import Path

START, END = "<!-- table -->", "<!-- /table -->"


def replace_table(path: Path, title: str, table: str) -> None:
    """`table` between the markers of `path`; a new page with `title` when the file or its markers are missing."""
    text = path.read_text() if path.exists() else ""
    if START in text and END in text:
        text = text[: text.index(START) + len(START)] + "\n" + table + "\n" + text[text.index(END):]
    else:
        text = f"# {title}\n\n{START}\n{table}\n{END}\n"
    path.write_text(text)
