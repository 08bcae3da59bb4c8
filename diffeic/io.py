"""Image files in and out: ``load_image`` / ``save_image`` and input expansion for the command line.

``load_image`` turns any PNG, JPEG, WebP, TIFF (or BMP, PPM/PGM) file into the codec's input convention, a
float32 tensor ``(3,H,W)`` in [0,1] (``load_image_8bit``: the same pixels rounded to 8 bits as an RGB Pillow
image, for training and 8-bit metrics — the CLI, evaluation and training all read images here):

* EXIF orientation is applied (``ImageOps.exif_transpose``), so the tensor is the image as viewers show it;
* grayscale (``1``, ``L``, ``I;16``) is repeated to three channels; CMYK and palettes are converted to RGB;
* alpha (``RGBA``, ``LA``, ``P``/``L``/``RGB`` with a transparency entry) is dropped with a warning
  naming the file — the colour values under transparent pixels are kept as stored, not composited;
* 16-bit data is scaled by 65535, not 255.  Pillow keeps 16-bit *grayscale* (``I;16``) but reduces 16-bit
  RGB(A) PNG/TIFF to 8 bits while decoding; we recover the exact values by decoding the file a second
  time with the byte order swapped (Pillow then keeps the low byte instead of the high one) —
  Pillow only, no extra reader needed;
* multi-frame files (animated WebP, multi-page TIFF) give their first frame;
* an unreadable, corrupt or non-image file raises ``ValueError("<file>: <why>")``, and so does a PNG
  whose image data stops early (Pillow would fill the missing rows with zeros);
* the size a file *declares* is checked against ``max_pixels`` before anything is decoded, so a small
  file declaring a huge image (a decompression bomb) costs nothing.

``save_image`` writes 8-bit files; the conversion is ``round(clamp(x, 0, 1) * 255)`` (round half to even).
Files appear atomically; with ``overwrite=False`` they are created exclusively (``FileExistsError`` if the
target exists, also when another process created it meanwhile).
"""
from __future__ import annotations

import collections
import errno
import fnmatch
import glob
import os
import secrets
import struct
import sys
import warnings
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

from PIL import Image, ImageOps

from .sizes import size_text

if TYPE_CHECKING:      # numpy and torch are imported where arrays are made, so expanding paths stays fast
    import numpy as np
    import torch

PathLike = Union[str, os.PathLike]

#: Suffixes (lower case) that folder and glob expansion treat as images — for the command line, evaluation
#: folders and training data alike.
IMAGE_SUFFIXES: Tuple[str, ...] = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".ppm", ".pgm")

#: Output suffix → Pillow format name and save options (lossless unless JPEG).
_SAVE_FORMATS = {
    ".png": ("PNG", {}),
    ".jpg": ("JPEG", {"quality": 95, "subsampling": 0}),
    ".jpeg": ("JPEG", {"quality": 95, "subsampling": 0}),
    ".webp": ("WEBP", {"lossless": True}),
    ".tif": ("TIFF", {}),
    ".tiff": ("TIFF", {}),
    ".bmp": ("BMP", {}),
}

_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
_GRAY16_MODES = {"I;16", "I;16B", "I;16L", "I;16N"}
# Multi-channel modes that Pillow decodes from 16-bit samples to 8 bits (see _read_16bit_colour).
_COLOUR16_MODES = {"RGB", "RGBA"}
_SWAPPED_BYTE_ORDER = {"B": "L", "L": "B", "N": "B" if sys.byteorder == "little" else "L"}


# ---------------------------------------------------------------------------------------------- reading
class _ImageError(ValueError):
    """A readable file whose content we refuse; the message already names the file."""


def load_image(path: PathLike, max_pixels: Optional[int] = None) -> torch.Tensor:
    """Read an image file → float32 tensor ``(3,H,W)`` in [0,1] (see the module docstring for the rules).

    ``max_pixels``: refuse (``ValueError``) a file declaring more pixels, before decoding it; default
    Pillow's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``).
    """
    import numpy as np
    import torch

    pixels = _decode(Path(path), max_pixels)
    if isinstance(pixels, Image.Image):
        pixels = np.asarray(pixels, dtype=np.float32) / 255.0
    return torch.from_numpy(pixels).permute(2, 0, 1).contiguous()


