#!/usr/bin/env bash
# Issue #16 in one command: filter, the five LoRA rows, checkpoint selection on MBPP validation, greedy evaluations
# of base and every row, then the table, curves and comparisons (experiments/cpu_learning/run.py says each step).
# Run it again after a kill: finished steps are skipped, an interrupted one resumes.
#   bash experiments/cpu_learning/run.sh [--config experiments/cpu_learning/config.yaml]
set -euo pipefail
cd "$(dirname "$0")/../.."
exec python3 experiments/cpu_learning/run.py "$@"
