"""CompressAI-format result files: read by compressai's own plot module, unchanged (issue 17.1)."""
import json
import math

import pytest

from diffeic.evaluation import compressai_format as C
from diffeic.evaluation import runner
from test_eval_runner import FakeCodec, _fake_model


def test_results_block_sorts_by_rate_and_keeps_only_complete_extras():
    pts = [{"point": "b", "n": 2, "bpp": 0.2, "psnr": 25.0, "ms_ssim": 0.9, "enc_s": 1.0, "dec_s": 2.0, "lpips": 0.3,
            "dists": None, "bpp_official": 0.21},
           {"point": "a", "n": 2, "bpp": 0.1, "psnr": 22.0, "ms_ssim": math.nan, "enc_s": 1.5, "dec_s": 2.5,
            "lpips": 0.4, "dists": 0.2, "bpp_official": 0.11}]
    res = C.results_block(pts)
    assert res["bpp"] == [0.1, 0.2] and res["psnr-rgb"] == [22.0, 25.0] and res["encoding_time"] == [1.5, 1.0]
    assert res["lpips"] == [0.4, 0.3] and res["bpp_official"] == [0.11, 0.21] and "dists" not in res
    assert math.isnan(res["ms-ssim-rgb"][0]) and "bpp_padded" not in res and "fid" not in res
    doc = C.codec_document("X", "d", pts, {"dataset": "s"})
    assert doc["meta"]["points"] == ["a", "b"] and doc["meta"]["dataset"] == "s"


@pytest.fixture
def demo(tmp_path, monkeypatch):
    """A small run (fake codec, one crop, JPEG and WebP at three rates) → its compressai/ folder."""
    import skimage.data
    from PIL import Image

    d = tmp_path / "imgs"
    d.mkdir()
    for name in ("astronaut",):
        Image.fromarray(getattr(skimage.data, name)()[:192, :256]).save(d / f"{name}.png")
    codec = FakeCodec()
    monkeypatch.setattr(runner, "_load_models", lambda cfg, device: [_fake_model(codec)])
    cfg = runner.EvalConfig(dataset=f"folder:{d}", baselines=["jpeg", "webp"], rate_factors=[0.5, 1.0, 2.0],
                            out=str(tmp_path / "out"), device="cpu", progress=False, fid=False)
    summary = runner.Runner(cfg, log=lambda s: None).run()
    return tmp_path / "out", summary


def test_files_load_with_compressais_plot_module(demo, tmp_path):
    plot = pytest.importorskip("compressai.utils.plot.__main__")
    out, summary = demo
    files = sorted((out / "compressai").glob("*.json"))
    assert [f.name for f in files] == ["diffeic.json", "jpeg.json", "webp.json"]
    assert summary["files"]["compressai"] == [str(out / "compressai" / f.name) for f in files]
    means = {(m["codec"], m["point"]): m for m in summary["means"]}
    for f in files:
        doc = json.loads(f.read_text())
        assert set(C.REQUIRED_KEYS) <= set(doc["results"]) and {"dataset", "protocol", "model"} <= set(doc["meta"])
        codec = f.stem
        expected = sorted((m for (c, _), m in means.items() if c == codec), key=lambda m: m["bpp"])
        # compressai's own reader: the rates and PSNRs it plots are ours, in rate order.
        got = plot.parse_json_file(f, "psnr")
        assert got["name"] == doc["name"] and got["xs"] == [m["bpp"] for m in expected]
        assert got["ys"] == [m["psnr"] for m in expected]
        ms = plot.parse_json_file(f, "ms-ssim")        # converted to dB by compressai
        assert ms["ys"] == pytest.approx([-10 * math.log10(1 - m["ms_ssim"]) for m in expected])
    assert len(json.loads((out / "compressai" / "jpeg.json").read_text())["results"]["bpp"]) == 3
    assert json.loads((out / "compressai" / "diffeic.json").read_text())["results"]["bpp_official"]
    png = tmp_path / "compressai_psnr.png"
    plot.main(["-f", *map(str, files), "-m", "psnr", "-o", str(png)])
    assert png.stat().st_size > 10_000
