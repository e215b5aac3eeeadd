#!/usr/bin/env bash
# Issue 20's GPU check, on a machine with an NVIDIA GPU and the project installed: the paper-size
# throughput benchmark with the fused loop on the GPU against the RL loop with `maskgan train`'s default
# resources (learner, D and sampling on the CPU: what a user gets without resources.* overrides), with the
# learner and D on the GPU (float32; bfloat16; bfloat16 with 1024 windows an iteration), and with the
# sampling on the GPU too, in one remote env runner; then the test suite, which must pass there too.
# PYTHON names the interpreter (default: python).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
status=0
# The learner in the driver reserves no GPU from Ray; the D actor and a GPU env runner share the one GPU.
ON_GPU="resources.num_gpus_per_learner=1 resources.disc_num_gpus=1"
# The layout `maskgan train` suggests on a node with an unused GPU (resources.ONE_GPU_LAYOUT).
ONE_GPU_LAYOUT=$("$PY" -c "from maskgan_rl.resources import ONE_GPU_LAYOUT; print(' '.join(ONE_GPU_LAYOUT))") || exit 1
for variant in "cpu-defaults" "f32 $ON_GPU" "bf16 $ON_GPU resources.precision=bf16-mixed" \
    "bf16-1024w $ON_GPU resources.precision=bf16-mixed gan.episodes_per_iteration=1024" \
    "f32-gpu-runner $ONE_GPU_LAYOUT"; do
    set -- $variant
    name=$1
    shift
    "$PY" benchmarks/throughput.py --sizes paper --algos reinforce --runners default --envs default --warmup 1 --iterations 3 \
        --device cuda --out "benchmarks/results/throughput-paper-gpu-$name" "$@" || status=1
done
CI=true "$PY" -m pytest -q || status=1
exit $status
