"""Our bi-level coder (diffeic.bilevel) against CCITT Group 4 and 1-bit PNG on Canny edge maps of photos.

    python benchmarks/bilevel_coder.py [--images astronaut,chelsea] [--repeats 3] [--record]

Edge maps: ``diffeic.bilevel.canny_edges`` at its defaults (grey, short side 512, sigma 1, thresholds
0.1/0.2) of scikit-image's colour photos and two of its grey photos (camera, coins).  For each map:

* ``ours``: bytes of ``encode_bilevel`` (whole stream: version, size, rANS payload);
* ``g4``: CCITT Group 4 by Pillow/libtiff, the coded strip only (``g4_tiff``: the whole TIFF file);
* ``png``: 1-bit PNG by Pillow with ``optimize=True``, the IDAT data only (``png_file``: the whole file);
* ``jbig1``: JBIG (ITU T.82, JBIG-KIT, via the ``jbigkit`` module of the jbigkit-py package) when it is
  importable, whole BIE;
* ``static``: the bytes a *two-pass* coder with our contexts would need if its per-context probabilities
  were free (empirical entropy), ``ctx``: contexts used, ``tie_bits``: side information per used
  context at which such a coder would merely tie with ours (it must at least say which of the 6144
  contexts are used, and a probability for each);
* ``enc_ms``/``dec_ms``: median wall time of ``encode_bilevel``/``decode_bilevel`` (decode includes its
  re-encoding check), ``*_cpu_ms`` the process CPU time.
"""
from __future__ import annotations

import argparse
import io
import struct
import sys
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from diffeic import bilevel  # noqa: E402

try:                                   # as ``benchmarks.<name>`` (tests) or as a script
    from .common import cpu_section, timed_cpu, format_table as markdown_table
except ImportError:
    from common import cpu_section, timed_cpu, format_table as markdown_table  # type: ignore[no-redef]

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle_left", "motorcycle_right", "hubble_deep_field",
          "immunohistochemistry", "retina", "camera", "coins")
COLUMNS = ("image", "size", "edges_pct", "ours", "g4", "g4_tiff", "png", "png_file", "jbig1", "ours/g4",
           "ours/png", "static", "ctx", "tie_bits", "enc_ms", "dec_ms", "enc_cpu_ms", "dec_cpu_ms")


def photo(name: str) -> np.ndarray:
    import skimage.data

    if name.startswith("motorcycle_"):
        return skimage.data.stereo_motorcycle()[0 if name.endswith("left") else 1]
    return getattr(skimage.data, name)()


def group4_bytes(bits: np.ndarray) -> tuple:
    """(coded strip bytes, whole TIFF bytes) of CCITT Group 4 by Pillow/libtiff."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(bits).convert("1").save(buf, "TIFF", compression="group4")
    strips = Image.open(io.BytesIO(buf.getvalue())).tag_v2[279]          # StripByteCounts
    return int(sum(strips if isinstance(strips, tuple) else (strips,))), len(buf.getvalue())


def png_bytes(bits: np.ndarray) -> tuple:
    """(IDAT data bytes, whole file bytes) of a 1-bit PNG by Pillow with optimize=True."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(bits).convert("1").save(buf, "PNG", optimize=True)
    data, pos, idat = buf.getvalue(), 8, 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        idat += length if kind == b"IDAT" else 0
        pos += 12 + length
    return idat, len(data)


def jbig1_bytes(bits: np.ndarray) -> Optional[int]:
    """Bytes of a JBIG (T.82) BIE by JBIG-KIT with its default options, or None when jbigkit is absent."""
    try:
        import jbigkit
    except ImportError:
        return None
    enc = jbigkit.JbgEncoder(bits.shape[1], bits.shape[0], np.packbits(bits, axis=1).tobytes())
    enc.set_options(-1, -1, bits.shape[0], -1, -1)      # JBIG-KIT's defaults, one stripe for the whole image
    return len(enc.encode_out())


def static_bound(bits: np.ndarray) -> tuple:
    """(bytes, used contexts) of a two-pass coder with our contexts and free probabilities."""
    h, w = bits.shape
    pix = bilevel._padded(h, w)
    pix[bilevel._PAD_TOP:, bilevel._PAD_SIDE:bilevel._PAD_SIDE + w] = bits
    above = bilevel._above(pix, 0, h, w)
    k = np.concatenate([bilevel._phase_contexts(above, pix, 0, p).ravel() for p in range(len(bilevel._PHASES))])
    x = np.concatenate([bits[:, s::st].ravel() for s, st, _ in bilevel._PHASES]).astype(np.int64)
    n = np.bincount(k, minlength=bilevel._N_CTX).astype(float)
    n1 = np.bincount(k, weights=x, minlength=bilevel._N_CTX)
    with np.errstate(divide="ignore", invalid="ignore"):
        h1 = np.where(n1 > 0, n1 * np.log2(n / n1), 0) + np.where(n > n1, (n - n1) * np.log2(n / (n - n1)), 0)
    return float(np.nansum(h1)) / 8, int((n > 0).sum())


def run(names=PHOTOS, repeats: int = 3) -> List[Dict[str, object]]:
    rows = []
    for name in names:
        bits = bilevel.canny_edges(photo(name))
        data, enc_ms, enc_cpu = timed_cpu(lambda: bilevel.encode_bilevel(bits), repeats)
        out, dec_ms, dec_cpu = timed_cpu(lambda: bilevel.decode_bilevel(data), repeats)
        if not np.array_equal(out, bits):
            raise AssertionError(f"{name}: the edge map did not round-trip")
        g4, g4_tiff = group4_bytes(bits)
        png, png_file = png_bytes(bits)
        static, used = static_bound(bits)
        rows.append({"image": name, "size": f"{bits.shape[1]}x{bits.shape[0]}", "edges_pct": 100 * bits.mean(),
                     "ours": len(data), "g4": g4, "g4_tiff": g4_tiff, "png": png, "png_file": png_file,
                     "jbig1": jbig1_bytes(bits) or "n/a", "ours/g4": len(data) / g4, "ours/png": len(data) / png,
                     "static": round(static), "ctx": used, "tie_bits": 8 * (len(data) - static) / used,
                     "enc_ms": enc_ms, "dec_ms": dec_ms, "enc_cpu_ms": enc_cpu, "dec_cpu_ms": dec_cpu})
        print(rows[-1], flush=True)
    total = {c: sum(r[c] for r in rows) for c in ("ours", "g4", "g4_tiff", "png", "png_file", "static", "ctx")}
    jb = [r["jbig1"] for r in rows]
    rows.append({"image": "**total**", **total, "jbig1": sum(jb) if all(isinstance(v, int) for v in jb) else "n/a",
                 "ours/g4": total["ours"] / total["g4"], "ours/png": total["ours"] / total["png"],
                 "tie_bits": 8 * (total["ours"] - total["static"]) / total["ctx"]})
    return rows


def format_table(rows: List[Dict[str, object]]) -> str:
    def cell(key: str, v: object) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
        return str(v)

    return markdown_table(rows, COLUMNS, cell)


def main(argv=None) -> List[Dict[str, object]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", default=",".join(PHOTOS), help="comma-separated scikit-image photo names")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per map (median reported)")
    p.add_argument("--record", action="store_true", help="append the table to benchmarks/RESULTS.md")
    args = p.parse_args(argv)
    rows = run(args.images.split(","), args.repeats)
    cpu_section("bi-level coder vs CCITT G4 and 1-bit PNG on Canny edge maps", format_table(rows), args.record)
    return rows


if __name__ == "__main__":
    main()
