#!/usr/bin/env bash
# Download, on this machine, the wheels of the project's dependencies that a lent GPU machine's image lacks,
# into the ignored folder .whl/ (carried to the GPU machine by benchmarks/device_check.sh's caller).
#
#   bash scripts/make_wheelhouse.sh          # then: device run with carry [".whl"], see README "GPU check"
#
# The GPU image (CPython 3.12, numpy 2, torch 2.11) already holds torch, torchvision, numpy, scipy,
# scikit-image, pillow, matplotlib, lightning, torchmetrics, transformers, huggingface-hub, safetensors,
# einops, tqdm, pyyaml, torch-geometric, pandas, pytest and pytest-timeout (the device documentation's
# package list), so only the packages below travel, one version each, installed there with --no-deps.
#
# Deviations from setup.cfg, on purpose:
# * compressai 1.2.8 declares numpy<2, but its compiled parts (ans, _CXX) reference no numpy symbol and
#   diffeic's use of it runs under numpy 2.3 (checked: tiny compress/decompress and tests/test_exact.py).
#   The image's numpy 2 is used as is; pip --no-deps does not enforce the declared pin.
# * diffusers' importlib_metadata requirement is left out: on Python >= 3.8 diffusers imports the stdlib's
#   importlib.metadata instead (diffusers/utils/import_utils.py).
# * the test extras pillow-heif and imagecodecs (classical baselines) are left out: no `-m cuda` test and no
#   benchmark uses them, and imagecodecs alone is about 30 MB.
set -euo pipefail
cd "$(dirname "$0")/.."

DEST=.whl
LIMIT_MB=60
PACKAGES=(
    compressai==1.2.8            # cp312 manylinux_2_34 wheel (compiled rANS coder)
    diffusers==0.42.1
    jsonargparse==4.53.0         # with its [signatures] extra below
    docstring-parser==0.18.0
    typeshed-client==2.15.0
    lpips==0.1.4
    pytorch-msssim==1.0.0
    torch-fidelity==0.4.0
    dists-pytorch==0.1
)

rm -rf "$DEST"
mkdir -p "$DEST"
python3 -m pip download --quiet --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp \
    --platform manylinux_2_34_x86_64 --platform manylinux_2_28_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any \
    -d "$DEST" "${PACKAGES[@]}"

count=$(ls "$DEST"/*.whl | wc -l)
if [ "$count" -ne "${#PACKAGES[@]}" ]; then
    echo "error: expected ${#PACKAGES[@]} wheels in $DEST, found $count" >&2
    exit 1
fi
ls -l "$DEST"/*.whl | awk '{printf "%9d  %s\n", $5, $NF}'
bytes=$(du -cb "$DEST"/*.whl | tail -1 | cut -f1)
mib=$(python3 -c "print(f'{$bytes / 2**20:.1f}')")
echo "total: $count wheels, $mib MiB in $DEST/"
if [ "$bytes" -gt $((LIMIT_MB * 1024 * 1024)) ]; then
    echo "error: the wheelhouse is over $LIMIT_MB MiB" >&2
    exit 1
fi
