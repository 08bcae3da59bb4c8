#!/usr/bin/env bash
# One command that measures the GPU targets in one short lease (a 465 s budget, inside 8 minutes):
#
#   bash scripts/make_wheelhouse.sh                  # here, once: .whl/ (the packages the GPU image lacks)
#   bash benchmarks/device_check.sh                  # there, via the device tool with carry [".whl"]
#   bash benchmarks/device_check.sh --dry-run        # here, on the CPU: every stage at the tiny preset
#
# Stages, in order of priority, each in its own process under its own time limit (a failure or timeout is
# reported and the next stage runs; the whole run keeps to DEVICE_CHECK_BUDGET_S, 465 s by default):
#   install     .whl/*.whl and this project (--no-deps) into a private --target folder (skipped in a dry run
#               or without .whl/);
#   env         device, driver, torch / CUDA versions;
#   cuda_tests  pytest -m cuda -x (CPU<->GPU bit-exactness of the streams and latents first);
#   decode, fewstep, encode, train, tiled, families, compile   benchmarks/device_check.py (sd21, random weights).
# Writes under $OUT when set, else benchmarks/out/: device_check.log, device_check.json and
# device_check_results.md; a GPU run also appends the Markdown to benchmarks/RESULTS.md (a dry run never does).
set -uo pipefail
SCRIPT="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
ROOT="$(dirname "$(dirname "$SCRIPT")")"

DRY=0
for arg in "$@"; do
    case "$arg" in
        --dry-run) DRY=1 ;;
        -h|--help) sed -n 2,17p "$0"; exit 0 ;;
        *) echo "device_check.sh: unknown argument '$arg' (only --dry-run)" >&2; exit 2 ;;
    esac
done
OUT_DIR=$(realpath -m "${OUT:-$ROOT/benchmarks/out}")
mkdir -p "$OUT_DIR"
if [ -z "${DEVICE_CHECK_LOGGED:-}" ]; then       # run again with everything also going to the log
    DEVICE_CHECK_LOGGED=1 bash "$SCRIPT" "$@" 2>&1 | tee "$OUT_DIR/device_check.log"
    exit "${PIPESTATUS[0]}"
fi
cd "$ROOT" || exit 2

export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
PY=${PYTHON:-python3}
PARTS=$(mktemp -d)
trap 'rm -rf "$PARTS"' EXIT
if [ "$DRY" = 1 ]; then
    MODE=(--dry-run); BUDGET=${DEVICE_CHECK_BUDGET_S:-3600}
else
    MODE=(); BUDGET=${DEVICE_CHECK_BUDGET_S:-465}
fi
FAILED=0

record() {  # record NAME STATUS SECONDS [CPU_SECONDS]
    printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "${4:-}" >>"$PARTS/stages.tsv"
}

children_cpu() {  # CHILDREN_CPU = user + system CPU seconds of this shell's finished children (`times`, line 2)
    times >"$PARTS/times"            # here, not in a $(...) subshell, whose children are not these
    CHILDREN_CPU=$(awk 'NR == 2 { s = 0; for (i = 1; i <= 2; i++) { split($i, a, "m"); sub("s", "", a[2]);
                        s += a[1] * 60 + a[2] } printf "%.1f", s }' "$PARTS/times")
}

stage() {  # stage NAME LIMIT_S COMMAND...
    local name=$1 limit=$2
    shift 2
    [ "$DRY" = 1 ] && limit=600                  # the CPU here is shared: the limits are for the GPU run
    local left=$((BUDGET - SECONDS - 20))        # 20 s kept for collecting the results
    [ "$left" -lt "$limit" ] && limit=$left
    if [ "$limit" -lt 10 ]; then
        echo "=== stage $name: skipped (the ${BUDGET} s budget is spent)"
        record "$name" "skipped (budget spent)" 0
        FAILED=1
        return
    fi
    echo
    echo "=== stage $name (limit ${limit} s, $(date -u +%H:%M:%S) UTC) ==="
    local t0=$SECONDS c0 status
    children_cpu
    c0=$CHILDREN_CPU
    timeout -k 10 "$limit" "$@"
    local rc=$?
    local cpu
    children_cpu
    cpu=$(awk -v a="$CHILDREN_CPU" -v b="$c0" 'BEGIN { printf "%.1f", a - b }')
    case $rc in
        0) status=ok ;;
        124|137) status="timed out at ${limit} s" ;;
        *) status="failed (exit $rc)" ;;
    esac
    [ "$rc" = 0 ] || FAILED=1
    echo "=== stage $name: $status, $((SECONDS - t0)) s wall, $cpu s CPU ==="
    record "$name" "$status" $((SECONDS - t0)) "$cpu"
}

echo "=== device_check $([ "$DRY" = 1 ] && echo "--dry-run (tiny preset, toy sizes, CPU)" || echo "(sd21 preset, GPU)"), $(date -u +%FT%TZ), out: $OUT_DIR"

# ---- install: the carried wheels and the project, into a private folder (no registry is reachable there)
t0=$SECONDS
if [ "$DRY" = 1 ]; then
    echo "=== install: skipped (dry run: this machine's environment is used; .whl/ is not needed)"
    record install "skipped (dry run)" 0
elif ! ls .whl/*.whl >/dev/null 2>&1; then
    echo "=== install: skipped (no .whl/: run 'bash scripts/make_wheelhouse.sh' here and carry .whl)"
    record install "skipped (no .whl/)" 0
else
    SITE=$(mktemp -d)/site
    echo "=== install: $(ls .whl/*.whl | wc -l) wheels and the project into $SITE"
    if timeout 180 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl \
        && timeout 180 "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --no-cache-dir --upgrade \
            --target "$SITE" .; then
        record install ok $((SECONDS - t0))
    else
        echo "=== install: failed; the stages run with what is installed"
        record install "failed" $((SECONDS - t0))
        FAILED=1
    fi
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi

# ---- the stages
if command -v nvidia-smi >/dev/null; then
    timeout 30 nvidia-smi
else
    echo "(no nvidia-smi on this machine)"
fi
stage env 40 "$PY" benchmarks/device_check.py env --parts "$PARTS" "${MODE[@]}"
mapfile -t CUDA_TESTS < <(grep -l "pytest.mark.cuda" tests/test_*.py)
stage cuda_tests 60 "$PY" -m pytest -m cuda -x -q -rA -p no:cacheprovider --timeout 120 "${CUDA_TESTS[@]}"
for s in decode:110 fewstep:60 encode:30 train:45 tiled:70 families:25 compile:150; do
    stage "${s%%:*}" "${s##*:}" "$PY" benchmarks/device_check.py "${s%%:*}" --parts "$PARTS" "${MODE[@]}"
done

# ---- collect: JSON and Markdown under $OUT; a GPU run appends to RESULTS.md too
echo
echo "=== collect ($SECONDS s so far)"
RESULTS_ARG=()
[ "$DRY" = 1 ] || RESULTS_ARG=(--results benchmarks/RESULTS.md)
"$PY" benchmarks/device_check.py collect --parts "$PARTS" --out "$OUT_DIR" "${MODE[@]}" "${RESULTS_ARG[@]}" \
    || FAILED=1
children_cpu
echo "=== device_check done in $SECONDS s wall, $CHILDREN_CPU s CPU: $([ "$FAILED" = 0 ] && echo "every stage ok" || echo "some stage failed (see above)")"
exit "$FAILED"
