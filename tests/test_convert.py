"""Conversion of the official DiffEIC ``lc.ckpt`` files (issue #9), on synthetic official-layout files.

The synthetic file is built from the 912 ``control_model.``/``preprocess_model.`` lines of the
official key list (``tests/data/official_lc_keys.tsv``: the key names and
shapes of the official ``lc.ckpt``): random float32 weights, int32 CDF bookkeeping buffers, empty CDF
tables and ``scale_table``, and the documented constant buffers — the expected form of a released
file.  It is ~76 M parameters (~300 MB), so it is built, saved and converted once per module.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict

import pytest
import torch
import yaml
from safetensors.torch import load_file

from diffeic.config import get_config
from diffeic.cli import add_convert_parser
from diffeic.cli import main as diffeic_main
from diffeic.convert import (ConversionError, UntrustedPickleError, convert_official, expected_official_layout,
                             infer_lmbda, load_official_state_dict, map_official_keys)

KEYS_FILE = Path(__file__).parent / "data" / "official_lc_keys.tsv"
CONSTANTS = {
    "preprocess_model.entropy_bottleneck.target": [-21.416412, 0.0, 21.416412],
    "preprocess_model.entropy_bottleneck.likelihood_lower_bound.bound": [1e-9],
    "preprocess_model.gaussian_conditional.scale_bound": [0.11],
    "preprocess_model.gaussian_conditional.likelihood_lower_bound.bound": [1e-9],
    "preprocess_model.gaussian_conditional.lower_bound_scale.bound": [0.11],
    "control_model.scale_list": [1.0] * 25,
}
CDF_SUFFIXES = ("_offset", "_quantized_cdf", "_cdf_length")
EB = "preprocess_model.entropy_bottleneck."
NET = "control_model.control_model."

# Official key → our key (part, name), one per kind of tensor the mapping must get right.
SPOT_CHECKS = {
    EB + "_matrix0": ("lfgcm", "entropy_bottleneck.matrices.0"),
    EB + "_bias4": ("lfgcm", "entropy_bottleneck.biases.4"),
    EB + "_factor3": ("lfgcm", "entropy_bottleneck.factors.3"),
    EB + "quantiles": ("lfgcm", "entropy_bottleneck.quantiles"),
    "preprocess_model.channel_context.9.fushion.4.weight": ("lfgcm", "channel_context.9.fusion.4.weight"),
    "preprocess_model.hyper_dec.hyper_dec.2.weight": ("lfgcm", "hyper_dec.hyper_dec.2.weight"),   # ConvTranspose2d
    "preprocess_model.decoder.sft_feature_gs3.0.weight": ("lfgcm", "decoder.sft_feature_gs3.0.weight"),
    "preprocess_model.f_c.0.weight": ("lfgcm", "f_c.0.weight"),
    "preprocess_model.entropy_parameters_nonanchor.8.fusion.0.weight":
        ("lfgcm", "entropy_parameters_nonanchor.8.fusion.0.weight"),
    NET + "time_embed.0.weight": ("control", "time_embedding.linear_1.weight"),
    NET + "time_embed.2.bias": ("control", "time_embedding.linear_2.bias"),
    NET + "input_blocks.0.0.weight": ("control", "conv_in.weight"),
    NET + "input_blocks.1.0.in_layers.0.weight": ("control", "down_blocks.0.resnets.0.norm1.weight"),
    NET + "input_blocks.2.0.out_layers.3.weight": ("control", "down_blocks.0.resnets.1.conv2.weight"),
    NET + "input_blocks.3.0.op.weight": ("control", "down_blocks.0.downsamplers.0.conv.weight"),
    NET + "input_blocks.4.0.skip_connection.weight": ("control", "down_blocks.1.resnets.0.conv_shortcut.weight"),
    NET + "input_blocks.7.1.transformer_blocks.0.attn2.to_k.weight":
        ("control", "down_blocks.2.attentions.0.transformer_blocks.0.attn2.to_k.weight"),   # cross-attn K
    NET + "input_blocks.5.1.transformer_blocks.0.ff.net.0.proj.weight":
        ("control", "down_blocks.1.attentions.1.transformer_blocks.0.ff.net.0.proj.weight"),   # GEGLU
    NET + "input_blocks.8.1.proj_in.weight": ("control", "down_blocks.2.attentions.1.proj_in.weight"),
    NET + "input_blocks.11.0.emb_layers.1.weight": ("control", "down_blocks.3.resnets.1.time_emb_proj.weight"),
    NET + "middle_block.1.transformer_blocks.0.attn1.to_q.weight":
        ("control", "mid_block.attentions.0.transformer_blocks.0.attn1.to_q.weight"),
    NET + "middle_block.2.out_layers.0.bias": ("control", "mid_block.resnets.1.norm2.bias"),
    "control_model.enc_zero_convs_out.4.0.weight": ("control", "enc_zero_convs.4.weight"),
    "control_model.middle_block_out.0.bias": ("control", "mid_zero_conv.bias"),
    "control_model.dec_zero_convs_out.7.0.weight": ("control", "dec_zero_convs.7.weight"),
}


def read_official_keys() -> Dict[str, list]:
    out = {}
    for line in KEYS_FILE.read_text().splitlines():
        key, shape = line.split("\t")
        out[key] = json.loads(shape)
    return out


def synthetic_official_state_dict(seed: int = 0) -> Dict[str, torch.Tensor]:
    """An official-layout lc.ckpt state dict (expected published form, see module docstring)."""
    gen = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in read_official_keys().items():
        if key in CONSTANTS:
            sd[key] = torch.tensor(CONSTANTS[key], dtype=torch.float32)
        elif key.endswith(CDF_SUFFIXES):
            sd[key] = torch.zeros(shape, dtype=torch.int32)
        else:
            # Conv/linear weights fan-in scaled like a default init, so the sd21 round trip stays finite
            # (0.05 everywhere makes the deep LFGCM decoder overflow to ~1e21); the EB density keeps
            # small values, with which its CDF tables can be built.
            small = len(shape) < 2 or key.startswith(EB)
            std = 0.05 if small else 1 / math.sqrt(math.prod(shape[1:]))
            sd[key] = torch.randn(shape, generator=gen) * std
    return sd


def official_to_ours() -> Dict[str, tuple]:
    return {k: (t.part, t.key) for k, t in expected_official_layout("sd21").items()}


@pytest.fixture(scope="module")
def official_sd():
    return synthetic_official_state_dict()


@pytest.fixture(scope="module")
def official_file(official_sd, tmp_path_factory):
    # The official folder name 1_2_<λ> lets the converter read λ.
    path = tmp_path_factory.mktemp("weight") / "1_2_4" / "lc.ckpt"
    path.parent.mkdir()
    torch.save({"state_dict": official_sd}, path)
    return path


@pytest.fixture(scope="module")
def converted(official_file, tmp_path_factory):
    start = time.perf_counter()
    folder = convert_official(official_file, tmp_path_factory.mktemp("ckpt") / "diffeic_l4")
    print(f"\nconversion of a full synthetic lc.ckpt: {time.perf_counter() - start:.1f} s")
    return folder


@pytest.fixture(scope="module")
def converted_tensors(converted):
    return {"lfgcm": load_file(str(converted / "lfgcm.safetensors")),
            "control": load_file(str(converted / "control.safetensors"))}


# --------------------------------------------------------------------------- the mapping itself

def test_expected_layout_covers_every_official_key_with_its_shape():
    official = read_official_keys()
    layout = expected_official_layout("sd21")
    assert len(official) == 912
    assert {t.part for t in layout.values()} == {"lfgcm", "control"}
    assert sum(t.part == "lfgcm" for t in layout.values()) == 551
    assert sum(t.part == "control" for t in layout.values()) == 348
    for key, target in layout.items():
        assert official[key] == list(target.shape), key
    # What is not a trainable tensor is exactly the 13 buffers handled by value (CDF tables, constants).
    rest = sorted(set(official) - set(layout))
    assert rest == sorted([*CONSTANTS, *(EB + s for s in CDF_SUFFIXES),
                           *(f"preprocess_model.gaussian_conditional.{s}" for s in (*CDF_SUFFIXES, "scale_table"))])


def test_control_names_follow_diffusers_and_the_zero_conv_table():
    mapping = official_to_ours()
    for official, ours in SPOT_CHECKS.items():
        assert mapping[official] == ours, official
    # The zero convs of the official ``CDDM`` (``make_zero_conv``): (in, out) per conv.
    layout = expected_official_layout("sd21")
    table = {**{f"enc_zero_convs_out.{i}": (64, 320) for i in range(4)},
             **{f"enc_zero_convs_out.{i}": (128, 640) for i in range(4, 7)},
             **{f"enc_zero_convs_out.{i}": (256, 1280) for i in range(7, 12)},
             "middle_block_out": (256, 1280),
             **{f"dec_zero_convs_out.{j}": (256, 1280) for j in range(5)},
             "dec_zero_convs_out.5": (128, 1280), "dec_zero_convs_out.6": (128, 1280),
             "dec_zero_convs_out.7": (128, 640), "dec_zero_convs_out.8": (64, 640),
             "dec_zero_convs_out.9": (64, 640), "dec_zero_convs_out.10": (64, 320), "dec_zero_convs_out.11": (64, 320)}
    for name, (c_in, c_out) in table.items():
        assert layout[f"control_model.{name}.0.weight"].shape == (c_out, c_in, 1, 1), name


# --------------------------------------------------------------------------- full conversion

def test_converted_tensors_equal_the_official_ones(official_sd, converted_tensors):
    mapping = official_to_ours()
    for official, (part, ours) in SPOT_CHECKS.items():
        assert torch.equal(converted_tensors[part][ours], official_sd[official]), official
    # …and every other trainable tensor too (one wrong index would break the model silently).
    wrong = [k for k, (part, ours) in mapping.items() if not torch.equal(converted_tensors[part][ours], official_sd[k])]
    assert wrong == []
    assert len(converted_tensors["control"]) == 348
    assert len(converted_tensors["lfgcm"]) == 563


def test_converted_folder_holds_rebuilt_tables_and_metadata(converted, converted_tensors, official_file):
    lf = converted_tensors["lfgcm"]
    # CDF tables were empty in the file and are rebuilt: 192 EB channels, 64 Gaussian scales.
    assert lf["entropy_bottleneck._offset"].shape == (192,)
    assert lf["entropy_bottleneck._quantized_cdf"].shape[0] == 192
    assert lf["gaussian_conditional._quantized_cdf"].shape[0] == 64
    table = torch.tensor([math.exp(math.log(0.11) + i * (math.log(256) - math.log(0.11)) / 63) for i in range(64)])
    assert torch.allclose(lf["gaussian_conditional.scale_table"], table, rtol=1e-6)
    assert torch.allclose(lf["entropy_bottleneck.target"], torch.tensor(CONSTANTS[EB + "target"]))
    meta = yaml.safe_load((converted / "config.yaml").read_text())
    assert meta["trained"] is True and meta["lmbda"] == 4          # λ read from the folder name 1_2_4
    assert meta["source"] == "official DiffEIC lc.ckpt" and meta["backbone_fingerprint"] is None
    assert meta["sd_path"] is None and len(meta["source_sha256"]) == 64
    assert meta["model"] == get_config("sd21").to_dict()


def _load_converted_lfgcm(folder: Path):
    from diffeic.lfgcm import LFGCM

    lfgcm = LFGCM(get_config("sd21").lfgcm).eval()
    lfgcm.load_state_dict(load_file(str(folder / "lfgcm.safetensors")))   # strict, as from_pretrained does
    return lfgcm


def test_stored_tables_are_those_of_the_converted_weights(converted, converted_tensors):
    lfgcm = _load_converted_lfgcm(converted)
    lfgcm.update(force=True)
    for name in ("entropy_bottleneck._quantized_cdf", "entropy_bottleneck._offset",
                 "gaussian_conditional._quantized_cdf"):
        assert torch.equal(lfgcm.state_dict()[name], converted_tensors["lfgcm"][name]), name


@pytest.mark.slow
def test_converted_lfgcm_codes_losslessly(converted):
    """The converted LFGCM's own streams round-trip (~5–25 s on 2 CPU cores: sd21 widths)."""
    lfgcm = _load_converted_lfgcm(converted)
    gen = torch.Generator().manual_seed(1)
    x, z_g = torch.rand(1, 3, 64, 64, generator=gen), torch.randn(1, 4, 8, 8, generator=gen)
    coded = lfgcm.compress(x, z_g)
    decoded = lfgcm.decompress(coded["strings"], coded["shape"])
    with torch.no_grad():
        expected = lfgcm.eval()(x, z_g)
    assert torch.equal(decoded["y_hat"], expected["y_hat"]) and torch.equal(decoded["z_hat"], expected["z_hat"])
    assert decoded["z_c"].shape == (1, 4, 8, 8) and torch.isfinite(decoded["z_c"]).all()


