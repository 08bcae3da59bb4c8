"""Int8-packed weights (diffeic.weight_packing): the format on hand values, its error bound and exactness, and
loading packed files transparently — DiffEIC checkpoint folders (written as scripts/package_tiny.py writes the demo
model) and a backbone folder whose unet/ is packed."""
import importlib.util
import math
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from diffeic import DiffEICCodec, get_config
from diffeic.codecs.folder import CheckpointError, load_tensors
from diffeic.diffusion.backbone import FrozenBackbone
from diffeic.diffusion.sd_source import BackboneUnavailableError
from diffeic.weight_packing import (INT8_SUFFIX, SCALE_SUFFIX, file_is_packed, is_packable, pack_int8,
                                    quantise_roundtrip, unpack)

REPO = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("package_tiny", REPO / "scripts" / "package_tiny.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _scale16(x: float) -> float:
    """x rounded to 16 significant bits (the stored scale), computed in float64 as an independent reference."""
    m, e = math.frexp(x)
    return round(m * 2 ** 16) / 2 ** 16 * 2 ** e


# --------------------------------------------------------------------------- the format
def test_pack_hand_values():
    w = torch.tensor([[127.0, -63.4, 10.6],        # absmax 127: s = 1
                      [0.5, -0.2, 0.1],            # absmax 0.5: s = 0.5/127 (16 significant bits)
                      [0.0, 0.0, 0.0]])            # zeros: s = 1, q = 0
    packed = pack_int8({"conv.weight": w}, min_numel=1)
    assert set(packed) == {"conv.weight" + INT8_SUFFIX, "conv.weight" + SCALE_SUFFIX}
    q, s = packed["conv.weight.__int8__"], packed["conv.weight.__scale__"]
    assert q.dtype == torch.int8 and s.dtype == torch.float32 and s.shape == (3,)
    assert q.tolist() == [[127, -63, 11], [127, -51, 25], [0, 0, 0]]
    assert s.tolist() == [1.0, _scale16(0.5 / 127), 1.0] and s[1].item() == 0.0039370059967041016
    out = unpack(packed)
    assert list(out) == ["conv.weight"] and out["conv.weight"].dtype == torch.float32
    assert out["conv.weight"].tolist() == [[127.0, -63.0, 11.0], [127 * s[1].item(), -51 * s[1].item(),
                                                                  25 * s[1].item()], [0.0, 0.0, 0.0]]


def test_small_and_other_tensors_pass_through():
    state = {"small": torch.randn(2, 3),                       # below min_numel
             "bias": torch.randn(4096),                        # 1-D
             "table": torch.randint(0, 9, (64, 64), dtype=torch.int32),
             "half_small": torch.randn(3, 3).half(),
             "big": torch.randn(32, 64)}
    packed = pack_int8(state)
    assert set(packed) == {"small", "bias", "table", "half_small", "big.__int8__", "big.__scale__"}
    for k in ("small", "bias", "table", "half_small"):
        assert packed[k] is state[k]
    out = unpack(packed)
    assert out["half_small"].dtype == torch.float16 and torch.equal(out["table"], state["table"])
    plain = {k: v for k, v in state.items() if k != "big"}
    assert unpack(plain) == plain                          # no packed keys: unchanged
    assert [is_packable(state[k]) for k in state] == [False, False, False, False, True]


def test_fp16_input():
    w = (torch.randn(16, 128) * torch.logspace(-3, 1, 16)[:, None]).half()
    packed = pack_int8({"w": w})
    assert packed["w.__scale__"].dtype == torch.float32
    ref = pack_int8({"w": w.float()})
    assert torch.equal(packed["w.__int8__"], ref["w.__int8__"])
    assert torch.equal(packed["w.__scale__"], ref["w.__scale__"])
    assert unpack(packed)["w"].dtype == torch.float32


def _rows_of_many_magnitudes(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(48, 8, 3, 3, generator=g) * torch.logspace(-6, 2, 48)[:, None, None, None]
    w[5] = 0.0
    return w


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_error_within_half_a_step_of_its_row(seed):
    w = _rows_of_many_magnitudes(seed)
    r = quantise_roundtrip(w)
    step = w.double().abs().flatten(1).amax(1) / 127               # each row's own step (reference, float64)
    err = (r.double() - w.double()).abs().flatten(1).amax(1)
    assert (err <= step / 2 * (1 + 2 ** -14)).all()
    assert (err[step > 0] > 0).all()                                # it does quantise
    assert r[5].abs().sum() == 0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_unpack_exact_and_pack_idempotent(seed):
    w = _rows_of_many_magnitudes(seed)
    packed = pack_int8({"w": w})
    q, s = packed["w.__int8__"], packed["w.__scale__"]
    exact = q.double() * s.double()[:, None, None, None]             # the real product, float64
    out = unpack(packed)["w"]
    assert torch.equal(out.double(), exact)                            # no rounding at all in float32
    assert torch.equal(out, quantise_roundtrip(w))
    again = pack_int8({"w": out})                                      # re-packing the rounded weights
    assert torch.equal(again["w.__int8__"], q) and torch.equal(again["w.__scale__"], s)
    assert torch.equal(quantise_roundtrip(out), out)


@pytest.mark.parametrize("drop, change, message", [
    ("w.__scale__", None, "w.__int8__: int8 values without their scale w.__scale__"),
    ("w.__int8__", None, "w.__scale__: int8 scale without its values w.__int8__"),
    (None, ("w.__scale__", torch.ones(3)), "w.__scale__: must be float32 of shape (4,)"),
    (None, ("w.__scale__", torch.ones(4).half()), "w.__scale__: must be float32 of shape (4,)"),
    (None, ("w.__int8__", torch.ones(4, 300, dtype=torch.int16)), "w.__int8__: must be an int8 tensor"),
    (None, ("w.__scale__", torch.tensor([1.0, 0.0, 1.0, 1.0])), "w.__scale__: scales must be finite and positive"),
    (None, ("w", torch.ones(4, 300)), "w.__int8__: w is stored both packed and unpacked"),
])
def test_malformed_pairs(drop, change, message):
    packed = pack_int8({"w": torch.randn(4, 300)})
    if drop:
        del packed[drop]
    if change:
        packed[change[0]] = change[1]
    with pytest.raises(ValueError) as err:
        unpack(packed)
    assert message in str(err.value)
    with pytest.raises(ValueError, match="may not end with"):
        pack_int8({"x.__int8__": torch.randn(4, 300)})


def test_malformed_file_is_a_checkpoint_error_naming_file_and_key(tmp_path):
    packed = pack_int8({"g_a.0.weight": torch.randn(8, 200)})
    del packed["g_a.0.weight.__scale__"]
    save_file(packed, str(tmp_path / "lfgcm.safetensors"))
    with pytest.raises(CheckpointError) as err:
        load_tensors(tmp_path / "lfgcm.safetensors")
    assert str(tmp_path / "lfgcm.safetensors") in str(err.value)
    assert "g_a.0.weight.__int8__: int8 values without their scale g_a.0.weight.__scale__" in str(err.value)


# --------------------------------------------------------------------------- DiffEIC checkpoint folders
@pytest.mark.filterwarnings("ignore:model 'tiny' has random, untrained weights")
def test_packed_checkpoint_loads_bit_identical(tmp_path):
    """The demo recipe's int8 storage (the packaging script's own functions): a tiny codec rounded in memory, saved,
    its files packed, loads back with the same fingerprint, bytes and reconstructions."""
    script = _script()
    codec = DiffEICCodec.from_config("tiny")
    script.round_to_storage(codec.lfgcm, "int8")
    script.round_to_storage(codec.control, "int8")
    codec.lfgcm.update(force=True)
    folder = codec.save_pretrained(tmp_path / "ckpt")
    sizes = {}
    for name in ("lfgcm.safetensors", "control.safetensors"):
        sizes[name] = (folder / name).stat().st_size
        script.store_file(folder / name, "int8")
        assert file_is_packed(folder / name) and (folder / name).stat().st_size < 0.6 * sizes[name]
    script.record_hashes(folder)

    loaded = DiffEICCodec.from_pretrained(folder)
    assert loaded.fingerprint() == codec.fingerprint()
    for (name, a), b in zip(codec.lfgcm.state_dict().items(), loaded.lfgcm.state_dict().values()):
        assert torch.equal(a, b), name
    x = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0))
    bits = codec.compress(x)
    assert loaded.compress(x) == bits
    assert torch.equal(loaded.decompress(bits), codec.decompress(bits))


