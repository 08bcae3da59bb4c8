"""The perceptual networks (LPIPS, DISTS; the FID/KID Inception's weights): the one place that finds their
weights, loads them, and decides what happens when they are missing — for evaluation, training and every family.

Where: the metric libraries fetch their backbones from the network on first use and hang or fail offline.
We look in torch hub's cache (``~/.cache/torch/hub/checkpoints``, or ``$TORCH_HOME``) first and try one
download with a short timeout (:data:`DOWNLOAD_TIMEOUT_S`), so an offline run learns in well under a second
that a network is missing instead of hanging.  Set ``DIFFEIC_NO_DOWNLOAD=1`` to never try the network.

The one policy when the weights are missing:

* A network never runs on other weights than its published ones: lpips 0.1.4 ships only its linear heads, and
  its ``pnet_rand=True`` (a random AlexNet) would weight meaningless features — no perceptual measure at all.
* Asked for by name, a network that cannot be loaded is an error naming the file and where to put it
  (:class:`WeightsUnavailable` from :func:`load_lpips` / :func:`load_dists`, ``ValueError`` from
  :func:`perceptual_loss`).  Evaluation measures what it was asked for, so a metric it cannot load is
  *skipped* with that line (never replaced by another number).
* A training loss asked for ``auto`` takes the first that loads of LPIPS-Alex, DISTS and 1 − MS-SSIM (single-scale
  1 − SSIM on crops with a side ≤ 160 px; needs no weights), warns once when it falls back to 1 − MS-SSIM, and
  returns the name it used, which runs log: their results are not comparable with LPIPS-trained ones.
"""
from __future__ import annotations

import os
import socket
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable, Optional, Tuple

import torch

#: Seconds a single connection attempt may take before a weight download is given up.
DOWNLOAD_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class WeightFile:
    """A backbone checkpoint that torch hub caches under ``checkpoints/<filename>``."""

    what: str
    url: str

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


def _torchvision_url(enum_name: str) -> str:
    import torchvision.models as tvm

    return getattr(tvm, enum_name).IMAGENET1K_V1.url


def alexnet_weights() -> WeightFile:
    """torchvision AlexNet (the LPIPS-Alex backbone; LPIPS's own linear heads ship with `lpips`)."""
    return WeightFile("torchvision AlexNet (LPIPS backbone)", _torchvision_url("AlexNet_Weights"))


def vgg16_weights() -> WeightFile:
    """torchvision VGG16 (the DISTS backbone; DISTS's alpha/beta ship with `DISTS_pytorch`)."""
    return WeightFile("torchvision VGG16 (DISTS backbone)", _torchvision_url("VGG16_Weights"))


def inception_weights() -> WeightFile:
    """torch-fidelity's port of the TF FID Inception-v3 (pool3 2048-d features, as pytorch-fid)."""
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    return WeightFile("FID Inception-v3 (torch-fidelity)", URL_INCEPTION_V3)


def hub_checkpoint_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


class WeightsUnavailable(RuntimeError):
    """The weights are neither cached nor downloadable; the message says where to put them."""


def ensure_weights(weight: WeightFile, allow_download: Optional[bool] = None) -> Path:
    """Path of the cached checkpoint, downloading it (short timeout) if missing and allowed.

    Raises :class:`WeightsUnavailable` with one line naming the file, its URL and the cache folder.
    """
    path = hub_checkpoint_dir() / weight.filename
    if path.is_file() and path.stat().st_size > 0:
        return path
    if allow_download is None:
        allow_download = os.environ.get("DIFFEIC_NO_DOWNLOAD", "") in ("", "0")
    reason = "downloads disabled (DIFFEIC_NO_DOWNLOAD)"
    if allow_download:
        path.parent.mkdir(parents=True, exist_ok=True)
        old = socket.getdefaulttimeout()
        socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)   # urllib in torch.hub has no timeout of its own
        try:
            torch.hub.download_url_to_file(weight.url, str(path), progress=False)
            return path
        except Exception as err:  # noqa: BLE001 - any network/IO failure means "unavailable"
            reason = f"download failed ({type(err).__name__}: {str(err)[:80]})"
        finally:
            socket.setdefaulttimeout(old)
    raise WeightsUnavailable(f"{weight.what} weights not available: {reason}; put {weight.filename} "
                             f"(from {weight.url}) into {path.parent}")


def _frozen(net: torch.nn.Module) -> torch.nn.Module:
    net.eval().requires_grad_(False)
    return net