def test_variant_file_converts_to_identical_weights(official_sd, converted_tensors, tmp_path):
    """``module.`` prefix + compressai ≥1.2.7 EB names + filled CDF tables + no constants → same output."""
    sd = {}
    for key, value in official_sd.items():
        if key in CONSTANTS:
            continue
        key = (key.replace("._matrix", ".matrices.").replace("._bias", ".biases.").replace("._factor", ".factors.")
               if key.startswith(EB) else key)
        sd["module." + key] = value
    for prefix, rows in ((EB, 192), ("preprocess_model.gaussian_conditional.", 64)):   # junk tables
        sd[f"module.{prefix}_offset"] = torch.full((rows,), -7, dtype=torch.int32)
        sd[f"module.{prefix}_quantized_cdf"] = torch.randint(0, 65536, (rows, 40), dtype=torch.int32)
        sd[f"module.{prefix}_cdf_length"] = torch.full((rows,), 40, dtype=torch.int32)
    sd["module.preprocess_model.gaussian_conditional.scale_table"] = torch.linspace(1, 2, 64)
    assert any(".matrices.0" in k for k in sd)
    path = tmp_path / "lc.ckpt"
    torch.save(sd, path)                                 # no "state_dict" nesting either
    folder = convert_official(path, tmp_path / "out", lmbda=2.5, sd_path="/models/sd21")
    del sd
    for part in ("lfgcm", "control"):
        got = load_file(str(folder / f"{part}.safetensors"))
        assert got.keys() == converted_tensors[part].keys()
        assert all(torch.equal(got[k], converted_tensors[part][k]) for k in got), part   # tables rebuilt, not copied
    meta = yaml.safe_load((folder / "config.yaml").read_text())
    assert meta["lmbda"] == 2.5 and meta["sd_path"] == "/models/sd21"


