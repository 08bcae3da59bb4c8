"""Protocol fidelity and unmixable folders: per-image seeds, tiling records, run identity (issues 14.6, 17.4)."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffeic.evaluation import cli, protocol, runner
from diffeic.evaluation.datasets import Dataset, EvalImage
from diffeic.evaluation.schema import read_rows
from test_eval_runner import FakeCodec, _fake_model


@pytest.fixture
def folder(tmp_path):
    import skimage.data

    d = tmp_path / "imgs"
    d.mkdir()
    for name in ("astronaut", "coffee"):
        Image.fromarray(getattr(skimage.data, name)()[:128, :192]).save(d / f"{name}.png")
    return f"folder:{d}"


def _use(monkeypatch, *codecs):
    """Make the runner evaluate these fake codecs (one rate point each)."""
    models = [_fake_model(c, point=f"fake{i}" if i else "fake") for i, c in enumerate(codecs)]
    monkeypatch.setattr(runner, "_load_models", lambda cfg, device: models)


def _cfg(out, dataset, **kw):
    base = dict(dataset=dataset, baselines=["jpeg"], rate_factors=[1.0], out=None if out is None else str(out),
                device="cpu", progress=False, fid=False)
    base.update(kw)
    return runner.EvalConfig(**base)


def test_seed_is_the_base_plus_the_image_index():
    assert [protocol.image_seed(231, i) for i in range(3)] == [231, 232, 233]
    assert protocol.image_seed(2 ** 64 - 1, 1) == 0            # stays a valid stream seed


def test_another_models_results_are_refused_never_relabelled(tmp_path, monkeypatch, folder, capsys):
    """Issue 14.6: a second model evaluated into the first one's folder must not reuse its rows."""
    untrained, trained = FakeCodec("aaaaaaaa00000000"), FakeCodec("bbbbbbbb11111111")
    out = tmp_path / "out"
    _use(monkeypatch, untrained)
    runner.Runner(_cfg(out, folder), log=lambda s: None).run()
    before = (out / "results.csv").read_text()
    _use(monkeypatch, trained)
    with pytest.raises(protocol.OutputFolderConflict, match="aaaaaaaa00000000.*bbbbbbbb11111111"):
        runner.Runner(_cfg(out, folder), log=lambda s: None).run()
    assert trained.calls == 0 and (out / "results.csv").read_text() == before
    assert json.loads((out / "summary.json").read_text())["models"][0]["fingerprint"] == "aaaaaaaa00000000"
    # Through the CLI: one line, exit 1 (a problem with the files, not with the usage).
    assert cli.main(["--dataset", folder, "--out", str(out), "--no-progress", "--baselines", "jpeg",
                     "--rate-factors", "1", "--no-fid"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("eval.py: error:") and "bbbbbbbb" in err[0] and "--out" in err[0]


def test_default_folders_are_named_by_fingerprint(tmp_path, monkeypatch, folder):
    monkeypatch.chdir(tmp_path)
    a, b = FakeCodec("aaaaaaaa00000000"), FakeCodec("bbbbbbbb11111111")
    outs = []
    for codec in (a, b):
        _use(monkeypatch, codec)
        r = runner.Runner(_cfg(None, folder, models=["tiny"], baselines=[]), log=lambda s: None)
        r.run()
        outs.append(r.out)
    assert outs[0].name.endswith("_tiny-aaaaaaaa") and outs[1].name.endswith("_tiny-bbbbbbbb")
    assert a.calls == b.calls == 2                  # the second model computed its own rows
    assert protocol.folder_tag(["a" * 16, "b" * 16]) != protocol.folder_tag(["a" * 16, "c" * 16])


def test_changed_decode_settings_are_refused(tmp_path, monkeypatch, folder):
    codec = FakeCodec()
    _use(monkeypatch, codec)
    out = tmp_path / "out"
    runner.Runner(_cfg(out, folder), log=lambda s: None).run()
    codec.optimize(codec.fast_decoder().options, dtype="bf16")
    with pytest.raises(protocol.OutputFolderConflict, match="precision 'float32' there, 'bf16' now"):
        runner.Runner(_cfg(out, folder), log=lambda s: None).run()


def test_folder_of_an_older_eval_is_refused(tmp_path, monkeypatch, folder):
    _use(monkeypatch, FakeCodec())
    out = tmp_path / "out"
    runner.Runner(_cfg(out, folder), log=lambda s: None).run()
    (out / protocol.RUN_FILE).unlink()
    with pytest.raises(protocol.OutputFolderConflict, match="earlier eval version"):
        runner.Runner(_cfg(out, folder), log=lambda s: None).run()


def test_summary_holds_only_this_runs_codecs(tmp_path, monkeypatch, folder):
    codec = FakeCodec()
    _use(monkeypatch, codec)
    out = tmp_path / "out"
    runner.Runner(_cfg(out, folder, baselines=["jpeg", "webp"]), log=lambda s: None).run()
    assert (out / "compressai" / "webp.json").is_file()
    s = runner.Runner(_cfg(out, folder, baselines=["jpeg"], limit=1), log=lambda s: None).run()
    assert {m["codec"] for m in s["means"]} == {"diffeic", "jpeg"} and s["n_images"] == 1
    assert all(m["n"] == 1 for m in s["means"]) and codec.calls == 2     # resumed, nothing recomputed
    assert any("1 image(s) of earlier runs" in n for n in s["notes"])
    assert "webp" in {r["codec"] for r in read_rows(out / "results.csv")}          # kept, not summarised
    assert sorted(p.name for p in (out / "compressai").glob("*.json")) == ["diffeic.json", "jpeg.json"]


def _dataset(name, sizes):
    rng = np.random.default_rng(0)
    images = [EvalImage(f"im{i}", (lambda s=s: rng.integers(0, 256, (*s, 3), dtype=np.uint8)))
              for i, s in enumerate(sizes)]
    return Dataset(name, images, "none", "test")


def test_paper_dataset_runs_untiled_unless_memory_forces_it(tmp_path, monkeypatch):
    codec = FakeCodec()
    codec.optimize(codec.fast_decoder().options, auto_tile_pixels=64 * 64, vae_tile_pixels=64)
    real = codec.decompress

    def decompress(bits, steps=None, sampler=None, seed=None):
        if seed == 231 and codec.fast_decoder().options.tiles is None:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(bits, steps, sampler, seed)
    codec.decompress = decompress
    _use(monkeypatch, codec)
    monkeypatch.setattr(runner, "load_dataset", lambda *a, **k: _dataset("kodak", [(128, 128), (128, 128)]))
    s = runner.Runner(_cfg(tmp_path / "out", "kodak", baselines=[]), log=lambda s: None).run()
    rows = read_rows(tmp_path / "out" / "results.csv")
    # Above the (lowered) auto-tiling threshold, yet whole: paper datasets are not auto-tiled.
    assert [r["tiling"] for r in rows] == ["latent+vae-decoder (out of memory untiled)", "none"]
    assert s["tiling"]["n_tiled"] == 1 and s["tiling"]["policy"].startswith("untiled (paper dataset)")
    assert any("did not fit untiled" in n for n in s["notes"])
    assert codec.fast_decoder().options.tiles is None          # the forced tiling was undone


def test_tiled_image_is_reported_as_tiled(tmp_path, monkeypatch):
    """The real tiny codec, with tiling thresholds lowered so that a 128×128 image is tiled."""
    from diffeic import DiffEICCodec

    codec = DiffEICCodec.from_config("tiny").optimize(auto_tile_pixels=64 * 64, vae_tile_pixels=64)
    monkeypatch.setattr(runner, "resolve_model", lambda spec: (codec, "tiny", "test"))
    monkeypatch.setattr(runner, "load_dataset", lambda *a, **k: _dataset("folder_x", [(128, 128)]))
    s = runner.Runner(_cfg(tmp_path / "out", "folder:x", baselines=[], steps=2), log=lambda s: None).run()
    row = read_rows(tmp_path / "out" / "results.csv")[0]
    assert row["tiling"] == "vae-encoder+latent+vae-decoder" and row["seed"] == 231
    assert s["tiling"] == {"policy": "above 4096 padded pixels", "n_tiled": 1,
                           "tiled": {"im0 (tiny,steps=2)": "vae-encoder+latent+vae-decoder"}}
    m = s["models"][0]
    assert (m["sampler"], m["steps"], m["seed"], m["precision"]) == ("ddpm", 2, 231, "float32")
    assert m["fingerprint"] == codec.fingerprint() and "torch" in s["versions"] and s["device"] == "cpu"
    run = json.loads((tmp_path / "out" / protocol.RUN_FILE).read_text())
    assert run["points"]["folder_x/tiny,steps=2"]["fingerprint"] == codec.fingerprint()
