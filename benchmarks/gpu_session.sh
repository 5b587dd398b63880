#!/usr/bin/env bash
# Everything measured on a lent CUDA GPU, in one call, most important first; each part has its own
# time limit so that one that fails or runs long never costs the others. Needs, beside the repo:
#   $FMNIST      a folder with Fashion-MNIST's four IDX .gz files
#   $WHEELS      a folder with the lightly wheel (for the throughput comparison)
#   $OUT         where the logs and a tarball of the results (no weights) are written
#   $DRY=1       a dry run of the script on the CPU with tiny settings (no GPU needed)
# Usage: FMNIST=... WHEELS=... OUT=... benchmarks/gpu_session.sh (benchmarks/gpu_stage.sh stages
# the first two in .gpu/ for a machine without network)
set -uo pipefail
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$WHEELS"/*.whl
export PYTHONPATH="$PWD:/tmp/site"
DEVICE=cuda BENCH=(--dataset fashion-mnist --data-dir "$FMNIST")
# On a GPU the ablations afford the main job's full recipe (full-width ResNet-18, 936 steps)
# rather than the CPU budget of byol/experiments/ablations.toml's [presets.fashion-mnist].
ABL=(--set backbone=resnet18 --set train_subset=30000 --set epochs=4 --set schedule_epochs=8)
FM=(--set "data_dir=$FMNIST")
if [ "${DRY:-0}" = 1 ]; then
  DEVICE=cpu BENCH+=(--device cpu --images 256 --steps 1 --rounds 1 --hidden-dim 64 --lightly-workers 1 --batch-size 32)
  for s in backbone=resnet18-narrow train_subset=512 epochs=1 batch_size=64 knn_bank_subset=512 \
    projector_hidden_dim=64 predictor_hidden_dim=64 threads=1; do
    FM+=(--set "$s")
  done
  ABL=(--set eval_train_images=512 --set backbone=resnet18-narrow)
fi
FM+=(--set "device=$DEVICE")
RUNS=/tmp/gpu-runs
mkdir -p "$RUNS" "$OUT"
t0=$(date +%s)
stage() { echo "=== $(($(date +%s) - t0)) s: $*"; }
left() {  # seconds this stage may take: its own cap, and never past 570 s from the start
  local rest=$((570 - $(date +%s) + t0))
  echo $((rest < $1 ? (rest > 5 ? rest : 5) : $1))
}
keep() {  # the results without weights or checkpoints, into $OUT
  tar czf "$OUT/results.tar.gz" -C "$RUNS" --exclude='*.pt' --exclude='*.safetensors' \
    --exclude='*.npy' --exclude='events.out*' . 2>/dev/null
}

stage "device"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv,noheader
python3 -c "import torch, torchvision; print('torch', torch.__version__, torchvision.__version__)"

stage "main job on the GPU (the default preset, bf16)"
timeout $(left 150) python3 -m byol pretrain --run-dir "$RUNS/main-job" "${FM[@]}" \
  >"$OUT/main-job.log" 2>&1
tr "\r" "\n" <"$OUT/main-job.log" | tail -6
[ -f "$RUNS/main-job/summary.json" ] || { stage "main job failed: stopping"; keep; exit 1; }
keep

stage "ablations: target and predictor, 3 seeds"
timeout $(left 260) python3 -m byol ablate target --jobs 6 --set seeds=3 "${FM[@]}" "${ABL[@]}" --out "$RUNS/ablations" \
  --quiet >"$OUT/ablate.log" 2>&1
timeout $(left 60) python3 -m byol ablate predictor --jobs 3 --set seeds=3 "${FM[@]}" "${ABL[@]}" \
  --out "$RUNS/ablations" --quiet >>"$OUT/ablate.log" 2>&1
tail -3 "$OUT/ablate.log"
keep

# Fashion-MNIST pixels, not the CIFAR-10 JPEG copy: decoding its 60k JPEGs would cost minutes of
# the lease, and both pipelines read the same uint8 pixels from memory either way.
stage "throughput against lightly: 32 px ResNet-18 (CIFAR stem), 224 px ResNet-50"
timeout "$(left 90)" python3 benchmarks/gpu.py --image-size 32 --backbone resnet18 --cifar-stem \
  --batch-size 512 "${BENCH[@]}" >"$OUT/bench.log" 2>&1
timeout "$(left 90)" python3 benchmarks/gpu.py --image-size 224 --backbone resnet50 --images 4000 \
  --batch-size 128 --steps 10 "${BENCH[@]}" >>"$OUT/bench.log" 2>&1
grep -v -i warn "$OUT/bench.log" | tail -14

stage "ablation: why tau = 0 does not collapse, 3 seeds"
timeout $(left 150) python3 -m byol ablate tau-zero --jobs 6 --set seeds=3 "${FM[@]}" "${ABL[@]}" \
  --out "$RUNS/ablations" --quiet >>"$OUT/ablate.log" 2>&1
keep

stage "ablation: batch size 256 -> 32, BYOL / SimCLR / Barlow Twins, 3 seeds"
timeout $(left 560) python3 -m byol ablate batch-size --jobs 8 --set seeds=3 \
  "${FM[@]}" "${ABL[@]}" --out "$RUNS/ablations" --quiet >>"$OUT/ablate.log" 2>&1
keep
stage "done"
for f in "$RUNS"/ablations/*/table.md; do echo "== $f"; head -40 "$f"; done 2>/dev/null | tail -60
