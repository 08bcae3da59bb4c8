"""Per-image quality metrics on 8-bit RGB images ([Li2024] Sec. IV-A), from maintained libraries.

Every function takes ``uint8`` arrays ``(H, W, 3)`` — reconstructions are quantised to 8 bit (as
saved to PNG) before they are measured.  LPIPS and DISTS come from :mod:`diffeic.netweights`; under its
policy a learned metric whose weights are unavailable is *skipped*: :class:`MetricSuite` records one line
saying why and never invents a number.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Callable, Dict, Optional

import numpy as np
import torch

from ..netweights import MS_SSIM_MIN_SIDE, WeightsUnavailable, load_dists, load_lpips

#: Per-image metric columns, in CSV order.
IMAGE_METRICS = ("psnr", "ms_ssim", "lpips", "dists", "niqe")
#: Metrics where lower is better (BD-rate negates them so quality rises with rate).
LOWER_IS_BETTER = frozenset({"lpips", "dists", "niqe", "fid", "kid"})


def _check_pair(ref: np.ndarray, rec: np.ndarray) -> None:
    for name, a in (("reference", ref), ("reconstruction", rec)):
        if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
            raise ValueError(f"{name} must be a uint8 (H, W, 3) array, got {a.dtype} {a.shape}")
    if ref.shape != rec.shape:
        raise ValueError(f"size mismatch: reference {ref.shape} vs reconstruction {rec.shape}")


def to_tensor(a: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 (H, W, 3) → float (1, 3, H, W) in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None].float().div(255.0).to(device)


def psnr(ref: np.ndarray, rec: np.ndarray) -> float:
    """PSNR in dB on 8-bit RGB: MSE over all pixels and channels; ``inf`` if identical."""
    _check_pair(ref, rec)
    mse = float(np.mean((ref.astype(np.float64) - rec.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0 ** 2 / mse)


def ms_ssim(ref: np.ndarray, rec: np.ndarray) -> float:
    """5-scale MS-SSIM on RGB (channels averaged, pytorch-msssim, data_range 255).

    Images whose shorter side is below :data:`MS_SSIM_MIN_SIDE` cannot be downsampled 4 times with
    an 11-px window: ``nan`` is returned (the caller notes why) instead of raising.
    """
    from pytorch_msssim import ms_ssim as _ms_ssim

    _check_pair(ref, rec)
    if min(ref.shape[:2]) < MS_SSIM_MIN_SIDE:
        return math.nan
    x, y = (to_tensor(a).mul(255.0) for a in (ref, rec))   # float32: ~1e-6 from float64, 10x faster
    with _one_cpu_thread():
        return float(_ms_ssim(x, y, data_range=255.0, size_average=True))


@contextmanager
def _one_cpu_thread():
    """Run small CPU convolutions single-threaded: pytorch-msssim's many tiny grouped convs gain nothing
    from threads and, on a busy 2-core machine, ran 10-30x slower with 2 threads than with 1."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


class MetricSuite:
    """All per-image metrics; learned ones are built lazily and skipped when their weights are missing.

    ``suite(ref, rec)`` → dict over :data:`IMAGE_METRICS` (``None`` for a skipped metric).
    ``suite.skipped`` maps a skipped metric to one line saying why; ``suite.notes`` collects
    per-image remarks (e.g. MS-SSIM undefined for a small image).
    """

    def __init__(self, device: str | torch.device = "cpu", metrics=IMAGE_METRICS) -> None:
        self.device = torch.device(device)
        self.metrics = tuple(metrics)
        self.skipped: Dict[str, str] = {}
        self.notes: Dict[str, str] = {}
        self._models: Dict[str, Optional[Callable]] = {}

    # -- learned metrics, built on first use ------------------------------------------------
    def load(self, name: str) -> Optional[Callable]:
        """The metric's callable, or None when skipped (the reason lands in ``skipped``)."""
        if name in self._models:
            return self._models[name]
        builder = {"lpips": self._build_lpips, "dists": self._build_dists, "niqe": self._build_niqe}[name]
        try:
            model = builder()
        except (WeightsUnavailable, ImportError) as err:
            self.skipped[name] = f"{name.upper()} skipped: {err}"
            model = None
        self._models[name] = model
        return model

    def _build_lpips(self) -> Callable:
        net = load_lpips().to(self.device)

        def run(ref: np.ndarray, rec: np.ndarray) -> float:
            # LPIPS v0.1 expects inputs in [-1, 1]; full resolution.
            with torch.no_grad():
                return float(net(to_tensor(ref, self.device) * 2 - 1, to_tensor(rec, self.device) * 2 - 1))
        return run

    def _build_dists(self) -> Callable:
        model = load_dists().to(self.device)

        def run(ref: np.ndarray, rec: np.ndarray) -> float:
            # Full resolution, no 256-px resize.
            with torch.no_grad():
                return float(model(to_tensor(ref, self.device), to_tensor(rec, self.device)))
        return run

    def _build_niqe(self) -> Callable:
        try:
            import pyiqa
        except ImportError as err:
            raise ImportError("no maintained NIQE implementation installed (pip install pyiqa)") from err
        try:
            metric = pyiqa.create_metric("niqe", device=self.device)
        except Exception as err:  # noqa: BLE001 - pyiqa downloads its pristine-model parameters
            raise WeightsUnavailable(f"pyiqa NIQE parameters unavailable ({type(err).__name__})") from err

        def run(ref: np.ndarray, rec: np.ndarray) -> float:
            with torch.no_grad():
                return float(metric(to_tensor(rec, self.device)))   # no-reference: reconstruction only
        return run

    # -- evaluation ---------------------------------------------------------------------------
    def __call__(self, ref: np.ndarray, rec: np.ndarray, image: str = "") -> Dict[str, Optional[float]]:
        _check_pair(ref, rec)
        out: Dict[str, Optional[float]] = {m: None for m in IMAGE_METRICS}
        for name in self.metrics:
            if name == "psnr":
                out[name] = psnr(ref, rec)
            elif name == "ms_ssim":
                out[name] = ms_ssim(ref, rec)
                if math.isnan(out[name]):
                    self.notes.setdefault("ms_ssim", f"MS-SSIM is NaN for images with a side below "
                                                     f"{MS_SSIM_MIN_SIDE} px (5 scales do not fit), e.g. {image}")
            else:
                model = self.load(name)
                out[name] = model(ref, rec) if model is not None else None
        return out
