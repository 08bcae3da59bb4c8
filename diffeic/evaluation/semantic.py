"""The semantic family's own figures in an evaluation run (Rethinking Image Compression on the Web with Generative
AI): the bytes of each part, the *bandwidth saving* and the *VGG-feature similarity*.

* **bandwidth saving** = 1 − stream bytes / original bytes.  The original is the image's source file when the
  evaluated image is that file as is (a folder or dataset at native size), else a lossless PNG of the evaluated
  image (Pillow, default settings: scikit-image's bundled photos, centre crops); ``original`` says which.
* **VGG similarity**: cosine similarity of the 4096-d fc7 features of torchvision's ImageNet VGG16 (images resized
  to 224 × 224, ImageNet normalisation), the paper's image-similarity score; skipped with one line when VGG16's
  weights are not on the machine (:mod:`diffeic.netweights`), as LPIPS is.
* **prompt**: a caption by the local captioning model when there is one, else no prompt part — said in the summary.

Figures are kept per image in ``semantic.json`` of the run's folder (written atomically after each image, so a
resumed run keeps them) and averaged per rate point into ``summary.json``'s ``semantic`` entry.
"""
from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from ..io import write_bytes_atomic
from ..netweights import WeightsUnavailable, ensure_weights, vgg16_weights

FILE = "semantic.json"
VGG_SIZE = 224
ORIGINAL_DEFINITION = ("bandwidth saving = 1 - stream bytes / original bytes; original: the source file when the "
                       "evaluated image is that file unchanged, else a lossless PNG of the evaluated image")
CAPTION_NOTE = "prompt: a caption by the local captioning model ($DIFFEIC_CAPTION_MODEL)"
VGG_DEFINITION = "cosine similarity of torchvision VGG16 (ImageNet) fc7 features, images resized to 224x224"


def original_bytes(ref: np.ndarray, path: Optional[Path], native: bool) -> Tuple[int, str]:
    """``(bytes, what)`` of the image's original: its source file (``path``, when ``native``) or a PNG of ``ref``."""
    if path is not None and native:
        return Path(path).stat().st_size, "source file"
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(ref, "RGB").save(buffer, format="PNG")
    return buffer.tell(), "PNG of the evaluated image"


def load_vgg_similarity(device: str = "cpu") -> Callable[[np.ndarray, np.ndarray], float]:
    """``f(ref, rec) → cosine similarity`` of VGG16 fc7 features (uint8 ``(H, W, 3)`` images);
    :class:`~diffeic.netweights.WeightsUnavailable` when VGG16's weights are not on the machine."""
    import torchvision

    path = ensure_weights(vgg16_weights())
    net = torchvision.models.vgg16()
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    net.classifier = net.classifier[:5]          # fc6, ReLU, dropout, fc7, ReLU → fc7 features
    net = net.eval().requires_grad_(False).to(device)
    mean = torch.tensor([0.485, 0.456, 0.406], device=device).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], device=device).view(1, 3, 1, 1)

    def features(a: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None].float().div(255).to(device)
        x = torch.nn.functional.interpolate(x, size=(VGG_SIZE, VGG_SIZE), mode="bilinear", antialias=True,
                                            align_corners=False)
        return net((x - mean) / std)[0]

    def similarity(ref: np.ndarray, rec: np.ndarray) -> float:
        with torch.no_grad():
            return float(torch.nn.functional.cosine_similarity(features(ref), features(rec), dim=0))
    return similarity


class SemanticFigures:
    """Per-image figures of semantic streams in ``folder/semantic.json`` and their means per rate point."""

    def __init__(self, folder: Path, device: str = "cpu") -> None:
        self.path = Path(folder) / FILE
        self.device = device
        self.records: Dict[str, Dict[str, Dict[str, Any]]] = (json.loads(self.path.read_text())
                                                              if self.path.is_file() else {})
        self.vgg_skipped: Optional[str] = None
        self.prompt_note: Optional[str] = None
        self._vgg: Optional[Callable] = None

    def prompt(self, ref: np.ndarray) -> str:
        """The prompt to compress ``ref`` with: a local caption, else ``""`` (no prompt part; noted once)."""
        from ..semantic.prompt import CaptionUnavailable, caption_image

        if self.prompt_note is not None and self.prompt_note != CAPTION_NOTE:
            return ""
        try:
            text = caption_image(ref)
        except CaptionUnavailable as err:
            if self.prompt_note is not None:          # the captioner worked on earlier images: not silently none
                raise
            self.prompt_note = f"prompt: none sent ({str(err).split(':')[0]}; $DIFFEIC_CAPTION_MODEL names one)"
            return ""
        self.prompt_note = CAPTION_NOTE
        return text

    def _similarity(self, ref: np.ndarray, rec: np.ndarray) -> Optional[float]:
        if self._vgg is None and self.vgg_skipped is None:
            try:
                self._vgg = load_vgg_similarity(self.device)
            except (WeightsUnavailable, ImportError) as err:
                self.vgg_skipped = f"VGG similarity skipped: {err}"
        return None if self._vgg is None else self._vgg(ref, rec)

    def record(self, point: str, image: str, info: Dict[str, Any], ref: np.ndarray, rec: np.ndarray,
               original: Tuple[int, str]) -> None:
        """Keep one stream's figures (``info``: :meth:`~diffeic.codecs.semantic.SemanticCodec.inspect` of it)."""
        n, what = original
        self.records.setdefault(point, {})[image] = {
            "bytes": info["total_bytes"], "parts": info["parts"], "part_bytes": info["bytes"],
            "fallback": info["fallback"], "original_bytes": n, "original": what,
            "bandwidth_saving": 1.0 - info["total_bytes"] / n, "vgg_similarity": self._similarity(ref, rec)}
        write_bytes_atomic(self.path, json.dumps(self.records, indent=1).encode(), overwrite=True)

    def summary(self, points: List[str], images: List[str], notes: List[str] = ()) -> Dict[str, Any]:
        """``{definitions, skipped, prompt, notes, points: {point: {n, means, per_image}}}`` over this run's
        images."""
        out: Dict[str, Any] = {"bandwidth_saving_definition": ORIGINAL_DEFINITION,
                               "vgg_similarity_definition": VGG_DEFINITION,
                               "vgg_similarity_skipped": self.vgg_skipped, "prompt": self.prompt_note,
                               "notes": list(notes), "points": {}}
        for point in points:
            rows = [self.records.get(point, {}).get(im) for im in images]
            rows = [r for r in rows if r is not None]
            if not rows:
                continue
            names = sorted({k for r in rows for k in r["part_bytes"]})
            vgg = [r["vgg_similarity"] for r in rows if r["vgg_similarity"] is not None]
            out["points"][point] = {
                "n": len(rows), "n_fallback": sum(r["fallback"] for r in rows),
                "bandwidth_saving": _mean([r["bandwidth_saving"] for r in rows]),
                "bytes": _mean([r["bytes"] for r in rows]),
                "part_bytes": {k: _mean([r["part_bytes"].get(k, 0) for r in rows]) for k in names},
                "vgg_similarity": _mean(vgg) if vgg else None,
                "per_image": {im: self.records[point][im] for im in images if im in self.records.get(point, {})}}
        return out


def _mean(values: List[float]) -> float:
    return float(sum(values) / len(values)) if values else math.nan


__all__ = ["FILE", "SemanticFigures", "load_vgg_similarity", "original_bytes"]
