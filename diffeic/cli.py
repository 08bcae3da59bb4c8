"""The ``diffeic`` command: ``compress``, ``decompress``, ``info``, ``inspect``, ``convert``, ``eval``, ``train``.

Exit codes: 0 success · 1 a bad input file or model (one line ``diffeic: error: <file>: <problem>`` on
stderr, no traceback; ``--debug`` shows it; with ``--keep-going`` every bad file is reported and the
rest processed) · 2 bad usage (argparse) · 130 interrupted.

torch, diffusers and the codec are imported only by the subcommands that run a model, so ``--help``,
``--version`` and ``info`` start in well under a second.

A subcommand is one builder registered in :data:`SUBCOMMANDS`: a function that takes argparse's
sub-parser collection, adds its parser and sets ``func`` (the handler, ``args -> int``) as a default::

    SUBCOMMANDS["convert"] = add_convert_parser
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from . import __version__  # noqa: E402
from .bitstream import FORMAT_VERSION, MAX_STEPS, SAMPLER_IDS, BitstreamError, describe  # noqa: E402
from .config import PRESETS  # noqa: E402
from .io import IMAGE_SUFFIXES, expand_tree, image_size, output_format  # noqa: E402
from .codecs.registry import DEMO_MODEL, pretrained_models  # noqa: E402

if TYPE_CHECKING:
    import torch

    from .codecs.base import Codec

PROG = "diffeic"
STREAM_SUFFIX = ".deic"
#: Errors that mean "this input (file, model, option value) is bad": one line, exit 1.
INPUT_ERRORS = (BitstreamError, ValueError, TypeError, OSError)
#: Longest file name most file systems take (bytes); longer default output names are shortened.
NAME_MAX = 255

Builder = Callable[[Any], argparse.ArgumentParser]


class CLIError(Exception):
    """A problem to report as one ``diffeic: error: ...`` line with exit status 1."""


class UsageError(Exception):
    """A usage problem found after parsing (reported like argparse's own, exit status 2)."""


# ====================================================================================== parser
_MAIN_EPILOG = f"""\
examples:
  {PROG} compress photo.png --model checkpoints/diffeic_l2     # -> photo.deic
  {PROG} compress photos/ --out-dir streams/ --model tiny      # every image below photos/
  {PROG} info photo.deic                                        # header: size, model, sampler, bpp
  {PROG} compress photo.png --model semantic_tiny --prompt 'a cat on a sofa' --palette 32
  {PROG} inspect photo.deic                                     # + the parts of a semantic stream, in bytes
  {PROG} decompress photo.deic -o photo_hat.png --model checkpoints/diffeic_l2 --steps 50
  {PROG} decompress 'streams/*.deic' --out-dir recon/ --sampler ddim --steps 20
  {PROG} eval --dataset samples                                 # = python eval.py (see '{PROG} eval --help')
  {PROG} train fit --config tiny.yaml                           # = python train.py; configs ship with diffeic

run '{PROG} COMMAND --help' for the options of one command.
"""

_COMPRESS_EPILOG = f"""\
output: <stem>{STREAM_SUFFIX} beside each input, or in --out-dir (mirroring the folders below each input
folder); -o names it (one input only, suffix {STREAM_SUFFIX}).  --steps/--sampler/--seed are written into
the stream as its decode settings.  Existing outputs are kept unless --force, also when another run
creates them meanwhile.  --keep-going reports a bad file and goes on; the exit status is then 1.
A variable-rate model (e.g. --model tiny_vr) takes --rate Q, or --target-bpp / --target-bytes (the
largest rate whose file fits, found by bisection on real streams); default: its highest rate.

examples:
  {PROG} compress photo.png --model checkpoints/diffeic_l2
  {PROG} compress photo.png --model runs/sd21_stage2_vr/export --target-bytes 4096
  {PROG} compress 'kodak/*.png' --out-dir streams/ --model tiny --steps 2

semantic models (--model semantic_tiny, semantic_sd15 or a semantic checkpoint) send what a text-to-image
model needs to redraw the picture, each part optional: --prompt TEXT (without it: a caption by the local
captioning model in $DIFFEIC_CAPTION_MODEL, else an error; --prompt '' sends none), Canny edges (--no-edges:
none), a colour palette of N cells on the long side (--palette N, default 32; 0: none) and kept regions sent
as pixels (--keep x0,y0,x1,y1, repeatable; x1/y1 exclusive).  When a plain WebP of the image is no larger
than the parts, it is stored instead (a warning says so).  semantic_tiny has no text encoder: the prompt is
sent but does not change its reconstruction.
  {PROG} compress photo.png --model semantic_tiny --prompt 'a cat' --keep 10,10,74,74 --palette 16
  {PROG} compress photo.png --model semantic_tiny --prompt '' --no-edges        # the palette alone
"""

_DECOMPRESS_EPILOG = f"""\
output: <stem>.decoded.png beside each input, or <stem>.png in --out-dir (mirroring the folders below
each input folder); -o names it (one input only; the suffix picks PNG, JPEG, WebP, TIFF or BMP).  The
stream's own sampler/steps/seed are used unless overridden.  The model must be the one that compressed
the stream (its fingerprint is checked).  --keep-going reports a bad stream and goes on (exit status 1).

examples:
  {PROG} decompress photo.deic --model checkpoints/diffeic_l2
  {PROG} decompress photo.deic -o photo_hat.png --model checkpoints/diffeic_l2 --steps 20 --sampler ddim
  {PROG} decompress streams/ --out-dir recon/ --model tiny
"""

_INSPECT_EPILOG = f"""\
The header as 'info' shows it and, for a semantic stream, its parts (prompt, edges, palette, kept regions, or
the fallback image) with the bytes of each; the parts' bytes, their framing and the container add up to the
total.  None of this needs the model.

examples:
  {PROG} inspect photo.deic
  {PROG} inspect streams/ --json
"""

_INFO_EPILOG = f"""\
None of this needs the model.  'default' means the stream leaves the setting to the decoding model.

examples:
  {PROG} info photo.deic
  {PROG} info streams/ --json | python -c 'import json,sys; print(json.load(sys.stdin)[0]["bpp"])'
"""


def _positive_steps(text: str) -> int:
    value = _int_arg(text)
    if not 1 <= value <= MAX_STEPS:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_STEPS}, got {value}")
    return value


