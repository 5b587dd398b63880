#!/usr/bin/env bash
# Sets up a fresh machine: the Fashion-MNIST Debian package (where apt exists and we are root),
# a virtual environment in .venv, and this package with its test tools.
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ] \
    && [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  apt-get install -y -q dataset-fashion-mnist >/dev/null \
    || { apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null; } \
    || echo "setup: could not install dataset-fashion-mnist; the Fashion-MNIST default needs it." >&2
fi
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
