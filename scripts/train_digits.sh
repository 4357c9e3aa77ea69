#!/usr/bin/env bash
# Retrain everything in checkpoints/digits/ from scratch, on CPU, with the project's own configs,
# then install the results there (training itself only ever writes under outputs/).
# Each step prints how long it took; the README gives the times measured here.
#   bash scripts/train_digits.sh            # the pixel tier: prior, classifier, CSEs
#   bash scripts/train_digits.sh cses       # only its CSEs (needs checkpoints/digits/prior)
#   bash scripts/train_digits.sh latent     # the latent tier: autoencoder, latent prior, CSEs
#   bash scripts/train_digits.sh selfgen    # Table 6's CSEs from 100 digits each prior generated itself
#   bash scripts/train_digits.sh steps      # Table 7's sr4 CSEs after 125/250/500 steps (outputs/ only)
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
if [ "${1:-all}" = selfgen ]; then  # Table 6's self-generated rows: 100 unconditional samples of each prior
  # Each image is drawn from its own seed; the batch size (as the shipped ones were made) only
  # changes the floating-point rounding.
  for tier_op_batch in digits/sr4/8 digits_latent/sr8/100; do
    tier=${tier_op_batch%%/*} rest=${tier_op_batch#*/}
    op=${rest%/*} batch=${rest#*/} tier_op=$tier/${rest%/*}
    step "$tier: 100 self-generated digits" python -m data_tools selfgen --prior checkpoints/$tier/prior \
      --count 100 --batch-size $batch --out outputs/selfgen/$tier --overwrite
    step "$tier $op CSE (100 self-generated digits)" fit outputs/$tier/$op/train_cse_selfgen \
      --config configs/$tier_op/task.yaml --config $digits/train_cse.yaml --data.init_args.train=outputs/selfgen/$tier/shards
    install outputs/$tier/$op/train_cse_selfgen/controlnet checkpoints/$tier/${op}_cse_selfgen
  done
  exit 0
fi
if [ "${1:-all}" = steps ]; then  # Table 7: the sr4 CSE after 125, 250 and 500 of the recipe's 1000 steps
  # The recipe's learning rate is constant and its data order and draws seeded by (seed, epoch, sample
  # id), so a fresh run of --trainer.max_steps=N is the recipe's run after N steps. Each N is its own
  # fresh run: resuming a run that stopped at max_steps (--ckpt_path=last) starts a new epoch, skipping
  # the rest of the one it stopped in, so it would not be the recipe's run. Not shipped:
  # outputs/digits/sr4/cse_steps<N>/, each with its training seconds (the 1000-step one is sr4_cse).
  for steps in 125 250 500; do
    start=$SECONDS
    step "sr4 CSE, $steps steps" fit outputs/digits/sr4/train_cse_steps$steps \
      --config $digits/sr4/task.yaml --config $digits/train_cse.yaml --trainer.max_steps=$steps
    seconds=$((SECONDS - start))
    install outputs/digits/sr4/train_cse_steps$steps/controlnet outputs/digits/sr4/cse_steps$steps
    echo $seconds > outputs/digits/sr4/cse_steps$steps/train_seconds.txt
  done
  exit 0
fi
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
