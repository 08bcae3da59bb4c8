"""Checkpoint folders: atomic writes, and reads that refuse what the coder must not trust (issues #14, #21).

Crash and hang reproducers (tampered CDF tables crashed the C++ coder with SIGFPE/SIGSEGV; NaN medians
made ``compress`` loop forever) run in a subprocess with a timeout, so the suite survives the defect.
"""
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from conftest import photo
from diffeic import DiffEICCodec
from diffeic.codecs.diffeic import CONTROL_FILE, LFGCM_FILE
from diffeic.codecs.folder import CONFIG_FILE, CheckpointError

read = DiffEICCodec.read_checkpoint

TESTS = Path(__file__).parent
#: Limit for a reproducer in a subprocess: only a hang (of the unfixed code) reaches it, even on a busy machine.
GUARD_S = 1200


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tiny_codec):
    return tiny_codec.save_pretrained(tmp_path_factory.mktemp("ckpt") / "tiny")


def _copy(src: Path, dst: Path, lfgcm=None, meta=None, keep_hashes=False) -> Path:
    """A copy of checkpoint ``src`` with an edited LFGCM state / metadata (hashes dropped unless kept)."""
    dst.mkdir(parents=True)
    state = load_file(str(src / LFGCM_FILE))
    if lfgcm is not None:
        lfgcm(state)
    save_file(state, str(dst / LFGCM_FILE))
    (dst / CONTROL_FILE).write_bytes((src / CONTROL_FILE).read_bytes())
    data = yaml.safe_load((src / CONFIG_FILE).read_text())
    if not keep_hashes:
        data.pop("files")              # a hand-made folder (or one written before hashes were recorded)
    if meta is not None:
        meta(data)
    (dst / CONFIG_FILE).write_text(yaml.safe_dump(data, sort_keys=False))
    return dst


def _set(key, fn):
    def edit(state):
        state[key] = fn(state[key])
    return edit


# Each tampering and the error that must name it. Before the fix the first five crashed or hung the process.
TAMPERED = {
    "zeroed_gc_cdf": (_set("gaussian_conditional._quantized_cdf", torch.zeros_like), "rise|start"),
    "zeroed_eb_cdf": (_set("entropy_bottleneck._quantized_cdf", torch.zeros_like), "rise|start"),
    "cdf_length_0": (_set("gaussian_conditional._cdf_length", torch.zeros_like), "length"),
    "eb_cdf_length_0": (_set("entropy_bottleneck._cdf_length", torch.zeros_like), "length"),
    "nan_median": (_set("entropy_bottleneck.quantiles", lambda q: q.index_put_((torch.tensor(0), torch.tensor(0),
                                                                                  torch.tensor(1)),
                                                                                 torch.tensor(float("nan")))),
                   "NaN or Inf"),
    "cdf_length_too_long": (_set("gaussian_conditional._cdf_length", lambda t: t + 10_000), "length"),
    "cdf_not_ending_at_2^16": (_set("gaussian_conditional._quantized_cdf", lambda t: t.clamp(max=60_000)), "rise|end"),
    "offset_positive": (_set("entropy_bottleneck._offset", lambda t: t + 1_000_000), "offset"),
    "rows_missing": (_set("gaussian_conditional._quantized_cdf", lambda t: t[:-3]), "rows"),
    "scale_table_unsorted": (_set("gaussian_conditional.scale_table", lambda t: t.flip(0)), "scale_table"),
    "huge_median": (_set("entropy_bottleneck.quantiles", lambda q: q + 1e9), "quantiles"),
    "inf_weight": (_set("decoder.g_s4.bias", lambda t: t.fill_(float("inf"))), "NaN or Inf"),
}


