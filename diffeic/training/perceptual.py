"""Perceptual training losses with an honest offline fallback.

``build_perceptual_loss(name)`` → ``(used_name, loss_fn)`` with ``loss_fn(x_hat, x)`` on images in [0, 1]:

``lpips``    LPIPS-Alex (the evaluation metric's network) — needs torchvision's AlexNet weights in the
             torch hub cache (lpips 0.1.4 ships only its linear heads; ``pnet_rand=True`` would be a *random*
             backbone, i.e. no perceptual loss at all, so it is never used).
``dists``    DISTS (VGG16 backbone from the hub cache, alpha/beta shipped with ``DISTS_pytorch``).
``ms_ssim``  1 − MS-SSIM (pytorch-msssim, 5 scales, 11-px window); crops with a side ≤ 160 px, too small for five
             scales, use single-scale 1 − SSIM.  Needs no weights: the offline fallback of ``auto``.
``auto``     ``lpips`` when its weights are present, else ``dists``, else ``ms_ssim``.
``none``     no perceptual term.

The networks are frozen and kept out of the training module's parameters (they are not checkpointed).
"""
from __future__ import annotations

from importlib import resources
from typing import Callable, Tuple

import torch

Tensor = torch.Tensor
LossFn = Callable[[Tensor, Tensor], Tensor]
CHOICES = ("auto", "lpips", "dists", "ms_ssim", "none")
#: pytorch-msssim's five scales with an 11-px window need min(H, W) > 160.
_MS_SSIM_MIN_SIDE = 161


def _frozen(net: torch.nn.Module) -> torch.nn.Module:
    net.eval().requires_grad_(False)
    return net


def _lpips() -> LossFn:
    from ..netweights import alexnet_weights, ensure_weights

    ensure_weights(alexnet_weights(), allow_download=False)
    import lpips

    net = _frozen(lpips.LPIPS(net="alex", verbose=False))

    def loss(x_hat: Tensor, x: Tensor) -> Tensor:
        net.to(x.device)
        return net(x_hat * 2 - 1, x * 2 - 1).mean()
    return loss


def _dists() -> LossFn:
    from ..netweights import ensure_weights, vgg16_weights

    ensure_weights(vgg16_weights(), allow_download=False)
    from DISTS_pytorch import DISTS

    model = DISTS(load_weights=False)
    with resources.as_file(resources.files("DISTS_pytorch") / "weights.pt") as path:
        w = torch.load(path, map_location="cpu")
    model.alpha.data, model.beta.data = w["alpha"], w["beta"]
    model = _frozen(model)

    def loss(x_hat: Tensor, x: Tensor) -> Tensor:
        model.to(x.device)
        return model(x_hat, x, require_grad=True, batch_average=True)
    return loss


def ms_ssim_loss(x_hat: Tensor, x: Tensor) -> Tensor:
    """1 − MS-SSIM (single-scale SSIM below 161 px), on ``x_hat`` clamped to [0, 1] (SSIM's range)."""
    from pytorch_msssim import ms_ssim, ssim

    x_hat = x_hat.float().clamp(0, 1)
    fn = ms_ssim if min(x.shape[-2:]) >= _MS_SSIM_MIN_SIDE else ssim
    return 1 - fn(x_hat, x.float(), data_range=1.0, size_average=True)


def build_perceptual_loss(name: str = "auto") -> Tuple[str, LossFn]:
    """``(name actually used, loss_fn)``; ``auto`` falls back to ``ms_ssim`` when no learned metric's weights exist."""
    from ..netweights import WeightsUnavailable

    if name not in CHOICES:
        raise ValueError(f"perceptual loss must be one of {', '.join(CHOICES)}, got {name!r}")
    if name == "none":
        return name, lambda x_hat, x: x_hat.new_zeros(())
    if name == "ms_ssim":
        return name, ms_ssim_loss
    builders = {"lpips": _lpips, "dists": _dists}
    for candidate in ((name,) if name != "auto" else ("lpips", "dists")):
        try:
            return candidate, builders[candidate]()
        except (WeightsUnavailable, ImportError) as err:
            if name != "auto":
                raise ValueError(f"perceptual loss {name!r} unavailable: {err}") from err
    return "ms_ssim", ms_ssim_loss


__all__ = ["build_perceptual_loss", "ms_ssim_loss", "CHOICES"]