def test_existing_checkpoint_is_not_overwritten_silently(official_file, converted):
    before = (converted / "config.yaml").read_text()
    with pytest.raises(FileExistsError, match="already holds config.yaml"):
        convert_official(official_file, converted)
    assert (converted / "config.yaml").read_text() == before


# --------------------------------------------------------------------------- strictness (in memory)

def _error(sd, match: str) -> str:
    with pytest.raises(ConversionError, match=match) as info:
        map_official_keys(sd)
    return str(info.value)


def test_missing_key_is_named(official_sd):
    sd = dict(official_sd)
    del sd[NET + "input_blocks.5.1.proj_in.weight"]
    msg = _error(sd, "1 missing key")
    assert NET + "input_blocks.5.1.proj_in.weight" in msg and "unexpected" not in msg


def test_missing_entropy_bottleneck_key_names_both_spellings(official_sd):
    sd = dict(official_sd)
    del sd[EB + "_matrix2"]
    _error(sd, r"entropy_bottleneck\._matrix2 \(or preprocess_model\.entropy_bottleneck\.matrices\.2\)")


def test_extra_key_is_named(official_sd):
    sd = {**official_sd, "control_model.control_model.input_blocks.12.0.op.weight": torch.zeros(3)}
    msg = _error(sd, "1 unexpected key")
    assert "input_blocks.12.0.op.weight" in msg and "missing" not in msg