def _seed(text: str) -> int:
    value = _int_arg(text)
    if not 0 <= value < 2 ** 64:
        raise argparse.ArgumentTypeError(f"must be in [0, 2**64), got {value}")
    return value


def _int_arg(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def _finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    return value


def _box_arg(text: str) -> Tuple[int, int, int, int]:
    values = text.split(",")
    if len(values) != 4:
        raise argparse.ArgumentTypeError(f"a box is x0,y0,x1,y1 (four integers), got {text!r}")
    return tuple(_int_arg(v.strip()) for v in values)


def _device_arg(text: str) -> "torch.device":
    import torch

    try:
        return torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"not a torch device: {text!r} (e.g. cpu, cuda, cuda:1)") from None


def _add_common_options(parser: argparse.ArgumentParser) -> None:
    """Options every subcommand accepts (also after the subcommand's name)."""
    # SUPPRESS: a subcommand's default must not overwrite a value given before the subcommand.
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the full traceback of an error instead of one line")
    parser.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="print errors and warnings only (no per-file lines, no progress bar)")


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    presets = "|".join(PRESETS)
    # The shipped demo model when the package has it (a real, if tiny, codec), else the untrained preset.
    shipped = pretrained_models()
    default = DEMO_MODEL if DEMO_MODEL in shipped else "tiny"
    parser.add_argument("--model", default=default, metavar=f"NAME|{presets}|DIR",
                        help=f"a shipped model ({', '.join(shipped) or 'none installed'}: a tiny demo trained on a "
                             f"CPU), a checkpoint folder (trained weights) or a preset ({', '.join(PRESETS)}: random, "
                             f"untrained weights, for tests); default: %(default)s")
    parser.add_argument("--sd-path", metavar="P", default=None,
                        help="Stable Diffusion 2.1-base weights for a checkpoint folder: hub id, diffusers folder "
                             "or single file (default: the one recorded in the checkpoint)")
    parser.add_argument("--device", type=_device_arg, default=None, metavar="cpu|cuda",
                        help="where to run (default: cuda if available, else cpu)")


def _add_decode_options(parser: argparse.ArgumentParser, stored: bool) -> None:
    where = "store in the stream as its decode setting" if stored else "override the stream's setting"
    parser.add_argument("--steps", type=_positive_steps, default=None, metavar="N",
                        help=f"diffusion sampling steps ({where})")
    parser.add_argument("--sampler", choices=list(SAMPLER_IDS), default=None, metavar="NAME",
                        help=f"diffusion sampler: {', '.join(SAMPLER_IDS)} ({where})")
    parser.add_argument("--seed", type=_seed, default=None, metavar="S", help=f"sampling seed ({where})")
    parser.add_argument("--max-steps", type=_positive_steps, default=None, metavar="N",
                        help="the most sampling steps a stream may " + ("be written with" if stored else "ask for")
                             + " (default: 4x the model's default steps; larger images get proportionally fewer)")


