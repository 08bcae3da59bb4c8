"""Where the pretrained backbones of the perceptual networks (LPIPS, DISTS, FID/KID Inception) are found.

The metric libraries fetch their backbones from the network on first use and hang or fail offline.
We look in torch hub's cache (``~/.cache/torch/hub/checkpoints``, or ``$TORCH_HOME``) first and try
a download only with a short timeout, so an offline run skips a metric in well under a second
instead of hanging.  Set ``DIFFEIC_NO_DOWNLOAD=1`` to never try the network.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

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
