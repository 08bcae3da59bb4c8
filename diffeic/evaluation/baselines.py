"""Classical (and CompressAI) baselines, quality-searched to land on our rate points.

Each baseline exposes ``levels`` — its quality parameter values ordered from the lowest rate to
the highest — and ``encode``/``decode`` between uint8 RGB ``(H, W, 3)`` and bytes.
:func:`quality_search` bisects over the levels for the one whose bpp is closest to a target; when
even the lowest level overshoots the target it returns that *floor* and says so (the achieved bpp
is what gets reported — never the target).

Always here: JPEG and WebP (Pillow), AVIF (Pillow's native plugin, else pillow-avif-plugin).  From
PyPI (``pip install -e ".[baselines]"``), offline: HEVC intra through pillow-heif's bundled x265 —
the closest PyPI stand-in for BPG, with BPG's 4:4:4 — and JPEG XL (libjxl) and JPEG 2000 (OpenJPEG)
through imagecodecs.  BPG (``bpgenc``/``bpgdec``) and VTM (``EncoderApp``/``DecoderApp`` +
``$VTM_CFG``) only when their binaries are on PATH, with the paper's settings ([Li2024] Sec. IV-B);
CompressAI zoo models only when their weights are in torch hub's cache or downloadable.
"""
from __future__ import annotations

import io
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np
from PIL import Image

from .bpp import bpp as bpp_of


class BaselineUnavailable(RuntimeError):
    """The codec cannot run here (missing binary, plugin or weights); the message says why."""


class Baseline:
    """A codec with an ordered quality knob. Subclasses set ``name``, ``ext``, ``levels`` and ``label``."""

    name: str = ""
    label: str = ""            # what legends and CompressAI-format files call it (library, settings)
    ext: str = "bin"
    levels: Sequence[float] = ()

    def check(self) -> None:
        """Raise :class:`BaselineUnavailable` (one line saying why) if the codec cannot run here."""

    def setting(self, level: int) -> str:
        return f"q={level}"

    def encode(self, img: np.ndarray, level: int) -> bytes:
        raise NotImplementedError

    def decode(self, data: bytes, shape: Tuple[int, int]) -> np.ndarray:
        raise NotImplementedError


class PillowBaseline(Baseline):
    """JPEG / WebP / AVIF through Pillow (4:2:0 defaults of each encoder)."""

    def __init__(self, name: str, label: str, fmt: str, ext: str, levels: Sequence[int], **options) -> None:
        self.name, self.label, self.fmt, self.ext, self.levels = name, label, fmt, ext, tuple(levels)
        self.options = options

    def encode(self, img: np.ndarray, level: int) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, self.fmt, quality=int(level), **self.options)
        return buf.getvalue()

    def decode(self, data: bytes, shape: Tuple[int, int]) -> np.ndarray:
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def _have_avif() -> bool:
    from PIL import features

    if features.check("avif"):
        return True
    try:
        import pillow_avif  # noqa: F401  (registers the AVIF plugin with Pillow)
        return True
    except ImportError:
        return False


class _ToolBaseline(Baseline):
    """A codec run as external programs on temporary files."""

    tools: Tuple[str, ...] = ()

    def check(self) -> None:
        missing = [t for t in self.tools if shutil.which(t) is None]
        if missing:
            raise BaselineUnavailable(f"{self.name} skipped: {', '.join(missing)} not on PATH")

    @staticmethod
    def _run(cmd: List[str]) -> None:
        res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=600)
        if res.returncode != 0:
            raise RuntimeError(f"{cmd[0]} failed ({res.returncode}): {res.stderr.decode(errors='replace')[-300:]}")


class BPG(_ToolBaseline):
    """libbpg with the paper's settings: ``-f 444 -e x265 -c ycbcr -b 8`` (CompressAI's wrapper)."""

    name, ext, tools = "bpg", "bpg", ("bpgenc", "bpgdec")
    label = "BPG (libbpg, x265, 4:4:4)"
    levels = tuple(range(51, -1, -1))          # QP 51 (lowest rate) … 0

    def setting(self, level: int) -> str:
        return f"qp={level}"

    def encode(self, img: np.ndarray, level: int) -> bytes:
        with tempfile.TemporaryDirectory() as d:
            Image.fromarray(img).save(f"{d}/in.png")
            self._run(["bpgenc", "-o", f"{d}/out.bpg", "-q", str(level), "-f", "444", "-e", "x265",
                       "-c", "ycbcr", "-b", "8", f"{d}/in.png"])
            return Path(f"{d}/out.bpg").read_bytes()

    def decode(self, data: bytes, shape: Tuple[int, int]) -> np.ndarray:
        with tempfile.TemporaryDirectory() as d:
            Path(f"{d}/in.bpg").write_bytes(data)
            self._run(["bpgdec", "-o", f"{d}/rec.png", f"{d}/in.bpg"])
            with Image.open(f"{d}/rec.png") as im:
                return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


