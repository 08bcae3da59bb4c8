"""The per-image results CSV: its columns in one place, plus reading and appending rows.

One row per image per codec per rate point (and per decode seed, for a codec that samples).  ``point`` names the rate point a row belongs to (our
model's label, or for a baseline the point it was quality-matched to); rows are averaged per
``(codec, point)`` in the summary.  ``setting`` is the codec's own parameter (e.g. ``q=12``).
Three rates: ``bpp`` (the written file over the original pixels, the honest figure), ``bpp_padded``
(the same file over the 64-padded pixels) and, for DiffEIC, ``bpp_official`` (the official file
format — 20-byte header + separate y and z strings — over the padded pixels, as the published
tables count).  ``seed`` and ``tiling`` say how our image was decoded (empty for baselines).
"""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Tuple, Union

from .metrics import IMAGE_METRICS

#: Column order of ``results.csv``; the only definition of the schema.
CSV_COLUMNS: Tuple[str, ...] = (
    "dataset", "image", "codec", "point", "setting", "H", "W", "bytes", "bpp", "bpp_padded", "bpp_official",
    "target_bpp", *IMAGE_METRICS, "enc_s", "dec_s", "seed", "tiling",
)
INT_COLUMNS = frozenset({"H", "W", "bytes"})
OPTIONAL_INT_COLUMNS = frozenset({"seed"})
FLOAT_COLUMNS = frozenset({"bpp", "bpp_padded", "bpp_official", "target_bpp", *IMAGE_METRICS, "enc_s", "dec_s"})
#: A row is identified (for resuming) by these columns (``seed``: one row per decode seed of our codec).
KEY_COLUMNS = ("dataset", "image", "codec", "point", "seed")

Row = Dict[str, Union[str, int, float, None]]


def row_key(row: Mapping) -> Tuple[str, ...]:
    return tuple(str(row[c]) for c in KEY_COLUMNS)


def validate_row(row: Mapping) -> Row:
    """Check a row has exactly the schema's columns with sensible types; returns it as a plain dict."""
    missing = [c for c in CSV_COLUMNS if c not in row]
    extra = [c for c in row if c not in CSV_COLUMNS]
    if missing or extra:
        raise ValueError(f"row does not match the CSV schema: missing {missing}, unexpected {extra}")
    for c in INT_COLUMNS:
        if not isinstance(row[c], int) or row[c] < 0:
            raise ValueError(f"column {c} must be a non-negative int, got {row[c]!r}")
    for c in OPTIONAL_INT_COLUMNS:
        if row[c] is not None and (not isinstance(row[c], int) or row[c] < 0):
            raise ValueError(f"column {c} must be a non-negative int or None, got {row[c]!r}")
    for c in FLOAT_COLUMNS:
        if row[c] is not None and not isinstance(row[c], (int, float)):
            raise ValueError(f"column {c} must be a number or None, got {row[c]!r}")
    return {c: row[c] for c in CSV_COLUMNS}


def _format(v) -> str:
    if v is None:
        return ""          # empty cell = not measured (metric skipped)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else repr(v)
    return str(v)


def _parse(col: str, text: str):
    if col in INT_COLUMNS:
        return int(text)
    if col in OPTIONAL_INT_COLUMNS:
        return None if text == "" else int(text)
    if col in FLOAT_COLUMNS:
        return None if text == "" else float(text)
    return text


def read_rows(path: Union[str, Path]) -> List[Row]:
    """Rows of an existing results CSV (typed); ``[]`` if there is none. Refuses a foreign header."""
    path = Path(path)
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != CSV_COLUMNS:
            raise ValueError(f"{path} has columns {reader.fieldnames}, expected {list(CSV_COLUMNS)} (written by "
                             f"another eval version); use another --out folder")
        return [{c: _parse(c, r[c]) for c in CSV_COLUMNS} for r in reader]


class CsvWriter:
    """Appends validated rows to the results CSV, flushing each so an interrupted run can resume."""

    def __init__(self, path: Union[str, Path]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.is_file() or self.path.stat().st_size == 0
        self._f = self.path.open("a", newline="")
        self._w = csv.writer(self._f)
        if new:
            self._w.writerow(CSV_COLUMNS)
            self._f.flush()

    def write(self, row: Mapping) -> Row:
        row = validate_row(row)
        self._w.writerow([_format(row[c]) for c in CSV_COLUMNS])
        self._f.flush()
        return row

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "CsvWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def existing_keys(rows: Iterable[Mapping]) -> Dict[Tuple[str, ...], Row]:
    return {row_key(r): dict(r) for r in rows}


def column(rows: Iterable[Mapping], name: str) -> List[Optional[float]]:
    return [r[name] for r in rows]
