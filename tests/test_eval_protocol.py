"""Protocol fidelity and unmixable folders: per-image seeds, tiling records, run identity (issues 14.6, 17.4)."""
import json

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
    base = dict(dataset=dataset, baselines=[], rate_factors=[1.0], out=None if out is None else str(out),
                device="cpu", progress=False, fid=False, limit=1)
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
    assert cli.main(["--dataset", folder, "--out", str(out), "--no-progress", "--baselines", "",
                     "--limit", "1", "--no-fid"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("eval.py: error:") and "bbbbbbbb" in err[0] and "--out" in err[0]


def test_default_folders_are_named_by_fingerprint(tmp_path, monkeypatch, folder):
    monkeypatch.chdir(tmp_path)
    a, b = FakeCodec("aaaaaaaa00000000"), FakeCodec("bbbbbbbb11111111")
    outs = []
    for codec in (a, b):
        _use(monkeypatch, codec)
        r = runner.Runner(_cfg(None, folder, models=["tiny"]), log=lambda s: None)
        r.run()
        outs.append(r.out)
    assert outs[0].name.endswith("_tiny-aaaaaaaa") and outs[1].name.endswith("_tiny-bbbbbbbb")
    assert a.calls == b.calls == 1                  # the second model computed its own rows
    assert protocol.folder_tag(["a" * 16, "b" * 16]) != protocol.folder_tag(["a" * 16, "c" * 16])


def _identity(**kw):
    base = dict(fingerprint="a" * 16, config="tiny", trained=False, source="test", sampler="ddpm", steps=50,
                seed=231, precision="float32", device="cpu", tiling="above 1048576 padded pixels")
    base.update(kw)
    return protocol.point_identity(**base)


def test_claim_folder_refuses_other_settings_and_adds_new_points(tmp_path):
    out = tmp_path / "out"
    protocol.claim_folder(out, {"samples/tiny": _identity()}, has_rows=False)
    protocol.claim_folder(out, {"samples/tiny": _identity(source="moved/elsewhere")}, has_rows=True)  # same model
    for field, value in (("precision", "bf16"), ("device", "cuda:0"), ("steps", 20), ("tiling", "never")):
        with pytest.raises(protocol.OutputFolderConflict, match=f"{field} .* there, .* now"):
            protocol.claim_folder(out, {"samples/tiny": _identity(**{field: value})}, has_rows=True)
    protocol.claim_folder(out, {"kodak/tiny": _identity(tiling="never")}, has_rows=True)     # another dataset
    run = json.loads((out / protocol.RUN_FILE).read_text())
    assert set(run["points"]) == {"samples/tiny", "kodak/tiny"} and run["points"]["samples/tiny"]["source"] == "test"


def test_folder_of_an_older_eval_is_refused(tmp_path):
    with pytest.raises(protocol.OutputFolderConflict, match="earlier eval version"):
        protocol.claim_folder(tmp_path, {"samples/tiny": _identity()}, has_rows=True)      # rows, no run.json
    (tmp_path / protocol.RUN_FILE).write_text('{"protocol_version": 1, "points": {}}')
    with pytest.raises(protocol.OutputFolderConflict, match="protocol version 1"):
        protocol.claim_folder(tmp_path, {"samples/tiny": _identity()}, has_rows=True)


def test_summary_holds_only_this_runs_codecs(tmp_path, monkeypatch, folder):
    codec = FakeCodec()
    _use(monkeypatch, codec)
    out = tmp_path / "out"
    runner.Runner(_cfg(out, folder, baselines=["jpeg", "webp"], limit=2), log=lambda s: None).run()
    assert (out / "compressai" / "webp.json").is_file()
    s = runner.Runner(_cfg(out, folder, baselines=["jpeg"]), log=lambda s: None).run()
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

    def decompress(bits, steps=None, sampler=None, seed=None, max_steps=None):
        if seed == 231 and codec.fast_decoder().options.tiles is None:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(bits, steps, sampler, seed)
    codec.decompress = decompress
    _use(monkeypatch, codec)
    monkeypatch.setattr(runner, "load_dataset", lambda *a, **k: _dataset("kodak", [(128, 128), (128, 128)]))
    s = runner.Runner(_cfg(tmp_path / "out", "kodak", limit=None), log=lambda s: None).run()
    rows = read_rows(tmp_path / "out" / "results.csv")
    # Above the (lowered) auto-tiling threshold, yet whole: paper datasets are not auto-tiled.
    assert [r["tiling"] for r in rows] == ["latent+vae-decoder (out of memory untiled)", "none"]
    assert s["tiling"]["n_tiled"] == 1 and s["tiling"]["policy"].startswith("untiled (paper dataset)")
    assert any("did not fit untiled" in n for n in s["notes"])
    assert codec.fast_decoder().options.tiles is None          # the forced tiling was undone


def test_tiled_image_is_reported_as_tiled(tmp_path, monkeypatch):
    """Tiling thresholds lowered so that a 128×128 image is tiled: the row and the summary say so."""
    codec = FakeCodec()
    codec.optimize(codec.fast_decoder().options, auto_tile_pixels=64 * 64, vae_tile_pixels=64)
    _use(monkeypatch, codec)
    monkeypatch.setattr(runner, "load_dataset", lambda *a, **k: _dataset("folder_x", [(128, 128), (32, 48)]))
    s = runner.Runner(_cfg(tmp_path / "out", "folder:x", limit=None), log=lambda s: None).run()
    rows = read_rows(tmp_path / "out" / "results.csv")
    assert [(r["tiling"], r["seed"]) for r in rows] == [("vae-encoder+latent+vae-decoder", 231), ("none", 232)]
    assert s["tiling"] == {"policy": "above 4096 padded pixels", "n_tiled": 1,
                           "tiled": {"im0 (fake)": "vae-encoder+latent+vae-decoder"}}
    m = s["models"][0]
    assert (m["sampler"], m["steps"], m["seed"], m["precision"]) == ("ddpm", 4, 231, "float32")
    assert m["fingerprint"] == codec.fingerprint() and "torch" in s["versions"] and s["device"] == "cpu"
    run = json.loads((tmp_path / "out" / protocol.RUN_FILE).read_text())
    assert run["points"]["folder_x/fake"]["fingerprint"] == codec.fingerprint()


def test_tiling_record_follows_the_real_decoders_decisions(tiny_codec):
    """The record comes from the codec's own tiling functions (no decode needed to know)."""
    try:
        assert protocol.tiling_record(tiny_codec, 128, 128) == "none"
        tiny_codec.optimize(auto_tile_pixels=64 * 64, vae_tile_pixels=64)
        assert protocol.tiling_record(tiny_codec, 128, 128) == "vae-encoder+latent+vae-decoder"
        assert protocol.tiling_record(tiny_codec, 32, 48) == "none"              # padded 64×64: under the threshold
        assert tiny_codec.fast_decoder().tiles_for(torch.empty(1, 4, 16, 16)) is not None
        protocol.run_untiled(tiny_codec)
        assert protocol.tiling_record(tiny_codec, 128, 128) == "none"
        assert protocol.tiling_policy(tiny_codec) == "never, unless out of memory"
        with protocol.forced_tiling(tiny_codec):
            assert protocol.tiling_record(tiny_codec, 128, 128) == "latent+vae-decoder"
        assert protocol.tiling_record(tiny_codec, 128, 128) == "none"
    finally:
        tiny_codec.optimize()                       # the session's codec back to the plain path