def load_image_8bit(path: PathLike, max_pixels: Optional[int] = None) -> Image.Image:
    """:func:`load_image` rounded to 8 bits, as an RGB Pillow image: its pixels equal ``to_uint8(load_image(path))``.

    The same reader (orientation, modes, 16-bit scaling, checks, errors) for code that works on 8-bit
    pixels (training augmentation, 8-bit metrics); 8-bit files are not converted to float and back.
    """
    import numpy as np

    pixels = _decode(Path(path), max_pixels)
    if isinstance(pixels, Image.Image):
        return pixels
    return Image.fromarray(np.round(np.clip(pixels, 0, 1) * np.float32(255)).astype(np.uint8))   # as to_uint8


def _decode(path: Path, max_pixels: Optional[int]) -> Union[Image.Image, np.ndarray]:
    """:func:`_read` with every failure turned into ``ValueError("<file>: <why>")``."""
    try:
        return _read(path, max_pixels)
    except (_ImageError, MemoryError):
        raise
    except FileNotFoundError as err:
        raise ValueError(f"{path}: no such file") from err
    except IsADirectoryError as err:
        raise ValueError(f"{path}: is a directory, not an image file") from err
    except PermissionError as err:
        raise ValueError(f"{path}: permission denied") from err
    except Image.UnidentifiedImageError as err:
        raise ValueError(f"{path}: not an image file that Pillow can read "
                         f"(expected PNG, JPEG, WebP, TIFF or BMP)") from err
    except Image.DecompressionBombError as err:
        raise ValueError(f"{path}: image too large to decode safely ({err})") from err
    except Exception as err:  # Pillow's decoders raise many types (OSError, SyntaxError, struct.error, ...)
        raise ValueError(f"{path}: corrupt or truncated image data ({type(err).__name__}: {err})") from err


def _read(path: Path, max_pixels: Optional[int]) -> Union[Image.Image, np.ndarray]:
    """Decode ``path`` → an RGB Pillow image (8-bit data) or a float32 ``(H,W,3)`` array in [0,1] (higher depths)."""
    with Image.open(path) as im:
        check_declared_size(im, path, max_pixels)
        im.seek(0)
        if im.format == "PNG":
            _check_png_data_complete(path)
        if im.mode in _COLOUR16_MODES and _is_16bit(im):
            return _read_16bit_colour(path, im.mode)
        _warn_if_alpha(im, path, stacklevel=4)    # attributed to load_image's caller
        ImageOps.exif_transpose(im, in_place=True)     # also forces the full decode; in place: no copy
        return _to_rgb(im, path)


