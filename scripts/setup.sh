#!/usr/bin/env bash
# Sets up a fresh machine: the Fashion-MNIST Debian package and chromium (for the report's
# headless-browser test) where apt exists and we are root, a virtual environment in .venv, and
# this package with its test tools and the timm, onnx, shards and hf extras (~45 MB, ~110 MB, ~1 MB
# and ~250 MB with pyarrow and pandas; seconds to install, so their tests run too); mlflow
# (~680 MB) and wandb are left to those who use them.
set -euo pipefail
cd "$(dirname "$0")/.."
apt_install() {  # quiet, and never fatal: each package only enables some runs and tests
  apt-get install -y -q "$1" >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q "$1" >/dev/null 2>&1; } \
    || echo "setup: could not install $1; $2" >&2
}
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] \
    || apt_install dataset-fashion-mnist "the Fashion-MNIST default needs it."
  command -v chromium >/dev/null 2>&1 \
    || apt_install chromium "the report's browser test will be skipped."
fi
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e '.[test,timm,onnx,shards,hf]'
