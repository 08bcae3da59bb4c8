"""The evaluation run: codec(s) and baselines over a dataset → CSV, JSON, bitstreams, plots.

Order of work per image: each of our models (compress with the image's decode seed stored in the stream →
write the bitstream → bpp from the file → decompress with that seed, and with each further decode seed →
uint8 → metrics), then every baseline quality-searched to ``factor ×`` our bpp on that image, then the
image's side-by-side sheet (:mod:`.sheets`).  Rows already in ``results.csv`` are not redone (resume) — only in
a folder whose ``run.json`` records the same model fingerprint and settings (:mod:`.protocol`); the
default folder is named by the model's fingerprint.  FID/KID (when Inception weights are available)
are computed at the end from per-image patch features cached under ``features/``.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image

from ..codecs.registry import DEMO_NOTE, SHIPPED_NOTES, pretrained_folder
from . import fid as fidmod
from . import protocol
from .baselines import BASELINE_NAMES, Baseline, available_baselines, quality_search
from .compressai_format import FOLDER as COMPRESSAI_FOLDER
from .compressai_format import codec_document, write_documents
from .datasets import NATIVE, Dataset, load_dataset
from .metrics import IMAGE_METRICS, MetricSuite
from .models import resolve_model
from .plots import Curve, rd_plot
from .published import published_series, reference_dataset
from .bpp import bpp, bpp_official, bpp_padded, official_string_sizes, write_and_measure
from .schema import CsvWriter, existing_keys, read_rows, row_key
from .semantic import SemanticFigures, original_bytes
from .sheets import Tile, caption, closest_in_bytes, write_sheet
from .summary import (SPREAD_DEFINITION, bd_table, format_bd, format_table, group_means, point_labels,
                      series_by_codec)
from ..netweights import WeightsUnavailable
from ..sizes import size_text

OURS = "diffeic"
UNTRAINED_NOTE = "untrained — pipeline check"
#: Baselines a sheet shows (the file closest in bytes to our highest rate point), when they ran.
SHEET_BASELINES = ("jpeg", "webp", "avif")
#: A line of progress at most this often (seconds) when the output is not a terminal.
PROGRESS_EVERY_S = 20.0


@dataclass
class EvalConfig:
    """Everything a run depends on (also written to the summary JSON)."""

    dataset: str = "samples"
    models: List[str] = field(default_factory=lambda: ["tiny"])
    out: Optional[str] = None
    data_dir: Optional[str] = None
    steps: Optional[int] = None
    sampler: Optional[str] = None
    seed: Optional[int] = None
    baselines: List[str] = field(default_factory=lambda: list(BASELINE_NAMES))
    rate_factors: List[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])
    anchor: Optional[str] = None
    limit: Optional[int] = None
    save_recon: bool = False
    device: Optional[str] = None
    fid: bool = True
    download: bool = True
    progress: bool = True
    rates: Optional[List[float]] = None   # rate points of variable-rate models (default: their trained levels)
    seeds: Optional[int] = None     # decode seeds per image of a sampling codec (default: :func:`default_seeds`)
    sheets: int = 24                # side-by-side sheets of the first N images (0: none)

    def n_seeds(self) -> int:
        """Decode seeds per image: ``seeds``, else 3 on ``samples`` (the main job) and 1 elsewhere."""
        return self.seeds if self.seeds is not None else default_seeds(self.dataset)

    def out_dir(self, tag: str) -> Path:
        """``--out``, else ``eval_out/<dataset>_<model names>-<tag>`` (``tag``: the models' fingerprint)."""
        if self.out:
            return Path(self.out)
        ds = self.dataset.replace("folder:", "folder_").replace("/", "_").strip("_")
        model = "+".join(Path(m).name for m in self.models)
        return Path("eval_out") / f"{ds}_{model}-{tag}"


def default_seeds(dataset: str) -> int:
    """3 decode seeds on the main job's photos, 1 on the paper's datasets (their protocol decodes once)."""
    return 3 if dataset == "samples" else 1


@dataclass
class OurModel:
    """A loaded codec, how its rows are labelled, and the decode settings they are made with."""

    codec: Any
    point: str            # CSV `point`: model name plus any non-default decode override
    setting: str          # CSV `setting`: the decode settings actually used
    label: str            # legend label (says "untrained" when it is)
    trained: bool
    source: str
    sampler: str = "ddpm"
    steps: int = 50
    seed: Optional[int] = 231   # base seed: image i is decoded with seed + i (None: the decode draws no noise)
    rate: Optional[float] = None   # rate parameter q of a variable-rate model's point

    def fingerprint(self) -> str:
        return self.codec.fingerprint()


def _load_models(cfg: EvalConfig, device: str) -> List[OurModel]:
    out = []
    for spec in cfg.models:
        codec, name, source = resolve_model(spec)
        codec = codec.to(device).eval()
        trained = bool(codec.is_trained)
        label = f"{OURS} {codec.config.name}" + ("" if trained else f" ({UNTRAINED_NOTE})")
        if pretrained_folder(spec) is not None:
            label = f"{OURS} {spec} ({SHIPPED_NOTES.get(spec, DEMO_NOTE)})"
        if not hasattr(codec, "fast_decoder"):        # HiFiC / refine: no sampler; steps and seed if they sample
            out.append(_other_family_model(cfg, codec, name, source, label))
            continue
        s = codec.resolve_settings(None, cfg.steps, cfg.seed, cfg.sampler)   # refused here, before any coding
        overrides = [f"{k}={v}" for k, v in (("steps", cfg.steps), ("sampler", cfg.sampler), ("seed", cfg.seed))
                     if v is not None]
        point = ",".join([name, *overrides])
        seed = s.seed if codec.draws_noise(s.name) else None      # a deterministic decode needs one seed
        setting = f"sampler={s.name};steps={s.steps};" + (f"seed={seed}+index" if seed is not None else "deterministic")
        out += [OurModel(codec, p, setting, label, trained, source, s.name, s.steps, seed, q)
                for p, q in _rate_points(codec, point, cfg.rates)]
    return out


def _other_family_model(cfg: EvalConfig, codec: Any, name: str, source: str, label: str) -> OurModel:
    defaults = codec.decode_defaults()
    if cfg.sampler is not None or (not defaults and (cfg.steps is not None or cfg.seed is not None)):
        raise ValueError(f"--sampler/--steps/--seed do not apply to {name}: a {codec.family} decoder takes "
                         f"{'steps and a seed only' if defaults else 'no settings'}")
    s = codec.resolve_settings(None, cfg.steps, cfg.seed)
    overrides = [f"{k}={v}" for k, v in (("steps", cfg.steps), ("seed", cfg.seed)) if v is not None]
    setting = f"steps={s['steps']};seed={s['seed']}+index" if s else "deterministic"
    return OurModel(codec, ",".join([name, *overrides]), setting, label, bool(codec.is_trained), source,
                    None, s.get("steps"), s.get("seed"))


def _rate_points(codec: Any, point: str, rates: Optional[List[float]]) -> List[Tuple[str, Optional[float]]]:
    """``(point, q)`` per requested rate of a variable-rate model (default: its trained levels, the q of
    its gain vectors, e.g. 0,1,2,3,4); one ``(point, None)`` for a fixed-rate model."""
    from ..lfgcm.variable_rate import check_rate

    if codec.rate_range is None:
        return [(point, None)]
    if rates is None:
        rates = codec.lfgcm.rate_gains.levels()
    qs = [check_rate(q, codec.config.lfgcm.rate) for q in rates]     # refuse a bad q before any work
    return [(f"{point},rate={q:g}", q) for q in qs]


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    """(3,H,W) float in [0,1] → uint8 (H,W,3), rounded as when saved to PNG."""
    return (x.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy())


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.=," else "_" for c in name)


def _series_key(model, models) -> str:
    """The rate–distortion series a model's points belong to: ours, or ``ours (family)`` for every family after the
    first one evaluated, so that a curve (and a BD-rate on it) never runs through two families' points."""
    first = models[0].codec.family
    family = model.codec.family
    return OURS if family == first else f"{OURS} ({family})"


def _is_ours(series_key: str) -> bool:
    return series_key == OURS or series_key.startswith(OURS + " (")


def _split_by_family(series: Dict[str, List], models) -> Dict[str, List]:
    """``series`` with our points split into one series per codec family (:func:`_series_key`)."""
    if OURS not in series or len({m.codec.family for m in models}) < 2:
        return series
    key_of = {m.point: _series_key(m, models) for m in models}
    out = {k: v for k, v in series.items() if k != OURS}
    for point in series[OURS]:
        out.setdefault(key_of[point["point"]], []).append(point)
    return out


class Runner:
    """One evaluation run; :meth:`run` returns the summary dict (also written to ``summary.json``)."""

    def __init__(self, cfg: EvalConfig, log=print) -> None:
        self.cfg = cfg
        self.log = log
        self.out = Path(cfg.out) if cfg.out else Path()   # the default is named once the models are loaded
        self.device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.notes: List[str] = []
        # Time per codec spent in this call (search, coding, metrics): wall and process CPU seconds.
        self.seconds: Dict[str, Dict[str, float]] = {}
        self.fid_skipped: Optional[str] = None
        self._inception: Optional[fidmod.InceptionFeatures] = None
        self.work_done = 0          # rows computed in this call (0 on a fully resumed rerun)
        self._recons: Dict[Tuple[str, str, str], np.ndarray] = {}    # this image's reconstructions (sheet)
        self._wanted: set = set()   # row keys of this run (its images, points and seeds)
        self.sheets: List[Path] = []
        self.semantic: Optional[SemanticFigures] = None    # the semantic family's figures (its models only)

    # -- pieces ----------------------------------------------------------------------------
    @property
    def _bar_on(self) -> bool:
        """A progress bar only on a terminal; written to a file, progress is plain periodic lines."""
        return self.cfg.progress and sys.stderr.isatty()

    def _say(self, line: str) -> None:
        """A one-line message, printed above the progress bar (never into it)."""
        if self._bar_on:
            from tqdm import tqdm

            tqdm.write(line, file=sys.stdout)
        else:
            self.log(line)

    def _features(self, key: Tuple[str, str], image: str, img: np.ndarray) -> None:
        """Cache the Inception features of the image's FID/256 patches (when weights exist)."""
        if not self.cfg.fid or self.fid_skipped:
            return
        path = self.out / "features" / _safe(key[0]) / _safe(key[1]) / f"{_safe(image)}.npy"
        if path.is_file():
            return
        if not self._ensure_inception():
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, self._inception(fidmod.extract_patches(img)))

    def _ensure_inception(self) -> bool:
        """Build the Inception extractor once; on failure record (and say) the one skip line."""
        if self._inception is None and not self.fid_skipped:
            try:
                self._inception = fidmod.InceptionFeatures(self.device)
            except (WeightsUnavailable, ImportError) as err:
                self.fid_skipped = f"FID/KID skipped: {err}"
                self._say(self.fid_skipped)
        return self._inception is not None

    def _save_recon(self, codec: str, point: str, image: str, rec: np.ndarray) -> None:
        self._recons[(codec, point, image)] = rec          # for the image's sheet
        if self.cfg.save_recon:
            p = self.out / "recon" / _safe(codec) / _safe(point) / f"{_safe(image)}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rec).save(p)

    @property
    def csv_path(self) -> Path:
        return self.out / "results.csv"

    def _row(self, ds: Dataset, image: str, codec: str, point: str, setting: str, ref: np.ndarray,
             n_bytes: int, target: Optional[float], metrics: Dict, enc_s: float, dec_s: float,
             official: Optional[float] = None, seed: Optional[int] = None, tiling: str = "") -> Dict:
        h, w = ref.shape[:2]
        return {"dataset": ds.name, "image": image, "codec": codec, "point": point, "setting": setting,
                "H": h, "W": w, "bytes": n_bytes, "bpp": bpp(n_bytes, h, w), "bpp_padded": bpp_padded(n_bytes, h, w),
                "bpp_official": official, "target_bpp": target, **metrics, "enc_s": round(enc_s, 4),
                "dec_s": round(dec_s, 4), "seed": seed, "tiling": tiling}

    def _stream_path(self, models: Sequence[OurModel], m: OurModel, image: str) -> Path:
        sub = "" if len(models) == 1 else f"{_safe(m.point)}/"
        return self.out / "bitstreams" / f"{sub}{_safe(image)}.deic"

    def _run_ours(self, ds, models, m: OurModel, item, ref: np.ndarray, suite: MetricSuite,
                  seeds: Sequence[Optional[int]], todo: Sequence[Optional[int]]) -> List[Dict]:
        """Compress once (the stream stores ``seeds[0]`` and the decode settings), write the file, decode it
        with each seed in ``todo``; one row per decoded seed."""
        image = item.name
        x = torch.from_numpy(ref).permute(2, 0, 1).float().div(255.0).to(self.device)
        h, w = ref.shape[:2]
        # The run decodes only the streams it wrote, so --steps beyond a decoder's default limit (decode_cost) is
        # the user's choice, not a stream to distrust.
        kw: Dict[str, Any] = {"seed": seeds[0], "steps": m.steps, "sampler": m.sampler, "max_steps": m.steps}
        if m.rate is not None:
            kw["rate"] = m.rate
        if self.semantic is not None and m.codec.family == "semantic":
            kw["prompt"] = self.semantic.prompt(ref)
        t0 = time.perf_counter()
        bits = m.codec.compress(x, **kw)
        enc_s = time.perf_counter() - t0
        path = self._stream_path(models, m, image)
        n_bytes = write_and_measure(path, bits)
        data = path.read_bytes()                 # decode what is on disk, not the in-memory copy
        official = bpp_official(*official_string_sizes(m.codec, data), h, w) if hasattr(m.codec, "lfgcm") else None
        rows = []
        for seed in todo:
            rec, dec_s, tiling = self._decode_ours(m, image, data, seed, h, w)
            if seed == seeds[0]:                 # the stream's own reconstruction: kept, sheet, FID features
                self._save_recon(OURS, m.point, image, rec)
                self._features((OURS, m.point), image, rec)
                if m.codec.family == "semantic":
                    self.semantic.record(m.point, image, m.codec.inspect(data), ref, rec,
                                         original_bytes(ref, item.path, ds.preprocessing == NATIVE))
            rows.append(self._row(ds, image, OURS, m.point, m.setting, ref, n_bytes, None, suite(ref, rec, image),
                                  enc_s, dec_s, official=official, seed=seed, tiling=tiling))
        return rows

    def _decode_ours(self, m: OurModel, image: str, data: bytes, seed: Optional[int], h: int,
                     w: int) -> Tuple[np.ndarray, float, str]:
        """Decode with ``seed`` (tiled, and said so, when it does not fit untiled) → (uint8, seconds, tiling)."""
        tiling = protocol.tiling_record(m.codec, h, w)
        def decode():
            t0 = time.perf_counter()
            x_hat = m.codec.decompress(data, steps=m.steps, sampler=m.sampler, seed=seed, max_steps=m.steps)
            return x_hat, time.perf_counter() - t0
        try:
            x_hat, dec_s = decode()
        except torch.OutOfMemoryError:
            if tiling != "none":
                raise
            torch.cuda.empty_cache()
            with protocol.forced_tiling(m.codec):        # untiled does not fit: tile, and say so
                tiling = protocol.tiling_record(m.codec, h, w) + " (out of memory untiled)"
                x_hat, dec_s = decode()
            self.notes.append(f"{OURS} {m.point} {image}: decoded tiled ({tiling}) because it did not fit untiled")
        return _to_uint8(x_hat), dec_s, tiling

    def _baseline_path(self, b: Baseline, image: str, point: str) -> Path:
        return self.out / "bitstreams" / b.name.replace(":", "_") / f"{_safe(image)}@{_safe(point)}.{b.ext}"

    def _run_baseline(self, ds, b: Baseline, point: str, image: str, ref: np.ndarray, target: float,
                      suite: MetricSuite) -> Dict:
        found = quality_search(b, ref, target)
        enc_s = found.enc_s                     # the chosen level's encode, not the whole search
        path = self._baseline_path(b, image, point)
        n_bytes = write_and_measure(path, found.data)
        t0 = time.perf_counter()
        rec = b.decode(path.read_bytes(), ref.shape[:2])
        dec_s = time.perf_counter() - t0
        self._save_recon(b.name, point, image, rec)
        self._features((b.name, point), image, rec)
        setting = b.setting(found.level) + (" (floor)" if found.floor else " (ceiling)" if found.ceiling else "")
        return self._row(ds, image, b.name, point, setting, ref, n_bytes, target, suite(ref, rec, image),
                         enc_s, dec_s)

    # -- FID / KID -------------------------------------------------------------------------
    def _fid_kid(self, ds: Dataset, groups: Sequence[Tuple[str, str]]) -> Dict[Tuple[str, str], Dict]:
        out: Dict[Tuple[str, str], Dict] = {}
        if not self.cfg.fid or self.fid_skipped or not (self.out / "features").is_dir():
            return out
        ref_dir = self.out / "features" / "reference" / "reference"
        for key in groups:
            d = self.out / "features" / _safe(key[0]) / _safe(key[1])
            names = [im.name for im in ds.images
                     if (d / f"{_safe(im.name)}.npy").is_file() and (ref_dir / f"{_safe(im.name)}.npy").is_file()]
            if not names:
                continue
            a = np.concatenate([np.load(ref_dir / f"{_safe(n)}.npy") for n in names])
            b = np.concatenate([np.load(d / f"{_safe(n)}.npy") for n in names])
            res = fidmod.fid_kid(a, b, seed=self.cfg.seed or 0)
            res["n_images"] = len(names)
            out[key] = res
        return out

    # -- the run ---------------------------------------------------------------------------
    def _claim_output(self, ds: Dataset, models: Sequence[OurModel]) -> None:
        """Name the output folder by the models' fingerprint (default) and refuse one made by others."""
        if not self.cfg.out:
            self.out = self.cfg.out_dir(protocol.folder_tag([m.fingerprint() for m in models]))
        if protocol.runs_untiled(ds.name):
            for m in models:
                protocol.run_untiled(m.codec)
        identity = {f"{ds.name}/{m.point}": protocol.point_identity(
            m.fingerprint(), m.codec.config.name, m.trained, m.source, m.sampler, m.steps, m.seed,
            protocol.precision(m.codec), self.device, protocol.tiling_policy(m.codec)) for m in models}
        protocol.claim_folder(self.out, identity, has_rows=bool(read_rows(self.csv_path)))

    def run(self) -> Dict:
        from tqdm import tqdm

        cfg = self.cfg
        ds = load_dataset(cfg.dataset, cfg.data_dir, cfg.limit, download=cfg.download)
        models = _load_models(cfg, self.device)
        if cfg.rates and not any(m.rate is not None for m in models):
            raise ValueError("--rates needs a variable-rate model (e.g. tiny_vr); none of --model is one")
        if cfg.n_seeds() < 1:
            raise ValueError(f"--seeds must be at least 1, got {cfg.n_seeds()}")
        self._claim_output(ds, models)
        if any(m.codec.family == "semantic" for m in models):
            self.semantic = SemanticFigures(self.out, self.device)
        baselines, base_skipped = available_baselines(cfg.baselines, self.device)
        for line in base_skipped.values():
            self.log(line)
        suite = MetricSuite(self.device)
        done = existing_keys(r for r in read_rows(self.csv_path) if r["dataset"] == ds.name)
        reported: set = set()
        started = last_line = time.perf_counter()

        with CsvWriter(self.csv_path) as writer:
            bar = tqdm(ds.images, desc=f"eval {ds.name}", unit="img", disable=not self._bar_on, file=sys.stderr)
            for index, item in enumerate(bar):
                ref: Optional[np.ndarray] = None

                def reference() -> np.ndarray:
                    nonlocal ref
                    if ref is None:
                        ref = item.load()
                        self._features(("reference", "reference"), item.name, ref)
                    return ref

                def compute(codec: str, make) -> List[Dict]:
                    t0, c0 = time.perf_counter(), time.process_time()
                    made = make()
                    rows = [writer.write(r) for r in (made if isinstance(made, list) else [made])]
                    spent = self.seconds.setdefault(codec, {"wall_s": 0.0, "cpu_s": 0.0})
                    spent["wall_s"] += time.perf_counter() - t0
                    spent["cpu_s"] += time.process_time() - c0
                    self.work_done += len(rows)
                    for r in rows:
                        done[row_key(r)] = r
                    return rows
                for m in models:
                    seeds = [None] if m.seed is None else protocol.decode_seeds(m.seed, index, cfg.n_seeds())
                    keys = [(ds.name, item.name, OURS, m.point, str(sd)) for sd in seeds]
                    self._wanted.update(keys)
                    todo = [sd for sd, key in zip(seeds, keys) if key not in done]
                    if todo:
                        bar.set_postfix_str(f"{item.name}: {OURS} {m.point}")
                        compute(OURS, lambda: self._run_ours(ds, models, m, item, reference(), suite, seeds, todo))
                    for b in baselines:
                        for f in cfg.rate_factors:
                            point = _baseline_point(m.point, f)
                            bkey = (ds.name, item.name, b.name, point, "None")
                            self._wanted.add(bkey)
                            if bkey in done:
                                continue
                            bar.set_postfix_str(f"{item.name}: {b.name} @ {point}")
                            target = f * done[keys[0]]["bpp"]
                            compute(b.name, lambda: self._run_baseline(ds, b, point, item.name, reference(), target,
                                                                       suite))
                for name, line in suite.skipped.items():      # say each skip once, as soon as it happens
                    if name not in reported:
                        reported.add(name)
                        self._say(line)
                if index < cfg.sheets:
                    self._sheet(ds, models, baselines, index, item.name, reference, done)
                self._recons.clear()
                now = time.perf_counter()
                if cfg.progress and not self._bar_on and (now - last_line >= PROGRESS_EVERY_S or index == 0
                                                          or index + 1 == len(ds.images)):
                    last_line = now
                    self.log(f"eval {ds.name}: {index + 1}/{len(ds.images)} images, {now - started:.0f} s")
            bar.close()
        return self._finish(ds, models, baselines, base_skipped, suite)

    # -- sheets ----------------------------------------------------------------------------
    def _sheet(self, ds, models: Sequence[OurModel], baselines: Sequence[Baseline], index: int, image: str,
               reference, done: Dict) -> None:
        """The image's side-by-side sheet: original, each of our points (the stream's own decode seed) and
        the JPEG / WebP / AVIF file closest in bytes to our highest-rate point, captioned from their rows."""
        ref = reference()
        labels = point_labels([{"codec": OURS, "point": m.point} for m in models])
        tiles = [Tile(ref, "original", [f"{size_text(ref.shape[0], ref.shape[1])} pixels"])]
        top: Optional[Dict] = None
        for m in models:
            seed = None if m.seed is None else protocol.decode_seeds(m.seed, index, 1)[0]
            row = done[(ds.name, image, OURS, m.point, str(seed))]
            rec = self._recons.get((OURS, m.point, image))
            if rec is None:             # a resumed row: decode its stream again (same seed, same pixels)
                data = self._stream_path(models, m, image).read_bytes()
                rec = self._decode_ours(m, image, data, seed, row["H"], row["W"])[0]
            title = f"{OURS} {labels[m.point]}" + ("" if seed is None else f", seed {seed}")
            tiles.append(Tile(rec, title, caption(row)))
            if top is None or row["bytes"] > top["bytes"]:
                top = row
        matched = labels.get(top["point"], top["point"]) if top else ""
        shown = []
        for b in baselines:
            if b.name not in SHEET_BASELINES or top is None:
                continue
            rows = [done[k] for k in done if k[:3] == (ds.name, image, b.name) and k in self._wanted]
            row = closest_in_bytes(rows, top["bytes"])
            if row is None:
                continue
            rec = self._recons.get((b.name, row["point"], image))
            if rec is None:
                rec = b.decode(self._baseline_path(b, image, row["point"]).read_bytes(), ref.shape[:2])
            suffix = " (its lowest quality)" if "floor" in row["setting"] else ""
            tiles.append(Tile(rec, f"{b.name} {row['setting'].split(' (')[0]}{suffix}", caption(row)))
            shown.append(b.name)
        header = f"{ds.name} / {image}: original, {OURS} at each rate point"
        if shown:
            header += f"; {' / '.join(shown)}: the file closest in bytes to {OURS} {matched} ({top['bytes']:,} bytes)"
        path = self.out / "sheets" / f"{_safe(image)}.png"
        write_sheet(tiles, path, header)
        self.sheets.append(path)

    def _finish(self, ds, models, baselines, base_skipped, suite) -> Dict:
        cfg = self.cfg
        names = {im.name for im in ds.images}
        # Only this run's codecs, points and seeds: rows of baselines, points or seeds asked for earlier stay
        # in the CSV but are not summarised with these.
        all_rows = [r for r in read_rows(self.csv_path) if r["dataset"] == ds.name]
        rows = [r for r in all_rows if row_key(r) in self._wanted]
        means = group_means(rows)
        # On a resumed run nothing may have touched the learned metrics: find out (and record) why
        # their columns are empty, so the summary always says what was skipped.
        for name in ("lpips", "dists", "niqe"):
            if name in suite.metrics and name not in suite.skipped and any(r[name] is None for r in rows):
                if suite.load(name) is None:
                    self.log(suite.skipped[name])
        if cfg.fid and not (self.out / "features").is_dir():
            self._ensure_inception()
        fk = self._fid_kid(ds, [(m["codec"], m["point"]) for m in means])
        for m in means:
            res = fk.get((m["codec"], m["point"]), {})
            m.update({"fid": res.get("fid"), "kid": res.get("kid"), "n_patches": res.get("n_patches")})
        series = _split_by_family(series_by_codec(means), models)
        metrics = [c for c in (*IMAGE_METRICS, "fid", "kid") if any(m.get(c) is not None for m in means)]
        anchor = cfg.anchor or OURS            # every baseline against us: our own figure is defined
        bd = bd_table(series, anchor, metrics)

        skipped = dict(suite.skipped)
        if self.fid_skipped:
            skipped["fid"] = skipped["kid"] = self.fid_skipped
        elif not cfg.fid:
            skipped["fid"] = skipped["kid"] = "FID/KID skipped: disabled (--no-fid)"
        notes = list(suite.notes.values()) + self.notes
        if fk and ds.name not in ("tecnick", "clic2020"):
            notes.append("FID/KID on few patches are unreliable; the protocol reports them only on Tecnick/CLIC2020")
        for m in means:
            if m["n_floor"]:
                notes.append(f"{m['codec']} @ {m['point']}: {m['n_floor']}/{m['n']} images at the codec's lowest "
                             f"quality (floor) — it cannot reach the target rate there; achieved bpp reported")
        others = sorted({r["image"] for r in all_rows} - names)
        if others:
            notes.append(f"results.csv also holds {len(others)} image(s) of earlier runs not in this one's "
                         f"{len(names)}; they are not in these means")
        ours_rows = [r for r in rows if r["codec"] == OURS]
        tiled = {f"{r['image']} ({r['point']})": r["tiling"] for r in ours_rows if r["tiling"] != "none"}
        untrained = [m.label for m in models if not m.trained]
        ref_ds = reference_dataset(ds.name)
        labels = {**{key: " + ".join(dict.fromkeys(m.label for m in models if _series_key(m, models) == key))
                     for key in dict.fromkeys(_series_key(m, models) for m in models)},
                  **{b.name: b.label for b in baselines}}
        plots = self._plots(ds, models, series, metrics, ref_ds, labels)
        compressai_files = self._compressai_json(ds, models, baselines, series, labels)

        summary = {
            "dataset": ds.name, "preprocessing": ds.preprocessing, "source": ds.source, "n_images": len(ds.images),
            "models": [{"point": m.point, "label": m.label, "config": m.codec.config.name, "source": m.source,
                        "fingerprint": m.fingerprint(), "is_trained": m.trained, "setting": m.setting,
                        "sampler": m.sampler, "steps": m.steps, "seed": m.seed, "seed_policy": protocol.SEED_POLICY,
                        "n_seeds": 1 if m.seed is None else cfg.n_seeds(),
                        "precision": protocol.precision(m.codec), "tiling_policy": protocol.tiling_policy(m.codec)}
                       for m in models],
            "untrained": bool(untrained),
            "device": self.device, "seed": models[0].seed, "seed_policy": protocol.SEED_POLICY,
            "steps": models[0].steps, "sampler": models[0].sampler, "precision": protocol.precision(models[0].codec),
            "tiling": {"policy": ("untiled (paper dataset), unless out of memory" if protocol.runs_untiled(ds.name)
                                  else protocol.tiling_policy(models[0].codec)),
                       "n_tiled": len(tiled), "tiled": tiled},
            "means": means, "seed_spread_definition": SPREAD_DEFINITION, "metrics_skipped": skipped, "baselines_skipped": base_skipped, "notes": notes,
            "baselines": {b.name: b.label for b in baselines},
            "seconds_this_run": {k: {n: round(t, 2) for n, t in v.items()} for k, v in self.seconds.items()},
            "bd": {"anchor": anchor, "method": "pchip on ln(bpp), over the quality range both series reach "
                                                "(overlap, in the metric's units)", "results": bd},
            "published_reference": {"dataset": ref_ds, "same_dataset": ref_ds == ds.name},
            "versions": protocol.versions(), "config": asdict(cfg),
            "files": {"csv": str(self.csv_path), "plots": [str(p) for p in plots],
                      "sheets": [str(p) for p in self.sheets],
                      "compressai": [str(p) for p in compressai_files],
                      "bitstreams": str(self.out / "bitstreams"), "run": str(self.out / protocol.RUN_FILE)},
            "bpp_definition": BPP_DEFINITION,
        }
        if self.semantic is not None:
            from ..codecs.semantic import NO_TEXT_NOTE

            ours = [m for m in models if m.codec.family == "semantic"]
            tiny = [m.point for m in ours if m.codec.config.decoder == "tiny"]
            summary["semantic"] = self.semantic.summary([m.point for m in ours], [im.name for im in ds.images],
                                                        [f"{', '.join(tiny)}: {NO_TEXT_NOTE}"] if tiny else [])
            if self.semantic.vgg_skipped:
                skipped["vgg_similarity"] = self.semantic.vgg_skipped
                self.log(self.semantic.vgg_skipped)
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2, default=_json_default,
                                                          allow_nan=True))
        self.log(f"\n{ds.name}: {len(ds.images)} images -> {self.out}")
        if untrained:
            self.log(f"NOTE: {', '.join(untrained)} — random weights; numbers check the pipeline, not the method")
        if tiled:
            self.log(f"tiled: {len(tiled)} image(s) ({', '.join(f'{k}: {v}' for k, v in tiled.items())})")
        self.log(format_table(means, extra=("fid", "kid")))
        self.log(format_bd(bd))
        if self.seconds:
            self.log("time this run (wall / CPU): " + ", ".join(f"{k} {v['wall_s']:.1f} / {v['cpu_s']:.1f} s"
                                                               for k, v in self.seconds.items()))
        self.log(f"all rows: {self.csv_path}; means, seed spread, BD-rates: {self.out / 'summary.json'}")
        if plots:
            self.log("plots:  " + "  ".join(str(p) for p in plots if p.suffix == ".png"))
        if self.sheets:
            self.log("sheets: " + "  ".join(str(p) for p in self.sheets))
        return summary

    def _compressai_json(self, ds, models, baselines, series, labels) -> List[Path]:
        """One CompressAI-format file per codec under ``compressai/``."""
        meta = {"dataset": {"name": ds.name, "n_images": len(ds.images), "preprocessing": ds.preprocessing},
                "protocol": {"rate": BPP_DEFINITION, "seed_policy": protocol.SEED_POLICY,
                             "metrics": "per image, then averaged: PSNR on 8-bit RGB; MS-SSIM on RGB (5 scales); "
                                        "LPIPS-Alex; DISTS; FID/KID on 256x256 patches (HiFiC's FID/256)",
                             "baselines": "quality-searched per image to factor x our bpp (factors "
                                          f"{', '.join(f'{f:g}' for f in self.cfg.rate_factors)})"},
                "model": [{"point": m.point, "label": m.label, "fingerprint": m.fingerprint(), "trained": m.trained,
                           "source": m.source, "setting": m.setting} for m in models],
                "device": self.device, "generated_by": f"diffeic eval.py {protocol.versions()['diffeic']}"}
        docs = {}
        for codec, pts in series.items():
            if _is_ours(codec):
                desc = "DiffEIC, real bitstreams (" + "; ".join(m.setting for m in models
                                                             if _series_key(m, models) == codec) + ")"
            else:
                desc = f"{labels.get(codec, codec)}, quality-searched to DiffEIC's rates"
            docs[_safe(codec)] = codec_document(labels.get(codec, codec), desc, pts, meta)
        return write_documents(self.out / COMPRESSAI_FOLDER, docs)

    def _plots(self, ds, models, series, metrics, ref_ds, labels) -> List[Path]:
        curves = []
        for codec, pts in series.items():
            ours = _is_ours(codec)
            label = labels.get(codec, codec)
            if any(p.get("n_floor") for p in pts):
                label += " (some at its lowest quality)"
            curves.append(Curve(label, [p["bpp"] for p in pts], {k: [p.get(k) for p in pts] for k in metrics},
                                ours=ours))
        published = published_series(ref_ds)
        untrained = any(not m.trained for m in models)
        title = f"{ds.name}: " + " + ".join(v for k, v in labels.items() if _is_ours(k))
        if ref_ds != ds.name:
            title += f"\npublished points are on {ref_ds} (other images: orientation only)"
        elif untrained:
            title += "\n(untrained model: not comparable to the published points)"
        paths: List[Path] = []
        for metric in metrics:
            paths += rd_plot(metric, curves, published, title, self.out / "plots" / f"rd_{metric}",
                             published_label=f"published, {ref_ds}")
        return paths


BPP_DEFINITION = ("bpp = 8 * size of the written file / (H * W of the original image); bpp_padded: the same file "
                  "over H, W rounded up to multiples of 64; bpp_official (DiffEIC only): the official file format "
                  "(20-byte header + separate y and z strings) over the padded pixels, as the published tables "
                  "count it")


def _baseline_point(point: str, factor: float) -> str:
    """A baseline's point: the point it was matched to, with the rate factor unless it is 1."""
    return point if factor == 1 else f"{point}x{factor:g}"


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def run_evaluation(cfg: EvalConfig, log=print) -> Dict:
    """Run an evaluation (see :class:`EvalConfig`); returns the summary dict."""
    return Runner(cfg, log).run()
