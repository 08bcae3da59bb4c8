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
    untrained = [line for line in err if "untrained" in line]   # tiny has random weights: say so,
    assert len(untrained) == 1 and "--model demo-trained" in untrained[0]  # with advice in flags, not Python calls
    assert "from_pretrained" not in untrained[0] and "DiffEICCodec" not in untrained[0]
    sizes = {"astro": (64, 96), "coffee": (48, 80)}
    for stem, (h, w) in sizes.items():
        nbytes = (streams / f"{stem}.deic").stat().st_size
        assert f"{stem}.deic: {nbytes} bytes, {8 * nbytes / (h * w):.4f} bpp ({w}x{h} (width x height))" in out

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
    assert "astro.png: 96x64 (width x height), ddpm, 1 step" in out
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

    monkeypatch.setattr(cli, "_open_model", broken)
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


# ------------------------------------------------------------------------------------------ batch work (issue 15.4)
def _tree_with_bad_files(root, photos):
    """root/a/astro.png, root/b/astro.png (same name, other folder), root/b/garbage.png (not an image),
    root/truncated.png (a valid header, image data cut short)."""
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    Image.open(photos / "astro.png").save(root / "a" / "astro.png")
    Image.open(photos / "coffee.jpg").save(root / "b" / "astro.png")
    (root / "b" / "garbage.png").write_bytes(b"not an image at all")
    good = (root / "a" / "astro.png").read_bytes()
    idat = good.index(b"IDAT")
    (root / "truncated.png").write_bytes(good[:idat + 200])
    return root


def test_keep_going_reports_each_bad_file_and_processes_the_rest(photos, tmp_path, capsys, cached_tiny):
    src = _tree_with_bad_files(tmp_path / "in", photos)
    out = tmp_path / "out"
    code, stdout, err = run(capsys, "compress", src, "--out-dir", out, "--keep-going", *FAST)
    assert code == 1
    errors = errors_only(err)
    assert len(errors) == 3, err
    assert str(src / "b" / "garbage.png") in errors[0]               # found by the header check, before the model
    assert str(src / "truncated.png") in errors[1]                   # found while decoding the image
    assert errors[2] == "diffeic: error: 2 of 4 files failed (listed above)"
    # the input tree is mirrored: equal names in different folders do not collide
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.deic")) == ["a/astro.deic", "b/astro.deic"]
    assert DiffEICCodec.inspect((out / "b" / "astro.deic").read_bytes())["width"] == 80
    assert stdout.count(" -> ") == 2


def test_without_keep_going_a_bad_input_stops_before_the_model_is_loaded(photos, tmp_path, capsys, monkeypatch):
    src = _tree_with_bad_files(tmp_path / "in", photos)
    monkeypatch.setattr(cli, "_open_model", lambda *a, **k: pytest.fail("the model was loaded"))
    code, _, err = run(capsys, "compress", src, "--out-dir", tmp_path / "out", *FAST)
    assert code == 1
    assert_one_error_line(errors_only(err), str(src / "b" / "garbage.png"), "not an image file")
    assert not (tmp_path / "out").exists()
    bomb = tmp_path / "bomb.png"                           # a declared size over the codec's limit: refused cheaply
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", _ihdr(9000, 9000)) + _chunk(b"IEND", b""))
    code, _, err = run(capsys, "compress", bomb, *FAST)
    assert code == 1
    assert_one_error_line(errors_only(err), str(bomb), "9000x9000", "refused before decoding")
    junk = tmp_path / "junk.deic"
    junk.write_bytes(b"\xde\x1c" + b"\x00" * 30)
    code, _, err = run(capsys, "decompress", junk, *FAST)
    assert code == 1
    assert_one_error_line(errors_only(err), str(junk))


def _chunk(tag, data):
    import struct
    import zlib

    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def _ihdr(width, height):
    import struct

    return struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)


def test_compress_refuses_an_image_suffix_for_its_stream(photos, tmp_path, capsys, cached_tiny):
    code, _, err = run(capsys, "compress", photos / "astro.png", "-o", tmp_path / "x.png", *FAST)
    assert code == 2
    assert "writes a .deic stream, not a .png image" in err[-1] and str(tmp_path / "x.deic") in err[-1]
    assert not (tmp_path / "x.png").exists()
    code, _, err = run(capsys, "compress", photos / "astro.png", "-o", tmp_path / "x.bin", *FAST)
    assert code == 0
    assert any("does not end in .deic" in line for line in err)
    assert DiffEICCodec.inspect((tmp_path / "x.bin").read_bytes())["height"] == 64


