"""deploy/: the compose file, the Kubernetes manifests, the grader image and nginx.conf agree with each other and with
the real `sandbox serve` (its flags, body cap, drain, keep-alive) and the remote client (its read timeout). No Docker,
no network: the files are parsed, the serve command lines go through the real CLI, and the entrypoint runs in sh."""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import yaml

from sandbox import cli
from sandbox.remote_backend import RemoteBackend
from sandbox.server_settings import ServerSettings

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
DOCKERFILE = DEPLOY / "grader" / "Dockerfile"
RUN_DIR = "/var/lib/score-sandbox/run"  # the protocol-socket dir: the same path on the host and in the grader
TOKEN_PATH = "/run/secrets/sandbox_token"
SERVE_PORT = 8080


def drain_bound_s() -> float:
    """How long a grader fed by the remote client may take to stop after SIGTERM: the client keeps about 2 x workers
    jobs on a host, so each worker finishes at most two jobs of at most max_timeout_s; then uvicorn's grace for the
    last responses, then the Sandbox removes its containers (30 s of slack for `docker rm`)."""
    from sandbox.server import RESPONSE_GRACE_S

    return 2 * ServerSettings().max_timeout_s + RESPONSE_GRACE_S + 30


def seconds(value: str | int) -> float:
    """Compose durations ('5m30s', '330s') and plain numbers."""
    if isinstance(value, int | float):
        return float(value)
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", value)
    assert parts and value, f"not a duration: {value!r}"
    h, m, s = (int(p or 0) for p in parts.groups())
    return 3600 * h + 60 * m + s


def interpolate(arg: str) -> str:
    """Compose's ${VAR:-default} with the default (what `docker compose up` runs when VAR is unset)."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", arg)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


@pytest.fixture(scope="module")
def k8s() -> dict[str, dict]:
    docs = [d for d in yaml.safe_load_all((DEPLOY / "k8s" / "grader.yaml").read_text()) if d]
    return {d["kind"]: d for d in docs}


@pytest.fixture(scope="module")
def dockerfile() -> dict[str, list[str]]:
    """Instruction -> its arguments, one entry per occurrence (continuation lines joined, comments dropped)."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            word, _, rest = line.strip().partition(" ")
            out.setdefault(word.upper(), []).append(rest.strip())
    return out


def nginx_directives() -> list[tuple[str, list[str]]]:
    text = re.sub(r"#[^\n]*", "", (DEPLOY / "nginx.conf").read_text())
    return [(m.group(1), m.group(2).split()) for m in re.finditer(r"(?m)^\s*(\w+)\s*([^;{}]*);", text)]


def nginx(name: str) -> list[list[str]]:
    return [args for directive, args in nginx_directives() if directive == name]


def k8s_container(k8s: dict, name: str = "grader") -> dict:
    return next(c for c in k8s["Deployment"]["spec"]["template"]["spec"]["containers"] if c["name"] == name)


# --- the serve command lines, through the real CLI --------------------------------------------------------------
def serve_commands(compose: dict, k8s: dict, dockerfile: dict) -> dict[str, list[str]]:
    return {"Dockerfile CMD": json.loads(dockerfile["CMD"][-1]),
            "compose grader": [interpolate(a) for a in compose["services"]["grader"]["command"]],
            "k8s grader": k8s_container(k8s)["args"]}


def test_every_serve_command_line_is_accepted_by_sandbox_serve(compose, k8s, dockerfile, monkeypatch, tmp_path):
    token = tmp_path / "token"
    token.write_text("t" * 32 + "\n")
    monkeypatch.delenv(cli.TOKEN_ENV, raising=False)
    calls = []
    fake = types.ModuleType("sandbox.server")
    fake.serve = lambda settings, **kwargs: calls.append((settings, kwargs))
    monkeypatch.setitem(sys.modules, "sandbox.server", fake)
    subparsers = argparse.ArgumentParser().add_subparsers()
    cli.add_serve_parser(subparsers)
    spelled = set(subparsers.choices["serve"]._option_string_actions)
    for where, argv in serve_commands(compose, k8s, dockerfile).items():
        assert argv[:2] == ["sandbox", "serve"], where
        flags = {a.split("=")[0] for a in argv if a.startswith("--")}
        assert flags <= spelled, f"{where}: {flags - spelled} (argparse takes abbreviations; write flags out)"
        args = argv[1:]
        # The token path is where the compose secret and the k8s Secret volume put it; here a real file stands in.
        assert args[args.index("--token-file") + 1] == TOKEN_PATH, where
        args[args.index("--token-file") + 1] = str(token)
        calls.clear()
        assert cli.main(args) == 0, where
        (settings, kwargs), = calls
        assert settings.token == "t" * 32, where
        assert kwargs["host"] == "0.0.0.0" and kwargs["port"] == SERVE_PORT, where  # reachable from outside
        assert kwargs["backend"] == "docker", where


