#!/usr/bin/env bash
# The GPU measurements issues 20 and 23 wait for, as parts of one script so that a short lease runs the most
# important first (ONLY=REGEX picks parts by name, in the order below). Logs, JSON records, kNN results and the
# RESULTS.md sections the benchmark scripts write go to $OUT (default output/gpu_issues20_23). SMOKE=1 runs every
# part but long-fmnist tiny on the CPU (a check of the script, not a measurement).
#
#   vit-bench      issue 23: ViT-S/16 at 224 px, bf16 + flash attention (timm's fused SDPA): images/s, MFU,
#                  peak memory of the compute limit and the full loop, for SimCLR, MAE, MoCo v3; SimCLR compiled
#   vit-zoo        issue 23: MAE, MoCo v3 and DINO (ViT recipe) on ViT-Tiny/4, CIFAR-10 subset, ZOO_EPOCHS epochs,
#                  kNN against the random-init ViT (benchmarks/method_zoo.py)
#   long-cifar     issue 20: SimCLR and BYOL, selfsup against lightly 1.6, LONG_EPOCHS epochs on the CIFAR-10
#                  subset, kNN every SNAPSHOTS epochs against training-loop seconds (time to accuracy)
#   long-fmnist    the same on full Fashion-MNIST, FMNIST_EPOCHS epochs (60,000 images per epoch)
#
# On the device machine (lightly is not installed there: carry benchmarks/.lightly, made by the pip command in
# benchmarks/vs_lightly_accuracy.py's docstring):
#   SELFSUP_DATA=../shared/data ONLY='vit-bench|vit-zoo' bash benchmarks/gpu_issues20_23.sh
#   SELFSUP_DATA=../shared/data ONLY=long-cifar bash benchmarks/gpu_issues20_23.sh
# Sizes on an H200 (issue 7's figures): SimCLR ResNet-18 runs ~29k images/s at its compute limit, so 200 epochs
# of the 5,085-image subset are ~40 s of selfsup's loop; lightly's per-image PIL views in 14 workers are the
# slower side. Each part is bounded by PART_TIMEOUT seconds (default 420).
set -uo pipefail
OUT=${OUT:-output/gpu_issues20_23}
mkdir -p "$OUT"
PY=${PY:-python3}
export PYTHONPATH=${PYTHONPATH:-.}
export SELFSUP_RESULTS=$OUT/RESULTS.md  # the sections this run measured, to paste into benchmarks/RESULTS.md
PEAK=${PEAK_TFLOPS:-989}  # dense bf16 TFLOP/s of an H100/H200 SXM (datasheet): the MFU denominator
if [ "${SMOKE:-0}" = 1 ]; then
  S="steps=1 warmup=1"; VIT="device=cpu data.subset=64 trainer.batch_size=8 views.crop_size=32"
  ZOO="data.subset=64 trainer.epochs=1 trainer.batch_size=32 device=cpu"
  LONG="epochs=2 subset=256 batch=64 snapshots=1 device=cpu workers=1"; FMNIST="epochs=1 subset=256 batch=64 device=cpu workers=1"
  DEV=cpu; ONLY=${ONLY:-vit|long-cifar}  # Fashion-MNIST's 70,000-image kNN bank is minutes of CPU: asked for only
else
  S="steps=8 warmup=8"; VIT="trainer.batch_size=128 views.crop_size=224"
  ZOO="trainer.epochs=${ZOO_EPOCHS:-100} trainer.batch_size=256"
  LONG="epochs=${LONG_EPOCHS:-200} subset=all batch=512 snapshots=${SNAPSHOTS:-20} device=cuda workers=${WORKERS:-14}"
  FMNIST="epochs=${FMNIST_EPOCHS:-20} subset=all batch=512 snapshots=${FMNIST_SNAPSHOTS:-2} device=cuda workers=${WORKERS:-14}"
  DEV=cuda
fi
wanted() { [[ -z "${ONLY:-}" || "$1" =~ $ONLY ]]; }
part() { local name=$1; shift; wanted "$name" || return 0; echo "== $name"; timeout ${PART_TIMEOUT:-420} "$@" 2>&1 \
  | grep -v -e Warning -e "Tensor Cores" -e warnings.warn | tee "$OUT/$name.log" | tail -40; }
BENCH="$PY -m selfsup.cli bench data=cifar10 peak_tflops=$PEAK $S backbone=vit_small backbone.patch_size=16"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>/dev/null
$PY -c "import torch, torchvision, timm; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'timm', timm.__version__)"

part vit-bench-simclr $BENCH method=simclr stages=[compute,full] variants=[bf16] $VIT out="$OUT/simclr-vits16.json"
part vit-bench-mae $BENCH method=mae stages=[compute,full] variants=[bf16] $VIT out="$OUT/mae-vits16.json"
part vit-bench-moco_v3 $BENCH method=moco_v3 stages=[compute,full] variants=[bf16] $VIT out="$OUT/moco_v3-vits16.json"
part vit-bench-compile $BENCH method=simclr trainer.compile=true stages=[compute] variants=[bf16] $VIT \
  out="$OUT/simclr-vits16-compile.json"
# 4-px patches at 32 px (64 tokens), each method's preset otherwise; the random init is the first run's epoch 0
part vit-zoo $PY benchmarks/method_zoo.py methods=mae,moco_v3,dino_vit runs="$OUT/zoo" -- backbone=vit_tiny device=$DEV $ZOO
part long-cifar $PY benchmarks/vs_lightly_accuracy.py methods=simclr,byol seeds=0 data=cifar10 $LONG \
  out="$OUT/long" record=true
part long-fmnist $PY benchmarks/vs_lightly_accuracy.py methods=simclr,byol seeds=0 data=fashion_mnist $FMNIST \
  out="$OUT/long" record=true
# checkpoints are deleted (large); the kNN results, logs and run configs come back
find "$OUT" -name "*.pt" -delete -o -name "*.pt.sha256" -delete
exit 0
