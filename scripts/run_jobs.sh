#!/usr/bin/env bash
# Run training jobs in order, each from configs/<job>.yaml: resume a job from its last Lightning checkpoint if one
# exists, skip it once it has finished (runs/<job>/DONE), append its wall time to TIMES.  Used by train_tiny.sh and
# train_demo.sh.
#
#   bash scripts/run_jobs.sh TIMES JOB [JOB ...]
set -euo pipefail
times="$1"; shift
for job in "$@"; do
  if [ -f "runs/$job/DONE" ]; then echo "== $job: done already"; continue; fi
  resume=()
  last=$(ls -t runs/"$job"/lightning_logs/version_*/checkpoints/last.ckpt 2>/dev/null | head -n 1 || true)
  if [ -n "$last" ]; then resume=(--ckpt_path "$last"); echo "== $job: resuming from $last"; else echo "== $job"; fi
  start=$(date +%s)
  python train.py fit --config "configs/$job.yaml" "${resume[@]}"
  printf '%s\t%s\n' "$job" "$(( $(date +%s) - start ))" >> "$times"
  touch "runs/$job/DONE"
done
