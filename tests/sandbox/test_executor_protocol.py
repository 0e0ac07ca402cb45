"""sandbox/executor.py's JSON-lines protocol: the ready line, pings, malformed requests, the plain-data codec and
the per-program overhead."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from sandbox.verdict import Result, Status
from tests.sandbox.conftest import EXECUTOR, FAST, GOOD_ADD, assert_still_healthy, mbpp


def test_ready_line_and_ping(client):
    assert client.ready["ready"] is True and client.ready["version"] and client.ready["pid"] == client.proc.pid
    assert client.send({"op": "ping"}) == {"op": "pong"}


@pytest.mark.parametrize("line, error", [
    ("not json", "request is not JSON"),
    ("[1, 2]", "a request must be a JSON object"),
    ('{"id": "a", "job": {}}', "a request needs a 'job' object and a 'limits' object"),
    (json.dumps({"id": "b", "job": {**mbpp(GOOD_ADD).to_dict(), "format": "cobol"}, "limits": FAST.to_dict()}),
     "job format 'cobol' is not humaneval, mbpp or generic"),
    (json.dumps({"id": "c", "job": mbpp(GOOD_ADD, ["assert add(1,"]).to_dict(), "limits": FAST.to_dict()}),
     "trusted code <assert 0> does not compile"),
    (json.dumps({"id": "d", "job": mbpp(GOOD_ADD).to_dict(), "limits": {"timeout_s": 1}}), "request limits lack"),
])
def test_bad_requests_get_a_sandbox_error_answer(client, line, error):
    client.proc.stdin.write(line.encode() + b"\n")
    client.proc.stdin.flush()
    answer = json.loads(client.proc.stdout.readline())
    result = Result.from_dict(answer)
    assert result.status is Status.SANDBOX_ERROR and error in result.error and result.reward == 0.0, answer
    assert set(answer) == set(Result(Status.PASSED).to_dict()) | {"id"}
    assert_still_healthy(client)


IN_PROCESS_EXECUTOR = r'''
import importlib.util, json, sys, tempfile
spec = importlib.util.spec_from_file_location("executor", sys.argv[1])
ex = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ex)
ex.prctl(ex.PR_SET_CHILD_SUBREAPER, 1)
executor = ex.Executor("local", tempfile.mkdtemp())
spawned = []
spawn = executor.spawn
executor.spawn = lambda spec, fds: spawned.append(1) or spawn(spec, fds)
t_pid = executor.t_pid
bad, good = (json.loads(line) for line in sys.stdin)
answers = [executor.handle(bad), executor.handle(good)]
print(json.dumps({"statuses": [a["status"] for a in answers], "same_t": executor.t_pid == t_pid,
                  "spawned": len(spawned)}))
executor.close()
'''


def test_a_malformed_job_starts_no_program_and_keeps_the_trusted_process(tmp_path):
    script = tmp_path / "in_process.py"
    script.write_text(IN_PROCESS_EXECUTOR)
    bad = {"job": mbpp(GOOD_ADD, ["assert add(1,"]).to_dict(), "limits": FAST.to_dict()}
    good = {"job": mbpp(GOOD_ADD).to_dict(), "limits": FAST.to_dict()}
    lines = f"{json.dumps(bad)}\n{json.dumps(good)}\n"
    proc = subprocess.run([sys.executable, str(script), str(EXECUTOR)], input=lines, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report == {"statuses": ["sandbox_error", "passed"], "same_t": True, "spawned": 1}, report


# --- plain-data codec (imported directly: it is pure) ----------------------------------------------------------------
def load_executor_module():
    import importlib.util
    spec = importlib.util.spec_from_file_location("score_sandbox_executor", EXECUTOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_codec_round_trips_exact_plain_types_only():
    ex = load_executor_module()
    handles = []

    def handle_of(obj):
        handles.append(obj)
        return {"h": [len(handles), type(obj).__name__]}

    def ref_of(hid, name):
        return ("ref", hid, name)

    value = [None, True, 3, -2 ** 80, 1.5, float("inf"), 2 + 3j, "s\ud800", b"\x00\xff", (1, [2]), {(1, 2): {3}},
             frozenset({4}), {"k": ()}, int, type(None)]
    wire = json.loads(json.dumps(ex.encode(value, handle_of)))
    assert ex.decode(wire, ref_of) == value and handles == []
    nan = ex.decode(json.loads(json.dumps(ex.encode(float("nan"), handle_of))), ref_of)
    assert nan != nan

    from collections import Counter, deque

    class MyInt(int):
        pass

    class MyStr(str):
        pass

    class MyDeque(deque):
        pass

    decoded = ex.decode(json.loads(json.dumps(ex.encode([MyInt(1), MyStr("a"), MyDeque([1]), Counter("aab"),
                                                         deque([1], 2)], handle_of))), ref_of)
    assert decoded == [("ref", 1, "MyInt"), ("ref", 2, "MyStr"), ("ref", 3, "MyDeque"), {"a": 2, "b": 1},
                       deque([1], 2)]
    assert type(decoded[3]) is dict and type(decoded[4]) is deque  # a standard value is rebuilt by value
    deep: list = []
    for _ in range(ex.MAX_CODEC_DEPTH + 5):
        deep = [deep]
    assert "h" in json.dumps(ex.encode(deep, handle_of))  # too deep: the inner part stays behind a handle
    for bad in ({"x": 1}, {"l": 3}, {"i": "zz"}, [1], {"d": [[[1], 2]]}, {"y": "eval"}):
        with pytest.raises(ex.CodecError):
            ex.decode(bad, ref_of)


def test_overhead_is_printed(client):
    """Not a timing assertion: prints the executor's cost per program beyond the program's own run."""
    overheads = []
    for _ in range(20):
        started = time.perf_counter()
        result = client.grade(mbpp(GOOD_ADD))
        overheads.append(time.perf_counter() - started - result.wall_time_s)
    overheads.sort()
    print(f"\noverhead beyond the program's run over 20 trivial programs: p50 {overheads[10] * 1000:.1f} ms, "
          f"max {overheads[-1] * 1000:.1f} ms (round trip including the client's JSON)")
