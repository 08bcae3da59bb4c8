"""The checkpoint and stream rules of issues #14/#21 hold for every codec: the HiFiC / refinement families
(their shared :mod:`diffeic.entropy.hyperprior` coder and ``model.safetensors`` folders), the variable-rate LFGCM
(its rate gains) and the one-step decoder's ``onestep.safetensors``."""
import hashlib
import shutil
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from conftest import photo
from diffeic import BitstreamError, DiffEICCodec
from diffeic.bitstream import StreamHeader, pack, unpack
from diffeic.codecs.diffeic import LFGCM_FILE, ONESTEP_FILE
from diffeic.codecs.folder import CONFIG_FILE, CheckpointError
from diffeic.config import RateConfig
from diffeic.diffusion.onestep import OneStepConfig, OneStepDecoder
from diffeic.hific import HiFiCCodec, HiFiCConfig
from diffeic.codecs.transform import MODEL_FILE
from diffeic.refine import RefineConfig


@pytest.fixture(scope="module")
def hific_folder(hific, tmp_path_factory):
    return hific.save_pretrained(tmp_path_factory.mktemp("hific") / "ckpt")


def _tampered(src: Path, dst: Path, weights: str, edit) -> Path:
    """A copy of ``src`` with ``edit(state)`` applied to ``weights``, hashes recomputed (as an attacker would)."""
    shutil.copytree(src, dst)
    state = load_file(str(src / weights))
    edit(state)
    save_file(state, str(dst / weights))
    meta = yaml.safe_load((dst / CONFIG_FILE).read_text())
    meta["files"][weights] = hashlib.sha256((dst / weights).read_bytes()).hexdigest()
    (dst / CONFIG_FILE).write_text(yaml.safe_dump(meta, sort_keys=False))
    return dst


def _unfingerprinted(src: Path, dst: Path) -> Path:
    """A copy of ``src`` that records no fingerprint (an attacker who also drops it: the weights still verify)."""
    return _edit_meta(src, dst, lambda m: m.update(fingerprint=None))


def _edit_meta(src: Path, dst: Path, edit) -> Path:
    shutil.copytree(src, dst)
    meta = yaml.safe_load((dst / CONFIG_FILE).read_text())
    edit(meta)
    (dst / CONFIG_FILE).write_text(yaml.safe_dump(meta, sort_keys=False))
    return dst


# ------------------------------------------------------------------------------------ family checkpoints

def test_family_checkpoint_records_hashes_and_reloads_to_the_same_model(hific, hific_folder):
    meta = yaml.safe_load((hific_folder / CONFIG_FILE).read_text())
    assert meta["files"] == {MODEL_FILE: hashlib.sha256((hific_folder / MODEL_FILE).read_bytes()).hexdigest()}
    assert sorted(p.name for p in hific_folder.iterdir()) == [CONFIG_FILE, MODEL_FILE]
    assert HiFiCCodec.from_pretrained(hific_folder).fingerprint() == hific.fingerprint()


# Tamperings of the shared hyperprior coder's tables: before the fix each loaded, and the zeroed / short
# tables reach compressai's C++ coder unchecked (the LFGCM's crashed it: SIGFPE / SIGSEGV).
FAMILY_TAMPERED = {
    "zeroed_gc_cdf": ("gaussian_conditional._quantized_cdf", torch.zeros_like, "rise|start"),
    "eb_cdf_length_0": ("entropy_bottleneck._cdf_length", torch.zeros_like, "length"),
    "offset_positive": ("entropy_bottleneck._offset", lambda t: t + 1_000_000, "offset"),
    "scale_table_unsorted": ("gaussian_conditional.scale_table", lambda t: t.flip(0), "scale_table"),
    "huge_median": ("entropy_bottleneck.quantiles", lambda q: q + 1e9, "quantiles"),
    "nan_weight": ("h_s_scale.0.bias", lambda t: t.fill_(float("nan")), "NaN or Inf"),
}


@pytest.mark.parametrize("name", sorted(FAMILY_TAMPERED))
def test_tampered_family_checkpoints_are_refused_naming_the_problem(hific_folder, tmp_path, name):
    key, fn, message = FAMILY_TAMPERED[name]

    def edit(state):
        state["hyperprior." + key] = fn(state["hyperprior." + key])
    folder = _tampered(hific_folder, tmp_path / name, MODEL_FILE, edit)
    with pytest.raises(CheckpointError, match=message) as err:
        HiFiCCodec.from_pretrained(folder)
    assert MODEL_FILE in str(err.value) and "\n" not in str(err.value)