class VTM(_ToolBaseline):
    """VTM intra on GBR 4:4:4 8-bit (CompressAI's ``--rgb`` variant); config file from ``$VTM_CFG``."""

    name, ext, tools = "vtm", "bin", ("EncoderApp", "DecoderApp")
    label = "VTM intra (GBR 4:4:4)"
    levels = tuple(range(63, -1, -1))

    def setting(self, level: int) -> str:
        return f"qp={level}"

    def check(self) -> None:
        super().check()
        cfg = os.environ.get("VTM_CFG", "")
        if not cfg or not Path(cfg).is_file():
            raise BaselineUnavailable("vtm skipped: set VTM_CFG to VTM's cfg/encoder_intra_vtm.cfg")

    def encode(self, img: np.ndarray, level: int) -> bytes:
        h, w = img.shape[:2]
        with tempfile.TemporaryDirectory() as d:
            img.transpose(2, 0, 1).tofile(f"{d}/in.rgb")           # planar R, G, B
            self._run(["EncoderApp", "-i", f"{d}/in.rgb", "-c", os.environ["VTM_CFG"], "-q", str(level),
                       "-o", os.devnull, "-b", f"{d}/out.bin", "-wdt", str(w), "-hgt", str(h), "-fr", "1",
                       "-f", "1", "--InputChromaFormat=444", "--InputBitDepth=8", "--OutputBitDepth=8",
                       "--ConformanceWindowMode=1", "--InputColourSpaceConvert=RGBtoGBR"])
            return Path(f"{d}/out.bin").read_bytes()

    def decode(self, data: bytes, shape: Tuple[int, int]) -> np.ndarray:
        h, w = shape
        with tempfile.TemporaryDirectory() as d:
            Path(f"{d}/in.bin").write_bytes(data)
            self._run(["DecoderApp", "-b", f"{d}/in.bin", "-o", f"{d}/rec.rgb", "-d", "8",
                       "--OutputColourSpaceConvert=GBRtoRGB"])
            rec = np.fromfile(f"{d}/rec.rgb", dtype=np.uint8)[:3 * h * w]
            return rec.reshape(3, h, w).transpose(1, 2, 0).copy()


class HEVC(Baseline):
    """HEVC intra (x265) in a HEIF file through pillow-heif: BPG's codec and 4:4:4 chroma, from PyPI.

    BPG itself is HEVC intra with a smaller header; HEIF's boxes add a few hundred bytes, which
    are counted (the file is the rate), so at the lowest rates this stand-in is slightly pessimistic.
    """

    name, ext = "hevc", "heic"
    label = "HEVC (x265 via pillow-heif; stand-in for BPG)"
    levels = tuple(range(0, 101))             # libheif quality: 0 (QP 51) … 100

    def check(self) -> None:
        try:
            import pillow_heif
        except ImportError as err:
            raise BaselineUnavailable('hevc skipped: pillow-heif is not installed '
                                      '(pip install -e ".[baselines]")') from err
        if "x265" not in pillow_heif.libheif_info().get("encoders", {}):
            raise BaselineUnavailable("hevc skipped: this pillow-heif build has no x265 encoder")

    def encode(self, img: np.ndarray, level: int) -> bytes:
        import pillow_heif

        h, w = img.shape[:2]
        heif = pillow_heif.from_bytes(mode="RGB", size=(w, h), data=np.ascontiguousarray(img).tobytes())
        buf = io.BytesIO()
        heif.save(buf, quality=int(level), chroma=444)
        return buf.getvalue()

    def decode(self, data: bytes, shape: Tuple[int, int]) -> np.ndarray:
        import pillow_heif

        heif = pillow_heif.open_heif(io.BytesIO(data), convert_hdr_to_8bit=True)
        return np.asarray(heif[0].to_pillow().convert("RGB"), dtype=np.uint8).copy()


class _ImagecodecsBaseline(Baseline):
    """A codec of the imagecodecs package (``attr`` names its availability flag)."""

    attr = ""

    def check(self) -> None:
        try:
            import imagecodecs
        except ImportError as err:
            raise BaselineUnavailable(f"{self.name} skipped: imagecodecs is not installed "
                                      '(pip install -e ".[baselines]")') from err
        if not getattr(getattr(imagecodecs, self.attr, None), "available", False):
            raise BaselineUnavailable(f"{self.name} skipped: this imagecodecs build lacks {self.attr}")


