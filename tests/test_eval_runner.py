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
    family = "diffeic"

    def __init__(self, fingerprint="f00dfeed12345678"):
        from diffeic import DecodeOptions

        self.config = SimpleNamespace(name="fake", sampler=SimpleNamespace(name="ddpm", steps=4, seed=231))
        self.is_trained = False
        self.calls = 0
        self.seeds = []
        self.stored = []
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

    def compress(self, x, seed=None, steps=None, sampler=None, max_steps=None):
        self.calls += 1
        self.stored.append(seed)
        buf = io.BytesIO()
        Image.fromarray((x.permute(1, 2, 0) * 255).round().byte().numpy()).save(buf, "JPEG", quality=10)
        return b"DE" + buf.getvalue()

    def decompress_latents(self, bits):
        return {"y_hat": bits[2:], "z_hat": b"zz"}

    def decompress(self, bits, steps=None, sampler=None, seed=None, max_steps=None):
        self.seeds.append(seed)
        a = np.asarray(Image.open(io.BytesIO(bits[2:])).convert("RGB"))
        # Like a sampling decoder, the picture depends on the seed (a seed-dependent shift of brightness).
        return (torch.from_numpy(a.copy()).permute(2, 0, 1).float() + (seed or 0) % 7) / 255


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
    assert [r["seed"] for r in ours] == fake.seeds == fake.stored == [231, 232]   # each image its own noise,
    # stored in its stream
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
    assert js["device"] == "cpu" and "torch" in js["versions"] and js["bd"]["anchor"] == "diffeic"
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
    """Two sample photos through the real tiny codec: files, schema, JSON, plots, bpp from the files.  17 steps is
    more than a tiny decoder accepts from a stream by default (4 x its 4): the run trusts the streams it wrote."""
    monkeypatch.setenv("DIFFEIC_NO_DOWNLOAD", "1")
    out = tmp_path / "e2e"
    assert cli.main(["--dataset", "samples", "--limit", "2", "--model", "tiny", "--baselines", "jpeg", "--seeds", "1",
                     "--rate-factors", "1", "--device", "cpu", "--no-progress", "--out", str(out), "--steps", "17"]) == 0
    rows = read_rows(out / "results.csv")
    assert rows[0]["setting"] == "sampler=ddpm;steps=17;seed=231+index"
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


def test_several_decode_seeds_give_mean_and_spread(tmp_path, fake, small_set):
    """--seeds 3: one stream per image (storing the first seed), three decodes, the spread over seeds."""
    from diffeic.evaluation.summary import format_table

    summary = runner.Runner(_cfg(tmp_path, dataset=small_set, baselines=["jpeg"], rate_factors=[1.0], seeds=3,
                                 sheets=0), log=lambda s: None).run()
    rows = read_rows(Path(tmp_path / "out" / "results.csv"))
    ours = [r for r in rows if r["codec"] == "diffeic"]
    assert [r["seed"] for r in ours] == [231, 1000231, 2000231, 232, 1000232, 2000232] == fake.seeds
    assert fake.stored == [231, 232] and len({r["bytes"] for r in ours if r["image"] == "astronaut"}) == 1
    assert sum(r["codec"] == "jpeg" for r in rows) == 2                 # baselines: once per image
    m = next(x for x in summary["means"] if x["codec"] == "diffeic")
    assert (m["n"], m["n_seeds"]) == (2, 3)
    per_seed = [np.mean([r["psnr"] for r in ours[k::3]]) for k in range(3)]     # dataset mean per seed
    assert m["psnr"] == pytest.approx(np.mean(per_seed))
    spread = m["seed_spread"]["psnr"]
    assert spread["std"] == pytest.approx(np.std(per_seed, ddof=1)) and spread["std"] > 0
    assert (spread["min"], spread["max"]) == (pytest.approx(min(per_seed)), pytest.approx(max(per_seed)))
    table = format_table(summary["means"])
    assert f"{m['psnr']:.2f} ±{spread['std']:.2f}" in table and "3 decode seeds" in table