def test_family_checkpoint_mixing_saves_or_with_bad_config_is_refused_by_name(hific, hific_folder, tmp_path):
    mixed = shutil.copytree(hific_folder, tmp_path / "mixed")
    other = HiFiCCodec.from_config(HiFiCConfig(**{**hific.config.__dict__, "init_seed": 1}))
    other.save_pretrained(tmp_path / "other")
    (mixed / MODEL_FILE).write_bytes((tmp_path / "other" / MODEL_FILE).read_bytes())
    with pytest.raises(CheckpointError, match="SHA-256 differs"):
        HiFiCCodec.from_pretrained(mixed)
    levels = _edit_meta(hific_folder, tmp_path / "levels", lambda m: m["model"].update(scale_levels=1))
    with pytest.raises(CheckpointError, match=r"config.yaml: scale_levels = 1: must be an integer in \[2, 256\]"):
        HiFiCCodec.from_pretrained(levels)
    trained = _edit_meta(hific_folder, tmp_path / "trained", lambda m: m.update(trained="no"))
    with pytest.raises(CheckpointError, match="trained = 'no': must be true or false"):
        HiFiCCodec.from_pretrained(trained)
    shapes = _edit_meta(hific_folder, tmp_path / "shapes", lambda m: m["model"].update(latent_channels=17))
    with pytest.raises(CheckpointError, match="wrong shape"):
        HiFiCCodec.from_pretrained(shapes)
    (tmp_path / "yaml").mkdir()
    (tmp_path / "yaml" / CONFIG_FILE).write_text("family: hific\nmodel: [unclosed\n")
    with pytest.raises(CheckpointError, match=r"not valid YAML \(line 3"):
        HiFiCCodec.from_pretrained(tmp_path / "yaml")


def test_refine_checkpoint_whose_config_asks_for_huge_widths_is_refused_without_building_it(tmp_path):
    """The refinement model (GDN layers: not buildable on the meta device) is compared with the file shape by
    shape without allocating: N = 60000 would need ~360 GB of weights."""
    from diffeic.refine import RefineCodec

    folder = RefineCodec.from_config("refine_tiny").save_pretrained(tmp_path / "refine")
    assert RefineCodec.from_pretrained(folder).fingerprint() == RefineCodec.from_config("refine_tiny").fingerprint()
    huge = _edit_meta(folder, tmp_path / "huge", lambda m: m["model"].update(N=60000))
    with pytest.raises(CheckpointError, match=f"{MODEL_FILE}: wrong shape"):
        RefineCodec.from_pretrained(huge)


def test_family_fingerprint_covers_every_buffer_the_coder_reads(hific, hific_folder, tmp_path):
    """The σ lower bound selects CDF rows like the scale table does: a checkpoint that changes it decodes
    the same stream differently, so it must be another model (the family hashed only the tables before)."""
    folder = _tampered(hific_folder, tmp_path / "bound", MODEL_FILE,
                       lambda s: s["hyperprior.gaussian_conditional.lower_bound_scale.bound"].fill_(4.0))
    with pytest.raises(CheckpointError, match=r"config.yaml: fingerprint = [0-9a-f]{16}, but the model loaded"):
        HiFiCCodec.from_pretrained(folder)              # the recorded fingerprint is verified (issue 31)
    changed = HiFiCCodec.from_pretrained(_unfingerprinted(folder, tmp_path / "bound2"))
    assert changed.fingerprint() != hific.fingerprint()
    with pytest.raises(BitstreamError, match="stream was made by model"):
        changed.decompress(hific.compress(photo("rocket", (32, 32))))


def test_family_config_values_are_checked_by_name():
    with pytest.raises(ValueError, match=r"scale_levels = 1: must be an integer in \[2, 256\]"):
        HiFiCConfig(scale_levels=1)
    with pytest.raises(ValueError, match=r"latent_channels = 1180591620717411303424: must be an integer"):
        HiFiCConfig(latent_channels=2 ** 70)
    with pytest.raises(ValueError, match="steps = True: must be an integer"):
        RefineConfig(steps=True)
    with pytest.raises(ValueError, match=r"refiner_attention\[0\] = 'no': must be true or false"):
        RefineConfig(refiner_attention=("no", False, True, True))
    with pytest.raises(ValueError, match="flow_noise = nan"):
        RefineConfig(flow_noise=float("nan"))
    with pytest.raises(ValueError, match=r"lfgcm.rate.levels = 1: must be an integer in \[2, 256\]"):
        RateConfig(levels=1)
    with pytest.raises(ValueError, match="lmbda_min < lmbda_max .*got lmbda_min = 1, lmbda_max = 0.5"):
        RateConfig(lmbda_min=1.0, lmbda_max=0.5)
    with pytest.raises(ValueError, match="lfgcm.rate.lmbda_min = 'no': must be a real number"):
        RateConfig(lmbda_min="no")


# ------------------------------------------------------------------------------------ family streams

def test_family_stream_of_no_data_is_refused_at_once(hific):
    stream = pack(StreamHeader(fingerprint=hific.fingerprint()[:8], height=2048, width=2048, family="hific"), b"")
    start = time.process_time()                   # CPU time: a loaded machine does not inflate it
    with pytest.raises(BitstreamError, match="payload of 0 bytes"):
        hific.decompress(stream)
    assert time.process_time() - start < 5        # milliseconds; the bound only catches a decode of 4 M pixels