def _add_output_options(parser: argparse.ArgumentParser, what: str) -> None:
    target = parser.add_mutually_exclusive_group()
    target.add_argument("-o", "--output", metavar="OUT", default=None, help=f"the {what} to write (one input only)")
    target.add_argument("--out-dir", metavar="DIR", default=None, help=f"folder for the {what}s (created if missing)")
    parser.add_argument("-f", "--force", action="store_true", help="overwrite existing outputs")
    parser.add_argument("-k", "--keep-going", action="store_true",
                        help="report a bad input and continue with the others (exit status 1 at the end)")


def _new_parser(subparsers, name: str, help: str, epilog: str) -> argparse.ArgumentParser:
    return subparsers.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".", epilog=epilog,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)


def add_compress_parser(subparsers) -> argparse.ArgumentParser:
    parser = _new_parser(subparsers, "compress", "compress images into .deic streams", _COMPRESS_EPILOG)
    parser.add_argument("inputs", nargs="+", metavar="IMAGE",
                        help=f"image files, folders (searched recursively for {' '.join(IMAGE_SUFFIXES)}) "
                             f"or quoted glob patterns")
    _add_output_options(parser, "stream")
    _add_model_options(parser)
    _add_decode_options(parser, stored=True)
    rate = parser.add_mutually_exclusive_group()
    rate.add_argument("--rate", type=_finite_float, default=None, metavar="Q",
                      help="rate parameter of a variable-rate model, in its range (larger: more bits)")
    rate.add_argument("--target-bpp", type=_finite_float, default=None, metavar="B",
                      help="variable-rate model: the largest rate whose file is at most B bits per pixel")
    rate.add_argument("--target-bytes", type=_int_arg, default=None, metavar="N",
                      help="variable-rate model: the largest rate whose file is at most N bytes")
    parts = parser.add_argument_group("semantic models (the parts to send; see below)")
    parts.add_argument("--prompt", default=None, metavar="TEXT",
                       help="the text prompt ('' for none; default: a local caption, else an error)")
    parts.add_argument("--no-edges", dest="edges", action="store_false", default=None,
                       help="send no Canny edge map")
    parts.add_argument("--palette", type=_int_arg, default=None, metavar="N",
                       help="colour palette grid, N cells on the long side (default 32; 0: no palette)")
    parts.add_argument("--keep", type=_box_arg, action="append", default=None, metavar="x0,y0,x1,y1",
                       help="a region sent as pixels and kept exactly (repeatable)")
    parser.set_defaults(func=run_compress)
    return parser


def add_decompress_parser(subparsers) -> argparse.ArgumentParser:
    parser = _new_parser(subparsers, "decompress", "decode .deic streams into images", _DECOMPRESS_EPILOG)
    parser.add_argument("inputs", nargs="+", metavar=f"FILE{STREAM_SUFFIX}",
                        help=f"stream files, folders (searched for *{STREAM_SUFFIX}) or quoted glob patterns")
    _add_output_options(parser, "image")
    _add_model_options(parser)
    _add_decode_options(parser, stored=False)
    parser.set_defaults(func=run_decompress)
    return parser


def add_inspect_parser(subparsers) -> argparse.ArgumentParser:
    parser = _new_parser(subparsers, "inspect", "list the header and parts of .deic streams, in bytes",
                         _INSPECT_EPILOG)
    parser.add_argument("inputs", nargs="+", metavar=f"FILE{STREAM_SUFFIX}",
                        help=f"stream files, folders (searched for *{STREAM_SUFFIX}) or quoted glob patterns")
    parser.add_argument("--json", action="store_true", help="print a JSON list of objects, one per file")
    parser.set_defaults(func=run_inspect)
    return parser


def add_info_parser(subparsers) -> argparse.ArgumentParser:
    parser = _new_parser(subparsers, "info", "print the header of .deic streams", _INFO_EPILOG)
    parser.add_argument("inputs", nargs="+", metavar=f"FILE{STREAM_SUFFIX}",
                        help=f"stream files, folders (searched for *{STREAM_SUFFIX}) or quoted glob patterns")
    parser.add_argument("--json", action="store_true", help="print a JSON list of objects, one per file")
    parser.set_defaults(func=run_info)
    return parser


_CONVERT_DESCRIPTION = (
    "Convert an official DiffEIC lc.ckpt (LFGCM + control module) into a diffeic checkpoint folder: OUT_DIR is "
    "then a --model of the diffeic command (or DiffEICCodec.from_pretrained(OUT_DIR) in Python).")