def test_a_flag_sandbox_serve_does_not_know_is_refused(monkeypatch):
    # the check above would pass vacuously if the CLI accepted anything
    monkeypatch.setitem(sys.modules, "sandbox.server", types.ModuleType("sandbox.server"))
    with pytest.raises(SystemExit) as exc:
        cli.main(["serve", "--host", "0.0.0.0", "--no-such-flag", "1"])
    assert exc.value.code == 2


def test_the_image_init_steps_are_real_build_image_calls(compose, k8s, monkeypatch):
    import sandbox.build

    init = next(c for c in k8s["Deployment"]["spec"]["template"]["spec"]["initContainers"])
    calls: list[dict] = []
    monkeypatch.setattr(sandbox.build, "build_image", lambda **kwargs: calls.append(kwargs))
    for argv in (compose["services"]["sandbox-image"]["command"], init["command"]):
        calls.clear()
        assert argv[0] == "sandbox" and cli.main(argv[1:]) == 0
        assert calls == [{"from_dockerfile": True, "force": False}]  # a no-op when the image exists


# --- compose ---------------------------------------------------------------------------------------------------
def test_compose_references_files_that_exist(compose):
    grader = compose["services"]["grader"]
    context = (DEPLOY / grader["build"]["context"]).resolve()
    assert context == REPO
    assert (context / grader["build"]["dockerfile"]).resolve() == DOCKERFILE
    nginx_mounts = [v.split(":") for v in compose["services"]["nginx"]["volumes"]]
    assert [(DEPLOY / src).resolve() for src, dst, *_ in nginx_mounts if dst == "/etc/nginx/nginx.conf"] == \
        [DEPLOY / "nginx.conf"]
    # The token file is the operator's: it must exist at `up` time, and must never be committed.
    secret = compose["secrets"]["sandbox_token"]["file"]
    ignored = (DEPLOY / ".gitignore").read_text().split()
    assert Path(secret).name in ignored
    assert grader["secrets"] == ["sandbox_token"]  # mounted at /run/secrets/sandbox_token, the --token-file