def test_packed_unet_backbone_folder(tmp_path):
    cfg = get_config("tiny").backbone
    backbone = FrozenBackbone.from_config(cfg, seed=3)
    backbone.save_pretrained(tmp_path)
    weights = tmp_path / "unet" / "diffusion_pytorch_model.safetensors"
    save_file(pack_int8(load_file(str(weights))), str(weights))
    with torch.no_grad():
        for p in backbone.unet.parameters():
            p.copy_(quantise_roundtrip(p))

    rng = torch.random.get_rng_state()
    loaded = FrozenBackbone.from_pretrained(cfg, sd_path=str(tmp_path))
    assert torch.equal(torch.random.get_rng_state(), rng)              # the random init before loading is hidden
    assert not loaded.unet.training and loaded.unet.dtype == torch.float32
    assert loaded.fingerprint() == FrozenBackbone(backbone.vae, backbone.unet, backbone.text_embedding,
                                                  cfg.scale_factor).fingerprint()
    z = torch.randn(1, loaded.unet.config.in_channels, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = backbone.unet(z, 500, backbone.text_embedding).sample
        out = loaded.unet(z, 500, loaded.text_embedding).sample
    assert torch.equal(out, ref)

    state = load_file(str(weights))                                     # a packed file missing one scale
    key = next(k for k in state if k.endswith(SCALE_SUFFIX))
    del state[key]
    save_file(state, str(weights))
    with pytest.raises(BackboneUnavailableError, match=re.escape(key)):
        FrozenBackbone.from_pretrained(cfg, sd_path=str(tmp_path))
