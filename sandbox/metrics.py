"""The grader service's counters and histograms, rendered in the Prometheus text format (0.0.4) by hand.

Written here rather than with prometheus_client so the sandbox package stays standard library only (the serve extra
adds only the HTTP framework). Safe to update from several threads: programs finish in the grading threads.
"""
from __future__ import annotations

import bisect
import collections
import threading
from collections.abc import Iterable, Sequence

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
REQUEST_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
PROGRAM_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
Labels = tuple[tuple[str, str], ...]


class Histogram:
    """Cumulative buckets, sum and count of one labelled series (the caller holds the lock)."""

    def __init__(self, buckets: Sequence[float]) -> None:
        self.buckets = tuple(buckets)
        self.counts = [0] * len(self.buckets)  # per bucket, not cumulative: rendering adds them up
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        index = bisect.bisect_left(self.buckets, value)
        if index < len(self.counts):
            self.counts[index] += 1
        self.sum += value
        self.count += 1

    def lines(self, name: str, labels: Labels) -> Iterable[str]:
        cumulative = 0
        for bound, count in zip(self.buckets, self.counts, strict=True):
            cumulative += count
            yield sample(f"{name}_bucket", (*labels, ("le", _number(bound))), cumulative)
        yield sample(f"{name}_bucket", (*labels, ("le", "+Inf")), self.count)
        yield sample(f"{name}_sum", labels, self.sum)
        yield sample(f"{name}_count", labels, self.count)


class Metrics:
    """Programs graded by status, requests by path and code, request and program latency."""

    def __init__(self, statuses: Iterable[str]) -> None:
        self._lock = threading.Lock()
        self._programs: dict[str, int] = dict.fromkeys(statuses, 0)  # every status present from the start, at 0
        self._requests: collections.Counter[tuple[str, int]] = collections.Counter()
        self._request_seconds: dict[str, Histogram] = {}
        self._program_seconds = Histogram(PROGRAM_BUCKETS_S)

    def program_done(self, status: str, seconds: float) -> None:
        with self._lock:
            self._programs[status] = self._programs.get(status, 0) + 1
            self._program_seconds.observe(seconds)

    def request_done(self, path: str, code: int, seconds: float | None) -> None:
        """`seconds` None: counted, but kept out of the latency histogram (probes and scrapes)."""
        with self._lock:
            self._requests[(path, code)] += 1
            if seconds is not None:
                self._request_seconds.setdefault(path, Histogram(REQUEST_BUCKETS_S)).observe(seconds)

    def render(self, gauges: Sequence[tuple[str, str, float]], restarts: int) -> str:
        """The exposition text: our series plus `gauges` (name, help, value) read by the caller right now."""
        out = []
        with self._lock:
            out += header("sandbox_programs_total", "counter", "Programs graded, by verdict status.")
            out += [sample("sandbox_programs_total", (("status", s),), n) for s, n in sorted(self._programs.items())]
            out += header("sandbox_requests_total", "counter", "HTTP requests answered, by path and status code.")
            out += [sample("sandbox_requests_total", (("path", p), ("code", str(c))), n)
                    for (p, c), n in sorted(self._requests.items())]
            out += header("sandbox_request_seconds", "histogram", "Time to answer a grading request (queue wait "
                          "included), by path.")
            for path, histogram in sorted(self._request_seconds.items()):
                out += histogram.lines("sandbox_request_seconds", (("path", path),))
            out += header("sandbox_program_seconds", "histogram", "Time to grade one program once a worker thread "
                          "took it (pool round trip included, queue wait excluded).")
            out += self._program_seconds.lines("sandbox_program_seconds", ())
        out += header("sandbox_container_restarts_total", "counter", "Workers replaced after a failure, a limit "
                      "violation or a recycle.")
        out.append(sample("sandbox_container_restarts_total", (), restarts))
        for name, help_text, value in gauges:
            out += header(name, "gauge", help_text)
            out.append(sample(name, (), value))
        return "\n".join(out) + "\n"


def header(name: str, kind: str, help_text: str) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]


def sample(name: str, labels: Labels, value: float) -> str:
    if not labels:
        return f"{name} {_number(value)}"
    text = ",".join(f'{key}="{_escape(val)}"' for key, val in labels)
    return f"{name}{{{text}}} {_number(value)}"


def _number(value: float) -> str:
    """Integers exactly (a counter past a million must not turn into 1e+06), floats in full precision."""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
