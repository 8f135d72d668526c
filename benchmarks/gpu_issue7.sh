#!/usr/bin/env bash
# Issue 7's GPU figures: bench of SimCLR and BYOL ResNet-18 on CIFAR-10 and SimCLR ResNet-50 at 224 px,
# torch.compile, host syncs per step, and fp32 vs bf16 kNN. Writes JSON records and logs to $OUT (default
# output/gpu_issue7). SMOKE=1 runs every command tiny, on CPU. Each bench stage is a fresh process
# (BENCH_TIMEOUT seconds per bench, default 200). On the H200 a stage with 8 loader workers takes about 90 s
# end to end (start, workers, model, first batches), one with crops batched on the GPU 15-30 s. On the second
# lease (RESULTS.md) the parts ran as four commands, 446 + 147 + 64 s in all, within one 15-minute lease
# including its start. ONLY=REGEX runs the parts whose names match (bench names, host-syncs, knn), in the
# order below.
#   SELFSUP_DATA=../shared/data bash benchmarks/gpu_issue7.sh
#   SELFSUP_DATA=../shared/data ONLY='simclr-r18-b512$|workers' bash benchmarks/gpu_issue7.sh
set -uo pipefail
OUT=${OUT:-output/gpu_issue7}
mkdir -p "$OUT"
PY=${PY:-python3}
PEAK=${PEAK_TFLOPS:-989}  # dense bf16 TFLOP/s of an H100/H200 SXM (datasheet): the MFU denominator
if [ "${SMOKE:-0}" = 1 ]; then
  S="steps=1 warmup=1"; SMALL="device=cpu data.subset=512 trainer.batch_size=32 views.crop_size=32"; B512=$SMALL; B128=$SMALL
  KNN="epochs=1 seeds=0 data.subset=64 trainer.batch_size=32 eval.train_subset=256"; SYNC_STEPS=2
else
  S="steps=8 warmup=8"; B512="trainer.batch_size=512"; B128="trainer.batch_size=128"
  KNN="epochs=10 seeds=0,1 trainer.batch_size=256"; SYNC_STEPS=40
fi
wanted() { [[ -z "${ONLY:-}" || "$1" =~ $ONLY ]]; }
bench() { local name=$1; shift; wanted "$name" || return 0; echo "== bench $name"; timeout ${BENCH_TIMEOUT:-200} $PY -m selfsup.cli bench data=cifar10 peak_tflops=$PEAK $S \
  out="$OUT/$name.json" "$@" 2>&1 | grep -v -e Warning -e "Tensor Cores" -e warnings.warn; }
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>/dev/null
$PY -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
# in order of what a short lease should measure first (ONLY=REGEX picks parts)
bench simclr-r18-b512 stages=[compute,loader,full] variants=[bf16] $B512
# the same data path with crops per image in 8 loader workers instead of batched on the GPU
bench simclr-r18-b512-workers data.crop_on_device=false stages=[loader,full] variants=[bf16] $B512
bench byol-r18-b512 method=byol stages=[compute,full] variants=[bf16] $B512
bench simclr-r50-224-b128 backbone=resnet50 views.crop_size=224 stages=[compute,loader,full] variants=[bf16] $B128
bench simclr-r18-b512-compile trainer.compile=true stages=[compute] variants=[bf16] $B512
# the compute limit is the best of the three variants: the two without bf16, for completeness
bench simclr-r18-b512-fp32 stages=[compute] variants=[fp32,channels_last] $B512
if wanted host-syncs; then
echo "== host syncs"
timeout 120 $PY benchmarks/host_syncs.py steps=$SYNC_STEPS trainer.log_every=20 $B512 2>&1 | grep -v Warning | tail -15 \
  | tee "$OUT/host_syncs.txt"
fi
if wanted knn; then
echo "== fp32 vs bf16 kNN"
timeout 300 $PY benchmarks/precision_knn.py $KNN out=/tmp/precision_knn 2>&1 | grep -v Warning | tee "$OUT/precision_knn.txt" \
  | grep -E '^\||^\{'
fi
