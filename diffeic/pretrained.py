"""Models shipped inside the package (``diffeic/data/pretrained/``): names → checkpoint folders.

The only shipped models are the tiny demo model's rate points, trained on a CPU on seven photos that
scikit-image bundles (``scripts/train_tiny.sh``; ``diffeic.samples``) — a working codec end to end,
offline, but *not* the paper's model.  ``tiny-trained`` is its best-quality point.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional

#: Where the shipped checkpoint folders live.
PRETRAINED_DIR = Path(__file__).resolve().parent / "data" / "pretrained"
#: The demo model's rate points (λ = 1, 4, 16), best quality first.
DEMO_POINTS = ("tiny-trained-l1", "tiny-trained-l4", "tiny-trained-l16")
#: Shorthand names for one of the shipped folders.
ALIASES: Dict[str, str] = {"tiny-trained": DEMO_POINTS[0]}


def _folders() -> Dict[str, Path]:
    if not PRETRAINED_DIR.is_dir():
        return {}
    return {p.name: p for p in sorted(PRETRAINED_DIR.iterdir()) if (p / "config.yaml").is_file()}


def pretrained_models() -> List[str]:
    """Every name :meth:`DiffEICCodec.from_pretrained` accepts without a path (aliases first)."""
    folders = _folders()
    return [a for a, target in ALIASES.items() if target in folders] + list(folders)


def pretrained_folder(name: str) -> Optional[Path]:
    """The folder of a shipped model name, or ``None`` if ``name`` is not one."""
    return _folders().get(ALIASES.get(name, name))


__all__ = ["pretrained_models", "pretrained_folder", "PRETRAINED_DIR", "ALIASES", "DEMO_POINTS"]
