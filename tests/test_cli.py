"""The ``diffeic`` command line, run in-process through ``main([...])`` (one subprocess test at the end)."""
import json
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import diffeic
from diffeic import BitstreamError, DiffEICCodec, cli
from diffeic.cli import main
from diffeic.io import load_image

FAST = ["--model", "tiny", "--steps", "1"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Two small real photos: a 64x96 PNG and a 48x80 JPEG."""
    import skimage.data

    folder = tmp_path_factory.mktemp("photos")
    Image.fromarray(skimage.data.astronaut()[100:164, 150:246]).save(folder / "astro.png")
    Image.fromarray(skimage.data.coffee()[50:98, 100:180]).save(folder / "coffee.jpg", quality=95)
    return folder


@pytest.fixture
def cached_tiny(monkeypatch, tiny_codec):
    """``--model tiny`` reuses the session's codec (building it is most of a CLI call's time on CPU).

    The round-trip test does not use this, so real model loading is still covered.
    """
    build = DiffEICCodec.from_config

    def from_config(cls, config="tiny"):
        return tiny_codec if config == "tiny" else build(config)

    monkeypatch.setattr(DiffEICCodec, "from_config", classmethod(from_config))
    return tiny_codec


@pytest.fixture
def stream(photos, tmp_path, tiny_codec):
    """A fresh stream of astro.png (64x96) from the tiny model, decode settings steps=1."""
    path = tmp_path / "a.deic"
    path.write_bytes(tiny_codec.compress(load_image(photos / "astro.png"), steps=1))
    return path


def run(capsys, *argv):
    """``main(argv)`` → (exit code, stdout, stderr lines)."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err.splitlines()


def assert_one_error_line(err_lines, *fragments):
    assert len(err_lines) == 1, err_lines
    line = err_lines[0]
    assert line.startswith("diffeic: error: ") and "Traceback" not in line
    for fragment in fragments:
        assert fragment in line, line


def errors_only(err_lines):
    return [line for line in err_lines if not line.startswith("diffeic: warning:")]


# ------------------------------------------------------------------------------------------ round trip
def test_compress_info_decompress_round_trip(photos, tmp_path, capsys, tiny_codec):
    streams, recon = tmp_path / "streams", tmp_path / "recon"
    code, out, err = run(capsys, "compress", photos, "--out-dir", streams, *FAST, "--seed", "7")
    assert code == 0, err
    assert any("untrained" in line for line in err)             # tiny has random weights: say so
    sizes = {"astro": (64, 96), "coffee": (48, 80)}
    for stem, (h, w) in sizes.items():
        nbytes = (streams / f"{stem}.deic").stat().st_size
        assert f"{stem}.deic: {nbytes} bytes, {8 * nbytes / (h * w):.4f} bpp ({w}x{h})" in out

    code, out, err = run(capsys, "info", streams, "--json")
    assert code == 0 and err == []
    records = {r["file"]: r for r in json.loads(out)}
    astro = records[str(streams / "astro.deic")]
    nbytes = (streams / "astro.deic").stat().st_size
    assert (astro["height"], astro["width"], astro["steps"], astro["seed"]) == (64, 96, 1, 7)
    assert astro["total_bytes"] == nbytes and astro["bpp"] == pytest.approx(8 * nbytes / (64 * 96))
    assert astro["fingerprint"] == tiny_codec.fingerprint()[:8]

    code, out, err = run(capsys, "decompress", streams, "--out-dir", recon, "--model", "tiny")
    assert code == 0, err
    assert "1 step, seed 7" in out                              # the header's settings were used
    for stem, (h, w) in sizes.items():
        x = load_image(recon / f"{stem}.png")
        assert x.shape == (3, h, w)


def test_decode_overrides_and_default_output_name(stream, tmp_path, capsys, cached_tiny):
    code, out, _ = run(capsys, "decompress", stream, "--model", "tiny", "--steps", "2", "--seed", "3")
    assert code == 0
    assert (tmp_path / "a.decoded.png").is_file()               # never aims at a.png, likely the original
    assert "2 steps, seed 3" in out


