#!/usr/bin/env bash
# Retrain everything in checkpoints/digits/ from scratch, on CPU, with the project's own configs.
# Each step prints how long it took; the README gives the times measured here.
#   bash scripts/train_digits.sh            # everything
#   bash scripts/train_digits.sh after-prior   # step sizes and CSEs (needs checkpoints/digits/prior)
#   bash scripts/train_digits.sh cses          # only the CSEs
set -euo pipefail
cd "$(dirname "$0")/.."
export WANDB_MODE=offline

step() {  # step NAME COMMAND...
  local name=$1; shift
  local start=$SECONDS
  echo "== $name"
  "$@"
  echo "== $name took $((SECONDS - start)) s"
}

if [ "${1:-all}" = all ]; then
  step "digits shards" python -m data_tools digits --out data/digits
  step "prior" python -m cse fit --config configs/digits/prior.yaml
  step "classifier" python -m cse fit --config configs/digits/classifier.yaml
fi
if [ "${1:-all}" != cses ]; then
  step "step sizes (train digits)" python scripts/tune_digits.py
  step "predict configs" python scripts/make_digits_configs.py
fi
for config in sr4_cse inpaint_cse gblur_cse sr4_cse_full sr4_cse_25 sr4_cse_50 inpaint_cse_full gblur_cse_full; do
  step "$config" python -m cse fit --config "configs/digits/$config.yaml"
done
