"""The documented determinism promise (issue 21.6), tested exactly: latents bit-identical, pixels within one 8-bit step."""
import torch

from conftest import photo


def _u8(x: torch.Tensor) -> torch.Tensor:
    return torch.round(x.clamp(0, 1) * 255).to(torch.int16)


def _streams(codec):
    return [codec.compress(photo(name, (64, 96))) for name in ("coffee", "chelsea")]


def test_batched_decoding_equals_one_by_one_within_one_8bit_step(tiny_codec):
    streams = _streams(tiny_codec)
    single = [tiny_codec.decompress(b) for b in streams]
    batched = tiny_codec.decompress_batch(streams)
    for a, b in zip(single, batched):
        assert (_u8(a) - _u8(b)).abs().max() <= 1
    for b in streams:                                   # the latents are the same bits, however decoded
        first, second = tiny_codec.decompress_latents(b), tiny_codec.decompress_latents(b)
        assert torch.equal(first["y_hat"], second["y_hat"]) and torch.equal(first["z_c"], second["z_c"])


def test_thread_count_changes_pixels_by_at_most_one_8bit_step_and_latents_not_at_all(tiny_codec):
    streams = _streams(tiny_codec)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = [(tiny_codec.decompress(b), tiny_codec.decompress_latents(b)) for b in streams]
        torch.set_num_threads(2)
        two = [(tiny_codec.decompress(b), tiny_codec.decompress_latents(b)) for b in streams]
        assert [tiny_codec.compress(photo(n, (64, 96))) for n in ("coffee", "chelsea")] == streams
    finally:
        torch.set_num_threads(threads)
    for (img1, lat1), (img2, lat2) in zip(one, two):
        assert (_u8(img1) - _u8(img2)).abs().max() <= 1
        for key in ("y_hat", "z_hat", "z_c"):
            assert torch.equal(lat1[key], lat2[key]), key