def load_lpips() -> torch.nn.Module:
    """LPIPS v0.1 with the AlexNet backbone (Zhang et al. 2018), frozen, on the CPU; inputs in [-1, 1].

    Raises :class:`WeightsUnavailable` (no AlexNet weights) or ``ImportError`` (no ``lpips`` package).
    """
    ensure_weights(alexnet_weights())        # lpips loads torchvision's AlexNet from the hub cache
    import lpips

    return _frozen(lpips.LPIPS(net="alex", verbose=False))


def load_dists() -> torch.nn.Module:
    """DISTS (Ding et al. 2020; VGG16 backbone), frozen, on the CPU; inputs in [0, 1].

    Raises :class:`WeightsUnavailable` (no VGG16 weights) or ``ImportError`` (no ``DISTS_pytorch`` package).
    """
    ensure_weights(vgg16_weights())
    from DISTS_pytorch import DISTS

    # DISTS_pytorch reads its alpha/beta from sys.prefix, which breaks in venvs and user installs:
    # load the copy shipped inside the package instead.
    model = DISTS(load_weights=False)
    with resources.as_file(resources.files("DISTS_pytorch") / "weights.pt") as path:
        w = torch.load(path, map_location="cpu")
    model.alpha.data, model.beta.data = w["alpha"], w["beta"]
    return _frozen(model)


Tensor = torch.Tensor
LossFn = Callable[[Tensor, Tensor], Tensor]
#: The perceptual training losses :func:`perceptual_loss` builds.
PERCEPTUAL_LOSSES = ("auto", "lpips", "dists", "ms_ssim", "none")
#: pytorch-msssim's five scales with an 11-px window need min(H, W) > 160.
MS_SSIM_MIN_SIDE = 161


def ms_ssim_loss(x_hat: Tensor, x: Tensor) -> Tensor:
    """1 − MS-SSIM (single-scale SSIM below 161 px), on ``x_hat`` clamped to [0, 1] (SSIM's range)."""
    from pytorch_msssim import ms_ssim, ssim

    x_hat = x_hat.float().clamp(0, 1)
    fn = ms_ssim if min(x.shape[-2:]) >= MS_SSIM_MIN_SIDE else ssim
    return 1 - fn(x_hat, x.float(), data_range=1.0, size_average=True)


def _lpips_loss() -> LossFn:
    net = load_lpips()

    def loss(x_hat: Tensor, x: Tensor) -> Tensor:
        net.to(x.device)
        return net(x_hat * 2 - 1, x * 2 - 1).mean()
    return loss


def _dists_loss() -> LossFn:
    net = load_dists()

    def loss(x_hat: Tensor, x: Tensor) -> Tensor:
        net.to(x.device)
        return net(x_hat, x, require_grad=True, batch_average=True)
    return loss


def perceptual_loss(name: str = "auto") -> Tuple[str, LossFn]:
    """``(name actually used, loss_fn)`` with ``loss_fn(x_hat, x)`` on images in [0, 1], following the module's policy.

    ``lpips`` / ``dists``: that network (``ValueError`` naming the missing file when it cannot be loaded);
    ``ms_ssim``: 1 − MS-SSIM; ``none``: no perceptual term; ``auto``: LPIPS, else DISTS, else 1 − MS-SSIM (warns).
    The networks are frozen and live in the returned function, outside any module's parameters (never checkpointed).
    """
    if name not in PERCEPTUAL_LOSSES:
        raise ValueError(f"perceptual loss must be one of {', '.join(PERCEPTUAL_LOSSES)}, got {name!r}")
    if name == "none":
        return name, lambda x_hat, x: x_hat.new_zeros(())
    if name == "ms_ssim":
        return name, ms_ssim_loss
    builders = {"lpips": _lpips_loss, "dists": _dists_loss}
    reasons = []
    for candidate in ((name,) if name != "auto" else ("lpips", "dists")):
        try:
            return candidate, builders[candidate]()
        except (WeightsUnavailable, ImportError) as err:
            if name != "auto":
                raise ValueError(f"perceptual loss {name!r} unavailable: {err}") from err
            reasons.append(str(err).splitlines()[0])
    warnings.warn(f"perceptual loss: LPIPS and DISTS unavailable ({'; '.join(reasons)}); using the offline fallback "
                  f"1 - MS-SSIM", RuntimeWarning, stacklevel=2)
    return "ms_ssim", ms_ssim_loss
