#!/usr/bin/env bash
# The GPU checks as one prepared script (for a session that is lent a GPU):
#
#     bash benchmarks/gpu_check.sh [OUT_DIR]        # default OUT_DIR: gpu-check
#
# 1. the CUDA tests (twins equal on CPU and CUDA, no host sync per env or rollout step,
#    a training run on CUDA, memory cores equal on CPU and CUDA);
# 2. env throughput of the batched twin up to 65,536 envs;
# 3. training throughput at 4,096 and 16,384 envs beside sb3-contrib's RecurrentPPO;
# 4. the memory cores' step and sequence times.
# Each part's output goes to OUT_DIR as it runs. The project's dependencies must be
# importable (`make test` installs them; on a machine without network, carry wheels).
set -euo pipefail
out=${1:-gpu-check}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
python - <<'PY' | tee "$out/device.txt"
import torch
print(torch.__version__, torch.cuda.get_device_name(), torch.version.cuda)
PY
python -m pytest -q -rs tests/envs/test_env_cuda.py tests/agents/test_cuda.py \
    tests/memory/test_state_and_factory.py 2>&1 | tee "$out/cuda_tests.txt"
python benchmarks/env_throughput.py --device cuda 2>&1 | tee "$out/env_throughput.txt"
python benchmarks/train_throughput.py --device cuda --lethe-configs 4096x32/8,16384x32/8 \
    --lethe-steps 2097152 --sb3-steps 2048 2>&1 | tee "$out/train_throughput.txt"
python benchmarks/memory_scaling.py --device cuda --repeats 3 2>&1 | tee "$out/memory_scaling.txt"
