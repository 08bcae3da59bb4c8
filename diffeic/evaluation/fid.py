"""FID and KID on 256×256 patches, HiFiC-style "FID/256" (Mentzer et al. 2020).

Patches: the 256-px grid from (0, 0), plus — when both sides are ≥ 384 — the grid shifted by
128 px; remainders are discarded (768² → 13 patches, 768×512 → 8).  Features: torch-fidelity's
Inception-v3 (the TF FID weights pytorch-fid uses, pool3 2048-d); FID and KID from torch-fidelity's
own functions on those features.  Features are extracted per image so reference and
reconstruction sets are built up incrementally (and cached on disk for resumed runs).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from ..netweights import ensure_weights, inception_weights

PATCH = 256
SHIFT = PATCH // 2
#: Both sides must be at least this for the shifted grid (1.5 × patch size, as NeuralCompression).
SHIFT_MIN_SIDE = PATCH + SHIFT
KID_SUBSET_SIZE = 1000
KID_SUBSETS = 100


def patch_origins(height: int, width: int, patch: int = PATCH) -> List[Tuple[int, int]]:
    """Top-left corners (y, x) of the FID/256 patches of an ``height × width`` image."""
    origins = [(y, x) for y in range(0, height - patch + 1, patch) for x in range(0, width - patch + 1, patch)]
    shift = patch // 2
    if height >= patch + shift and width >= patch + shift:
        origins += [(y, x) for y in range(shift, height - patch + 1, patch)
                    for x in range(shift, width - patch + 1, patch)]
    return origins


def extract_patches(img: np.ndarray, patch: int = PATCH) -> np.ndarray:
    """uint8 (H, W, 3) → uint8 (N, 3, patch, patch) in :func:`patch_origins` order."""
    h, w = img.shape[:2]
    chw = np.ascontiguousarray(img.transpose(2, 0, 1))
    out = [chw[:, y:y + patch, x:x + patch] for y, x in patch_origins(h, w, patch)]
    return np.stack(out) if out else np.zeros((0, 3, patch, patch), np.uint8)


class InceptionFeatures:
    """Inception-v3 pool3 features of uint8 patches (raises WeightsUnavailable when offline)."""

    def __init__(self, device: str | torch.device = "cpu", batch: int = 32) -> None:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        path = ensure_weights(inception_weights())
        self.device = torch.device(device)
        self.batch = batch
        self.net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                               feature_extractor_weights_path=str(path)).eval().to(self.device)

    @torch.no_grad()
    def __call__(self, patches: np.ndarray) -> np.ndarray:
        feats = [self.net(torch.from_numpy(patches[i:i + self.batch]).to(self.device))[0].cpu()
                 for i in range(0, len(patches), self.batch)]
        return torch.cat(feats).numpy() if feats else np.zeros((0, 2048), np.float32)


def fid_kid(ref_features: np.ndarray, rec_features: np.ndarray, seed: int = 0) -> Dict[str, Optional[float]]:
    """FID and KID (mean, std over subsets) between two feature sets, via torch-fidelity.

    KID subsets hold ``min(1000, n)`` patches (torch-fidelity's default size, reduced for small sets).
    """
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
    from torch_fidelity.metric_kid import kid_features_to_metric

    n = min(len(ref_features), len(rec_features))
    if n < 2:
        return {"fid": None, "kid": None, "kid_std": None, "n_patches": n}
    a, b = torch.from_numpy(ref_features), torch.from_numpy(rec_features)
    fid = fid_statistics_to_metric(fid_features_to_statistics(a), fid_features_to_statistics(b), verbose=False)
    kid = kid_features_to_metric(a, b, kid_subsets=KID_SUBSETS, kid_subset_size=min(KID_SUBSET_SIZE, n),
                                 rng_seed=seed, verbose=False)   # kernel: torch-fidelity's default cubic poly
    return {"fid": float(fid["frechet_inception_distance"]), "kid": float(kid["kernel_inception_distance_mean"]),
            "kid_std": float(kid["kernel_inception_distance_std"]), "n_patches": n}