class JPEGXL(_ImagecodecsBaseline):
    """JPEG XL (libjxl, effort 7 = its default) searched over the Butteraugli distance."""

    name, ext, attr = "jxl", "jxl", "JPEGXL"
    label = "JPEG XL (libjxl via imagecodecs)"
    # Distances 25 (libjxl's largest, lowest rate) down to 0.1 in 48 geometric steps (ratio ≈ 1.12).
    levels = tuple(round(25.0 * (0.1 / 25.0) ** (i / 48), 3) for i in range(49))

    def setting(self, level: float) -> str:
        return f"distance={level:g}"

    def encode(self, img: np.ndarray, level: float) -> bytes:
        import imagecodecs

        return bytes(imagecodecs.jpegxl_encode(np.ascontiguousarray(img), distance=float(level), effort=7))

    def decode(self, data: bytes, shape: Tuple[int, int]) -> np.ndarray:
        import imagecodecs

        return np.asarray(imagecodecs.jpegxl_decode(data), dtype=np.uint8)[..., :3].copy()


class JPEG2000(_ImagecodecsBaseline):
    """JPEG 2000 (OpenJPEG, raw codestream) searched over its fixed-quality target (PSNR in dB)."""

    name, ext, attr = "jpeg2000", "j2k", "JPEG2K"
    label = "JPEG 2000 (OpenJPEG via imagecodecs)"
    levels = tuple(range(10, 71))             # OpenJPEG's per-layer PSNR target; below ~12 dB all equal

    def setting(self, level: int) -> str:
        return f"psnr_target={level}"

    def encode(self, img: np.ndarray, level: int) -> bytes:
        import imagecodecs

        return bytes(imagecodecs.jpeg2k_encode(np.ascontiguousarray(img), level=int(level), codecformat="j2k"))

    def decode(self, data: bytes, shape: Tuple[int, int]) -> np.ndarray:
        import imagecodecs

        return np.asarray(imagecodecs.jpeg2k_decode(data), dtype=np.uint8)[..., :3].copy()