def add_convert_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("convert", help="convert an official DiffEIC lc.ckpt",
                                   description=_CONVERT_DESCRIPTION)
    parser.add_argument("ckpt", metavar="OFFICIAL.ckpt", help="an official DiffEIC lc.ckpt (e.g. weight/1_2_4/lc.ckpt)")
    parser.add_argument("out_dir", metavar="OUT_DIR", help="checkpoint folder to write")
    parser.add_argument("--lmbda", type=float, default=None,
                        help="rate weight λ to record (default: from the official folder name 1_2_<λ>)")
    parser.add_argument("--sd-path", default=None,
                        help="SD2.1-base weights to record for loading (hub id, diffusers folder or single file)")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="allow full unpickling (weights_only=False) for files with Lightning metadata; "
                             "only for files from a trusted source — it can execute code")
    parser.add_argument("--force", action="store_true", help="overwrite an existing checkpoint in OUT_DIR")
    parser.set_defaults(func=run_convert)
    return parser


def run_convert(args: argparse.Namespace) -> int:
    """``diffeic convert``: :func:`diffeic.convert.convert_official`.  Its errors (``ConversionError`` is a
    ``ValueError``; missing or existing paths are ``OSError``) are reported as one line with exit status 1."""
    from . import convert

    folder = convert.convert_official(args.ckpt, args.out_dir, lmbda=args.lmbda, sd_path=args.sd_path,
                                      trust_pickle=args.trust_pickle, overwrite=args.force)
    if not _quiet(args):
        sd = "" if args.sd_path is not None else " --sd-path SD2.1-BASE"     # recorded when given
        print(f"wrote {folder} (use it with: diffeic compress IMAGE --model {folder}{sd})")
    return 0


def run_eval(argv: Sequence[str]) -> int:
    """``diffeic eval ARGS``: exactly ``python eval.py ARGS`` (:mod:`diffeic.evaluation.cli`)."""
    from .evaluation.cli import main as eval_main

    return eval_main(list(argv), prog=f"{PROG} eval")


def run_train(argv: Sequence[str]) -> int:
    """``diffeic train ARGS``: exactly ``python train.py ARGS`` (LightningCLI; configs ship with diffeic)."""
    from .training.cli import main as train_main

    try:
        train_main(list(argv))
    except SystemExit as exit_:
        return _exit_code(exit_)
    return 0


#: Subcommands whose arguments go untouched to another program's parser (they have their own --help).
PASS_THROUGH: Dict[str, Callable[[Sequence[str]], int]] = {"eval": run_eval, "train": run_train}


def _add_pass_through_parser(name: str, help: str) -> Builder:
    def add(subparsers) -> argparse.ArgumentParser:
        parser = subparsers.add_parser(name, help=help, add_help=False)
        parser.add_argument("args", nargs=argparse.REMAINDER)
        parser.set_defaults(func=lambda args: PASS_THROUGH[name](args.args))
        return parser
    return add


#: name → builder; the order is the order of ``diffeic --help``.
SUBCOMMANDS: Dict[str, Builder] = {
    "compress": add_compress_parser,
    "decompress": add_decompress_parser,
    "info": add_info_parser,
    "inspect": add_inspect_parser,
    "convert": add_convert_parser,
    "eval": _add_pass_through_parser("eval", "evaluate rate-distortion on an image set (= python eval.py)"),
    "train": _add_pass_through_parser("train", "train a model with Lightning (= python train.py)"),
}


def build_parser() -> argparse.ArgumentParser:
    """The full ``diffeic`` parser: global options plus every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_MAIN_EPILOG,
        description="DiffEIC extreme image compression (<0.1 bpp): an LFGCM hyperprior codec whose "
                    "latents guide a Stable Diffusion decoder.")
    parser.add_argument("--version", action="version",
                        version=f"{PROG} {__version__} (bitstream format {FORMAT_VERSION}, torch {_torch_version()})")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    parser.add_argument("-q", "--quiet", action="store_true", help="print errors and warnings only")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, builder in SUBCOMMANDS.items():
        sub = builder(subparsers)
        if name not in PASS_THROUGH:
            _add_common_options(sub)
        sub.set_defaults(_parser=sub)
    return parser


def _torch_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("torch")         # the installed distribution's metadata: no torch import
    except PackageNotFoundError:
        return "not installed"


# ====================================================================================== main
def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; returns the exit status (never raises ``SystemExit``)."""
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    _tolerate_unprintable_names()
    if argv and argv[0] in PASS_THROUGH:
        return PASS_THROUGH[argv[0]](argv[1:])
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:          # --help, --version, usage errors
        return _exit_code(exit_)
    try:
        with _warnings_as_lines():
            return int(args.func(args) or 0)
    except UsageError as err:
        args._parser.print_usage(sys.stderr)
        print(f"{args._parser.prog}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except (CLIError, *INPUT_ERRORS) as err:
        if args.debug:
            raise
        _print_error(_one_line(err))
        return 1
    except Exception as err:         # a bug, not bad input: still one line unless --debug
        if args.debug:
            raise
        _print_error(f"unexpected {type(err).__name__}: {_one_line(err)} (rerun with --debug for the traceback)")
        return 1


def _tolerate_unprintable_names() -> None:
    """File names that are not valid in the terminal's encoding print with escapes instead of crashing.

    Python decodes such names with lone surrogates (``surrogateescape``); a strict stdout then raises
    ``UnicodeEncodeError`` on the first progress line.
    """
    for stream in (sys.stdout, sys.stderr):
        if getattr(stream, "errors", None) == "strict" and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")


def _exit_code(exit_: SystemExit) -> int:
    return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)


