"""The evaluation run: files, schema, rate from written files, resume, FID plumbing, CLI, real tiny codec."""
import io
import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from diffeic.evaluation import cli, runner
from diffeic.evaluation.schema import CSV_COLUMNS, read_rows


class FakeDecoder:
    """The tiling decisions of diffeic's Decoder, without networks."""

    def __init__(self, options):
        self.options = options

    def tiles_for(self, z_c):
        o = self.options
        return o.tiles or (o.auto_tiles if o.exceeds_auto_tile(z_c.shape[-2] * z_c.shape[-1] * 64) else None)


class FakeCodec:
    """Stands in for DiffEICCodec: JPEG bytes behind a 2-byte magic, counts its calls, records seeds."""

    encoder_tiling = False

    def __init__(self, fingerprint="f00dfeed12345678"):
        from diffeic import DecodeOptions

        self.config = SimpleNamespace(name="fake", sampler=SimpleNamespace(name="ddpm", steps=4, seed=231))
        self.is_trained = False
        self.calls = 0
        self.seeds = []
        self._fp = fingerprint
        self._decoder = FakeDecoder(DecodeOptions())
        # The official file of this fake: y string = the JPEG bytes, z string = 2 bytes.
        self.lfgcm = SimpleNamespace(official_strings=lambda y, z: (y, z))

    def fingerprint(self):
        return self._fp

    def fast_decoder(self):
        return self._decoder

    def optimize(self, options=None, **kw):
        import dataclasses

        self._decoder = FakeDecoder(dataclasses.replace(options, **kw))
        return self

    def compress(self, x):
        self.calls += 1
        buf = io.BytesIO()
        Image.fromarray((x.permute(1, 2, 0) * 255).round().byte().numpy()).save(buf, "JPEG", quality=10)
        return b"DE" + buf.getvalue()

    def decompress_latents(self, bits):
        return {"y_hat": bits[2:], "z_hat": b"zz"}

    def decompress(self, bits, steps=None, sampler=None, seed=None):
        self.seeds.append(seed)
        a = np.asarray(Image.open(io.BytesIO(bits[2:])).convert("RGB"))
        return torch.from_numpy(a.copy()).permute(2, 0, 1).float() / 255


def _fake_model(codec, point="fake"):
    return runner.OurModel(codec, point, "sampler=ddpm;steps=4;seed=231+index",
                           f"diffeic fake ({runner.UNTRAINED_NOTE})", False, "test", "ddpm", 4, 231)


@pytest.fixture
def fake(monkeypatch):
    codec = FakeCodec()
    monkeypatch.setattr(runner, "_load_models", lambda cfg, device: [_fake_model(codec)])
    monkeypatch.setenv("DIFFEIC_NO_DOWNLOAD", "1")
    return codec


@pytest.fixture
def small_set(tmp_path):
    """Three small crops of the sample photos (keeps these runs fast; the real photos run below)."""
    import skimage.data

    folder = tmp_path / "small"
    folder.mkdir()
    for name in ("astronaut", "coffee", "rocket"):
        Image.fromarray(getattr(skimage.data, name)()[:200, :264]).save(folder / f"{name}.png")
    return f"folder:{folder}"


def _cfg(tmp_path, **kw):
    base = dict(dataset=str(kw.pop("dataset")), limit=2, baselines=["jpeg", "webp"], rate_factors=[1.0, 2.0],
                out=str(tmp_path / "out"), device="cpu", progress=False)
    base.update(kw)
    return runner.EvalConfig(**base)


