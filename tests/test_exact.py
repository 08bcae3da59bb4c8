"""Device-independent coding: the exact integer parameter path (issue #7, cross-device exactness)."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import photo
from diffeic import DiffEICCodec
from diffeic.bitstream import unpack
from diffeic.entropy.exact import ACT_SCALE, GELU_RANGE, WEIGHT_BITS, ExactNet, to_grid


def _reference(layer: nn.Module, a: torch.Tensor) -> torch.Tensor:
    """Same integer arithmetic through a different algorithm (torch's float64 conv) and sum order."""
    w = torch.round(layer.weight.detach().double() * (1 << WEIGHT_BITS))
    b = torch.round(layer.bias.detach().double() * ACT_SCALE * (1 << WEIGHT_BITS))
    perm = torch.randperm(a.shape[1])                   # reorder input channels: another summation order
    if isinstance(layer, nn.ConvTranspose2d):
        acc = F.conv_transpose2d(a[:, perm], w[perm], b, layer.stride, layer.padding, layer.output_padding)
    else:
        acc = F.conv2d(a[:, perm], w[:, perm], b, layer.stride, layer.padding)
    return torch.floor(acc / (1 << WEIGHT_BITS) + 0.5)


@pytest.mark.parametrize("layer", [nn.Conv2d(24, 16, 5, 1, 2), nn.Conv2d(16, 8, 1), nn.Conv2d(8, 8, 3, 2, 1),
                                   nn.ConvTranspose2d(16, 12, 5, 2, 2, output_padding=1),
                                   nn.ConvTranspose2d(12, 6, 3, 1, 1)])
def test_exact_conv_equals_integer_reference_in_any_order(layer):
    torch.manual_seed(0)
    a = to_grid(torch.randn(2, layer.in_channels, 9, 11) * 3)
    assert torch.equal(ExactNet(layer)(a), _reference(layer, a).clamp(-(1 << 18), 1 << 18))
    # Batch composition does not matter either.
    assert torch.equal(ExactNet(layer)(a[1:]), ExactNet(layer)(a)[1:])


def test_gelu_table_saturates_exactly():
    net = ExactNet(nn.GELU())
    a = torch.tensor([-5000.0, -GELU_RANGE - 1, -256.0, 0.0, 256.0, GELU_RANGE + 1, 9000.0], dtype=torch.float64)
    out = net(a)
    assert out[0] == 0 and out[1] == 0 and out[3] == 0
    assert out[5] == GELU_RANGE + 1 and out[6] == 9000
    assert out[4] == round(F.gelu(torch.tensor(1.0, dtype=torch.float64)).item() * ACT_SCALE)


def test_thread_count_does_not_change_streams_or_latents():
    codec = DiffEICCodec.from_config("tiny")
    x = photo("coffee", (200, 300))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        bits_1 = codec.compress(x)
        lat_1 = codec.decompress_latents(bits_1)
        torch.set_num_threads(2)
        bits_2 = codec.compress(x)
        lat_2 = codec.decompress_latents(bits_1)
    finally:
        torch.set_num_threads(threads)
    assert bits_1 == bits_2
    assert torch.equal(lat_1["y_hat"], lat_2["y_hat"]) and torch.equal(lat_1["z_hat"], lat_2["z_hat"])


def test_float_noise_in_the_networks_cannot_move_cdf_indices():
    """The coder never sees float ψ: perturbing the float hyper-decoder output (as another device's
    rounding would) leaves the stream unchanged, because coding reads only the integer twin."""
    codec = DiffEICCodec.from_config("tiny")
    x = photo("chelsea", (128, 128))
    clean = codec.compress(x)
    handle = codec.lfgcm.hyper_dec.register_forward_hook(lambda m, i, o: o + 1e-6 * torch.randn_like(o))
    try:
        noisy = codec.compress(x)
    finally:
        handle.remove()
    assert noisy == clean


def test_float64_evaluation_of_the_model_decodes_the_same_latents():
    codec = DiffEICCodec.from_config("tiny")
    x = photo("rocket", (96, 96))
    bits = codec.compress(x)
    lat32 = codec.decompress_latents(bits)
    _, payload = unpack(bits)
    codec.lfgcm.double()
    try:
        lat64 = codec.lfgcm.decompress([[payload]], (2, 2))          # 96x96 is padded to 128x128: z is 2x2
    finally:
        codec.lfgcm.float()
    assert torch.equal(lat32["y_hat"], lat64["y_hat"].float()) and torch.equal(lat32["z_hat"], lat64["z_hat"].float())


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_encode_on_cuda_decode_on_cpu_bit_exactly():
    cpu = DiffEICCodec.from_config("tiny")
    gpu = DiffEICCodec.from_config("tiny").to("cuda")
    x = photo("astronaut", (256, 384))
    bits = gpu.compress(x.cuda())
    assert bits == cpu.compress(x)
    a, b = gpu.decompress_latents(bits), cpu.decompress_latents(bits)
    assert torch.equal(a["y_hat"].cpu(), b["y_hat"]) and torch.equal(a["z_hat"].cpu(), b["z_hat"])


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("encode_on, decode_on", [("cuda", "cpu"), ("cpu", "cuda")])
def test_stream_from_one_device_decodes_to_the_same_latents_on_the_other(encode_on, decode_on):
    # Both directions, at a size that is not a multiple of 64 (padding); the decoding device's own encoder
    # writes the same bytes, and its entropy decoder gives the writer's y_hat and z_hat exactly.
    codecs = {d: DiffEICCodec.from_config("tiny").to(d) for d in (encode_on, decode_on)}
    x = photo("coffee", (200, 328))
    bits = codecs[encode_on].compress(x.to(encode_on))
    assert bits == codecs[decode_on].compress(x.to(decode_on))
    writer, reader = codecs[encode_on].decompress_latents(bits), codecs[decode_on].decompress_latents(bits)
    for key in ("y_hat", "z_hat"):
        assert torch.equal(writer[key].cpu(), reader[key].cpu()), key
    image = codecs[decode_on].decompress(bits, sampler="fewstep", steps=2)
    assert image.shape == (3, 200, 328) and torch.isfinite(image).all()


def test_index_selection_matches_compressai_build_indexes():
    codec = DiffEICCodec.from_config("tiny")
    gc = codec.lfgcm.gaussian_conditional
    sigma_grid = torch.round((torch.rand(1, 4, 50, 50) * 300 - 5) * ACT_SCALE).double()
    ours = codec.lfgcm._indexes(sigma_grid)
    assert torch.equal(ours, gc.build_indexes(sigma_grid.float() / ACT_SCALE))
