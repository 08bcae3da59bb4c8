"""The semantic codec family (Rethinking Image Compression on the Web with Generative AI) on the one codec base:
offline round trips to the right size, family refusal both ways, inspect's bytes, the never-larger rule through
the codec, the prompt rule, checkpoints, the CLI, eval's semantic figures and the SD1.5 decoder's plumbing."""
import json
import warnings

import numpy as np
import pytest
import torch
import yaml

import diffeic
from conftest import photo
from diffeic import BitstreamError, SemanticCodec
from diffeic.bitstream import StreamHeader, pack, unpack
from diffeic.cli import main
from diffeic.codecs.folder import CheckpointError
from diffeic.codecs.semantic import DECODER_FILE, to_rgb8
from diffeic.semantic import CaptionUnavailable, FallbackUsed, decode_parts, encode_parts
from diffeic.semantic.config import SemanticConfig
from diffeic.semantic.prompt import CAPTION_ENV
from diffeic.util import file_sha256


@pytest.fixture(scope="module")
def codec():
    return diffeic.load_codec("semantic_tiny")


@pytest.fixture(scope="module")
def streams(codec):
    x = photo("coffee", (70, 90))
    with warnings.catch_warnings():
        warnings.simplefilter("error", FallbackUsed)          # these parts are smaller than a WebP
        # one denoising step stored in the stream: the tests check plumbing, not quality (8 steps take seconds)
        return x, codec.compress(x, prompt="a cup of coffee", keep=[(8, 6, 40, 30)], seed=7, steps=1)


def test_round_trip_offline_to_the_right_size_with_kept_pixels_and_the_stream_seed(codec, streams):
    x, bits = streams
    header, _ = unpack(bits)
    assert (header.family, header.seed, header.steps) == ("semantic", 7, 1)
    y = codec.decompress(bits)
    assert y.shape == (3, 70, 90) and y.dtype == torch.float32 and 0 <= y.min() and y.max() <= 1
    parts = codec.decompress_latents(bits)["parts"]
    assert parts.prompt == "a cup of coffee" and parts.edges is not None and parts.palette is not None
    # the kept region is exactly what its WebP decodes to (pasted, not redrawn)
    assert np.array_equal(to_rgb8(y)[6:30, 8:40], parts.regions[0].pixels)
    assert torch.equal(codec.decompress(bits, seed=7), y)           # the stream's seed, deterministic
    assert not torch.equal(codec.decompress(bits, seed=8), y)       # another seed: another redraw


def test_each_family_refuses_the_others_streams_by_name(codec, streams, hific):
    x, bits = streams
    with pytest.raises(BitstreamError, match="made by a 'hific' codec, not by a 'semantic' one"):
        codec.decompress(hific.compress(photo("coffee", (64, 64))))
    with pytest.raises(BitstreamError, match="made by a 'semantic' codec, not by a 'hific' one"):
        hific.decompress(bits)
    with pytest.raises(BitstreamError, match="made by a 'hific' codec, not by a 'semantic' one"):
        SemanticCodec.inspect(hific.compress(photo("coffee", (64, 64))))


def test_inspect_lists_the_parts_and_their_bytes_adding_up_to_the_stream(codec, streams):
    _, bits = streams
    info = codec.inspect(bits)
    assert info["parts"] == ["prompt", "edges", "palette", "regions"] and info["boxes"] == [(8, 6, 40, 30)]
    assert sum(info["bytes"].values()) == len(bits) == info["total_bytes"]
    assert info["bytes"]["prompt"] == len("a cup of coffee".encode())
    assert info["bytes"]["container"] == len(pack(unpack(bits)[0], b""))
    # the header's size and the parts' must agree: a parts stream of another size is refused
    other = encode_parts(to_rgb8(photo("coffee", (70, 91))), "a cup", fallback=False)
    forged = pack(unpack(bits)[0], other)
    for call in (codec.decompress, codec.inspect):
        with pytest.raises(BitstreamError, match="its parts are of a 91x70 .* its header says 90x70"):
            call(forged)