def test_wrong_shape_names_key_and_both_shapes(official_sd):
    key = NET + "input_blocks.7.1.transformer_blocks.0.attn2.to_k.weight"
    sd = {**official_sd, key: torch.zeros(256, 768)}
    _error(sd, rf"1 mis-shaped key.*{key}: file \[256, 768\] vs model \[256, 1024\]")


def test_many_problems_are_counted_and_listed_briefly(official_sd):
    only_control = {k: v for k, v in official_sd.items() if k.startswith("control_model.")}
    msg = _error(only_control, "551 missing key")
    assert "(+541 more)" in msg


@pytest.mark.parametrize("key, value, match", [
    ("control_model.scale_list", torch.full((25,), 0.5), "scales must all be 1.0"),
    ("control_model.scale_list", torch.ones(24), r"scale_list: file shape \[24\] vs expected \[25\]"),
    (EB + "target", torch.tensor([-10.0, 0.0, 10.0]), "entropy_bottleneck.target: value"),
    ("preprocess_model.gaussian_conditional.scale_bound", torch.tensor([0.2]), "scale_bound: value"),
])
def test_wrong_constants_are_refused(official_sd, key, value, match):
    _error({**official_sd, key: value}, match)


def test_integer_weights_are_refused(official_sd):
    key = "preprocess_model.f_c.4.bias"
    _error({**official_sd, key: torch.zeros(48, dtype=torch.int64)}, f"{key}: dtype torch.int64")


