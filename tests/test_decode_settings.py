"""Decode settings as one value (issue 16 item 1): one sampler registry, one resolver, each sampler's own limit.

Every sampler's step limit is checked where the settings are resolved: ``compress`` refuses (``ValueError``
naming the sampler and its limit, nothing written) and a stream asking for more is corrupt
(``BitstreamError``, before any diffusion).  Before this, ``sampler="dpmpp", steps=1000`` wrote a stream whose
decode was NaN (its linspace grid repeats a timestep) and a ``onestep`` stream asking for 5 steps decoded.
"""
import pytest
import torch

from conftest import photo
from diffeic import BitstreamError
from diffeic.bitstream import SAMPLER_IDS, StreamHeader, pack, unpack
from diffeic.config import SamplerConfig, ScheduleConfig
from diffeic.diffusion.sampling import SAMPLERS, sample, sampler_limit

T = ScheduleConfig().num_train_timesteps
#: The most steps each sampler takes with the tiny preset's schedule (T = 1000) and fewstep_start (299),
#: written out here from the samplers' definitions rather than read from the registry under test.
LIMITS = {"ddpm": T, "ddim": T, "dpmpp": T - 1, "fewstep": 300, "onestep": 1}


def test_the_container_ids_and_the_sampler_table_name_the_same_samplers_in_id_order():
    assert list(SAMPLERS) == sorted(SAMPLER_IDS, key=SAMPLER_IDS.get)
    assert SAMPLER_IDS["onestep"] == 4                  # the id one-step streams are written with


def test_each_sampler_has_its_own_limit():
    assert {name: sampler_limit(name, ScheduleConfig(), 299) for name in SAMPLERS} == LIMITS


@pytest.mark.parametrize("name", [n for n in SAMPLERS if n != "onestep"])
def test_every_sampler_samples_finite_latents_at_its_limit(name):
    """The registry's limit is real: at it the sampler still produces a finite z_0 (dpmpp at T steps did not)."""
    def eps_fn(z, t):
        return 0.1 * z + 0.01 * t.float().view(-1, 1, 1, 1) / T

    z_c = torch.linspace(-1, 1, 16).view(1, 4, 2, 2)
    z0 = sample(eps_fn, z_c, name, sampler_limit(name, ScheduleConfig(), 299), torch.Generator().manual_seed(0))
    assert torch.isfinite(z0).all()


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_compress_refuses_more_steps_than_the_sampler_takes(tiny_codec, name, monkeypatch):
    x = photo("rocket", (32, 32))
    monkeypatch.setattr(tiny_codec.lfgcm, "encode_latents", lambda *a: pytest.fail("compress started encoding"))
    with pytest.raises(ValueError, match=f"{LIMITS[name] + 1} steps for sampler '{name}', which takes at most "
                                         f"{LIMITS[name]}") as err:
        tiny_codec.compress(x, sampler=name, steps=LIMITS[name] + 1)
    assert not isinstance(err.value, BitstreamError)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_a_stream_asking_for_more_steps_than_its_sampler_takes_is_corrupt(tiny_codec, name, monkeypatch):
    bits = tiny_codec.compress(photo("rocket", (32, 32)))
    header, payload = unpack(bits)
    crafted = pack(StreamHeader(fingerprint=header.fingerprint, height=32, width=32, sampler=name,
                                steps=LIMITS[name] + 1), payload)          # the container's own writer
    monkeypatch.setattr(tiny_codec, "generate", lambda *a, **k: pytest.fail("diffusion ran"))
    for decode in (tiny_codec.decompress, lambda b: tiny_codec.decompress_batch([b]),
                   lambda b: tiny_codec.resolve_settings(unpack(b)[0])):
        with pytest.raises(BitstreamError, match=f"corrupt header: {LIMITS[name] + 1} steps for sampler '{name}'"):
            decode(crafted)


def test_resolution_order_is_override_then_header_then_model_default(tiny_codec):
    d = tiny_codec.config.sampler
    header = StreamHeader(fingerprint="00000000", height=1, width=1, sampler="ddim", steps=7, seed=5)
    assert tiny_codec.resolve_settings() == SamplerConfig(d.name, d.steps, d.seed, d.fewstep_start)
    assert tiny_codec.resolve_settings(header) == SamplerConfig("ddim", 7, 5, d.fewstep_start)
    assert tiny_codec.resolve_settings(header, steps=3, seed=9, sampler="fewstep") == \
        SamplerConfig("fewstep", 3, 9, d.fewstep_start)
    # onestep makes one network evaluation: the model's default step count does not apply to it.
    assert tiny_codec.resolve_settings(sampler="onestep").steps == 1
    assert tiny_codec.resolve_settings(header, sampler="onestep").steps == 1     # the 7 steps were ddim's
    # A caller's override that does not fit the stream's settings is the caller's error, not the stream's.
    with pytest.raises(ValueError, match="8 steps for sampler 'onestep'") as err:
        tiny_codec.resolve_settings(header, steps=8, sampler="onestep")
    assert not isinstance(err.value, BitstreamError)


def test_cli_and_eval_report_the_settings_the_decode_used(tmp_path, tiny_codec, monkeypatch, capsys):
    """Both used to resolve the settings themselves and reported a one-step decode as the model's 4 steps."""
    from diffeic import DiffEICCodec
    from diffeic.cli import main
    from diffeic.evaluation import runner

    monkeypatch.setattr(DiffEICCodec, "from_config", classmethod(lambda cls, config="tiny": tiny_codec))
    stream = tmp_path / "a.deic"
    stream.write_bytes(tiny_codec.compress(photo("rocket", (32, 32)), sampler="onestep", seed=5))
    assert main(["decompress", str(stream), "-o", str(tmp_path / "a.png"), "--model", "tiny"]) == 0
    assert "onestep, 1 step, seed 5" in capsys.readouterr().out
    (model,) = runner._load_models(runner.EvalConfig(models=["tiny"], sampler="onestep"), "cpu")
    # A one-step decode of z_c draws no noise: it is scored once, with the stream's seed (no per-image seed).
    assert (model.sampler, model.steps, model.setting, model.seed) == ("onestep", 1,
                                                                       "sampler=onestep;steps=1;deterministic", None)
    with pytest.raises(ValueError, match="2000 steps for sampler 'ddpm'"):     # refused before any image is coded
        runner._load_models(runner.EvalConfig(models=["tiny"], steps=2000), "cpu")