def test_never_larger_through_the_codec_a_tiny_image_is_stored_as_its_webp(codec):
    x = photo("chelsea", (12, 16))
    parts_only = encode_parts(to_rgb8(x), "a cat", fallback=False)
    with pytest.warns(FallbackUsed, match="WebP is stored instead"):
        bits = codec.compress(x, prompt="a cat")
    header, payload = unpack(bits)
    assert codec.inspect(bits)["fallback"] and codec.inspect(bits)["parts"] == ["fallback"]
    assert len(payload) <= len(parts_only) and len(bits) <= len(pack(header, parts_only))
    y = codec.decompress(bits)
    assert y.shape == (3, 12, 16)
    assert np.array_equal(to_rgb8(y), decode_parts(payload).fallback)     # decodes to the stored WebP


def test_the_prompt_is_the_users_a_local_caption_or_explicitly_none(codec, monkeypatch):
    x = photo("coffee", (64, 80))
    monkeypatch.delenv(CAPTION_ENV, raising=False)
    with pytest.raises(CaptionUnavailable, match="SemanticCodec.compress: prompt=''"):
        codec.compress(x)                                   # no prompt, no captioner: never a silent empty prompt
    assert codec.inspect(codec.compress(x, prompt=""))["prompt"] is None
    monkeypatch.setattr("diffeic.codecs.semantic.caption_image", lambda rgb: "a caption")
    assert codec.inspect(codec.compress(x))["prompt"] == "a caption"


def test_checkpoint_round_trip_and_a_tampered_decoder_is_refused(codec, streams, tmp_path):
    from safetensors.torch import load_file, save_file

    _, bits = streams
    folder = codec.save_pretrained(tmp_path / "sem")
    loaded = diffeic.load_codec(str(folder))
    assert type(loaded) is SemanticCodec and loaded.fingerprint() == codec.fingerprint()
    assert torch.equal(loaded.decompress(bits), codec.decompress(bits))
    state = load_file(str(folder / DECODER_FILE))
    key = sorted(state)[0]
    state[key] = state[key].flatten()[:1].clone()            # wrong shape
    save_file(state, str(folder / DECODER_FILE))
    meta = yaml.safe_load((folder / "config.yaml").read_text())
    meta["files"][DECODER_FILE] = file_sha256(folder / DECODER_FILE)     # past the hash check, to the weights
    (folder / "config.yaml").write_text(yaml.safe_dump(meta))
    with pytest.raises(CheckpointError, match=DECODER_FILE):
        SemanticCodec.from_pretrained(folder)


def test_cli_compress_inspect_decompress_round_trip(tmp_path, capsys, monkeypatch):
    from PIL import Image

    monkeypatch.delenv(CAPTION_ENV, raising=False)
    src = tmp_path / "cup.png"
    Image.fromarray(to_rgb8(photo("coffee", (72, 96)))).save(src)
    stream, out = tmp_path / "cup.deic", tmp_path / "cup_hat.png"
    assert main(["compress", src, "--model", "semantic_tiny", "--prompt", "a cup", "--palette", "8",
                 "--keep", "0,0,16,16", "--keep", "40,40,56,60", "--steps", "1", "-o", stream]) == 0
    assert "prompt 5 B" in capsys.readouterr().out
    assert main(["inspect", stream, "--json"]) == 0
    record = json.loads(capsys.readouterr().out)[0]
    assert record["parts"] == ["prompt", "edges", "palette", "regions"] and len(record["boxes"]) == 2
    assert sum(record["bytes"].values()) == stream.stat().st_size
    assert main(["decompress", stream, "--model", "semantic_tiny", "-o", out]) == 0
    assert Image.open(out).size == (96, 72)
    # no --prompt and no captioner: one error line before anything is written; parts options need a semantic model
    assert main(["compress", src, "--model", "semantic_tiny", "-o", tmp_path / "x.deic"]) == 1
    assert "--prompt not given" in capsys.readouterr().err and not (tmp_path / "x.deic").exists()
    assert main(["compress", src, "--model", "hific_tiny", "--no-edges", "-o", tmp_path / "x.deic"]) == 2
    assert "--no-edges: only for semantic models" in capsys.readouterr().err


