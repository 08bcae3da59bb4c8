"""Bjøntegaard deltas: analytic cases and the protocol's reference values from published_rd.csv."""
import math

import numpy as np
import pytest

from diffeic.evaluation.bdrate import bd_metric, bd_rate
from diffeic.evaluation.published import published_series

RATES = [0.02, 0.04, 0.06, 0.09, 0.12]
PSNR = [24.0, 25.5, 26.4, 27.3, 28.0]


@pytest.mark.parametrize("method", ["pchip", "cubic"])
@pytest.mark.parametrize("factor", [0.8, 1.25, 2.0])
def test_rate_scaled_curve_gives_factor_minus_one(method, factor):
    res = bd_rate(RATES, PSNR, [r * factor for r in RATES], PSNR, metric="psnr", method=method)
    assert res.value == pytest.approx((factor - 1) * 100, abs=1e-9)
    assert res.overlap_fraction == pytest.approx(1.0)


def test_lower_is_better_metric_is_oriented():
    lp = [0.32, 0.24, 0.17, 0.13, 0.10]                  # LPIPS falls as rate rises
    res = bd_rate(RATES, lp, [r * 0.7 for r in RATES], lp, metric="lpips")
    assert res.value == pytest.approx(-30.0, abs=1e-9)
    # Same rates, LPIPS lower by 0.02 everywhere → BD-LPIPS = -0.02 (better) in the metric's units.
    assert bd_metric(RATES, lp, RATES, [v - 0.02 for v in lp], metric="lpips").value == pytest.approx(-0.02)


def test_bd_metric_of_a_quality_shift():
    assert bd_metric(RATES, PSNR, RATES, [p + 0.5 for p in PSNR], metric="psnr").value == pytest.approx(0.5)


def test_hand_computed_two_point_example():
    # Two points each: PCHIP through two points is the straight line, so the integral is exact:
    # anchor ln R = ln 0.1 + (D-30)/2 * ln 2, test = anchor - ln 1.5 on D in [30, 32] → BD = 1/1.5 - 1.
    anchor = ([0.1, 0.2], [30.0, 32.0])
    test = ([0.1 / 1.5, 0.2 / 1.5], [30.0, 32.0])
    assert bd_rate(*anchor, *test).value == pytest.approx((1 / 1.5 - 1) * 100, abs=1e-9)


def test_undefined_cases_say_why():
    assert bd_rate([0.1, 0.2], [30, 31], [0.1, 0.2], [35, 36]).reason == "no overlap between the curves' ranges"
    assert "fewer than 2" in bd_rate([0.1], [30], [0.1, 0.2], [30, 31]).reason
    assert bd_rate([0.1, 0.2], [30, 31], [0.1, 0.2], [30, 31]).value == pytest.approx(0.0)


def test_duplicate_points_count_once():
    res = bd_rate([0.1, 0.1, 0.2], [30, 30, 32], [0.2, 0.4], [30, 32])
    assert res.value == pytest.approx(100.0)


# Values computed from published_rd.csv by two independent implementations (numpy/scipy and the
# ``bjontegaard`` package 1.3.0), which agree to 4 decimals.
@pytest.mark.parametrize("dataset,anchor,test,metric,cubic,pchip", [
    ("kodak", "BPG", "VTM", "psnr", -26.29, -26.34),
    ("kodak", "BPG", "VTM", "ms_ssim", -21.32, -21.29),
    ("kodak", "DiffEIC", "RDEIC-2", "lpips", -36.08, -36.73),
    ("clic2020", "DiffEIC", "RDEIC-2", "dists", -15.08, -15.20),
    ("clic2020", "DiffEIC", "RDEIC-2", "fid", -13.24, -14.04),
    ("tecnick", "DiffEIC", "RDEIC-2", "dists", -17.90, -18.15),
])
def test_protocol_reference_values(dataset, anchor, test, metric, cubic, pchip):
    s = published_series(dataset, methods=None)
    a, t = s[anchor].values(metric), s[test].values(metric)
    assert bd_rate(*a, *t, metric=metric).value == pytest.approx(pchip, abs=0.005)
    assert bd_rate(*a, *t, metric=metric, method="cubic").value == pytest.approx(cubic, abs=0.005)


def test_shipped_published_csv_reads_as_the_spreadsheet():
    s = published_series("kodak")
    assert list(s)[:3] == ["DiffEIC", "RDEIC-2", "RDEIC-5"] and "SD-VAE" not in s
    bpps = [p["bpp"] for p in s["DiffEIC"].points]
    assert bpps == sorted(bpps) and len(bpps) == 5 and all(math.isfinite(b) for b in bpps)
    assert np.isclose(s["DiffEIC"].values("lpips")[1][-1], 0.1055)


def test_bd_table_against_diffeic_gives_the_overlap_or_says_why_not():
    """Every baseline against our series: the overlap in the metric's units, and an undefined figure explained."""
    from diffeic.evaluation.summary import bd_table, format_bd

    ours = [{"bpp": b, "psnr": q, "lpips": lp} for b, q, lp in zip(RATES, PSNR, [0.5, 0.45, 0.4, 0.35, 0.3])]
    webp = [{"bpp": 2 * b, "psnr": q, "lpips": lp} for b, q, lp in zip(RATES, PSNR, [0.5, 0.45, 0.4, 0.35, 0.3])]
    jpeg = [{"bpp": 1.0, "psnr": 31.0, "lpips": 0.1}, {"bpp": 2.0, "psnr": 35.0, "lpips": 0.05}]
    res = bd_table({"diffeic": ours, "webp": webp, "jpeg": jpeg}, "diffeic", ["psnr", "lpips"])
    by = {(r["test"], r["metric"]): r for r in res}
    assert by[("webp", "psnr")]["bd_rate_pct"] == pytest.approx(100.0)           # twice our bits
    assert by[("webp", "psnr")]["overlap"] == pytest.approx((24.0, 28.0))
    assert by[("webp", "lpips")]["overlap"] == pytest.approx((0.3, 0.5))         # LPIPS in its own units
    assert by[("jpeg", "psnr")]["bd_rate_pct"] is None
    assert by[("jpeg", "psnr")]["note"] == "no common psnr range: jpeg spans 31.00 dB–35.00 dB, diffeic 24.00 dB–28.00 dB"
    text = format_bd(res).splitlines()
    assert text[0].startswith("BD-rate against diffeic")
    assert text[1] == ("  webp: psnr +100.0 % over 24.00 dB–28.00 dB (100% of the wider range); "
                       "lpips +100.0 % over 0.300–0.500 (100% of the wider range)")
    assert text[2].startswith("  jpeg: psnr undefined (no common psnr range: jpeg spans 31.00 dB–35.00 dB")