class CompressAIZoo(Baseline):
    """A pretrained CompressAI zoo model (MSE), qualities 1…8; stream = small header + its strings."""

    ext = "cai"
    levels = tuple(range(1, 9))

    def __init__(self, arch: str, device: str = "cpu") -> None:
        self.arch, self.name, self.device = arch, f"compressai:{arch}", device
        self.label = f"CompressAI {arch} (MSE)"
        self._models: Dict[int, object] = {}

    def check(self) -> None:
        from .. import _compressai  # noqa: F401  (compressai's import warning filtered there)
        from compressai.zoo.image import model_urls

        from ..netweights import WeightFile, WeightsUnavailable, ensure_weights

        if self.arch not in model_urls:
            raise BaselineUnavailable(f"{self.name} skipped: unknown zoo model (one of {', '.join(model_urls)})")
        try:   # checking the lowest and highest quality is enough to know the zoo is reachable
            for q in (self.levels[0], self.levels[-1]):
                ensure_weights(WeightFile(f"CompressAI {self.arch} q{q}", model_urls[self.arch]["mse"][q]))
        except WeightsUnavailable as err:
            raise BaselineUnavailable(f"{self.name} skipped: {err}") from err

    def _model(self, level: int):
        if level not in self._models:
            from .. import _compressai  # noqa: F401  (compressai's import warning filtered there)
            from compressai.zoo import image_models

            self._models[level] = image_models[self.arch](quality=level, metric="mse", pretrained=True) \
                .eval().to(self.device)
        return self._models[level]

    def encode(self, img: np.ndarray, level: int) -> bytes:
        import struct

        import torch
        import torch.nn.functional as F

        x = torch.from_numpy(img).permute(2, 0, 1)[None].float().div(255).to(self.device)
        h, w = img.shape[:2]
        x = F.pad(x, (0, -w % 64, 0, -h % 64))      # CompressAI's own models' stride, not DiffEIC's padding
        with torch.no_grad():
            out = self._model(level).compress(x)
        strings = [s[0] for s in out["strings"]]
        head = struct.pack(">BHH", level, *out["shape"]) + b"".join(struct.pack(">I", len(s)) for s in strings)
        return head + b"".join(strings)

    def decode(self, data: bytes, shape: Tuple[int, int]) -> np.ndarray:
        import struct

        import torch

        level, sh, sw = struct.unpack(">BHH", data[:5])
        n = 2 if self.arch != "bmshj2018-factorized" else 1
        lens = struct.unpack(f">{n}I", data[5:5 + 4 * n])
        pos, strings = 5 + 4 * n, []
        for ln in lens:
            strings.append([data[pos:pos + ln]])
            pos += ln
        with torch.no_grad():
            x = self._model(level).decompress(strings, (sh, sw))["x_hat"]
        h, w = shape
        return (x[0, :, :h, :w].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()


#: The baselines ``available_baselines`` knows by name (plus ``compressai:<zoo model>``); ``eval.py`` runs
#: them all by default, skipping those that cannot run here with one line each.
BASELINE_NAMES = ("jpeg", "webp", "avif", "hevc", "jxl", "jpeg2000", "bpg", "vtm")


def available_baselines(names: Sequence[str], device: str = "cpu") -> Tuple[List[Baseline], Dict[str, str]]:
    """Build the requested baselines; those that cannot run are returned as ``{name: one-line reason}``."""
    built: List[Baseline] = []
    skipped: Dict[str, str] = {}
    factories: Dict[str, Callable[[], Baseline]] = {
        "jpeg": lambda: PillowBaseline("jpeg", "JPEG (Pillow)", "JPEG", "jpg", range(1, 96)),
        "webp": lambda: PillowBaseline("webp", "WebP (Pillow, method 6)", "WEBP", "webp", range(0, 101), method=6),
        "avif": lambda: PillowBaseline("avif", "AVIF (Pillow)", "AVIF", "avif", range(0, 101)),
        "hevc": HEVC,
        "jxl": JPEGXL,
        "jpeg2000": JPEG2000,
        "bpg": BPG,
        "vtm": VTM,
    }
    for raw in names:
        name = raw.strip().lower()
        if not name:
            continue
        try:
            if name == "avif" and not _have_avif():
                raise BaselineUnavailable("avif skipped: Pillow has no AVIF support (pip install pillow-avif-plugin)")
            if name.startswith("compressai:"):
                b: Baseline = CompressAIZoo(name.split(":", 1)[1], device)
            elif name in factories:
                b = factories[name]()
            else:
                raise BaselineUnavailable(f"{name} skipped: unknown baseline (choose from "
                                          f"{', '.join(factories)}, compressai:<zoo model>)")
            b.check()
            built.append(b)
        except BaselineUnavailable as err:
            skipped[name] = str(err)
    return built, skipped


@dataclass
class SearchResult:
    """The chosen encoding: level, bytes, bpp (over original pixels), whether it is the floor/ceiling,
    the number of encodes the search made and the time of the chosen level's encode."""

    level: int
    data: bytes
    bpp: float
    floor: bool
    ceiling: bool
    trials: int
    enc_s: float


def quality_search(codec: Baseline, img: np.ndarray, target_bpp: float) -> SearchResult:
    """Bisect ``codec.levels`` for the encoding whose bpp is closest (in log-rate) to ``target_bpp``.

    Assumes rate grows with the level (true up to small wiggles for these codecs). If the lowest
    level is already above the target the floor is returned (``floor=True``); if the highest is
    still below it, the ceiling.
    """
    h, w = img.shape[:2]
    cache: Dict[int, Tuple[bytes, float, float]] = {}

    def trial(i: int) -> float:
        lvl = codec.levels[i]
        if lvl not in cache:
            t0 = time.perf_counter()
            data = codec.encode(img, lvl)
            cache[lvl] = (data, bpp_of(len(data), h, w), time.perf_counter() - t0)
        return cache[lvl][1]

    def result(i: int, floor: bool = False, ceiling: bool = False) -> SearchResult:
        data, rate, secs = cache[codec.levels[i]]
        return SearchResult(codec.levels[i], data, rate, floor, ceiling, len(cache), secs)

    lo, hi = 0, len(codec.levels) - 1
    if trial(lo) >= target_bpp:
        return result(lo, floor=trial(lo) > target_bpp)
    if trial(hi) <= target_bpp:
        return result(hi, ceiling=True)
    while hi - lo > 1:                       # invariant: bpp(lo) < target < bpp(hi)
        mid = (lo + hi) // 2
        if trial(mid) <= target_bpp:
            lo = mid
        else:
            hi = mid
    # The closer of the two neighbours on a log-rate scale.
    best = lo if abs(np.log(trial(lo) / target_bpp)) <= abs(np.log(trial(hi) / target_bpp)) else hi
    return result(best)