def test_eval_on_one_photo_writes_the_semantic_figures(tmp_path, monkeypatch):
    from PIL import Image

    from diffeic.evaluation.runner import EvalConfig, run_evaluation

    monkeypatch.delenv(CAPTION_ENV, raising=False)
    monkeypatch.setenv("DIFFEIC_NO_DOWNLOAD", "1")
    (tmp_path / "imgs").mkdir()
    src = tmp_path / "imgs" / "cup.png"
    Image.fromarray(to_rgb8(photo("coffee", (64, 96)))).save(src)
    summary = run_evaluation(EvalConfig(dataset=f"folder:{tmp_path / 'imgs'}", models=["semantic_tiny"], baselines=[],
                                        fid=False, seeds=1, sheets=0, out=str(tmp_path / "out"), progress=False,
                                        steps=1),
                             log=lambda line: None)
    point = summary["semantic"]["points"]["semantic_tiny,steps=1"]
    image = point["per_image"]["cup"]
    stream = (tmp_path / "out" / "bitstreams" / "cup.deic").read_bytes()
    assert image["bytes"] == len(stream) == sum(image["part_bytes"].values())
    assert image["original"] == "source file" and image["original_bytes"] == src.stat().st_size
    assert point["bandwidth_saving"] == pytest.approx(1 - len(stream) / src.stat().st_size)
    assert summary["semantic"]["prompt"].startswith("prompt: none sent")
    assert point["vgg_similarity"] is None and "VGG similarity skipped" in summary["metrics_skipped"]["vgg_similarity"]
    assert "no text encoder" in summary["semantic"]["notes"][0]


# ------------------------------------------------------------------------------------------------ SD1.5
def test_sd15_without_weights_says_what_to_download(monkeypatch, tmp_path):
    from diffeic.semantic.sd15 import SD15Unavailable

    monkeypatch.setenv("DIFFEIC_SD15_PATH", str(tmp_path / "no-sd15"))
    monkeypatch.setenv("DIFFEIC_CONTROLNET_PATH", str(tmp_path / "no-controlnet"))
    with pytest.raises(SD15Unavailable, match=r"(?s)no-sd15.*does not exist.*hf download .*DIFFEIC_SD15_PATH"):
        diffeic.load_codec("semantic_sd15")


def _tiny_sd15():
    """A random SD1.5-shaped pipeline at toy width (no weights needed), prompt embeddings passed directly."""
    from diffusers import AutoencoderKL, ControlNetModel, DDIMScheduler, UNet2DConditionModel

    from diffeic.semantic.sd15 import SD15Decoder

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        unet = UNet2DConditionModel(block_out_channels=(32, 64), layers_per_block=1, sample_size=8,
                                    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
                                    attention_head_dim=8)
        controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 8, 8, 8))
        vae = AutoencoderKL(block_out_channels=(8, 8, 8, 8), norm_num_groups=4, layers_per_block=1,
                            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
        text = {"": torch.randn(1, 77, 32), "a cup": torch.randn(1, 77, 32)}
    return SD15Decoder.from_components(vae, unet, controlnet, DDIMScheduler(), encode_text=text.__getitem__)


def test_sd15_decoder_plumbing_on_a_tiny_random_pipeline():
    codec = SemanticCodec(SemanticConfig(name="sd15_toy", decoder="sd15", steps=2), _tiny_sd15()).eval()
    x = photo("coffee", (70, 90))
    bits = codec.compress(x, prompt="a cup", keep=[(8, 6, 40, 30)], fallback=False)
    y = codec.decompress(bits)
    assert y.shape == (3, 70, 90)
    parts = codec.decompress_latents(bits)["parts"]
    assert np.array_equal(to_rgb8(y)[6:30, 8:40], parts.regions[0].pixels)       # kept exactly
    assert torch.equal(codec.decompress(bits), y)
    plain = codec.compress(x, prompt="a cup", fallback=False)                     # img2img path
    assert codec.decompress(plain).shape == (3, 70, 90)
    assert codec.decompress(plain, seed=1).sub(codec.decompress(plain, seed=2)).abs().max() > 0