def _print_error(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr)


def _one_line(err: BaseException) -> str:
    text = _describe(err)
    return "; ".join(line.strip() for line in text.splitlines() if line.strip()) or type(err).__name__


def _describe(err: BaseException) -> str:
    """An exception's message; OSErrors without their ``[Errno n]`` noise."""
    if isinstance(err, OSError) and err.strerror:
        return f"{err.filename}: {err.strerror}" if err.filename else err.strerror
    return str(err)


@contextmanager
def _warnings_as_lines() -> Iterator[None]:
    """Show warnings (e.g. 'alpha channel dropped') as ``diffeic: warning: ...`` lines."""
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        yield


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    _note(str(message))


def _note(message: str) -> None:
    print(f"{PROG}: warning: {message}", file=sys.stderr)


@contextmanager
def _about(path: Path) -> Iterator[None]:
    """Turn an input error while handling ``path`` into a CLIError whose message starts with the file."""
    try:
        yield
    except INPUT_ERRORS as err:
        message = (err.strerror or str(err)) if isinstance(err, OSError) else str(err)
        if not message.startswith(f"{path}:"):
            message = f"{path}: {message}"
        raise CLIError(message) from err


# ====================================================================================== shared steps
Job = Tuple[Path, Path]


def _inputs(items: Sequence[str], suffixes: Sequence[str]) -> List[Tuple[Path, Path]]:
    """Input files, each with its path relative to the folder (or pattern root) it was found under."""
    try:
        return expand_tree(items, suffixes)
    except ValueError as err:
        raise CLIError(str(err)) from err


def _plan_outputs(args: argparse.Namespace, found: List[Tuple[Path, Path]],
                  default_name: Callable[[Path, bool], str]) -> List[Job]:
    """Pair each input with its output; refuse ambiguous, self-overwriting or (without --force) existing ones.

    ``default_name(src, in_out_dir)`` gives the output's file name when -o is not used; under --out-dir
    the folders between an input folder and the file are kept, so equal names in different folders
    do not collide.
    """
    files = [f for f, _ in found]
    if args.output is not None and len(files) > 1:
        raise UsageError(f"-o/--output takes one input, got {len(files)} files (use --out-dir)")
    if args.output is not None:
        outputs = [Path(args.output)]
    elif args.out_dir is not None:
        outputs = [Path(args.out_dir) / rel.parent / _fit_name(default_name(f, True)) for f, rel in found]
    else:
        outputs = [f.parent / _fit_name(default_name(f, False)) for f in files]
    jobs = list(zip(files, outputs))
    _check_outputs(jobs, force=args.force)
    return jobs


def _fit_name(name: str) -> str:
    """A default output name that the file system takes: too long → cut, with a hash of the full name."""
    encoded = os.fsencode(name)
    if len(encoded) <= NAME_MAX:
        return name
    stem, dot, suffix = name.rpartition(".")
    tag = "~" + hashlib.sha256(encoded).hexdigest()[:8] + dot + suffix
    budget = NAME_MAX - len(os.fsencode(tag))
    while len(os.fsencode(stem)) > budget:      # cut whole characters, never half of a multi-byte one
        stem = stem[:-1]
    return stem + tag


def _check_outputs(jobs: List[Job], force: bool) -> None:
    seen: Dict[Path, Path] = {}
    for src, dst in jobs:
        key = dst.resolve()
        if key in seen:
            raise CLIError(f"{dst}: both {seen[key]} and {src} would be written here; use separate runs")
        seen[key] = src
        if key == src.resolve():
            raise CLIError(f"{dst}: the output would overwrite its own input")
        if dst.is_dir():
            raise CLIError(f"{dst}: is a directory")
        if dst.exists() and not force:
            raise CLIError(f"{dst}: already exists (use --force to overwrite)")