@pytest.mark.timeout(GUARD_S + 60)
def test_tampered_checkpoints_are_refused_at_load_not_crashing_the_coder(saved, tmp_path):
    """Each tampered folder must raise CheckpointError naming the problem; the subprocess guards the suite
    against the original SIGFPE/SIGSEGV/endless loop. A folder that loaded would be used to code a photo."""
    folders = {name: _copy(saved, tmp_path / name, lfgcm=edit) for name, (edit, _) in TAMPERED.items()}
    code = textwrap.dedent(f"""
        import sys, warnings
        warnings.simplefilter("ignore")
        sys.path.insert(0, {str(TESTS)!r})
        from conftest import photo
        from diffeic import DiffEICCodec
        x = photo("rocket", (32, 32))
        for name, folder in {dict((k, str(v)) for k, v in folders.items())!r}.items():
            print(name, end=" ", flush=True)
            try:
                codec = DiffEICCodec.from_pretrained(folder)
            except ValueError as err:
                print("REFUSED", type(err).__name__, str(err).replace(chr(10), " "), flush=True)
                continue
            codec.decompress_latents(codec.compress(x))
            print("LOADED", flush=True)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=GUARD_S)
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines() if " " in line)
    assert out.returncode == 0, f"the process died (rc {out.returncode}) after: {out.stdout[-500:]}"
    for name, (_, message) in TAMPERED.items():
        result = lines.get(name, "")
        assert result.startswith("REFUSED CheckpointError"), (name, result)
        assert LFGCM_FILE in result and __import__("re").search(message, result), (name, result)


@pytest.mark.timeout(GUARD_S + 60)
def test_nan_weights_set_in_memory_make_compress_raise_instead_of_hanging():
    code = textwrap.dedent(f"""
        import sys, torch, warnings
        warnings.simplefilter("ignore")
        sys.path.insert(0, {str(TESTS)!r})
        from conftest import photo
        from diffeic import DiffEICCodec
        codec = DiffEICCodec.from_config("tiny")
        with torch.no_grad():
            codec.lfgcm.entropy_bottleneck.quantiles[0, 0, 1] = float("nan")
        try:
            codec.compress(photo("rocket", (32, 32)))
        except ValueError as err:
            print("REFUSED", err)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=GUARD_S)
    assert out.returncode == 0 and out.stdout.startswith("REFUSED"), out.stdout + out.stderr[-300:]
    assert "quantiles" in out.stdout and "finite" in out.stdout


def test_scale_table_is_in_the_fingerprint(saved, tmp_path, tiny_codec):
    """A checkpoint whose scale table differs decoded the original model's streams to other latents, silently."""
    bits = tiny_codec.compress(photo("rocket", (32, 32)))
    folder = _copy(saved, tmp_path / "scales", lfgcm=_set("gaussian_conditional.scale_table", lambda t: t * 1.05))
    other = DiffEICCodec.from_pretrained(folder)
    assert other.fingerprint() != tiny_codec.fingerprint()
    with pytest.raises(Exception, match="made by model"):
        other.decompress_latents(bits)


def test_every_coding_table_and_buffer_is_fingerprinted(tiny_codec):
    names = {n for n, _ in tiny_codec.fingerprinted_tensors()}
    for table in tiny_codec.lfgcm.coding_table_names():
        assert "lfgcm." + table in names
    assert {"lfgcm." + n for n, _ in tiny_codec.lfgcm.state_dict().items()} <= names


def test_save_pretrained_is_atomic(tmp_path, tiny_codec, monkeypatch):
    """A failure after the first file left a folder mixing new LFGCM weights with the old control module,
    which loaded without complaint; now the old folder stays whole and nothing else is left behind."""
    import safetensors.torch

    folder = tiny_codec.save_pretrained(tmp_path / "ckpt")
    changed = DiffEICCodec.from_config("tiny")
    with torch.no_grad():
        changed.lfgcm.decoder.g_s4.bias.add_(0.5)
        next(changed.control.parameters()).add_(0.5)
    real_save = safetensors.torch.save
    calls = []

    def failing_save(tensors, *args, **kwargs):          # the second weights file fails
        calls.append(len(tensors))
        if len(calls) == 2:
            raise OSError("disk full")
        return real_save(tensors, *args, **kwargs)

    monkeypatch.setattr(safetensors.torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        changed.save_pretrained(folder)
    monkeypatch.undo()
    assert DiffEICCodec.from_pretrained(folder).fingerprint() == tiny_codec.fingerprint()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]          # no temporary folder left
    changed.save_pretrained(folder)                                        # a complete write replaces it
    assert DiffEICCodec.from_pretrained(folder).fingerprint() == changed.fingerprint()