def test_compose_services_depend_on_services_that_exist_and_report_health(compose):
    services = compose["services"]
    for name, service in services.items():
        for dep, how in service.get("depends_on", {}).items():
            assert dep in services, f"{name} depends on a missing service {dep}"
            if how["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep}'s health, which has no check"
    probe = " ".join(services["grader"]["healthcheck"]["test"])
    assert f"127.0.0.1:{SERVE_PORT}/healthz" in probe
    assert "/nginx-healthz" in " ".join(services["nginx"]["healthcheck"]["test"])
    assert "location = /nginx-healthz" in (DEPLOY / "nginx.conf").read_text()


def test_compose_grader_reaches_the_host_engine_and_shares_the_socket_dir_at_the_same_path(compose):
    volumes = [v.split(":") for v in compose["services"]["grader"]["volumes"]]
    assert ["/var/run/docker.sock", "/var/run/docker.sock"] in [v[:2] for v in volumes]
    assert [RUN_DIR, RUN_DIR] in [v[:2] for v in volumes]
    assert compose["services"]["grader"]["deploy"]["replicas"]


def test_compose_gives_the_grader_time_to_drain(compose):
    grader = compose["services"]["grader"]
    assert grader.get("stop_signal", "SIGTERM") == "SIGTERM"
    assert seconds(grader["stop_grace_period"]) >= drain_bound_s()


# --- Kubernetes --------------------------------------------------------------------------------------------------
def test_k8s_has_a_deployment_and_a_service_that_selects_its_pods(k8s):
    assert set(k8s) == {"Deployment", "Service"}
    pod_labels = k8s["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert k8s["Deployment"]["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert k8s["Service"]["spec"]["selector"].items() <= pod_labels.items()
    port_names = {p["name"]: p["containerPort"] for p in k8s_container(k8s)["ports"]}
    target = k8s["Service"]["spec"]["ports"][0]["targetPort"]
    assert port_names.get(target, target) == SERVE_PORT


def test_k8s_probes_ask_healthz_and_a_draining_pod_is_unready_but_alive(k8s):
    container = k8s_container(k8s)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    ready = container["readinessProbe"]["httpGet"]
    assert ready["path"] == "/healthz" and ports.get(ready["port"], ready["port"]) == SERVE_PORT
    # liveness must not fail on the 503 a draining server answers, or the kubelet restarts it mid-drain
    live = container["livenessProbe"]
    assert "httpGet" not in live
    script = live["exec"]["command"]
    assert script[:2] == ["python3", "-c"] and f"127.0.0.1:{SERVE_PORT}/healthz" in script[2]


@pytest.mark.parametrize("status, alive", [(200, True), (503, True), (None, False)])
def test_the_liveness_script_passes_on_any_http_answer_and_fails_without_one(k8s, status, alive):
    """Runs the manifest's own liveness command against a local stand-in for the server."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    port = server.server_address[1]
    if status is None:
        server.server_close()  # nothing listens: connection refused
    else:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        script = k8s_container(k8s)["livenessProbe"]["exec"]["command"][2].replace(f":{SERVE_PORT}/", f":{port}/")
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=30)
    finally:
        if status is not None:
            server.shutdown()
            server.server_close()
    assert (proc.returncode == 0) is alive, proc.stderr


def test_k8s_grace_period_covers_prestop_and_the_drain(k8s):
    spec = k8s["Deployment"]["spec"]["template"]["spec"]
    pre_stop = k8s_container(k8s).get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    sleep_s = float(pre_stop[1]) if pre_stop[:1] == ["sleep"] else 0.0
    assert spec["terminationGracePeriodSeconds"] >= sleep_s + drain_bound_s()


def test_k8s_mounts_the_engine_the_same_path_socket_dir_and_the_token(k8s):
    spec = k8s["Deployment"]["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in k8s_container(k8s)["volumeMounts"]}
    sock = volumes[mounts["/var/run/docker.sock"]]["hostPath"]
    assert sock == {"path": "/var/run/docker.sock", "type": "Socket"}
    assert volumes[mounts[RUN_DIR]]["hostPath"]["path"] == RUN_DIR
    token_dir, token_name = TOKEN_PATH.rsplit("/", 1)
    secret = volumes[mounts[token_dir]]["secret"]
    assert [item["path"] for item in secret["items"]] == [token_name]
    env = {e["name"]: e["value"] for e in k8s_container(k8s).get("env", [])}
    assert env.get("SCORE_SANDBOX_RUN_DIR", RUN_DIR) == RUN_DIR


# --- the grader image -------------------------------------------------------------------------------------------
def test_dockerfile_copies_files_that_exist_and_the_ignore_file_lets_them_in(dockerfile):
    allowed = [line[1:].rstrip("/") for line in (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text()
               .splitlines() if line.startswith("!")]
    for copy in dockerfile["COPY"]:
        if "--from=" in copy:
            continue
        *sources, _dest = [a for a in shlex.split(copy) if not a.startswith("--")]
        for source in sources:
            assert (REPO / source).exists(), source
            assert source.rstrip("/") in allowed, f"{source} is copied but left out of the build context"


def test_dockerfile_installs_the_serve_extra_and_runs_healthcheck_and_drain_signals(dockerfile):
    pyproject = (REPO / "pyproject.toml").read_text()
    assert re.search(r"(?m)^serve = \[", pyproject)
    assert any("[serve]" in run for run in dockerfile["RUN"])
    assert dockerfile["STOPSIGNAL"] == ["SIGTERM"]
    health = dockerfile["HEALTHCHECK"][-1]
    assert f"127.0.0.1:{SERVE_PORT}/healthz" in health
    assert dockerfile["EXPOSE"] == [str(SERVE_PORT)]
    assert f"SCORE_SANDBOX_RUN_DIR={RUN_DIR}" in dockerfile["ENV"][-1].split()
    entry = json.loads(dockerfile["ENTRYPOINT"][-1])
    assert "grader-entrypoint" in entry
    assert any("deploy/grader/entrypoint.sh" in c and "grader-entrypoint" in c for c in dockerfile["COPY"])


# --- the entrypoint, run for real --------------------------------------------------------------------------------
def run_entrypoint(run_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "SCORE_SANDBOX_RUN_DIR": str(run_dir)}
    return subprocess.run(["sh", str(DEPLOY / "grader" / "entrypoint.sh"), "sh", "-c", 'printf %s "$TMPDIR"'],
                          env=env, capture_output=True, text=True, timeout=30)


def test_entrypoint_gives_each_grader_its_own_private_socket_dir(tmp_path):
    proc = run_entrypoint(tmp_path)
    assert proc.returncode == 0, proc.stderr
    own = tmp_path / socket.gethostname()  # what the sandbox's owner labels say, so the two cannot drift apart
    assert proc.stdout == str(own)
    assert own.is_dir() and own.stat().st_mode & 0o777 == 0o700
    assert "is not a mount" in proc.stderr  # tmp_path is no mount point: the fallback is said, not hidden


def test_entrypoint_removes_only_old_empty_dirs_of_stopped_graders(tmp_path):
    day_ago = time.time() - 2 * 86400
    stale, busy, fresh = tmp_path / "stopped-grader", tmp_path / "live-grader", tmp_path / "starting-grader"
    for d in (stale, busy, fresh):
        d.mkdir()
    (busy / "score-sandbox-sockets-1-abc").mkdir()
    for d in (stale, busy):
        os.utime(d, (day_ago, day_ago))
    assert run_entrypoint(tmp_path).returncode == 0
    assert not stale.exists()
    assert busy.exists() and fresh.exists()


# --- nginx -------------------------------------------------------------------------------------------------------
def size_bytes(value: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([kKmMgG]?)", value).groups()
    return int(number) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[unit.lower()]


def nginx_seconds(value: str) -> float:
    number, unit = re.fullmatch(r"(\d+)(ms|s|m|h)?", value).groups()
    return int(number) * {None: 1, "s": 1, "ms": 0.001, "m": 60, "h": 3600}[unit]


def test_nginx_lets_through_every_body_the_server_accepts():
    (cap,) = nginx("client_max_body_size")
    assert size_bytes(cap[0]) >= ServerSettings().max_body_bytes


def test_nginx_retries_dead_and_draining_graders_but_not_backpressure_or_caller_errors():
    (retry,) = nginx("proxy_next_upstream")
    assert {"error", "timeout", "http_503", "non_idempotent"} <= set(retry)
    assert not {"http_429", "http_403", "http_404", "off"} & set(retry)
    (tries,) = nginx("proxy_next_upstream_tries")
    assert int(tries[0]) >= 2


def test_nginx_balances_by_connections_over_kept_alive_upstream_connections():
    assert nginx("least_conn") == [[]]
    assert nginx("keepalive") and nginx("proxy_http_version") == [["1.1"]]
    assert ["Connection", '""'] in nginx("proxy_set_header")


def test_nginx_drops_idle_upstream_connections_before_uvicorn_does():
    """Else nginx may send a batch on a connection the grader is closing (the retry covers it, at a cost)."""
    import uvicorn

    (idle,) = nginx("keepalive_timeout")
    assert nginx_seconds(idle[0]) < uvicorn.Config(app=None).timeout_keep_alive


def test_nginx_waits_longer_than_the_remote_client_for_a_full_chunk():
    """The client, not nginx, decides when a grader is too slow: its read timeout for a chunk of `workers` jobs."""
    client_read_s = 2 * ServerSettings().max_timeout_s + RemoteBackend.READ_SLACK_S
    (read,) = nginx("proxy_read_timeout")
    assert nginx_seconds(read[0]) > client_read_s


def test_nginx_points_at_the_compose_grader_service(compose):
    servers = nginx("server")
    assert servers and all(args[0] == f"grader:{SERVE_PORT}" for args in servers)
    assert "grader" in compose["services"]
    assert nginx("listen") == [[str(SERVE_PORT)]]
    assert compose["services"]["nginx"]["ports"][0].endswith(f":{SERVE_PORT}")
