#!/usr/bin/env bash
# Issue 20's GPU check, on a machine with an NVIDIA GPU and the project installed: the paper-size
# throughput benchmark with the learner and D on the GPU (float32; bfloat16; bfloat16 with 1024 windows
# an iteration; float32 with the sampling on the GPU too, in one remote env runner), then the test suite,
# which must pass there too. PYTHON names the interpreter (default: python).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
status=0
# The learner in the driver reserves no GPU from Ray; the D actor and a GPU env runner share the one GPU.
for variant in "f32" "bf16 resources.precision=bf16-mixed" "bf16-1024w resources.precision=bf16-mixed gan.episodes_per_iteration=1024" \
    "f32-gpu-runner resources.num_env_runners=1 resources.num_gpus_per_env_runner=0.5 resources.disc_num_gpus=0.5"; do
    set -- $variant
    name=$1
    shift
    "$PY" benchmarks/throughput.py --sizes paper --algos reinforce --runners default --envs default --warmup 1 --iterations 3 \
        --device cuda --out "benchmarks/results/throughput-paper-gpu-$name" \
        resources.num_gpus_per_learner=1 resources.disc_num_gpus=1 "$@" || status=1
done
CI=true "$PY" -m pytest -q || status=1
exit $status
