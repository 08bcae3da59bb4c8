#!/usr/bin/env bash
# Rebuild the demo model from scratch on a CPU: fetch the training photos (other packages' wheels; scikit-image is
# held out), train the frozen prior (block-transform autoencoder, then UNet), then DiffEIC (one variable-rate job),
# and package it into diffeic/data/pretrained/demo-trained (+ demo-backbone).  Seeded (seed_everything 231).
#
#   bash scripts/train_demo.sh        # about an hour on 2 cores; re-run to resume after an interruption
#
# Each job resumes from its last Lightning checkpoint if one exists and is skipped once it has finished
# (runs/<job>/DONE).  Wall time per job is appended to runs/train_demo_times.tsv.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
mkdir -p runs
[ -d data/demo_photos ] || python scripts/fetch_demo_photos.py

for job in demo2_vae demo2_unet demo2_vr; do
  if [ -f "runs/$job/DONE" ]; then echo "== $job: done already"; continue; fi
  resume=()
  last=$(ls -t runs/"$job"/lightning_logs/version_*/checkpoints/last.ckpt 2>/dev/null | head -n 1 || true)
  if [ -n "$last" ]; then resume=(--ckpt_path "$last"); echo "== $job: resuming from $last"; else echo "== $job"; fi
  start=$(date +%s)
  python train.py fit --config "configs/$job.yaml" "${resume[@]}"
  printf '%s\t%s\n' "$job" "$(( $(date +%s) - start ))" >> runs/train_demo_times.tsv
  touch "runs/$job/DONE"
done

python scripts/package_tiny.py --backbone runs/demo2_unet/export --backbone-name demo-backbone \
  --model demo-trained=runs/demo2_vr/export --times runs/train_demo_times.tsv
