#!/usr/bin/env bash
# GPU smoke check: bf16 / LoRA steps move the weights, gradient checkpointing saves memory, sampling and training
# log-probs agree, a stage I + II run checkpoints and resumes, phase timings; the vLLM engine too when installed.
# About 5 minutes on one large GPU. Needs torch (CUDA), transformers, peft, accelerate and this project
# (`pip install --no-deps -e .` where the stack is preinstalled); no Docker (the local sandbox grades), no network.
#
#   bash scripts/gpu_smoke.sh [--model HF_CHECKPOINT_DIR] [--out DIR]
#
# Prints PASS / FAIL per check; exits 1 if one failed, 2 at once on a machine without a CUDA GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v nvidia-smi >/dev/null 2>&1 && ! compgen -G "/dev/nvidia[0-9]*" >/dev/null; then
    echo "gpu_smoke: needs a CUDA GPU (no nvidia-smi, no /dev/nvidia*); nothing was run" >&2
    exit 2
fi
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec python3 -m score_code.train.gpu_smoke "$@"
