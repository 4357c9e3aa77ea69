#!/usr/bin/env bash
# The GPU check of docs/performance.md, as one script: SD2-base at 512² with random weights, bf16.
#   bash scripts/gpu_check.sh            # on a GPU machine: about 6-8 minutes on an H200
#   bash scripts/gpu_check.sh --tiny     # the same steps at test size on a CPU (a dry run)
# PYTHON=.venv/bin/python picks the interpreter (default: python3).
# Writes JSON per measurement and table.md into $OUT (or outputs/gpu_check). Needs PyTorch and, if
# missing, wheels of diffusers and importlib_metadata in .whl/ (installed with --no-deps into /tmp/site).
set -euo pipefail
python=${PYTHON:-python3}  # the interpreter with PyTorch
cd "$(dirname "$0")/.."
out=${OUT:-outputs/gpu_check}
mkdir -p "$out"
if ! "$python" -c "import diffusers" 2>/dev/null && compgen -G ".whl/*.whl" >/dev/null; then
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
if [ "${1:-}" = "--tiny" ]; then
  scale=(--scale tiny --device cpu --dtype float32); big=4; huge=6; steps=1
else
  scale=(--scale sd2 --device cuda --dtype bfloat16 --cudnn-benchmark); big=32; huge=48; steps=2
fi
bench() { "$python" scripts/benchmark_sampling.py "${scale[@]}" --steps "$steps" "$@"; }
bench --batch 16 --samplers dps dmap_full --json "$out/eager_b16.json"
bench --batch "$big" --samplers dps --json "$out/eager_big.json"
bench --batch "$huge" --samplers dps --checkpointing --json "$out/eager_huge.json"  # 48 x 3.5 GiB would not fit
bench --batch 16 --samplers dps --profile --json "$out/profile_eager_b16.json"
bench --batch 16 --samplers dps dmap_full --compile --decoder-attention matmul --json "$out/fast_b16.json"
bench --batch 16 --samplers dps --compile --decoder-attention matmul --profile --json "$out/profile_fast_b16.json"
bench --compare --compare-steps 5 --json "$out/compare.json"
"$python" scripts/gpu_table.py "$out" | tee "$out/table.md"
