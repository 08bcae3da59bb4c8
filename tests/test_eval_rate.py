"""bpp_official: the same latents coded as the official DiffEIC file (two rANS strings, 20-byte header)."""
import hashlib

import pytest
import torch
from compressai.ans import RansDecoder

from diffeic.evaluation import bpp as bpp_helpers
from diffeic.entropy.exact import from_grid

from conftest import photo


@pytest.fixture(scope="module")
def coded(tiny_codec):
    x = photo("astronaut", (128, 192))
    bits = tiny_codec.compress(x)
    x_pad = tiny_codec.pad(x[None])
    z_g = tiny_codec._guidance(x_pad)
    y = tiny_codec.lfgcm.encoder(x_pad, z_g)
    z = tiny_codec.lfgcm.hyper_enc(y, z_g)
    return bits, y, z


def test_official_strings_from_the_stream_equal_those_from_the_encoder(tiny_codec, coded):
    bits, y, z = coded
    y_string, z_string = tiny_codec.lfgcm.official_strings(y, z)
    assert bpp_helpers.official_string_sizes(tiny_codec, bits) == (len(y_string), len(z_string))
    lat = tiny_codec.decompress_latents(bits)
    assert tiny_codec.lfgcm.official_strings(lat["y_hat"], lat["z_hat"]) == (y_string, z_string)
    # Two rANS streams instead of one: one more 8-byte flush, give or take a renormalisation word.
    payload = tiny_codec.inspect(bits)["payload_bytes"]
    assert 0 <= len(y_string) + len(z_string) - payload <= 16


def test_official_z_string_decodes_alone_to_the_streams_z(tiny_codec, coded):
    bits, y, z = coded
    _, z_string = tiny_codec.lfgcm.official_strings(y, z)
    eb_tab, _, exact = tiny_codec.lfgcm._coding_state(torch.device("cpu"))
    z_hat = tiny_codec.decompress_latents(bits)["z_hat"]
    expected = torch.round(z_hat.double() - from_grid(exact.z_medians, torch.float64)).int()
    decoder = RansDecoder()
    decoder.set_stream(z_string)
    idx = torch.arange(z_hat.shape[1], dtype=torch.int32).view(1, -1, 1, 1).expand(expected.shape)
    got = decoder.decode_stream(idx.reshape(-1).tolist(), eb_tab.cdf, eb_tab.lengths, eb_tab.offsets)
    assert got == expected.reshape(-1).tolist()


def test_joint_stream_is_unchanged_by_the_split_out_symbols(coded):
    """Golden: the payload the tiny preset wrote for this crop before official_strings existed."""
    from diffeic.bitstream import unpack

    _, payload = unpack(coded[0])
    assert (len(payload), hashlib.sha256(payload).hexdigest()) == (
        392, "4ad1110b69800aa53d2454d5b328f59f809a22eff4b4bfa96a7569021d6091c7")
