"""The README's figures that the code decides are read from the code (issue 32 item 6): the format version, the
container's overhead, the rate points eval runs by default, the presets' and the shipped model's λ / q ranges.
A change to any of them fails here until the README says the same."""
import dataclasses
import math
import re
from pathlib import Path

import pytest

from diffeic import DiffEICCodec, get_config
from diffeic.bitstream import FORMAT_VERSION, container_overhead, describe, unpack
from diffeic.codecs.registry import DEMO_MODEL

from conftest import photo

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text)


TEXT = _one_line(README)


def _num(v: float) -> str:
    return f"{v:g}"


@pytest.fixture(scope="module")
def shipped():
    return DiffEICCodec.from_pretrained(DEMO_MODEL)


def test_format_version():
    versions = set(re.findall(r"format version (\d+)", TEXT))
    assert versions == {str(FORMAT_VERSION)}, versions


def _overhead_at_768x512(stream: bytes) -> int:
    """Container bytes of ``stream``'s header for a 768×512 image, after checking the layout's figure against
    the real stream's (total minus payload)."""
    header, _ = unpack(stream)
    assert describe(stream)["container_bytes"] == container_overhead(header)
    return container_overhead(dataclasses.replace(header, height=512, width=768))


@pytest.mark.filterwarnings("ignore:model 'tiny' has random, untrained weights")
def test_container_overhead(shipped, tiny_codec):
    x = photo("coffee", (128, 160))
    vr = _overhead_at_768x512(shipped.compress(x))            # default decode settings, as `diffeic compress`
    fixed = _overhead_at_768x512(tiny_codec.compress(x))
    assert (vr, fixed) == (20, 16)      # the layout's arithmetic: 2+1+1+4 + 2+2 varints (+4 rate) + 4 CRC
    assert f"{vr} bytes of overhead for the shipped model's streams" in TEXT
    assert f"{vr} bytes of overhead for the shipped variable-rate model's streams at 768×512 ({fixed} for a " \
           f"fixed-rate model" in TEXT
    claimed = {int(n) for n in re.findall(r"(\d+) bytes of overhead", TEXT)}
    assert claimed == {vr}, claimed


def _levels(rate_cfg) -> list:
    q_max = math.log2(rate_cfg.lmbda_max / rate_cfg.lmbda_min)
    return [q_max * i / (rate_cfg.levels - 1) for i in range(rate_cfg.levels)]


def test_default_rate_points_of_eval(shipped):
    from diffeic.evaluation.cli import build_parser

    levels = shipped.lfgcm.rate_gains.levels()
    assert levels == pytest.approx(_levels(shipped.config.lfgcm.rate))
    preset_levels = _levels(get_config("tiny_vr").lfgcm.rate)
    assert preset_levels == pytest.approx(_levels(get_config("sd21_vr").lfgcm.rate))
    shipped_text = ", ".join(map(_num, levels))
    assert f"trained rate levels q = {shipped_text} (what `eval.py` runs by default)" in TEXT
    help_text = _one_line(next(a.help for a in build_parser()._actions if "--rates" in a.option_strings))
    assert f"{','.join(map(_num, levels))} for the shipped {DEMO_MODEL}" in help_text, help_text
    assert f"{','.join(map(_num, preset_levels))} for the tiny_vr / sd21_vr presets" in help_text, help_text


def _ranges(rate_cfg) -> str:
    q_max = math.log2(rate_cfg.lmbda_max / rate_cfg.lmbda_min)
    return f"λ ∈ [{_num(rate_cfg.lmbda_min)}, {_num(rate_cfg.lmbda_max)}], q ∈ [0, {_num(q_max)}]"


def test_preset_and_shipped_model_ranges():
    shipped = DiffEICCodec.from_pretrained("tiny-trained")      # the first demo model's README paragraph
    presets = {_ranges(get_config(name).lfgcm.rate) for name in ("tiny_vr", "sd21_vr")}
    assert len(presets) == 1
    (preset,) = presets
    assert f"| `tiny_vr`, `sd21_vr` | the same with a variable-rate LFGCM (+320 / +3,200 gain parameters) | one " \
           f"model for {preset} " in TEXT
    assert f"is the `tiny_vr` architecture trained on 7 photos for {_ranges(shipped.config.lfgcm.rate)}," in TEXT
    lo, hi = shipped.rate_range
    rc = shipped.config.lfgcm.rate
    assert f"the shipped `tiny-trained` spans λ from {_num(rc.lmbda_max)} to {_num(rc.lmbda_min)}, " \
           f"`q = log2({_num(rc.lmbda_max)}/λ)` in `({_num(lo)}, {_num(hi)})`" in TEXT
