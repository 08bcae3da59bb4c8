"""The one policy for perceptual networks (diffeic/netweights.py): what a training loss uses when weights are
missing, the same for every family, and an error when a named network cannot be loaded.

The networks are replaced by stand-ins (monkeypatched loaders), so the order of the fallback chain is tested on
any machine, whatever its torch hub cache holds.
"""
import pytest
import torch

from diffeic import netweights
from diffeic.netweights import WeightsUnavailable, ms_ssim_loss, perceptual_loss


class _Net(torch.nn.Module):
    """A stand-in network: mean absolute difference times ``scale`` (so each network gives its own value)."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, a, b, **kwargs):
        return (a - b).abs().mean() * self.scale


def _missing(what):
    def load():
        raise WeightsUnavailable(f"{what} weights not available: test")
    return load


X = torch.zeros(1, 3, 32, 32)
Y = torch.full((1, 3, 32, 32), 0.25)


def test_auto_takes_lpips_then_dists_then_ms_ssim(monkeypatch):
    monkeypatch.setattr(netweights, "load_lpips", lambda: _Net(1.0))
    monkeypatch.setattr(netweights, "load_dists", lambda: _Net(10.0))
    name, fn = perceptual_loss("auto")
    assert name == "lpips" and float(fn(Y, X)) == pytest.approx(0.5)     # LPIPS sees [-1, 1] inputs: 2 x 0.25
    monkeypatch.setattr(netweights, "load_lpips", _missing("AlexNet"))
    name, fn = perceptual_loss("auto")
    assert name == "dists" and float(fn(Y, X)) == pytest.approx(2.5)     # DISTS sees [0, 1] inputs
    monkeypatch.setattr(netweights, "load_dists", _missing("VGG16"))
    with pytest.warns(RuntimeWarning, match="LPIPS and DISTS unavailable .*AlexNet.*VGG16.*1 - MS-SSIM"):
        name, fn = perceptual_loss("auto")
    assert name == "ms_ssim" and fn is ms_ssim_loss


def test_a_named_network_that_cannot_load_is_an_error(monkeypatch):
    monkeypatch.setattr(netweights, "load_lpips", _missing("AlexNet"))
    monkeypatch.setattr(netweights, "load_dists", lambda: _Net(10.0))
    with pytest.raises(ValueError, match="perceptual loss 'lpips' unavailable: AlexNet weights not available"):
        perceptual_loss("lpips")
    assert perceptual_loss("dists")[0] == "dists"
    assert float(perceptual_loss("none")[1](Y, X)) == 0.0
    with pytest.raises(ValueError, match="perceptual loss must be one of auto, lpips, dists, ms_ssim, none"):
        perceptual_loss("ssim")


def test_every_family_trains_with_the_same_fallback(monkeypatch):
    """HiFiC's perceptual term and the one-step decoder's are the one function (HiFiC's was LPIPS, else 1 - SSIM)."""
    from diffeic.training import hific, onestep

    assert hific.perceptual_loss is perceptual_loss and onestep.perceptual_loss is perceptual_loss
    monkeypatch.setattr(netweights, "load_lpips", _missing("AlexNet"))
    monkeypatch.setattr(netweights, "load_dists", lambda: _Net(10.0))
    module = hific.HiFiCModule(preset="hific_tiny", perceptual="auto", seed=0)
    assert module.perceptual_name == "dists" and float(module.perceptual(Y, X)) == pytest.approx(2.5)