def test_both_entropy_bottleneck_spellings_at_once_are_refused(official_sd):
    sd = {**official_sd, EB + "matrices.0": official_sd[EB + "_matrix0"]}
    _error(sd, "both compressai spellings")


def test_newer_compressai_names_and_module_prefix_map_identically(official_sd):
    renamed = {"module." + k.replace("._factor", ".factors."): v for k, v in official_sd.items()}
    lf_new, ctrl_new = map_official_keys(renamed)
    lf_old, ctrl_old = map_official_keys(official_sd)
    assert lf_new.keys() == lf_old.keys() and ctrl_new.keys() == ctrl_old.keys()
    assert lf_new["entropy_bottleneck.factors.2"] is official_sd[EB + "_factor2"]


def test_training_checkpoint_frozen_parts_are_ignored(official_sd):
    sd = {**official_sd, "model.diffusion_model.conv_in.weight": torch.zeros(320, 4, 3, 3),
          "first_stage_model.encoder.conv_in.bias": torch.zeros(128), "betas": torch.zeros(1000),
          "cond_stage_model.model.logit_scale": torch.tensor(1.0)}
    lf, ctrl = map_official_keys(sd)
    assert len(lf) == 563 and len(ctrl) == 348


# --------------------------------------------------------------------------- reading files

@pytest.mark.parametrize("content, match", [
    (b"", "the file is empty"),
    (b"\x89PNG\r\n\x1a\n" + bytes(200), "not a PyTorch checkpoint.*PNG image"),
    (b"<!DOCTYPE html><html><body>Google Drive - Virus scan warning", "HTML page"),
    (b"hello world, plain text", "not a PyTorch checkpoint"),
    (pickle.dumps({"state_dict": [1, 2]}), r"truncated or corrupt checkpoint \(UnpicklingError: Unsupported"),
], ids=["empty", "png", "html", "text", "plain-pickle"])
def test_non_checkpoint_files_get_clear_errors(tmp_path, content, match):
    path = tmp_path / "lc.ckpt"
    path.write_bytes(content)
    with pytest.raises(ConversionError, match=match) as info:
        load_official_state_dict(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("keep", [0.5, 0.98])
def test_truncated_files_get_clear_errors(tmp_path, legacy, keep):
    path = tmp_path / "lc.ckpt"
    torch.save({"state_dict": {"a": torch.randn(1000), "b": torch.randn(10, 10)}}, path,
               _use_new_zipfile_serialization=not legacy)
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])
    with pytest.raises(ConversionError, match="truncated or corrupt"):
        load_official_state_dict(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_official_state_dict(tmp_path / "nope.ckpt")


def test_lightning_metadata_needs_explicit_trust(tmp_path):
    path = tmp_path / "lc.ckpt"
    weights = {"module.preprocess_model.f_c.0.bias": torch.randn(96)}
    torch.save({"state_dict": weights, "hyper_parameters": argparse.Namespace(lr=1e-4), "epoch": 3}, path)
    with pytest.raises(UntrustedPickleError, match="--trust-pickle") as info:
        load_official_state_dict(path)
    assert "argparse.Namespace" in str(info.value)
    loaded = load_official_state_dict(path, trust_pickle=True)
    assert list(loaded) == ["preprocess_model.f_c.0.bias"]          # unwrapped and prefix stripped
    assert torch.equal(loaded["preprocess_model.f_c.0.bias"], weights["module.preprocess_model.f_c.0.bias"])


def test_state_dict_with_non_tensors_is_refused(tmp_path):
    path = tmp_path / "lc.ckpt"
    torch.save({"state_dict": {"a": torch.zeros(1), "b": 3}}, path)
    with pytest.raises(ConversionError, match="1 entries of the state dict are not tensors: b"):
        load_official_state_dict(path)


def test_lmbda_is_read_from_official_folder_names():
    assert infer_lmbda("weight/1_2_16/lc.ckpt") == 16
    assert infer_lmbda("weight/1_2_1/lc.ckpt") == 1
    assert infer_lmbda("downloads/lc.ckpt") is None


# --------------------------------------------------------------------------- command line

def test_cli_parser_registration():
    parser = argparse.ArgumentParser(prog="diffeic")
    add_convert_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["convert", "a/lc.ckpt", "out", "--lmbda", "8", "--sd-path", "p", "--trust-pickle"])
    assert (args.ckpt, args.out_dir, args.lmbda, args.sd_path, args.trust_pickle, args.force) == \
        ("a/lc.ckpt", "out", 8.0, "p", True, False)
    assert args.func.__name__ == "run_convert"


