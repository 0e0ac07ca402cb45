#!/bin/sh
# Entrypoint of the grader image: give this grader its own protocol-socket directory, then run the command.
#
# The grader starts sandbox containers on the HOST's engine (through /var/run/docker.sock) and bind-mounts a unix
# socket from its temp dir into each one. The engine resolves that source path on the host, so the temp dir must be a
# host directory mounted at the same path in this container: SCORE_SANDBOX_RUN_DIR (default
# /var/lib/score-sandbox/run). Each grader gets a subdirectory named after its hostname (unique per compose replica and
# per pod): a Sandbox removes the socket directories of dead owners, judging pids in its own pid namespace, and tells
# hosts apart only by hostname (sandbox/leftovers.py), so graders must not share a directory under one hostname.
set -eu

run_dir="${SCORE_SANDBOX_RUN_DIR:-/var/lib/score-sandbox/run}"
if ! mountpoint -q "$run_dir" 2>/dev/null; then
    echo "grader: $run_dir is not a mount; mount the host's $run_dir at the same path, or sandbox containers get" \
         "their requests through \`docker run -i\` (about 1 ms more CPU per program; \`sandbox doctor\` tells)" >&2
fi
# Directories of graders that stopped cleanly are empty; remove those older than a day (a fresh one may belong to a
# grader that is starting right now). A SIGKILLed grader leaves a few dead sockets behind: bytes, not containers.
find "$run_dir" -mindepth 1 -maxdepth 1 -type d -empty -mmin +1440 -delete 2>/dev/null || true
TMPDIR="$run_dir/$(cat /proc/sys/kernel/hostname)"  # what socket.gethostname() gives
mkdir -p "$TMPDIR"
chmod 0700 "$TMPDIR"
export TMPDIR
exec "$@"
