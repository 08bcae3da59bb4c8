#!/usr/bin/env bash
# Rebuild the demo model from scratch on a CPU: fetch the training photos (other packages' wheels; scikit-image is
# held out), train the frozen prior (block-transform autoencoder, then UNet), then DiffEIC (stage 1, variable rate,
# control module for the few-step decode, chroma-weighted fine-tune, one-step decoder), and package it into
# diffeic/data/pretrained/demo-trained (+ demo-backbone).  Seeded (seed_everything 231 and 232).
#
#   bash scripts/train_demo.sh        # re-run to resume after an interruption (measured: 95 min of jobs on a shared
#                                     # 2-core VM, 588 + 1081 + 837 + 1071 + 810 + 688 + 629 s for demo2_vae, demo2_unet,
#                                     # demo2_stage1, demo2_vr, demo2_control, demo2_chroma, demo2_onestep)
#
# Each job resumes from its last Lightning checkpoint if one exists and is skipped once it has finished
# (runs/<job>/DONE).  Wall time per job is appended to runs/train_demo_times.tsv.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
mkdir -p runs
[ -d data/demo_photos ] || python scripts/fetch_demo_photos.py

bash scripts/run_jobs.sh runs/train_demo_times.tsv demo2_vae demo2_unet demo2_stage1 demo2_vr demo2_control demo2_chroma demo2_onestep

python scripts/package_tiny.py --recipe demo --backbone runs/demo2_unet/export --backbone-name demo-backbone \
  --model demo-trained=runs/demo2_onestep/export --times runs/train_demo_times.tsv
