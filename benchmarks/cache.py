"""The project's cache directory, in the harness so that the trainer (converted models) and the harness (calibrated
timeouts) share one setting without the harness importing score_code."""
from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "SCORE_CODE_CACHE"


def cache_root() -> Path:
    """$SCORE_CODE_CACHE, else ~/.cache/score-code."""
    configured = os.environ.get(CACHE_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "score-code"