def _make_parent_dirs(jobs: List[Job]) -> None:
    for parent in {dst.parent for _, dst in jobs}:
        parent.mkdir(parents=True, exist_ok=True)


def _checked_inputs(jobs: List[Job], check: Callable[[Path], Any], args: argparse.Namespace,
                    failures: List[str]) -> List[Job]:
    """Run the cheap per-file ``check`` (header only) on every input before any model is loaded.

    Without --keep-going the first bad file stops the command; with it, bad files are reported and left out.
    """
    good = []
    for src, dst in jobs:
        try:
            with _about(src):
                check(src)
        except CLIError as err:
            if not args.keep_going:
                raise
            _fail(err, failures)
            continue
        good.append((src, dst))
    return good


def _fail(err: Exception, failures: List[str]) -> None:
    _print_error(_one_line(err))
    failures.append(str(err))


def _finish(failures: List[str], total: int) -> int:
    if failures:
        _print_error(f"{len(failures)} of {total} file{'' if total == 1 else 's'} failed (listed above)")
        return 1
    return 0


def _write(dst: Path, write: Callable[[Path], Any]) -> None:
    """Write one output: atomically, and without --force exclusively (a file created meanwhile is kept)."""
    with _about(dst):
        try:
            write(dst)
        except FileExistsError:
            raise CLIError(f"{dst}: already exists (use --force to overwrite)") from None


def _open_model(model: str, sd_path: Optional[str] = None, device: Optional["torch.device"] = None) -> "Codec":
    """``--model`` → the codec of any family on the device, through :func:`diffeic.load_codec` (the one loader),
    saying when its weights are untrained."""
    from . import load_codec
    from .codecs.diffeic import CLI_ADVICE, warn_if_untrained
    from .codecs.registry import family_of

    family = family_of(model)
    if sd_path is not None and (family != "diffeic" or _model_kind(model) != "checkpoint"):
        _note(f"--sd-path is ignored for --model {model} (it applies to DiffEIC checkpoints)")
        sd_path = None
    codec = load_codec(model, **({} if sd_path is None else {"sd_path": sd_path}))
    if family == "diffeic":      # every command says it, not only the first; with advice for the command line
        warn_if_untrained(codec, name=model, always=True, advice=CLI_ADVICE)
    elif not codec.is_trained:
        _note(f"model {model!r} has random, untrained weights: reconstructions will not resemble the input "
              f"({CLI_ADVICE})")
    return codec.to(_resolve_device(device))


def _model_kind(model: str) -> str:
    """``"preset"``, ``"config"`` or ``"checkpoint"`` (:func:`diffeic.codecs.registry.model_kind`), checked before
    any input is read or any model loaded."""
    from .codecs.registry import model_kind

    try:
        return model_kind(model)
    except ValueError as err:
        raise CLIError(f"--model {err}") from None


def _resolve_device(device: Optional["torch.device"]) -> "torch.device":
    import torch

    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CLIError(f"--device {device}: CUDA is not available on this machine")
    return device


def _progress(jobs: List[Job], args: argparse.Namespace, verb: str):
    from tqdm import tqdm

    # disable=None: the bar only appears on a terminal, never in logs or pipes.
    return tqdm(jobs, desc=verb, unit="file", file=sys.stderr, leave=False,
                disable=True if _quiet(args) else None)


def _quiet(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "quiet", False))


def _report(args: argparse.Namespace, line: str) -> None:
    if not _quiet(args):
        from tqdm import tqdm

        tqdm.write(line, file=sys.stdout)


@contextmanager
def _one_job(args: argparse.Namespace, failures: List[str]) -> Iterator[None]:
    """Under --keep-going, report a job's error and let the loop go on; otherwise let it stop the command."""
    try:
        yield
    except CLIError as err:
        if not args.keep_going:
            raise
        _fail(err, failures)


# ====================================================================================== compress
def _stream_name(src: Path, in_out_dir: bool) -> str:
    return src.stem + STREAM_SUFFIX


def _check_stream_output(output: Optional[str]) -> None:
    """``-o photo.png`` on compress would write a stream under an image's name: refuse it."""
    if output is None:
        return
    suffix = Path(output).suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        raise UsageError(f"-o {output}: compress writes a {STREAM_SUFFIX} stream, not a {suffix} image; "
                         f"name it e.g. {Path(output).with_suffix(STREAM_SUFFIX)}")
    if suffix != STREAM_SUFFIX:
        _note(f"-o {output}: does not end in {STREAM_SUFFIX}; 'diffeic decompress' finds streams in folders "
              f"and patterns by that suffix")


