"""Side-by-side sheets: one picture per photo, each tile a reconstruction captioned with what was measured.

A sheet shows the original, our codec at each rate point and a few baselines, in reading order, all at
the same scale (tiles wider than :data:`TILE_WIDTH` are shrunk with Lanczos, and the sheet says so).
Captions come from the rows of ``results.csv``: bytes, bpp, PSNR, MS-SSIM and LPIPS where measured.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Mapping, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from ..sizes import size_text

#: Widest tile in pixels; wider images are shrunk (all tiles of a sheet by the same factor).
TILE_WIDTH = 400
#: Most tiles in one row of a sheet.
MAX_COLUMNS = 5
FONT_SIZE = 14
PAD = 8


@dataclass
class Tile:
    """One picture of a sheet: the pixels and its caption (first line bold-ish: the title)."""

    pixels: np.ndarray                      # uint8 (H, W, 3)
    title: str
    lines: List[str] = field(default_factory=list)


@dataclass
class SheetLayout:
    """Where a written sheet put its tiles: ``boxes[i]`` = (x, y, width, height) of tile i's pixels."""

    path: Path
    size: Tuple[int, int]                   # (width, height) of the sheet
    boxes: List[Tuple[int, int, int, int]]
    scale: float                            # tile pixels per image pixel (1.0: native size)


def caption(row: Mapping) -> List[str]:
    """Caption lines of a measured row: bytes and bpp, then the fidelity and perceptual metrics measured."""
    lines = [f"{row['bytes']:,} bytes · {row['bpp']:.4f} bpp"]
    quality = []
    if row.get("psnr") is not None:
        quality.append(f"PSNR {row['psnr']:.2f} dB")
    if row.get("ms_ssim") is not None and not math.isnan(row["ms_ssim"]):
        quality.append(f"MS-SSIM {row['ms_ssim']:.4f}")
    if quality:
        lines.append(" · ".join(quality))
    if row.get("lpips") is not None:
        lines.append(f"LPIPS {row['lpips']:.4f}")
    return lines


def _font(size: int) -> ImageFont.ImageFont:
    """DejaVu Sans from matplotlib (always installed with it), else Pillow's default font."""
    try:
        from matplotlib import font_manager

        return ImageFont.truetype(font_manager.findfont("DejaVu Sans", fallback_to_default=True), size)
    except (ImportError, OSError, ValueError):
        return ImageFont.load_default(size)


def _columns(n: int) -> int:
    rows = -(-n // MAX_COLUMNS)
    return -(-n // rows)


def write_sheet(tiles: Sequence[Tile], path: Path, header: str = "") -> SheetLayout:
    """Draw ``tiles`` in rows of at most :data:`MAX_COLUMNS` under ``header``; write ``path`` (PNG) atomically."""
    if not tiles:
        raise ValueError("a sheet needs at least one tile")
    h0, w0 = tiles[0].pixels.shape[:2]
    if any(t.pixels.shape[:2] != (h0, w0) for t in tiles):
        raise ValueError("every tile of a sheet must have the same size: "
                         + ", ".join(f"{t.title} {size_text(t.pixels.shape[0], t.pixels.shape[1])}" for t in tiles))
    scale = min(1.0, TILE_WIDTH / w0)
    tw, th = max(1, round(w0 * scale)), max(1, round(h0 * scale))
    font, bold = _font(FONT_SIZE), _font(FONT_SIZE + 1)
    line_h = FONT_SIZE + 5
    n_lines = max(1 + len(t.lines) for t in tiles)
    cap_h = n_lines * line_h + PAD
    cols = _columns(len(tiles))
    rows = -(-len(tiles) // cols)
    header_lines = [line for line in header.splitlines() if line]
    if scale < 1:
        header_lines.append(f"tiles shown at {scale:.0%} of the original size ({size_text(h0, w0)} pixels)")
    top = PAD + len(header_lines) * line_h + (PAD if header_lines else 0)
    width = PAD + cols * (tw + PAD)
    height = top + rows * (th + cap_h + PAD)
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    for i, text in enumerate(header_lines):
        draw.text((PAD, PAD + i * line_h), text, fill="black", font=font)
    boxes = []
    for i, t in enumerate(tiles):
        x = PAD + (i % cols) * (tw + PAD)
        y = top + (i // cols) * (th + cap_h + PAD)
        img = Image.fromarray(np.ascontiguousarray(t.pixels, dtype=np.uint8))
        if scale < 1:
            img = img.resize((tw, th), Image.LANCZOS)
        sheet.paste(img, (x, y))
        boxes.append((x, y, tw, th))
        draw.text((x, y + th + 3), t.title, fill="black", font=bold)
        for j, text in enumerate(t.lines):
            draw.text((x, y + th + 3 + (j + 1) * line_h), text, fill=(60, 60, 60), font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    sheet.save(tmp, format="PNG", optimize=False)
    os.replace(tmp, path)
    return SheetLayout(path, (width, height), boxes, scale)


def closest_in_bytes(rows: Sequence[Mapping], target_bytes: int) -> Optional[Mapping]:
    """The row whose file size is closest to ``target_bytes`` (ties: the smaller file)."""
    if not rows:
        return None
    return min(rows, key=lambda r: (abs(int(r["bytes"]) - target_bytes), int(r["bytes"])))