def test_a_folder_mixing_two_saves_is_refused(tmp_path, saved):
    other = DiffEICCodec.from_config("tiny")
    with torch.no_grad():
        other.lfgcm.decoder.g_s4.bias.add_(0.5)
    other_folder = other.save_pretrained(tmp_path / "other")
    mixed = _copy(saved, tmp_path / "mixed", keep_hashes=True)
    (mixed / LFGCM_FILE).write_bytes((other_folder / LFGCM_FILE).read_bytes())
    with pytest.raises(CheckpointError, match=f"{LFGCM_FILE}: its SHA-256 differs"):
        DiffEICCodec.from_pretrained(mixed)


def test_save_refuses_to_replace_a_folder_with_other_files(tmp_path, tiny_codec):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="notes.txt"):
        tiny_codec.save_pretrained(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def _drop(key):
    def edit(state):
        del state[key]
    return edit


@pytest.mark.parametrize("edit, message", [
    (_drop("decoder.g_s4.bias"), r"missing key\(s\) decoder\.g_s4\.bias"),
    (lambda s: s.__setitem__("extra.weight", torch.zeros(2)), r"unexpected key\(s\) extra\.weight"),
    (_set("decoder.g_s4.bias", lambda t: torch.zeros(t.numel() + 1)), r"wrong shape\(s\) decoder\.g_s4\.bias"),
])
def test_key_problems_are_named_in_one_line(saved, tmp_path, edit, message):
    folder = _copy(saved, tmp_path / "keys", lfgcm=edit)
    with pytest.raises(CheckpointError, match=message) as info:
        DiffEICCodec.from_pretrained(folder)
    assert "\n" not in str(info.value) and LFGCM_FILE in str(info.value)


def test_ckpt_renamed_to_safetensors(saved, tmp_path):
    folder = _copy(saved, tmp_path / "renamed")
    torch.save({"state_dict": {"w": torch.zeros(2)}}, folder / LFGCM_FILE)
    with pytest.raises(CheckpointError, match=f"{LFGCM_FILE}: not a readable safetensors file.*diffeic convert"):
        DiffEICCodec.from_pretrained(folder)


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.__setitem__("trained", "no"), r"trained = 'no': must be true or false"),
    (lambda d: d["model"]["lfgcm"].__setitem__("scale_levels", 1), r"lfgcm\.scale_levels = 1: must be an integer"),
    (lambda d: d["model"]["lfgcm"].__setitem__("scale_min", 0), r"lfgcm\.scale_min = 0\.0: must be a finite number > 0"),
    (lambda d: d["model"]["sampler"].__setitem__("seed", 2 ** 70), r"sampler\.seed = 1180591620717411303424"),
    (lambda d: d["model"]["lfgcm"].__setitem__("N", 32), r"wrong shape"),
])
def test_checkpoint_configs_are_validated_when_loaded(saved, tmp_path, edit, message):
    folder = _copy(saved, tmp_path / "cfg", meta=edit)
    with pytest.raises(CheckpointError, match=message) as info:
        read(folder) if "shape" not in message else DiffEICCodec.from_pretrained(folder)
    assert "\n" not in str(info.value)


def test_yaml_errors_name_the_file_and_line(saved, tmp_path):
    folder = _copy(saved, tmp_path / "yaml")
    (folder / CONFIG_FILE).write_text("trained: true\nmodel: [unclosed\n")
    with pytest.raises(CheckpointError, match=r"config\.yaml: not valid YAML \(line \d+"):
        DiffEICCodec.from_pretrained(folder)


def test_untampered_copy_loads_and_decodes_the_originals_streams(saved, tmp_path, tiny_codec):
    bits = tiny_codec.compress(photo("rocket", (32, 32)))
    loaded = DiffEICCodec.from_pretrained(_copy(saved, tmp_path / "same"))
    assert loaded.fingerprint() == tiny_codec.fingerprint()
    assert torch.equal(loaded.decompress_latents(bits)["y_hat"], tiny_codec.decompress_latents(bits)["y_hat"])
