"""Models shipped inside the package (``diffeic/data/pretrained/``): names → checkpoint folders.

The only shipped model is the tiny demo model ``tiny-trained``: one variable-rate model (λ from 1 to 16,
rate parameter q = 0…4) trained on a CPU on seven photos that scikit-image bundles
(``scripts/train_tiny.sh``; ``diffeic.samples``) — a working codec end to end, offline, but *not* the
paper's model.  Its frozen prior, also trained here, sits beside it in ``tiny-backbone/``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional

#: Where the shipped checkpoint folders live.
PRETRAINED_DIR = Path(__file__).resolve().parent / "data" / "pretrained"
#: The demo model: variable-rate, so one name covers every rate point (``compress(x, rate=q)``).
DEMO_MODEL = "tiny-trained"
#: What every output that shows a shipped model says it is.
DEMO_NOTE = "tiny demo model, trained on 7 photos on a CPU; not the paper's model"


def _folders() -> Dict[str, Path]:
    if not PRETRAINED_DIR.is_dir():
        return {}
    # A folder with a model config but no LFGCM weights is a frozen prior (tiny-backbone), not a codec.
    return {p.name: p for p in sorted(PRETRAINED_DIR.iterdir())
            if (p / "config.yaml").is_file() and (p / "lfgcm.safetensors").is_file()}


def pretrained_models() -> List[str]:
    """Every name :meth:`DiffEICCodec.from_pretrained` accepts without a path."""
    return list(_folders())


def pretrained_folder(name: str) -> Optional[Path]:
    """The folder of a shipped model name, or ``None`` if ``name`` is not one."""
    return _folders().get(name)


__all__ = ["pretrained_models", "pretrained_folder", "PRETRAINED_DIR", "DEMO_MODEL", "DEMO_NOTE"]