def test_info_text_is_aligned(stream, capsys):
    code, out, err = run(capsys, "info", stream)
    assert code == 0 and err == []
    lines = out.splitlines()
    assert lines[0] == str(stream)
    rows = [re.match(r"^  (\S.*?)  +(\S.*)$", line) for line in lines[1:]]
    fields = {m.group(1): m.group(2) for m in rows}
    assert len({m.start(2) for m in rows}) == 1                # every value starts in the same column
    assert (fields["height"], fields["width"], fields["sampler"], fields["steps"]) == ("64", "96", "default", "1")
    assert fields["model fingerprint"] == DiffEICCodec.inspect(stream.read_bytes())["fingerprint"]
    assert fields["total bytes"] == str(stream.stat().st_size)


def test_checkpoint_folder_as_model(stream, tmp_path, capsys, tiny_codec):
    tiny_codec.save_pretrained(tmp_path / "ckpt")
    code, _, err = run(capsys, "decompress", stream, "-o", tmp_path / "a.png", "--model", tmp_path / "ckpt")
    assert code == 0, err                                       # same weights → same fingerprint → decodes
    assert load_image(tmp_path / "a.png").shape == (3, 64, 96)


# ------------------------------------------------------------------------------------------ refusals
def test_refuses_to_overwrite_without_force(photos, tmp_path, capsys, cached_tiny):
    stream = tmp_path / "a.deic"
    stream.write_bytes(b"precious")
    code, _, err = run(capsys, "compress", photos / "astro.png", "-o", stream, *FAST)
    assert code == 1
    assert_one_error_line(err, str(stream), "already exists", "--force")
    assert stream.read_bytes() == b"precious"
    code, _, err = run(capsys, "compress", photos / "astro.png", "-o", stream, *FAST, "--force")
    assert code == 0 and DiffEICCodec.inspect(stream.read_bytes())["width"] == 96


def test_decode_with_another_model_names_both_fingerprints(stream, tmp_path, capsys):
    other = tmp_path / "other.yaml"
    diffeic.get_config("tiny").replace(init_seed=1).to_yaml(other)
    code, _, err = run(capsys, "decompress", stream, "--model", other)
    assert code == 1
    mine = DiffEICCodec.inspect(stream.read_bytes())["fingerprint"]
    assert_one_error_line(errors_only(err), str(stream), mine)
    assert len(set(re.findall(r"\b[0-9a-f]{8}\b", errors_only(err)[0]))) == 2     # names both models
    assert not (tmp_path / "a.decoded.png").exists()


# ------------------------------------------------------------------------------------------ bad files: exit 1
def test_info_on_random_bytes_is_one_line(tmp_path, capsys):
    junk = tmp_path / "junk.deic"
    junk.write_bytes(np.random.default_rng(1).integers(0, 256, 200, dtype=np.uint8).tobytes())
    code, out, err = run(capsys, "info", junk)
    assert code == 1 and out == ""
    assert_one_error_line(err, f"diffeic: error: {junk}: ", "not a diffeic stream")


def test_debug_reraises_with_the_original_cause(tmp_path):
    junk = tmp_path / "junk.deic"
    junk.write_bytes(b"\x00" * 40)
    with pytest.raises(cli.CLIError) as info:
        main(["info", str(junk), "--debug"])
    assert isinstance(info.value.__cause__, BitstreamError)
    with pytest.raises(cli.CLIError):                           # also before the subcommand
        main(["--debug", "info", str(junk)])


def test_corrupt_image_is_one_line_naming_it(tmp_path, capsys, cached_tiny):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 50)
    code, _, err = run(capsys, "compress", bad, *FAST)
    assert code == 1
    assert_one_error_line(errors_only(err), f"{bad}: ")
    assert not (tmp_path / "bad.deic").exists()