def test_registers_in_the_diffeic_command(tmp_path, capsys):
    """``diffeic convert`` is registered in the ``diffeic`` CLI (its one entry point), runs and reports errors."""
    from diffeic import cli

    assert cli.SUBCOMMANDS["convert"] is add_convert_parser
    bad = tmp_path / "lc.ckpt"
    bad.write_bytes(b"<html>")
    assert cli.main(["convert", str(bad), str(tmp_path / "out"), "--lmbda", "2"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("diffeic: error:") and "HTML page" in err


def test_cli_reports_errors_with_exit_code(tmp_path, capsys):
    bad = tmp_path / "lc.ckpt"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    assert diffeic_main(["convert", str(bad), str(tmp_path / "out")]) == 1
    assert "PNG image" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_python_dash_m_entry_point(tmp_path):
    """``python -m diffeic convert`` (slow only because the subprocess imports torch/diffusers anew)."""
    bad = tmp_path / "lc.ckpt"
    bad.write_bytes(b"")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, "-m", "diffeic", "convert", str(bad), str(tmp_path / "out")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 1 and "the file is empty" in proc.stderr


# --------------------------------------------------------------------------- end to end

@pytest.mark.slow
def test_codec_from_converted_folder_round_trips(converted, monkeypatch):
    """DiffEICCodec.from_pretrained on the converted folder, sd21 frozen parts random: 64×64, 1 step.

    Builds the 866 M-parameter UNet on CPU (~5 GB peak, ~35 s on 2 cores), hence ``slow``.
    """
    from diffeic import DiffEICCodec
    from diffeic.diffusion.backbone import FrozenBackbone

    requested = []

    def random_sd21(cls, cfg, sd_path=None, cache_dir=None):
        requested.append(sd_path)
        return FrozenBackbone.from_config(cfg, seed=1)

    monkeypatch.setattr(FrozenBackbone, "from_pretrained", classmethod(random_sd21))
    codec = DiffEICCodec.from_pretrained(converted)
    assert requested == [None] and codec.is_trained
    official = load_file(str(converted / "control.safetensors"))
    assert torch.equal(codec.control.state_dict()["dec_zero_convs.7.weight"], official["dec_zero_convs.7.weight"])
    x = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0))
    bits = codec.compress(x)
    x_hat = codec.decompress(bits, steps=1)
    assert x_hat.shape == (3, 64, 64) and torch.isfinite(x_hat).all()
    assert 0 <= x_hat.min() and x_hat.max() <= 1


def test_cli_success_line_names_flags_not_the_python_api(tmp_path, capsys, monkeypatch):
    """issue 32 item 7: the command line's advice is a command line."""
    import diffeic.convert as convert_module

    out = tmp_path / "ckpt"
    monkeypatch.setattr(convert_module, "convert_official", lambda *a, **k: out)
    assert diffeic_main(["convert", str(tmp_path / "lc.ckpt"), str(out)]) == 0
    line = capsys.readouterr().out.strip()
    assert line == f"wrote {out} (use it with: diffeic compress IMAGE --model {out} --sd-path SD2.1-BASE)"
    assert diffeic_main(["convert", str(tmp_path / "lc.ckpt"), str(out), "--sd-path", "sd2-community/x"]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {out} (use it with: diffeic compress IMAGE --model {out})"
