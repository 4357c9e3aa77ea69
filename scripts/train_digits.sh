#!/usr/bin/env bash
# Retrain everything in checkpoints/digits/ from scratch, on CPU, with the project's own configs,
# then install the results there (training itself only ever writes under outputs/).
# Each step prints how long it took; the README gives the times measured here.
#   bash scripts/train_digits.sh            # the pixel tier: prior, classifier, CSEs
#   bash scripts/train_digits.sh cses       # only its CSEs (needs checkpoints/digits/prior)
#   bash scripts/train_digits.sh latent     # the latent tier: autoencoder, latent prior, CSEs
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

fit() {  # fit RUN_FOLDER CONFIG... [-- OVERRIDES...]: a fresh run into RUN_FOLDER
  local run=$1; shift
  rm -rf "$run"
  python -m cse fit "$@" --trainer.default_root_dir="$run"
}

install() {  # install FROM TO: replace a shipped checkpoint by a new one
  rm -rf "$2"
  mkdir -p "$(dirname "$2")"
  cp -r "$1" "$2"
}

digits=configs/digits
if [ "${1:-all}" = latent ]; then  # the latent tier: autoencoder, latent prior, CSEs
  latent=configs/digits_latent
  step "digits at 32 px" python -m data_tools digits --out data/digits32 --size 32
  step "latent: autoencoder" fit outputs/digits_latent/train_vae --config $latent/train_vae.yaml
  step "latent: prior" fit outputs/digits_latent/train_prior --config $latent/train_prior.yaml
  install outputs/digits_latent/train_prior/prior checkpoints/digits_latent/prior
  for op in sr8 inpaint gblur nlblur; do
    step "latent $op CSE (100 digits)" fit outputs/digits_latent/$op/train_cse \
      --config $latent/$op/task.yaml --config $digits/train_cse.yaml
    install outputs/digits_latent/$op/train_cse/controlnet checkpoints/digits_latent/${op}_cse
    step "latent $op reference CSE (all train digits)" fit outputs/digits_latent/$op/train_cse+reference \
      --config $latent/$op/task.yaml --config $digits/train_cse.yaml --config $digits/reference.yaml
    install "outputs/digits_latent/$op/train_cse+reference/controlnet" checkpoints/digits_latent/${op}_cse_full
  done
  exit 0
fi
if [ "${1:-all}" = all ]; then
  step "digits shards" python -m data_tools digits --out data/digits
  step "prior" fit outputs/digits/train_prior --config $digits/train_prior.yaml
  install outputs/digits/train_prior/prior checkpoints/digits/prior
  step "classifier" fit outputs/digits/train_classifier --config $digits/train_classifier.yaml
  install outputs/digits/train_classifier/classifier.safetensors checkpoints/digits/classifier.safetensors
fi
for op in sr4 inpaint gblur nlblur; do
  step "$op CSE (100 digits)" fit outputs/digits/$op/train_cse --config $digits/$op/task.yaml --config $digits/train_cse.yaml
  install outputs/digits/$op/train_cse/controlnet checkpoints/digits/${op}_cse
  step "$op reference CSE (all train digits)" fit outputs/digits/$op/train_cse+reference \
    --config $digits/$op/task.yaml --config $digits/train_cse.yaml --config $digits/reference.yaml
  install "outputs/digits/$op/train_cse+reference/controlnet" checkpoints/digits/${op}_cse_full
done
for count in 25 50; do
  step "sr4 CSE ($count digits)" fit outputs/digits/sr4/train_cse_$count \
    --config $digits/sr4/task.yaml --config $digits/train_cse.yaml --data.init_args.train_count=$count
  install outputs/digits/sr4/train_cse_$count/controlnet checkpoints/digits/sr4_cse_$count
done
