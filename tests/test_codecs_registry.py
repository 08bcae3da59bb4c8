"""One codec base, one registry, one loader (issue 29): every family is a ``Codec``, reached by the same names
(preset, shipped model, hub id, folder); an unknown name is an error listing what exists, never a silent default."""
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import diffeic
from conftest import photo
from diffeic import cli
from diffeic.codecs import registry
from diffeic.codecs.base import Codec
from diffeic.util import file_sha256, first_line


def test_every_family_is_a_codec_and_the_registry_names_its_plug_in():
    for family in registry.FAMILY_CODECS:
        cls = registry.codec_class(family)
        assert issubclass(cls, Codec) and cls.family == family and cls.weight_files
    assert {diffeic.DiffEICCodec, diffeic.HiFiCCodec, diffeic.RefineCodec} == \
        {registry.codec_class(f) for f in ("diffeic", "hific", "refine")}
    assert not hasattr(cli, "load_codec")          # the CLI loads through diffeic.load_codec


def test_an_unknown_name_is_an_error_listing_what_exists(tmp_path):
    # (family_of used to call anything without a local config.yaml DiffEIC)
    with pytest.raises(ValueError) as info:
        registry.family_of("no-such-model")
    assert all(name in str(info.value) for name in ("tiny", "hific_tiny", "refine_tiny", "tiny-trained"))
    with pytest.raises(FileNotFoundError, match="no config.yaml"):
        registry.family_of(tmp_path)              # a folder, but not a checkpoint
    (tmp_path / "config.yaml").write_text("family: jpeg\nmodel: {}\n")
    with pytest.raises(ValueError, match="family = 'jpeg': must be one of diffeic, hific, refine, semantic"):
        registry.family_of(tmp_path)
    with pytest.raises(ValueError, match="unknown codec family 'jpeg'; known: diffeic, hific, refine, semantic"):
        registry.codec_class("jpeg")


def test_shipped_names_and_hub_ids_work_for_every_family(hific, tmp_path, monkeypatch):
    """A HiFiC checkpoint reached as a shipped model's name and as a hub id, by the family's class and by
    diffeic.load_codec (once accepted by DiffEICCodec alone)."""
    import huggingface_hub

    shipped = tmp_path / "pretrained"
    hific.save_pretrained(shipped / "my-hific")
    monkeypatch.setattr(registry, "PRETRAINED_DIR", shipped)
    assert registry.pretrained_models() == ["my-hific"]
    for loaded in (diffeic.HiFiCCodec.from_pretrained("my-hific"), diffeic.load_codec("my-hific")):
        assert type(loaded) is diffeic.HiFiCCodec and loaded.fingerprint() == hific.fingerprint()

    hub = tmp_path / "hub"
    shutil.copytree(shipped / "my-hific", hub)
    calls = []

    def fake_snapshot_download(repo_id, revision=None, allow_patterns=None, local_files_only=False, **kw):
        calls.append((repo_id, revision, sorted(allow_patterns)))
        return str(hub)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    loaded = diffeic.load_codec("user/hific@v2")
    assert type(loaded) is diffeic.HiFiCCodec and loaded.fingerprint() == hific.fingerprint()
    assert calls[-1] == ("user/hific", "v2", ["config.yaml", "model.safetensors"])
    with pytest.raises(FileNotFoundError, match=r"it holds a 'hific' model: load it with diffeic.load_codec"):
        diffeic.DiffEICCodec.from_pretrained("user/hific")


def test_decompress_latents_is_the_one_spelling(hific, refine, tiny_codec):
    x = photo("astronaut", (64, 64))
    for codec in (hific, refine):
        bits = codec.compress(x)
        latents = codec.decompress_latents(bits)
        assert set(latents) == {"header", "y_hat"} and latents["header"].family == codec.family
        with pytest.warns(DeprecationWarning, match="decompress_latents"):
            header, y_hat = codec.decompress_latent(bits)
        assert torch.equal(y_hat, latents["y_hat"]) and header == latents["header"]
    assert {"header", "y_hat", "z_c"} <= set(tiny_codec.decompress_latents(tiny_codec.compress(x)))


def test_old_import_paths_warn_and_give_the_same_objects():
    code = """
import warnings
warnings.simplefilter("error", DeprecationWarning)
import diffeic
old = {"diffeic.codec": "DiffEICCodec", "diffeic.image_codec": "HyperpriorImageCodec",
       "diffeic.checkpoint": "CheckpointError", "diffeic.pretrained": "pretrained_models", "diffeic.hub": "is_hub_id",
       "diffeic.hific.codec": "HiFiCCodec", "diffeic.refine.codec": "RefineCodec"}
for module in old:
    try:
        __import__(module)
    except DeprecationWarning as w:
        print(module, "warns")
warnings.simplefilter("ignore", DeprecationWarning)
import diffeic.codec, diffeic.image_codec, diffeic.checkpoint, diffeic.pretrained, diffeic.hub
import diffeic.codecs.transform, diffeic.codecs.folder, diffeic.codecs.registry
assert diffeic.codec.DiffEICCodec is diffeic.DiffEICCodec
assert diffeic.image_codec.HyperpriorImageCodec is diffeic.codecs.transform.TransformCodec
assert diffeic.checkpoint.CheckpointError is diffeic.codecs.folder.CheckpointError
assert diffeic.pretrained.pretrained_models is diffeic.pretrained_models is diffeic.codecs.registry.pretrained_models
assert diffeic.hub.is_hub_id is diffeic.codecs.registry.is_hub_id
assert diffeic.hific.HiFiCCodec is diffeic.HiFiCCodec and diffeic.refine.RefineCodec is diffeic.RefineCodec
print("same")
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         cwd=Path(diffeic.__file__).parent.parent)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split("\n")[:-1] == [f"{m} warns" for m in (
        "diffeic.codec", "diffeic.image_codec", "diffeic.checkpoint", "diffeic.pretrained", "diffeic.hub",
        "diffeic.hific.codec", "diffeic.refine.codec")] + ["same"]


def test_the_helpers_defined_once(tmp_path):
    path = tmp_path / "blob"
    data = bytes(range(256)) * 5000                   # > 1 MiB: more than one block
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()
    assert first_line(ValueError("  first\nsecond\n")) == "first"
    assert first_line(ValueError(""), "ValueError") == "ValueError" and first_line(KeyError()) == ""