def run_compress(args: argparse.Namespace) -> int:
    """``diffeic compress``: every image → one ``.deic`` stream; prints bytes and bpp per file."""
    _check_stream_output(args.output)
    _model_kind(args.model)
    jobs = _plan_outputs(args, _inputs(args.inputs, IMAGE_SUFFIXES), _stream_name)
    from .codecs.base import Codec
    from .io import load_image, write_bytes_atomic
    from .sizes import size_text

    limit = Codec.max_pixels
    parts_kw = _semantic_options(args)
    failures: List[str] = []
    total = len(jobs)
    jobs = _checked_inputs(jobs, lambda src: image_size(src, max_pixels=limit), args, failures)
    if jobs:
        codec = _open_model(args.model, args.sd_path, args.device)
        _make_parent_dirs(jobs)
        if parts_kw.get("prompt") and codec.config.decoder == "tiny":
            from .codecs.semantic import NO_TEXT_NOTE

            _note(NO_TEXT_NOTE)
    for src, dst in _progress(jobs, args, "compress"):
        with _one_job(args, failures):
            with _about(src):
                x = load_image(src, max_pixels=codec.max_pixels)
                # Rate options only when given: codecs without rate control (other families) take none.
                rate_kw = {k: v for k, v in (("rate", args.rate), ("target_bpp", args.target_bpp),
                                             ("target_bytes", args.target_bytes)) if v is not None}
                bits = codec.compress(x, sampler=args.sampler, steps=args.steps, seed=args.seed,
                                      max_steps=args.max_steps, **rate_kw, **parts_kw)
            _write(dst, lambda path: write_bytes_atomic(path, bits, overwrite=args.force))
            height, width = x.shape[-2:]
            info = codec.inspect(bits)
            rate = info["rate"]
            _report(args, f"{src} -> {dst}: {len(bits)} bytes, {8 * len(bits) / (height * width):.4f} bpp "
                          f"({size_text(height, width)}" + ("" if rate is None else f", rate {rate:g}")
                          + (f"; {_parts_text(info)}" if "parts" in info else "") + ")")
    return _finish(failures, total)


def _semantic_options(args: argparse.Namespace) -> Dict[str, Any]:
    """The parts options (--prompt, --no-edges, --palette, --keep) as ``compress`` keywords; refused for a model of
    another family, and without --prompt when no local captioning model can make one (before any model loads)."""
    from .codecs.registry import family_of

    given = [flag for flag, value in (("--prompt", args.prompt), ("--no-edges", args.edges),
                                      ("--palette", args.palette), ("--keep", args.keep)) if value is not None]
    if family_of(args.model) != "semantic":
        if given:
            raise UsageError(f"{', '.join(given)}: only for semantic models (e.g. --model semantic_tiny), not "
                             f"--model {args.model}")
        return {}
    if args.palette is not None and args.palette < 0:
        raise UsageError(f"--palette {args.palette}: must be 0 (no palette) or a grid size")
    if args.prompt is None:
        from .semantic.prompt import CaptionUnavailable, caption_folder

        try:
            caption_folder(None)
        except CaptionUnavailable as err:
            raise CLIError(f"--prompt not given, and {err}") from None
    return {"prompt": args.prompt, "edges": args.edges is not False,
            "palette": 32 if args.palette is None else (args.palette or None), "keep": args.keep or ()}


def _parts_text(info: Dict[str, Any]) -> str:
    """``prompt 5 B, edges 668 B, ...`` of a semantic stream's :meth:`SemanticCodec.inspect`."""
    return ", ".join(f"{name} {info['bytes'][name]} B" for name in info["parts"])


# ====================================================================================== decompress
def _image_name(src: Path, in_out_dir: bool) -> str:
    # Beside the stream, <stem>.png is likely the original photo: never aim at it by default.
    return src.stem + (".png" if in_out_dir else ".decoded.png")


