#!/usr/bin/env bash
# Rebuild the shipped demo model from scratch on a CPU: the tiny prior (VAE, then UNet), DiffEIC stage 1 (λ = 1),
# then one variable-rate stage 2 (λ from 1 to 256), and package it into diffeic/data/pretrained/tiny-trained.
# Seeded (seed_everything 231 in every config); only the photos scikit-image ships (diffeic.samples.TRAIN_PHOTOS;
# chelsea and coffee held out).
#
#   bash scripts/train_tiny.sh          # about an hour on 2 idle cores; re-run to resume after an interruption
#   bash scripts/train_tiny.sh fixed    # also: three fixed-λ stage-2 models (λ = 1, 16, 256) on the same stage 1, with
#                                       # the variable-rate model's training budget between them (its baseline;
#                                       # benchmarks/compare_variable_rate.py); nothing is packaged
#
# Each job resumes from its last Lightning checkpoint if one exists and is skipped once it has finished
# (runs/<job>/DONE).  Wall time per job is appended to runs/train_tiny_times.tsv.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
mkdir -p runs
PRIOR="tiny_backbone_vae tiny_backbone_unet tiny_trained_stage1"
case "${1:-}" in
  "") JOBS="$PRIOR tiny_trained_stage2_vr" ;;
  fixed) JOBS="$PRIOR tiny_trained_stage2_lambda1 tiny_trained_stage2_lambda16 tiny_trained_stage2_lambda256" ;;
  *) echo "usage: bash scripts/train_tiny.sh [fixed]" >&2; exit 2 ;;
esac

bash scripts/run_jobs.sh runs/train_tiny_times.tsv $JOBS

if [ -z "${1:-}" ]; then
  python scripts/package_tiny.py --backbone runs/tiny_backbone_unet/export \
    --stage1 runs/tiny_trained_stage1/export --model tiny-trained=runs/tiny_trained_stage2_vr/export \
    --times runs/train_tiny_times.tsv
fi