def test_family_payload_that_is_not_the_coding_of_its_symbols_is_refused(hific):
    bits = hific.compress(photo("rocket", (64, 64)))
    header, payload = unpack(bits)
    y_hat = hific.decompress_latents(bits)["y_hat"]
    for extra in (payload + bytes(4), payload + b"\x01\x02\x03\x04"):
        with pytest.raises(BitstreamError, match="not the coding of the symbols|cannot hold|beyond"):
            hific.decompress_latents(pack(header, extra))
    assert torch.equal(hific.decompress_latents(bits)["y_hat"], y_hat)            # the real stream still decodes


def test_family_encoder_with_nan_weights_raises_instead_of_reaching_the_coder(hific):
    broken = HiFiCCodec.from_config("hific_tiny")
    with torch.no_grad():
        broken.model.hyperprior.h_a[0].bias.fill_(float("nan"))
    with pytest.raises(ValueError, match=r"non-finite latents \(z\)"):
        broken.compress(photo("rocket", (32, 32)))


# ------------------------------------------------------------------------------------ variable rate

@pytest.fixture(scope="module")
def vr(tmp_path_factory):
    codec = DiffEICCodec.from_config("tiny_vr")
    return codec, codec.save_pretrained(tmp_path_factory.mktemp("vr") / "ckpt")


def test_variable_rate_gains_are_checked_and_fingerprinted(vr, tmp_path):
    codec, folder = vr
    assert DiffEICCodec.from_pretrained(folder).fingerprint() == codec.fingerprint()
    nan = _tampered(folder, tmp_path / "nan", LFGCM_FILE, lambda s: s["rate_gains.log_gain"].fill_(float("nan")))
    with pytest.raises(CheckpointError, match="rate_gains.log_gain holds NaN or Inf"):
        DiffEICCodec.from_pretrained(nan)
    missing = _tampered(folder, tmp_path / "missing", LFGCM_FILE, lambda s: s.pop("rate_gains.log_inverse_gain"))
    with pytest.raises(CheckpointError, match="missing key.*rate_gains.log_inverse_gain"):
        DiffEICCodec.from_pretrained(missing)
    # The decoder-side gains change only the synthesis, not the coder: still another model, whose
    # fingerprint refuses the original's streams instead of decoding them to other content.
    inverse = _tampered(folder, tmp_path / "inverse", LFGCM_FILE,
                        lambda s: s["rate_gains.log_inverse_gain"].add_(0.5))
    with pytest.raises(CheckpointError, match=r"config.yaml: fingerprint = [0-9a-f]{16}, but the model loaded"):
        DiffEICCodec.from_pretrained(inverse)           # the recorded fingerprint is verified (issue 31)
    changed = DiffEICCodec.from_pretrained(_unfingerprinted(inverse, tmp_path / "inverse2"))
    assert changed.fingerprint() != codec.fingerprint()
    with pytest.raises(BitstreamError, match="stream was made by model"):
        changed.decompress_latents(codec.compress(photo("rocket", (32, 32)), rate=1.0))


# ------------------------------------------------------------------------------------ one-step weights

def test_one_step_weights_are_hashed_and_checked(tmp_path):
    codec = DiffEICCodec.from_config("tiny")
    codec.is_trained = True
    codec.onestep = OneStepDecoder(codec.control, OneStepConfig(), codec.config.schedule, trained=True)
    folder = codec.save_pretrained(tmp_path / "os")
    meta = yaml.safe_load((folder / CONFIG_FILE).read_text())
    assert set(meta["files"]) == {LFGCM_FILE, "control.safetensors", ONESTEP_FILE}
    assert DiffEICCodec.from_pretrained(folder).onestep.trained
    key = next(k for k in load_file(str(folder / ONESTEP_FILE)) if k.endswith("bias"))
    nan = _tampered(folder, tmp_path / "nan", ONESTEP_FILE, lambda s: s[key].fill_(float("nan")))
    with pytest.raises(CheckpointError, match=f"{ONESTEP_FILE}: tensor {key} holds NaN or Inf"):
        DiffEICCodec.from_pretrained(nan)
    late = _edit_meta(folder, tmp_path / "late", lambda m: m["onestep"].update(timestep=5000))
    with pytest.raises(CheckpointError, match=r"onestep.timestep = 5000: must be below schedule.num_train_timesteps"):
        DiffEICCodec.from_pretrained(late)
    swapped = shutil.copytree(folder, tmp_path / "swapped")
    (swapped / ONESTEP_FILE).write_bytes((swapped / "control.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match=f"{ONESTEP_FILE}: its SHA-256 differs"):
        DiffEICCodec.from_pretrained(swapped)