def test_sheet_per_photo_from_the_measured_rows(tmp_path, fake, small_set, monkeypatch, capsys):
    """A sheet per photo: original, ours, the baselines closest in bytes; pixels and captions from the run.
    Not on a terminal (as here), progress is plain lines, no bar."""
    from diffeic.evaluation import sheets

    drawn = []

    def spy(tiles, path, header=""):
        layout = sheets.write_sheet(tiles, path, header)
        drawn.append((tiles, layout))
        return layout
    monkeypatch.setattr(runner, "write_sheet", spy)
    lines = []
    summary = runner.Runner(_cfg(tmp_path, dataset=small_set, rate_factors=[1.0, 2.0], save_recon=True,
                                 progress=True), log=lines.append).run()
    assert "\r" not in capsys.readouterr().err                         # no progress bar written to a file
    progress = [line for line in lines if " images, " in line]
    assert [line.split(": ")[1].split(",")[0] for line in progress] == ["1/2 images", "2/2 images"]
    out = Path(tmp_path / "out")
    rows = read_rows(out / "results.csv")
    assert [layout.path for _, layout in drawn] == [out / "sheets" / "astronaut.png", out / "sheets" / "coffee.png"]
    assert summary["files"]["sheets"] == [str(layout.path) for _, layout in drawn]
    assert any(line.startswith("sheets: ") and "astronaut.png" in line for line in lines)
    tiles, layout = drawn[0]
    assert [t.title.split()[0] for t in tiles] == ["original", "diffeic", "jpeg", "webp"]
    assert layout.scale == 1.0 and all(box[2:] == (264, 200) for box in layout.boxes)
    png = np.asarray(Image.open(layout.path).convert("RGB"))
    assert png.shape[1::-1] == layout.size
    ref = np.asarray(Image.open(small_set[len("folder:"):] + "/astronaut.png").convert("RGB"))
    recon = np.asarray(Image.open(out / "recon" / "diffeic" / "fake" / "astronaut.png"))
    for tile, (x, y, w, h), want in zip(tiles, layout.boxes, (ref, recon)):
        assert np.array_equal(png[y:y + h, x:x + w], want)             # the pictures themselves, unscaled
    mine = {r["codec"]: r for r in rows if r["image"] == "astronaut" and r["codec"] == "diffeic"}["diffeic"]
    assert tiles[1].lines == sheets.caption(mine)
    assert tiles[1].lines[0] == f"{mine['bytes']:,} bytes · {mine['bpp']:.4f} bpp"
    assert tiles[1].lines[1] == f"PSNR {mine['psnr']:.2f} dB · MS-SSIM {mine['ms_ssim']:.4f}"
    for tile in tiles[2:]:                                              # closest in bytes among its files
        own = [r for r in rows if r["image"] == "astronaut" and r["codec"] == tile.title.split()[0]]
        best = min(own, key=lambda r: abs(r["bytes"] - mine["bytes"]))
        assert tile.lines == sheets.caption(best) and tile.title.endswith(best["setting"].split(" (")[0])


def test_eval_streams_decode_to_the_scored_picture_with_the_cli(tmp_path, monkeypatch):
    """`diffeic decompress` of an eval-written .deic gives the reconstruction eval scored, bit for bit
    (the stream carries the image's decode seed, image 1's 232 rather than the model's default 231, and the
    steps eval decoded with)."""
    import skimage.data

    from diffeic import cli as diffeic_cli
    from diffeic import DiffEICCodec

    monkeypatch.setenv("DIFFEIC_NO_DOWNLOAD", "1")
    folder = tmp_path / "crops"
    folder.mkdir()
    for name in ("astronaut", "coffee"):
        Image.fromarray(getattr(skimage.data, name)()[:64, :96]).save(folder / f"{name}.png")
    out = tmp_path / "e"
    assert cli.main(["--dataset", f"folder:{folder}", "--model", "tiny", "--baselines", "", "--seeds", "2", "--steps", "2",
                     "--save-recon", "--no-fid", "--device", "cpu", "--no-progress", "--out", str(out)]) == 0
    rows = read_rows(out / "results.csv")
    assert [(r["image"], r["seed"]) for r in rows] == [("astronaut", 231), ("astronaut", 1000231),
                                                       ("coffee", 232), ("coffee", 1000232)]
    for image, seed in (("astronaut", 231), ("coffee", 232)):
        stream = out / "bitstreams" / f"{image}.deic"
        # The model's default seed (231) is left to the model; any other is stored.
        assert DiffEICCodec.inspect(stream.read_bytes())["seed"] == (None if seed == 231 else seed)
        decoded = tmp_path / f"{image}_cli.png"
        assert diffeic_cli.main(["decompress", str(stream), "-o", str(decoded), "--model", "tiny"]) == 0
        scored = np.asarray(Image.open(out / "recon" / "diffeic" / "tiny,steps=2" / f"{image}.png"))
        assert np.array_equal(np.asarray(Image.open(decoded)), scored)
        row = next(r for r in rows if r["image"] == image and r["seed"] == seed)
        ref = np.asarray(Image.open(folder / f"{image}.png"))
        mse = np.mean((ref.astype(np.float64) - scored) ** 2)
        assert row["psnr"] == pytest.approx(10 * np.log10(255 ** 2 / mse), abs=1e-6)    # the scored picture


def test_each_codec_family_gets_its_own_series_so_no_curve_or_bd_rate_mixes_two_families():
    from types import SimpleNamespace as NS

    def model(point, family):
        return NS(point=point, codec=NS(family=family))

    models = [model("tiny-trained,q=0", "diffeic"), model("tiny-trained,q=8", "diffeic"),
              model("semantic-tiny-trained", "semantic")]
    ours = [{"point": m.point, "bpp": b} for m, b in zip(models, (0.01, 0.15, 0.30))]
    jpeg = [{"point": "q=5", "bpp": 0.3}]
    split = runner._split_by_family({"diffeic": ours, "jpeg": jpeg}, models)
    assert split == {"jpeg": jpeg, "diffeic": ours[:2], "diffeic (semantic)": ours[2:]}
    assert runner._is_ours("diffeic (semantic)") and not runner._is_ours("jpeg")
    # One family: unchanged (the same object), as before there were families.
    one = {"diffeic": ours[:2], "jpeg": jpeg}
    assert runner._split_by_family(one, models[:2]) is one
