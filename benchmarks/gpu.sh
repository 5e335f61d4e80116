#!/usr/bin/env bash
# GPU benchmark, ready for the day a GPU is lent (no network needed): random-weight models of SmolLM2's and
# t5-base's shapes, step time, tokens/s, MFU against the GPU's bf16 peak, peak memory with and without
# gradient checkpointing, host syncs per step; then a 2-rank torchrun when the machine has two GPUs.
#   benchmarks/gpu.sh                         # both shapes, 20 steps
#   benchmarks/gpu.sh --models t5-base-shape --steps 10
# Results: $OUT (default benchmarks/results/gpu/) single.json and ddp.json.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for c in .venv/bin/python python3 python; do
    if command -v "$c" >/dev/null 2>&1 && "$c" -c "import torch, transformers" 2>/dev/null; then PY=$c; break; fi
  done
fi
[ -n "$PY" ] || { echo "gpu.sh: no python with torch and transformers; run scripts/setup.sh or set PYTHON=" >&2; exit 2; }
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT=${OUT:-benchmarks/results/gpu}
mkdir -p "$OUT"
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 3)" \
  || { echo "gpu.sh: CUDA is not available to $PY (torch $("$PY" -c 'import torch; print(torch.__version__)'))" >&2; exit 3; }
"$PY" -c "import torch; [print(f'GPU {i}: {torch.cuda.get_device_name(i)}') for i in range(torch.cuda.device_count())]"
"$PY" -m benchmarks.gpu --out "$OUT/single.json" "$@"
N=$("$PY" -c "import torch; print(torch.cuda.device_count())")
if [ "$N" -ge 2 ]; then
  "$PY" -m torch.distributed.run --standalone --nproc_per_node 2 -m benchmarks.gpu --ddp --out "$OUT/ddp.json" "$@"
else
  echo "one GPU: the 2-rank torchrun run is skipped"
fi
