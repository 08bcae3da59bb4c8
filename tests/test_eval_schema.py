"""The results CSV schema: one definition, validated rows, lossless round trip, rate helpers."""
import math

import pytest

from diffeic.evaluation import bpp as bpp_helpers
from diffeic.evaluation.schema import CSV_COLUMNS, CsvWriter, read_rows, validate_row


def _row(**kw):
    r = {"dataset": "samples", "image": "astronaut", "codec": "jpeg", "point": "tiny", "setting": "q=5",
         "H": 512, "W": 512, "bytes": 1000, "bpp": 8000 / 512 ** 2, "bpp_padded": 8000 / 512 ** 2,
         "bpp_official": None, "target_bpp": 0.03, "psnr": math.inf, "ms_ssim": math.nan, "lpips": None,
         "dists": None, "niqe": None, "enc_s": 0.01, "dec_s": 0.002, "seed": None, "tiling": ""}
    r.update(kw)
    return r


def test_columns_cover_the_issue_in_order():
    required = ["dataset", "image", "codec", "setting", "H", "W", "bytes", "bpp", "bpp_padded", "psnr",
                "ms_ssim", "lpips", "dists", "niqe", "enc_s", "dec_s"]
    assert [c for c in CSV_COLUMNS if c in required] == required
    assert len(set(CSV_COLUMNS)) == len(CSV_COLUMNS)


def test_validate_rejects_missing_extra_and_bad_types():
    validate_row(_row())
    bad = _row()
    del bad["bpp"]
    with pytest.raises(ValueError, match="missing"):
        validate_row(bad)
    with pytest.raises(ValueError, match="unexpected"):
        validate_row(_row(extra=1))
    with pytest.raises(ValueError, match="bytes"):
        validate_row(_row(bytes=1.5))
    with pytest.raises(ValueError, match="psnr"):
        validate_row(_row(psnr="high"))
    with pytest.raises(ValueError, match="seed"):
        validate_row(_row(seed=-1))


def test_write_read_round_trip_and_foreign_header(tmp_path):
    path = tmp_path / "results.csv"
    with CsvWriter(path) as w:
        w.write(_row())
        w.write(_row(image="coffee", psnr=23.5, lpips=0.25))
    with CsvWriter(path) as w:                  # appending does not repeat the header
        w.write(_row(image="rocket", codec="diffeic", seed=2 ** 64 - 1, tiling="latent", bpp_official=0.02))
    rows = read_rows(path)
    assert path.read_text().count("dataset,image") == 1 and len(rows) == 3
    assert rows[0]["psnr"] == math.inf and math.isnan(rows[0]["ms_ssim"]) and rows[0]["lpips"] is None
    assert (rows[2]["seed"], rows[2]["tiling"], rows[2]["bpp_official"]) == (2 ** 64 - 1, "latent", 0.02)
    assert rows[1]["lpips"] == 0.25 and rows[1]["H"] == 512 and isinstance(rows[1]["bytes"], int)
    assert rows[0]["bpp"] == _row()["bpp"]      # floats survive exactly (repr)
    assert rows[0]["seed"] is None and rows[0]["tiling"] == "" and rows[0]["bpp_official"] is None
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="expected"):
        read_rows(other)


def test_bpp_from_written_file(tmp_path):
    n = bpp_helpers.write_and_measure(tmp_path / "x" / "s.bin", b"\x00" * 123)
    assert n == 123 == (tmp_path / "x" / "s.bin").stat().st_size
    assert bpp_helpers.bpp(123, 400, 600) == 8 * 123 / (400 * 600)
    assert bpp_helpers.padded_hw(400, 600) == (448, 640)
    assert bpp_helpers.bpp_padded(123, 400, 600) == 8 * 123 / (448 * 640)
    assert bpp_helpers.bpp_padded(100, 768, 512) == bpp_helpers.bpp(100, 768, 512)
    with pytest.raises(ValueError):
        bpp_helpers.bpp(1, 0, 5)
    assert not list((tmp_path / "x").glob(".*.tmp"))          # written atomically, no temp file left


def test_official_rate_counts_the_20_byte_header_over_padded_pixels():
    # Official ``write_body``: five big-endian uint32 (h_z, w_z, n_strings, len_y, len_z) + the two strings.
    assert bpp_helpers.official_file_bytes(1000, 100) == 1120
    assert bpp_helpers.bpp_official(1000, 100, 768, 512) == 8 * 1120 / (768 * 512)
    assert bpp_helpers.bpp_official(1000, 100, 400, 600) == 8 * 1120 / (448 * 640)