def test_second_writer_gets_already_exists_instead_of_replacing(photos, tmp_path, capsys, cached_tiny, monkeypatch):
    # issue 21.4: the existence check at planning time is not enough: another run may create the file later.
    target = tmp_path / "a.deic"
    monkeypatch.setattr(cli, "_check_outputs", lambda jobs, force: target.write_bytes(b"other run"))
    code, _, err = run(capsys, "compress", photos / "astro.png", "-o", target, *FAST)
    assert code == 1
    assert_one_error_line(errors_only(err), str(target), "already exists", "--force")
    assert target.read_bytes() == b"other run"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.deic"]          # no temporary file left


def test_overlong_input_name_gets_a_shortened_output_name(photos, tmp_path, capsys, cached_tiny):
    # issue 14.13: a 250-character name + ".decoded.png" exceeds the 255-byte limit of most file systems.
    long_in = tmp_path / ("p" * 246 + ".png")
    Image.open(photos / "astro.png").save(long_in)
    code, out, err = run(capsys, "compress", long_in, *FAST)
    assert code == 0, err
    stream = tmp_path / ("p" * 246 + ".deic")                        # 251 bytes: fits, kept as is
    assert stream.is_file()
    code, out, err = run(capsys, "decompress", stream, *FAST)
    assert code == 0, err
    import hashlib

    digest = hashlib.sha256(("p" * 246 + ".decoded.png").encode()).hexdigest()[:8]
    (written,) = [p for p in tmp_path.iterdir() if p.name.endswith(f"~{digest}.png")]
    assert len(written.name.encode()) == 255 and written.name == "p" * (255 - 13) + f"~{digest}.png"
    assert load_image(written).shape == (3, 64, 96)


def test_non_utf8_file_names_print_instead_of_crashing(stream, tmp_path, monkeypatch, capsys):
    import io
    import os

    odd = tmp_path / os.fsdecode(b"caf\xe9.deic")                      # not valid UTF-8: a lone surrogate in str
    odd.write_bytes(stream.read_bytes())
    for encoding in ("utf-8", "latin-1"):
        buffer = io.BytesIO()
        monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(buffer, encoding=encoding, errors="strict"))
        assert main(["info", str(odd)]) == 0
        sys.stdout.flush()
        assert b"caf\\udce9.deic" in buffer.getvalue()


# ------------------------------------------------------------------------------------------ startup (issue 15.1)
@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["info", "STREAM"], ["compress", "--help"]])
def test_light_commands_do_not_import_torch(argv, stream):
    argv = [str(stream) if a == "STREAM" else a for a in argv]
    code = ("import sys; from diffeic.cli import main; rc = main(%r); "
            "heavy = sorted(m for m in ('torch', 'diffusers', 'compressai', 'lightning') if m in sys.modules); "
            "print('HEAVY', heavy); sys.exit(rc)" % argv)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout


# ------------------------------------------------------------------------------------------ eval / train (issue 15.7)
def test_eval_and_train_subcommands_pass_their_arguments_through(capsys):
    code, out, err = run(capsys, "eval", "--dataset", "nope")
    assert code == 2
    assert err[-1].startswith("diffeic eval: error: --dataset 'nope': unknown; choose one of kodak")
    code, out, _ = run(capsys, "eval", "--help")
    assert code == 0 and out.startswith("usage: diffeic eval") and "--rate-factors" in out
    code, out, _ = run(capsys, "--help")
    assert "eval" in out and "train" in out and "python train.py" in out


def test_shipped_configs_are_found_by_name_and_are_the_repositorys():
    from pathlib import Path

    from diffeic.training.cli import CONFIG_DIR, _with_shipped_configs, config_path, shipped_configs

    assert "tiny.yaml" in shipped_configs() and "sd21_stage1.yaml" in shipped_configs()
    assert CONFIG_DIR == Path(diffeic.__file__).resolve().parent / "configs"
    for name in ("tiny", "tiny.yaml", "configs/tiny.yaml", "/elsewhere/configs/tiny.yaml"):
        assert Path(config_path(name)).resolve() == (CONFIG_DIR / "tiny.yaml").resolve()
    assert config_path("no-such-config.yaml") == "no-such-config.yaml"       # LightningCLI reports it
    repo_configs = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"
    assert repo_configs.resolve() == (CONFIG_DIR / "tiny.yaml").resolve()     # one copy, not two
    assert _with_shipped_configs(["fit", "--config", "tiny", "--config=sd21_stage1"]) == [
        "fit", "--config", str(CONFIG_DIR / "tiny.yaml"), f"--config={CONFIG_DIR / 'sd21_stage1.yaml'}"]