def run_decompress(args: argparse.Namespace) -> int:
    """``diffeic decompress``: every stream → one image, decoded with the stream's settings unless overridden."""
    _model_kind(args.model)
    jobs = _plan_outputs(args, _inputs(args.inputs, (STREAM_SUFFIX,)), _image_name)
    for _, dst in jobs:
        with _about(dst):
            output_format(dst)                  # reject an unknown suffix before loading the model
    failures: List[str] = []
    total = len(jobs)
    jobs = _checked_inputs(jobs, lambda src: describe(src.read_bytes()), args, failures)
    if jobs:
        codec = _open_model(args.model, args.sd_path, args.device)
        _make_parent_dirs(jobs)
    from .io import save_image
    from .sizes import size_text

    for src, dst in _progress(jobs, args, "decompress"):
        with _one_job(args, failures):
            with _about(src):
                bits = src.read_bytes()
                x_hat = codec.decompress(bits, steps=args.steps, sampler=args.sampler, seed=args.seed,
                                         progress=_step_bar(args), max_steps=args.max_steps)
            _write(dst, lambda path: save_image(x_hat, path, overwrite=args.force))
            sampler, steps, seed = _decode_settings(codec, bits, args)
            _report(args, f"{src} -> {dst}: {size_text(*x_hat.shape[-2:])}, {sampler}, "
                          f"{steps} step{'' if steps == 1 else 's'}, seed {seed}")
    return _finish(failures, total)


def _step_bar(args: argparse.Namespace) -> bool:
    """Ask the sampler for a per-step bar on a terminal; it appears only once a decode has run a few seconds."""
    return not _quiet(args) and sys.stderr.isatty()


def _decode_settings(codec: "Codec", bits: bytes, args: argparse.Namespace) -> Tuple[str, int, Any]:
    """The settings a decode used: option, else the stream's header, else the model's default."""
    if not hasattr(codec, "fast_decoder"):      # another family: no sampler; steps/seed if its decoder samples
        s = codec.decode_settings(bits, args.steps, args.seed, max_steps=args.max_steps)
        return (f"{codec.family} sampler", s["steps"], s["seed"]) if s else (f"{codec.family} generator", 1, "none")
    s = codec.decode_settings(bits, args.steps, args.seed, args.sampler, max_steps=args.max_steps)
    return s.name, s.steps, s.seed


# ====================================================================================== info
#: header key → label, in display order.
INFO_FIELDS: Tuple[Tuple[str, str], ...] = (
    ("version", "format version"), ("fingerprint", "model fingerprint"), ("height", "height"),
    ("width", "width"), ("rate", "rate q"), ("sampler", "sampler"), ("steps", "steps"), ("seed", "seed"),
    ("payload_bytes", "payload bytes"), ("container_bytes", "container bytes"), ("total_bytes", "total bytes"),
    ("bpp", "bpp"),
)


def stream_info(path: Path) -> Dict[str, Any]:
    """The header of one stream file as a dict (``file`` first, ``bpp`` always present)."""
    return {"file": str(path), **describe(path.read_bytes())}


def format_info(record: Dict[str, Any]) -> str:
    """Aligned ``label  value`` lines; unset decode settings read 'default', no rate 'fixed'."""
    rows = [(label, "fixed" if key == "rate" and record[key] is None else record[key])
            for key, label in INFO_FIELDS if key in record]
    width = max(len(label) for label, _ in rows)
    lines = [record["file"]]
    for label, value in rows:
        text = "default" if value is None else (f"{value:.4f}" if isinstance(value, float) else str(value))
        lines.append(f"  {label:<{width}}  {text}")
    return "\n".join(lines)


def run_inspect(args: argparse.Namespace) -> int:
    """``diffeic inspect``: the header and, for semantic streams, the parts with their bytes."""
    records = []
    for i, (path, _) in enumerate(_inputs(args.inputs, (STREAM_SUFFIX,))):
        with _about(path):
            record = stream_info(path)
            if record["family"] == "semantic":
                from .codecs.semantic import SemanticCodec

                record.update(SemanticCodec.inspect(path.read_bytes()))
        if args.json:
            records.append(record)
            continue
        lines = [format_info(record)]
        if "parts" in record:
            lines.append(f"  {'family':<17}  semantic" + (" (fallback: a plain WebP of the image)"
                                                           if record["fallback"] else ""))
            if record["prompt"] is not None:
                lines.append(f"  {'prompt':<17}  {record['prompt']!r}")
            for box in record["boxes"]:
                lines.append(f"  {'kept region':<17}  {','.join(map(str, box))}")
            for name, n in record["bytes"].items():
                lines.append(f"  {name + ' bytes':<17}  {n}")
        print(("\n" if i else "") + "\n".join(lines))
    if args.json:
        print(json.dumps(records, indent=2))
    return 0


def run_info(args: argparse.Namespace) -> int:
    """``diffeic info``: stream headers as aligned text or a JSON list."""
    records = []
    for i, (path, _) in enumerate(_inputs(args.inputs, (STREAM_SUFFIX,))):
        with _about(path):
            record = stream_info(path)
        if args.json:
            records.append(record)
        else:
            print(("\n" if i else "") + format_info(record))
    if args.json:
        print(json.dumps(records, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