def test_ambiguous_or_unwritable_outputs_are_refused_before_work(photos, stream, tmp_path, capsys):
    (tmp_path / "other").mkdir()
    Image.open(photos / "astro.png").save(tmp_path / "other" / "astro.png")
    code, _, err = run(capsys, "compress", photos / "astro.png", tmp_path / "other" / "astro.png",
                       "--out-dir", tmp_path / "out", *FAST)
    assert code == 1
    assert_one_error_line(err, "astro.deic", "both")           # two inputs, one output name
    assert not (tmp_path / "out").exists()
    code, _, err = run(capsys, "decompress", stream, "-o", tmp_path / "x.gif", *FAST)
    assert code == 1
    assert_one_error_line(err, "x.gif", "unsupported output format")


def test_missing_input_and_bad_model_are_one_line(photos, tmp_path, capsys):
    code, _, err = run(capsys, "info", tmp_path / "nope.deic")
    assert code == 1
    assert_one_error_line(err, "nope.deic", "no such file")
    code, _, err = run(capsys, "compress", photos / "astro.png", "-o", tmp_path / "a.deic", "--model",
                       tmp_path / "no-such-checkpoint")
    assert code == 1
    assert_one_error_line(err, "--model", "no-such-checkpoint")


def test_unexpected_error_is_one_line_unless_debug(photos, tmp_path, capsys, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(cli, "load_codec", broken)
    code, _, err = run(capsys, "compress", photos / "astro.png", "-o", tmp_path / "a.deic")
    assert code == 1
    assert_one_error_line(err, "unexpected RuntimeError: boom; second line", "--debug")
    with pytest.raises(RuntimeError, match="boom"):
        main(["compress", str(photos / "astro.png"), "-o", str(tmp_path / "a.deic"), "--debug"])


def test_alpha_warning_is_a_line_not_a_traceback(photos, tmp_path, capsys, cached_tiny):
    rgba = Image.open(photos / "astro.png").convert("RGBA")
    rgba.save(tmp_path / "alpha.png")
    code, _, err = run(capsys, "compress", tmp_path / "alpha.png", *FAST)
    assert code == 0
    assert any(line.startswith("diffeic: warning: ") and "alpha.png" in line and "alpha" in line for line in err)


# ------------------------------------------------------------------------------------------ usage: exit 2
@pytest.mark.parametrize("argv", [
    [],                                                 # no subcommand
    ["frobnicate"],
    ["compress"],                                       # no input
    ["compress", "x.png", "--steps", "0"],
    ["compress", "x.png", "--sampler", "euler"],
    ["compress", "x.png", "--seed", "-1"],
    ["compress", "x.png", "-o", "a.deic", "--out-dir", "d"],
    ["info", "x.deic", "--device", "not-a-device"],
])
def test_bad_usage_exits_2(argv, capsys):
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert err and err[0].startswith("usage: diffeic")


def test_output_option_takes_one_input(photos, tmp_path, capsys, cached_tiny):
    out = tmp_path / "x.deic"
    code, _, err = run(capsys, "compress", photos / "astro.png", photos / "coffee.jpg", "-o", out, *FAST)
    assert code == 2
    assert "-o/--output takes one input" in err[-1]
    code, _, _ = run(capsys, "compress", photos, "-o", out, *FAST)      # a folder of two is two inputs
    assert code == 2 and not out.exists()


def test_help_teaches_and_version(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0
    assert all(name in out for name in ("compress", "decompress", "info", "examples:"))
    code, out, _ = run(capsys, "decompress", "--help")
    assert code == 0 and "--out-dir" in out and "examples:" in out
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.startswith(f"diffeic {diffeic.__version__}")


def test_a_subcommand_is_one_builder_and_one_registration(monkeypatch, capsys):
    def add_hello(subparsers):
        parser = subparsers.add_parser("hello", help="say hello")
        parser.set_defaults(func=lambda args: print("hi", args.debug) or 0)
        return parser

    monkeypatch.setitem(cli.SUBCOMMANDS, "hello", add_hello)
    code, out, _ = run(capsys, "hello", "--debug")              # common options come for free
    assert code == 0 and out == "hi True\n"


def test_console_entry_point_runs(tmp_path):
    result = subprocess.run([sys.executable, "-m", "diffeic", "--version"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0
    assert result.stdout.strip().startswith(f"diffeic {diffeic.__version__}")
