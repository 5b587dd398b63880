#!/usr/bin/env bash
# Stages what benchmarks/gpu_session.sh needs on a GPU machine that reaches no network into one
# ignored folder of the checkout, .gpu/ (about 31 MB): Fashion-MNIST's four IDX files and the
# lightly wheel (its BYOL modules import none of its other dependencies, so it installs alone).
# Then a GPU call runs, with .gpu carried beside the working tree:
#   FMNIST=.gpu/fashion-mnist WHEELS=.gpu/wheels OUT=$OUT benchmarks/gpu_session.sh
# and DRY=1 with the same variables rehearses it on a CPU first.
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=${FMNIST:-/usr/share/datasets/fashion-mnist}
PIP=${PIP:-.venv/bin/pip}
mkdir -p .gpu/fashion-mnist .gpu/wheels
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >>.git/info/exclude
for f in train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz \
  t10k-labels-idx1-ubyte.gz; do
  [ -f "$SRC/$f" ] || { echo "gpu_stage: $SRC/$f is missing; install dataset-fashion-mnist or set FMNIST=DIR" >&2; exit 1; }
  cp "$SRC/$f" .gpu/fashion-mnist/
done
"$PIP" download -q --disable-pip-version-check --no-deps --only-binary=:all: \
  --dest .gpu/wheels 'lightly==1.6.0'
du -sh .gpu
