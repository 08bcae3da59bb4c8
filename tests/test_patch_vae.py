"""The block-transform autoencoder of the CPU demo model (diffeic.diffusion.patch_vae)."""
import numpy as np
import pytest
import torch

from diffeic.config import BackboneConfig
from diffeic.diffusion.backbone import FrozenBackbone
from diffeic.diffusion.patch_vae import PatchAutoencoder, build_vae, vae_class
from diffeic.samples import load_photo

ARCH = {"_class_name": "PatchAutoencoder", "latent_channels": 6, "encoder_width": 8, "encoder_blocks": 1,
        "decoder_width": 8, "decoder_blocks": 1, "refine_width": 4}
UNET = {"sample_size": 8, "in_channels": 6, "out_channels": 6, "layers_per_block": 1, "block_out_channels": [8, 8],
        "down_block_types": ["DownBlock2D", "DownBlock2D"], "up_block_types": ["UpBlock2D", "UpBlock2D"],
        "cross_attention_dim": 8, "norm_num_groups": 4}


def photo_crops() -> torch.Tensor:
    a = load_photo("astronaut")[:128, :192]
    b = load_photo("rocket")[200:328, 100:292]
    return torch.from_numpy(np.stack([a, b])).permute(0, 3, 1, 2).float() / 255 * 2 - 1


def numpy_projection(images: torch.Tensor, k: int) -> np.ndarray:
    """An independent reference: SVD of the centred 8x8 blocks, reconstruction from the top k directions."""
    x = images.numpy().astype(np.float64)
    b, c, h, w = x.shape
    blocks = x.reshape(b, c, h // 8, 8, w // 8, 8).transpose(0, 2, 4, 1, 3, 5).reshape(-1, c * 64)
    mean = blocks.mean(0)
    _, _, vt = np.linalg.svd(blocks - mean, full_matrices=False)
    rec = (blocks - mean) @ vt[:k].T @ vt[:k] + mean
    return rec.reshape(b, h // 8, w // 8, c, 8, 8).transpose(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)


def test_fitted_transform_is_the_principal_projection():
    vae = build_vae(ARCH)
    x = photo_crops()
    vae.fit_blocks(x)
    p = vae.basis.double()
    assert torch.allclose(p.T @ p, torch.eye(6, dtype=torch.float64), atol=1e-5)   # orthonormal columns
    with torch.no_grad():
        out = vae.decode(vae.encode(x).latent_dist.mode()).sample
    # The residual branches start at zero: the output is exactly the rank-6 block projection.
    np.testing.assert_allclose(out.numpy(), numpy_projection(x, 6), atol=2e-4)
    # The latent has unit spread once multiplied by the scaling factor.
    with torch.no_grad():
        z = vae.encode(x).latent_dist.mode() * vae.config.scaling_factor
    assert abs(float(z.std()) - 1.0) < 0.05


def test_posterior_is_a_point_mass_and_refit_is_deterministic():
    vae = build_vae(ARCH)
    x = photo_crops()
    vae.fit_blocks(x)
    basis = vae.basis.clone()
    vae.fit_blocks(x)
    assert torch.equal(basis, vae.basis)           # the eigenvector signs are fixed
    dist = vae.encode(x).latent_dist
    assert torch.allclose(dist.sample(torch.Generator().manual_seed(3)), dist.mode(), atol=1e-5)


def test_backbone_folder_round_trip(tmp_path):
    cfg = BackboneConfig(vae=dict(ARCH), unet=UNET, pretrained=False, text_len=2)
    backbone = FrozenBackbone.from_config(cfg, seed=1)
    backbone.vae.fit_blocks(photo_crops())
    backbone.save_pretrained(tmp_path / "bb")
    loaded = FrozenBackbone.from_pretrained(cfg, sd_path=str(tmp_path / "bb"))
    assert isinstance(loaded.vae, PatchAutoencoder)
    assert loaded.fingerprint() == backbone.fingerprint()
    x = (photo_crops() + 1) / 2
    assert torch.equal(loaded.decode(loaded.encode(x)), backbone.decode(backbone.encode(x)))


def test_unknown_class_is_refused_by_name():
    with pytest.raises(ValueError, match="'Nope'.*AutoencoderKL, PatchAutoencoder"):
        vae_class({"_class_name": "Nope"})
    with pytest.raises(ValueError, match="latent_channels must be in"):
        PatchAutoencoder(latent_channels=500)
    with pytest.raises(ValueError, match="multiples of 8"):
        build_vae(ARCH).fit_blocks(torch.zeros(1, 3, 12, 16))