def _check_rates(out: Path, rows):
    for r in rows:
        if r["codec"] == "diffeic":
            f = out / "bitstreams" / f"{r['image']}.deic"
            assert r["bpp_official"] is not None and r["seed"] is not None and r["tiling"]
        else:
            assert r["bpp_official"] is None and r["seed"] is None and r["tiling"] == ""
            ext = {"jpeg": "jpg"}.get(r["codec"], r["codec"])
            f = out / "bitstreams" / r["codec"] / f"{r['image']}@{r['point']}.{ext}"
        size = f.stat().st_size
        assert r["bytes"] == size
        assert r["bpp"] == 8 * size / (r["H"] * r["W"])
        hp, wp = -(-r["H"] // 64) * 64, -(-r["W"] // 64) * 64
        assert r["bpp_padded"] == 8 * size / (hp * wp)


def test_run_writes_csv_json_plots_and_resumes(tmp_path, fake, small_set):
    cfg = _cfg(tmp_path, dataset=small_set)
    r1 = runner.Runner(cfg, log=lambda s: None)
    summary = r1.run()
    out = Path(cfg.out)
    rows = read_rows(out / "results.csv")
    assert (out / "results.csv").read_text().splitlines()[0] == ",".join(CSV_COLUMNS)
    # 2 images x (ours + 2 baselines x 2 factors)
    assert len(rows) == 2 * (1 + 2 * 2) == r1.work_done and fake.calls == 2
    _check_rates(out, rows)
    ours = [r for r in rows if r["codec"] == "diffeic"]
    # The fake's official file: 20-byte header + its JPEG bytes (y) + 2 bytes (z), over padded pixels.
    assert [r["bpp_official"] for r in ours] == [8 * (20 + r["bytes"] - 2 + 2) / (256 * 320) for r in ours]
    assert [r["seed"] for r in ours] == fake.seeds == [231, 232]        # each image its own noise
    assert [r["tiling"] for r in ours] == ["none", "none"]
    ours = {r["image"]: r for r in rows if r["codec"] == "diffeic"}
    for r in rows:
        if r["codec"] != "diffeic":
            assert r["target_bpp"] == pytest.approx(ours[r["image"]]["bpp"] * (2.0 if r["point"] == "fakex2" else 1.0))
    assert all(r["lpips"] is None and r["dists"] is None for r in rows)
    assert summary["untrained"] is True and summary["models"][0]["is_trained"] is False
    assert "LPIPS skipped" in summary["metrics_skipped"]["lpips"] and "fid" in summary["metrics_skipped"]
    assert {(m["codec"], m["point"]) for m in summary["means"]} >= {("diffeic", "fake"), ("jpeg", "fake")}
    js = json.loads((out / "summary.json").read_text())
    assert js["device"] == "cpu" and "torch" in js["versions"] and js["bd"]["anchor"] == "jpeg"
    for metric in ("psnr", "ms_ssim"):
        assert (out / "plots" / f"rd_{metric}.png").stat().st_size > 0
        assert (out / "plots" / f"rd_{metric}.svg").stat().st_size > 0
    assert not (out / "plots" / "rd_lpips.png").exists()

    # Second run: nothing recomputed, CSV unchanged.
    before = (out / "results.csv").read_text()
    r2 = runner.Runner(cfg, log=lambda s: None)
    s2 = r2.run()
    assert r2.work_done == 0 and fake.calls == 2 and (out / "results.csv").read_text() == before
    assert {"lpips", "dists", "fid", "kid"} <= set(s2["metrics_skipped"])    # still says why, on a resume
    assert s2["means"] == json.loads(json.dumps(summary["means"]))

    # A larger --limit only adds the new image's rows.
    r3 = runner.Runner(_cfg(tmp_path, dataset=small_set, limit=3), log=lambda s: None)
    r3.run()
    assert r3.work_done == 5 and fake.calls == 3


def test_fid_kid_with_available_features(tmp_path, fake, monkeypatch):
    class MeanColour:                         # stands in for Inception: 3-d features per patch
        def __init__(self, device="cpu"):
            pass

        def __call__(self, patches):
            return patches.reshape(len(patches), 3, -1).mean(-1).astype(np.float64) + \
                np.random.default_rng(len(patches)).normal(0, 1e-3, (len(patches), 3))
    monkeypatch.setattr(runner.fidmod, "InceptionFeatures", MeanColour)
    summary = runner.Runner(_cfg(tmp_path, dataset="samples", baselines=["jpeg"], rate_factors=[1.0]),
                            log=lambda s: None).run()
    m = {(x["codec"], x["point"]): x for x in summary["means"]}
    # chelsea 300×451 → 1 + 0 patches, coffee 400×600 → 2 + 1 = 3 patches (protocol grids).
    assert m[("diffeic", "fake")]["n_patches"] == 4 and math.isfinite(m[("diffeic", "fake")]["fid"])
    assert "fid" not in summary["metrics_skipped"]


def test_fid_skip_line_when_inception_is_missing(tmp_path, fake, monkeypatch, small_set):
    monkeypatch.setattr("torch.hub.get_dir", lambda: str(tmp_path / "hub"))
    lines = []
    summary = runner.Runner(_cfg(tmp_path, dataset=small_set, baselines=[]), log=lines.append).run()
    fid_lines = [s for s in lines if s.startswith("FID/KID skipped")]
    assert len(fid_lines) == 1 and "weights-inception-2015-12-05-6726825d.pth" in fid_lines[0]
    assert summary["metrics_skipped"]["fid"] == fid_lines[0]


def test_cli_help_teaches(capsys):
    assert cli.main(["--help"]) == 0
    text = capsys.readouterr().out
    for needle in ("examples:", "results.csv", "summary.json", "bitstreams/", "folder:", "--anchor"):
        assert needle in text


def test_cli_missing_dataset_is_a_clean_error(tmp_path, capsys, fake):
    code = cli.main(["--dataset", "tecnick", "--model", "tiny", "--data-dir", str(tmp_path),
                     "--out", str(tmp_path / "o"), "--no-progress"])
    assert code == 1 and "tecnick" in capsys.readouterr().err      # missing data: exit 1, like the diffeic command


def test_end_to_end_on_the_real_tiny_preset(tmp_path, monkeypatch):
    """Two sample photos through the real tiny codec: files, schema, JSON, plots, bpp from the files."""
    monkeypatch.setenv("DIFFEIC_NO_DOWNLOAD", "1")
    out = tmp_path / "e2e"
    assert cli.main(["--dataset", "samples", "--limit", "2", "--model", "tiny", "--baselines", "jpeg",
                     "--rate-factors", "1", "--device", "cpu", "--no-progress", "--out", str(out)]) == 0
    rows = read_rows(out / "results.csv")
    assert [(r["image"], r["codec"]) for r in rows] == [("chelsea", "diffeic"), ("chelsea", "jpeg"),
                                                        ("coffee", "diffeic"), ("coffee", "jpeg")]
    _check_rates(out, rows)
    from diffeic import DiffEICCodec

    for r in rows[::2]:
        info = DiffEICCodec.inspect((out / "bitstreams" / f"{r['image']}.deic").read_bytes())
        assert (info["height"], info["width"]) == (r["H"], r["W"])
        assert 0 < r["psnr"] < 60 and r["enc_s"] > 0 and r["dec_s"] > 0
    js = json.loads((out / "summary.json").read_text())
    assert js["untrained"] is True and js["models"][0]["config"] == "tiny"
    assert "untrained" in js["models"][0]["label"]
    assert js["n_images"] == 2 and js["dataset"] == "samples"
    for metric in ("psnr", "ms_ssim"):
        assert (out / "plots" / f"rd_{metric}.png").is_file() and (out / "plots" / f"rd_{metric}.svg").is_file()
    assert "untrained" in (out / "plots" / "rd_psnr.svg").read_text()