def image_size(path: PathLike, max_pixels: Optional[int] = None) -> Tuple[int, int]:
    """``(width, height)`` that an image file declares, read from its header only (nothing decoded).

    Raises ``ValueError("<file>: <why>")`` for a file that is not an image or declares more than
    ``max_pixels`` — the cheap check a command runs on every input before loading a model.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            check_declared_size(im, path, max_pixels)
            return im.size
    except _ImageError:
        raise
    except FileNotFoundError as err:
        raise ValueError(f"{path}: no such file") from err
    except (Image.UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError) as err:
        raise ValueError(f"{path}: not an image file that Pillow can read "
                         f"(expected PNG, JPEG, WebP, TIFF or BMP): {err}") from err


def check_declared_size(im: Image.Image, path: Path, max_pixels: Optional[int]) -> None:
    """Refuse an opened (not yet decoded) image whose declared size exceeds ``max_pixels``."""
    limit = Image.MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    width, height = im.size
    if limit is not None and width * height > limit:
        raise _ImageError(f"{path}: declares an image of {size_text(height, width)} ({width * height:,} pixels), "
                          f"more than the limit of {limit:,} pixels; refused before decoding (a decompression bomb, "
                          f"or an image too large for this codec)")


#: Samples per pixel of each PNG colour type (PNG spec, IHDR).
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def _check_png_data_complete(path: Path) -> None:
    """Refuse a PNG whose zlib image data holds fewer bytes than its header's rows need.

    Pillow stops without an error when the data stream ends early on a row boundary and leaves the
    remaining rows zero; a silently black band is worse than a clear error.  Costs one extra inflate.
    """
    data = path.read_bytes()
    pos, expected, inflater, got = 8, None, zlib.decompressobj(), 0
    while pos + 8 <= len(data):
        length, tag = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if tag == b"IHDR" and len(body) >= 13:
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body[:13])
            expected = _png_raw_size(width, height, depth * _PNG_CHANNELS.get(colour, 4), interlace)
        elif tag == b"IDAT":
            while body and not inflater.eof:      # count in bounded pieces: no big allocation
                got += len(inflater.decompress(body, 1 << 20))
                body = inflater.unconsumed_tail
        elif tag == b"IEND":
            break
        pos += 12 + length
    if expected is not None and got < expected:
        raise _ImageError(f"{path}: corrupt or truncated image data: the PNG's pixel data holds {got} of the "
                          f"{expected} bytes its {size_text(height, width)} header needs")


def _png_raw_size(width: int, height: int, bits_per_pixel: int, interlace: int) -> int:
    """Bytes of filtered scanlines (one filter byte per row) a PNG's image data must inflate to."""
    passes = _ADAM7 if interlace else ((0, 0, 1, 1),)
    total = 0
    for x0, y0, dx, dy in passes:
        w, h = -(-(width - x0) // dx), -(-(height - y0) // dy)
        if w > 0 and h > 0:
            total += h * (1 + -(-w * bits_per_pixel // 8))
    return total


def _tile_rawmode(im: Image.Image) -> Optional[str]:
    """The raw (file) pixel layout of an unloaded image, e.g. ``"RGB;16B"``; None if unknown."""
    tiles = getattr(im, "tile", None) or []
    if not tiles:
        return None
    args = tiles[0].args
    raw = args if isinstance(args, str) else (args[0] if args and isinstance(args[0], str) else None)
    return raw


def _is_16bit(im: Image.Image) -> bool:
    raw = _tile_rawmode(im)
    return raw is not None and raw[-4:-1] == ";16" and raw[-1] in _SWAPPED_BYTE_ORDER


def _warn_if_alpha(im: Image.Image, path: Path, stacklevel: int) -> None:
    if im.mode in _ALPHA_MODES or "transparency" in im.info:
        warnings.warn(f"{path}: has an alpha channel/transparency ({im.mode}); it is dropped, "
                      f"the colour values are coded as stored", UserWarning, stacklevel=stacklevel + 1)


def _to_rgb(im: Image.Image, path: Path) -> Union[Image.Image, np.ndarray]:
    """An 8-bit image in any mode → a new RGB image; high-depth grayscale → float32 ``(H,W,3)`` in [0,1]."""
    import numpy as np

    if im.mode in _GRAY16_MODES:
        gray = np.asarray(im).astype(np.float32) / 65535.0
        return np.repeat(gray[..., None], 3, axis=2)
    if im.mode in ("I", "F"):
        return np.repeat(_wide_gray(np.asarray(im), im.mode, path)[..., None], 3, axis=2)
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")                     # the palette's alpha would otherwise warn in Pillow
    if im.mode != "RGB":
        try:
            im = im.convert("RGB")
        except ValueError as err:
            raise _ImageError(f"{path}: colour mode {im.mode} cannot be converted to RGB") from err
        return im
    return im.copy()                                # a copy outlives the open file


def _wide_gray(values: np.ndarray, mode: str, path: Path) -> np.ndarray:
    """32-bit integer (``I``) or float (``F``) grayscale: 16-bit range for ints, [0,1] for floats."""
    import numpy as np

    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    limit = 65535.0 if mode == "I" else 1.0
    if lo < 0 or hi > limit or not np.isfinite(values).all():
        raise _ImageError(f"{path}: {mode}-mode pixel values span [{lo:g}, {hi:g}], outside the supported "
                          f"[0, {limit:g}]")
    return values.astype(np.float32) / np.float32(limit)


def _read_16bit_colour(path: Path, mode: str) -> Union[Image.Image, np.ndarray]:
    """Exact 16-bit RGB(A) via two Pillow decodes: as stored (high bytes) and byte-swapped (low bytes)."""
    import numpy as np

    with Image.open(path) as im:
        _warn_if_alpha(im, path, stacklevel=5)
    high = _decode_with_rawmode(path, swap=False)
    try:
        low = _decode_with_rawmode(path, swap=True)
    except (ValueError, OSError, AttributeError, TypeError):    # no swapped unpacker / layout changed
        warnings.warn(f"{path}: 16-bit colour read at 8-bit precision", UserWarning, stacklevel=5)
        return Image.fromarray(np.ascontiguousarray(high[..., :3]))
    values = high[..., :3].astype(np.uint16) * 256 + low[..., :3]
    return values.astype(np.float32) / 65535.0


def _decode_with_rawmode(path: Path, swap: bool) -> np.ndarray:
    """Decode ``path`` (8-bit output, EXIF-oriented), optionally with the 16-bit byte order swapped."""
    import numpy as np

    with Image.open(path) as im:
        im.seek(0)
        if swap:
            raw = _tile_rawmode(im)
            swapped = raw[:-1] + _SWAPPED_BYTE_ORDER[raw[-1]]
            im.tile = [t._replace(args=swapped if isinstance(t.args, str) else (swapped, *t.args[1:]))
                       for t in im.tile]
        return np.asarray(ImageOps.exif_transpose(im))


# ---------------------------------------------------------------------------------------------- writing
def to_uint8(x: torch.Tensor) -> np.ndarray:
    """``(3,H,W)`` or ``(1,H,W)`` float tensor → ``(H,W,3)``/``(H,W)`` uint8 by ``round(clamp(x,0,1)·255)``."""
    import torch

    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor image (3,H,W) in [0,1], got {type(x).__name__}")
    if x.dim() != 3 or x.shape[0] not in (1, 3) or x.shape[1] == 0 or x.shape[2] == 0:
        raise ValueError(f"expected an image tensor of shape (3,H,W) or (1,H,W), got {tuple(x.shape)}")
    if not torch.is_floating_point(x):
        raise TypeError(f"expected a floating-point image in [0,1], got dtype {x.dtype}")
    if not torch.isfinite(x).all():
        raise ValueError("image contains NaN or Inf values")
    pixels = torch.round(x.detach().float().clamp(0, 1) * 255).to(torch.uint8).cpu()
    array = pixels.permute(1, 2, 0).numpy()
    return array[..., 0] if array.shape[2] == 1 else array


def save_image(x: torch.Tensor, path: PathLike, quality: Optional[int] = None, overwrite: bool = True) -> Path:
    """Write an image tensor as an 8-bit file; the format follows the suffix.

    PNG, TIFF, BMP and WebP are lossless; JPEG uses quality 95 with 4:4:4 chroma unless ``quality`` is
    given (which also makes WebP lossy).  Values are converted by ``round(clamp(x,0,1)·255)``.  The file
    appears atomically (written under a temporary name, then renamed), so a failure leaves no partial file;
    ``overwrite=False`` raises ``FileExistsError`` instead of replacing an existing file.
    """
    path = Path(path)
    fmt, options = output_format(path)
    if quality is not None:
        options = {**options, "quality": int(quality)}
        options.pop("lossless", None)
    image = Image.fromarray(to_uint8(x))
    with _atomic_target(path, overwrite) as tmp:
        image.save(tmp, format=fmt, **options)
    return path


def output_format(path: PathLike) -> Tuple[str, dict]:
    """Pillow format name and save options for an output path's suffix; ``ValueError`` if unsupported."""
    path = Path(path)
    try:
        fmt, options = _SAVE_FORMATS[path.suffix.lower()]
    except KeyError:
        raise ValueError(f"{path}: unsupported output format {path.suffix or '(no suffix)'!r}; use one of "
                         f"{', '.join(sorted(_SAVE_FORMATS))}") from None
    return fmt, dict(options)


def write_bytes_atomic(path: PathLike, data: bytes, overwrite: bool = True) -> Path:
    """Write ``data`` to ``path`` through a temporary file + rename (no partial file on failure).

    ``overwrite=False``: create ``path`` exclusively — ``FileExistsError`` if it exists, even when another
    process created it after any earlier check (the file is linked into place, which fails on a target).
    """
    path = Path(path)
    with _atomic_target(path, overwrite) as tmp:
        Path(tmp).write_bytes(data)
    return path


class _atomic_target:
    """Context manager yielding a temporary path beside ``path``; renamed onto ``path`` on success."""

    def __init__(self, path: Path, overwrite: bool = True) -> None:
        self.path = path
        self.overwrite = overwrite
        # A fresh name (not mkstemp, whose 0600 mode would stick to the result): the umask applies as usual.
        # The name is cut so that a target name near the file-system limit (255 bytes) still gets a temp file.
        self.tmp = str(path.with_name(f".{path.name[:64]}.{secrets.token_hex(4)}.tmp"))

    def __enter__(self) -> str:
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self._publish()
        finally:
            if os.path.lexists(self.tmp):
                os.unlink(self.tmp)

    def _publish(self) -> None:
        if self.overwrite:
            os.replace(self.tmp, self.path)
            return
        try:
            os.link(self.tmp, self.path)           # atomic, and fails if the target exists
        except FileExistsError:
            raise FileExistsError(errno.EEXIST, "already exists", str(self.path)) from None
        except OSError:                            # a file system without hard links: claim the name first
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            os.close(fd)
            os.replace(self.tmp, self.path)


# ---------------------------------------------------------------------------------------------- inputs
def expand_paths(items: Iterable[PathLike], suffixes: Sequence[str]) -> List[Path]:
    """Expand command-line inputs into a list of files (order kept, duplicates removed).

    * an existing file is taken as is (whatever its suffix: the user named it);
    * a directory contributes every file below it (recursively) whose suffix is in ``suffixes``, sorted;
    * a glob pattern (``*``, ``?``, ``[``; ``**`` recurses) contributes its matches, filtered the same way.

    Symbolic links are followed, but each real directory is visited once, so a link cycle (``a/b -> a``)
    cannot make the expansion run forever.

    Raises ``ValueError("<item>: <why>")`` for a missing path, or a directory/pattern with no such files.
    """
    return [f for f, _ in expand_tree(items, suffixes)]


def expand_tree(items: Iterable[PathLike], suffixes: Sequence[str]) -> List[Tuple[Path, Path]]:
    """:func:`expand_paths` with each file's path relative to where it was found, for mirroring a tree.

    The relative path is taken below the folder given, or below a pattern's leading folder without
    wildcards (``kodak/**/*.png`` → relative to ``kodak``); a file named directly is just its name.
    """
    wanted = {s.lower() for s in suffixes}
    found: List[Tuple[Path, Path]] = []
    for item in items:
        found.extend(_expand_one(str(item), wanted))
    return _dedupe(found)


def expand_images(items: Iterable[PathLike]) -> List[Path]:
    """:func:`expand_paths` with the image suffixes (:data:`IMAGE_SUFFIXES`)."""
    return expand_paths(items, IMAGE_SUFFIXES)


def _expand_one(item: str, wanted: set) -> List[Tuple[Path, Path]]:
    path = Path(item)
    if path.is_file():
        return [(path, Path(path.name))]
    if path.is_dir():
        found = _files_below(path, wanted)
        if not found:
            raise ValueError(f"{item}: directory holds no {'/'.join(sorted(wanted))} files")
        return [(f, f.relative_to(path)) for f in found]
    if glob.has_magic(item):
        root, matches = _glob(item)
        found = [f for m in matches for f in ([m] if m.is_file() else _files_below(m, wanted))
                 if f.suffix.lower() in wanted]
        if not found:
            raise ValueError(f"{item}: pattern matches no {'/'.join(sorted(wanted))} files")
        return [(f, f.relative_to(root)) for f in found]
    raise ValueError(f"{item}: no such file or directory")


def _files_below(folder: Path, wanted: set) -> List[Path]:
    return sorted(p for p in _walk(folder) if p.suffix.lower() in wanted and p.is_file())


def _walk(root: Path, max_depth: Optional[int] = None) -> Iterator[Path]:
    """Every entry below ``root`` (symlinks followed, each real directory entered once), to ``max_depth``."""
    seen = set()
    queue = collections.deque([(root, 0)])     # breadth first: a folder is reached by its shortest path
    while queue:
        folder, depth = queue.popleft()
        try:
            info = folder.stat()
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            continue                                 # unreadable or vanished: nothing below it
        if (info.st_dev, info.st_ino) in seen:
            continue
        seen.add((info.st_dev, info.st_ino))
        for entry in entries:
            path = folder / entry.name
            yield path
            if (max_depth is None or depth + 1 < max_depth) and entry.is_dir():
                queue.append((path, depth + 1))


def _glob(pattern: str) -> Tuple[Path, List[Path]]:
    """``glob.glob(pattern, recursive=True)`` without looping on symlink cycles → (fixed root, sorted paths)."""
    parts = pattern.split("/") if os.sep == "/" else pattern.replace(os.sep, "/").split("/")
    n_fixed = next(i for i, p in enumerate(parts) if glob.has_magic(p))
    root = Path("/".join(parts[:n_fixed]) or ("/" if pattern.startswith(("/", os.sep)) else "."))
    rest = [p for p in parts[n_fixed:] if p]
    skip = len(root.parts)
    return root, sorted(path for path in _walk(root, None if "**" in rest else len(rest))
                        if _match(path.parts[skip:], rest))


def _match(names: Sequence[str], patterns: Sequence[str]) -> bool:
    """Path components against glob components; ``**`` matches any number of directories."""
    if not patterns:
        return not names
    if patterns[0] == "**":             # like glob: ** does not enter hidden folders
        visible = next((i for i, name in enumerate(names) if name.startswith(".")), len(names))
        return any(_match(names[i:], patterns[1:]) for i in range(visible + 1))
    if not names or (names[0].startswith(".") and not patterns[0].startswith(".")):   # glob skips dot files
        return False
    return fnmatch.fnmatchcase(names[0], patterns[0]) and _match(names[1:], patterns[1:])


def _dedupe(found: List[Tuple[Path, Path]]) -> List[Tuple[Path, Path]]:
    seen, unique = set(), []
    for f, rel in found:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append((f, rel))
    return unique
