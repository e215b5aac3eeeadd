#!/usr/bin/env bash
# One-time set-up, safe to re-run: a virtual environment in .venv with the CPU build of torch and
# maskgan-rl (editable) with its test tools, and Chromium for the web page's test. On a CUDA machine,
# install the torch build you want first.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# Every version comes from launch/constraints.txt (the tested set; launch/pin.py writes it).
# torch first, at that version: an unpinned torch pulls a multi-GB CUDA build on machines without a GPU.
# Where the default index serves the CUDA build (Linux PyPI), TORCH_INDEX_URL picks another, e.g.
# TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu for the CPU one.
TORCH_PIN=$(grep -E '^torch==' launch/constraints.txt)
.venv/bin/python -m pip install --quiet "$TORCH_PIN" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
.venv/bin/python -m pip install --quiet -c launch/constraints.txt -e ".[dev]"
# The test of `maskgan serve`'s page drives a real headless Chromium: Debian's packages, installed
# here when missing and we may (root, apt); elsewhere that one test is skipped, saying why.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
    else
        echo "note: chromium and chromium-driver are not installed (the web page test is skipped): as root, apt-get install chromium chromium-driver" >&2
    fi
fi
echo "maskgan-rl is installed in .venv ($(.venv/bin/python -c 'import torch, ray; print(f"torch {torch.__version__}, ray {ray.__version__}")'))"
