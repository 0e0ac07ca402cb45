"""Atomic file writes, in the lowest layer so the sandbox CLI and the benchmarks share one implementation."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Text a program produced may hold lone surrogates (`raise ValueError('\udc80')`), which UTF-8 cannot encode. Written
# as backslash escapes they stay readable, and inside a JSON string they are the JSON escape of the same character,
# so a JSONL file reads back exactly. Every text file the project writes uses this error handler.
ENCODING_ERRORS = "backslashreplace"


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write `text` so that readers see the old file or the whole new one, never half of it, even after a crash.

    The temporary file is made in the destination's directory (os.replace is atomic only within one file system),
    synced before the rename, and removed if anything fails, so no stray temp files are left behind.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes the file private (0600); results are meant to be shared
        with os.fdopen(fd, "w", encoding="utf-8", errors=ENCODING_ERRORS) as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
