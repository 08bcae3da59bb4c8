"""The evaluation run: codec(s) and baselines over a dataset → CSV, JSON, bitstreams, plots.

Order of work per image: each of our models (compress → write the bitstream → bpp from the file →
decompress → uint8 → metrics), then every baseline quality-searched to ``factor ×`` our bpp on that
image.  Rows already in ``results.csv`` are not redone (resume); FID/KID (when Inception weights are
available) are computed at the end from per-image patch features cached under ``features/``.
"""
from __future__ import annotations

import json
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image

from . import fid as fidmod
from .baselines import Baseline, available_baselines, quality_search
from .datasets import Dataset, load_dataset
from .metrics import IMAGE_METRICS, MetricSuite
from .plots import Curve, rd_plot
from .published import published_series, reference_dataset
from .rate import bpp, bpp_padded, write_and_measure
from .schema import CsvWriter, existing_keys, read_rows
from .summary import bd_table, format_bd, format_table, group_means, series_by_codec
from .weights import WeightsUnavailable

OURS = "diffeic"
UNTRAINED_NOTE = "untrained — pipeline check"


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
    baselines: List[str] = field(default_factory=lambda: ["jpeg", "webp", "avif", "bpg", "vtm"])
    rate_factors: List[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])
    anchor: Optional[str] = None
    limit: Optional[int] = None
    save_recon: bool = False
    device: Optional[str] = None
    fid: bool = True
    download: bool = True
    progress: bool = True

    def out_dir(self) -> Path:
        if self.out:
            return Path(self.out)
        ds = self.dataset.replace("folder:", "folder_").replace("/", "_").strip("_")
        model = "+".join(Path(m).name for m in self.models)
        return Path("eval_out") / f"{ds}_{model}"


@dataclass
class OurModel:
    """A loaded codec and how its rows are labelled."""

    codec: Any
    point: str            # CSV `point`: model name plus any non-default decode override
    setting: str          # CSV `setting`: the decode settings actually used
    label: str            # legend label (says "untrained" when it is)
    trained: bool
    source: str


def _load_models(cfg: EvalConfig, device: str) -> List[OurModel]:
    from diffeic import DiffEICCodec
    from diffeic.pretrained import pretrained_folder

    out = []
    for spec in cfg.models:
        path = Path(spec)
        shipped = pretrained_folder(spec) if not path.is_dir() else None
        if path.is_dir() or shipped is not None:
            codec, source = DiffEICCodec.from_pretrained(spec), str(shipped or path)
            name = spec if shipped is not None else path.name
        else:
            codec, source = DiffEICCodec.from_config(spec), f"from_config({spec!r})"
            name = spec
        codec = codec.to(device).eval()
        # from_config is random init: treat it as untrained even if the attribute is missing.
        trained = bool(codec.is_trained)
        d = codec.config.sampler
        overrides = [f"{k}={v}" for k, v in (("steps", cfg.steps), ("sampler", cfg.sampler), ("seed", cfg.seed))
                     if v is not None]
        point = ",".join([name, *overrides])
        setting = (f"sampler={cfg.sampler or d.name};steps={cfg.steps or d.steps};"
                   f"seed={cfg.seed if cfg.seed is not None else d.seed}")
        label = f"{OURS} {codec.config.name}" + ("" if trained else f" ({UNTRAINED_NOTE})")
        out.append(OurModel(codec, point, setting, label, trained, source))
    return out


def _versions() -> Dict[str, str]:
    import importlib.metadata as md

    v = {"python": platform.python_version()}
    for pkg in ("diffeic", "torch", "torchvision", "numpy", "pillow", "lpips", "pytorch-msssim", "torch-fidelity",
                "dists-pytorch", "compressai", "scipy", "scikit-image", "pyiqa"):
        try:
            v[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            continue
    if "diffeic" not in v:
        import diffeic

        v["diffeic"] = diffeic.__version__
    return v


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    """(3,H,W) float in [0,1] → uint8 (H,W,3), rounded as when saved to PNG (protocol §4)."""
    return (x.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy())


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.=," else "_" for c in name)


class Runner:
    """One evaluation run; :meth:`run` returns the summary dict (also written to ``summary.json``)."""

    def __init__(self, cfg: EvalConfig, log=print) -> None:
        self.cfg = cfg
        self.log = log
        self.out = cfg.out_dir()
        self.device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.csv_path = self.out / "results.csv"
        self.notes: List[str] = []
        self.fid_skipped: Optional[str] = None
        self._inception: Optional[fidmod.InceptionFeatures] = None
        self.work_done = 0          # rows computed in this call (0 on a fully resumed rerun)

    # -- pieces ----------------------------------------------------------------------------
    def _say(self, line: str) -> None:
        """A one-line message that does not tear the progress bar."""
        if self.cfg.progress:
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
        if self.cfg.save_recon:
            p = self.out / "recon" / _safe(codec) / _safe(point) / f"{_safe(image)}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rec).save(p)

    def _row(self, ds: Dataset, image: str, codec: str, point: str, setting: str, ref: np.ndarray,
             n_bytes: int, target: Optional[float], metrics: Dict, enc_s: float, dec_s: float) -> Dict:
        h, w = ref.shape[:2]
        return {"dataset": ds.name, "image": image, "codec": codec, "point": point, "setting": setting,
                "H": h, "W": w, "bytes": n_bytes, "bpp": bpp(n_bytes, h, w), "bpp_padded": bpp_padded(n_bytes, h, w),
                "target_bpp": target, **metrics, "enc_s": round(enc_s, 4), "dec_s": round(dec_s, 4)}

    def _stream_path(self, models: Sequence[OurModel], m: OurModel, image: str) -> Path:
        sub = "" if len(models) == 1 else f"{_safe(m.point)}/"
        return self.out / "bitstreams" / f"{sub}{_safe(image)}.deic"

    def _run_ours(self, ds, models, m: OurModel, image: str, ref: np.ndarray, suite: MetricSuite) -> Dict:
        x = torch.from_numpy(ref).permute(2, 0, 1).float().div(255.0).to(self.device)
        t0 = time.perf_counter()
        bits = m.codec.compress(x)
        enc_s = time.perf_counter() - t0
        path = self._stream_path(models, m, image)
        n_bytes = write_and_measure(path, bits)
        data = path.read_bytes()                 # decode what is on disk, not the in-memory copy
        t0 = time.perf_counter()
        x_hat = m.codec.decompress(data, steps=self.cfg.steps, sampler=self.cfg.sampler, seed=self.cfg.seed)
        dec_s = time.perf_counter() - t0
        rec = _to_uint8(x_hat)
        self._save_recon(OURS, m.point, image, rec)
        self._features((OURS, m.point), image, rec)
        return self._row(ds, image, OURS, m.point, m.setting, ref, n_bytes, None, suite(ref, rec, image), enc_s, dec_s)

    def _run_baseline(self, ds, b: Baseline, point: str, image: str, ref: np.ndarray, target: float,
                      suite: MetricSuite) -> Dict:
        found = quality_search(b, ref, target)
        enc_s = found.enc_s                     # the chosen level's encode, not the whole search
        path = self.out / "bitstreams" / b.name.replace(":", "_") / f"{_safe(image)}@{_safe(point)}.{b.ext}"
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
    def run(self) -> Dict:
        from tqdm import tqdm

        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        ds = load_dataset(cfg.dataset, cfg.data_dir, cfg.limit, download=cfg.download)
        models = _load_models(cfg, self.device)
        baselines, base_skipped = available_baselines(cfg.baselines, self.device)
        for line in base_skipped.values():
            self.log(line)
        suite = MetricSuite(self.device)
        done = existing_keys(r for r in read_rows(self.csv_path) if r["dataset"] == ds.name)
        reported: set = set()

        with CsvWriter(self.csv_path) as writer:
            bar = tqdm(ds.images, desc=f"eval {ds.name}", unit="img", disable=not cfg.progress, file=sys.stderr)
            for item in bar:
                ref: Optional[np.ndarray] = None

                def reference() -> np.ndarray:
                    nonlocal ref
                    if ref is None:
                        ref = item.load()
                        self._features(("reference", "reference"), item.name, ref)
                    return ref
                for m in models:
                    key = (ds.name, item.name, OURS, m.point)
                    if key not in done:
                        bar.set_postfix_str(f"{item.name}: {OURS} {m.point}")
                        done[key] = writer.write(self._run_ours(ds, models, m, item.name, reference(), suite))
                        self.work_done += 1
                    for b in baselines:
                        for f in cfg.rate_factors:
                            point = m.point if f == 1 else f"{m.point}x{f:g}"
                            bkey = (ds.name, item.name, b.name, point)
                            if bkey in done:
                                continue
                            bar.set_postfix_str(f"{item.name}: {b.name} @ {point}")
                            target = f * done[key]["bpp"]
                            done[bkey] = writer.write(self._run_baseline(ds, b, point, item.name, reference(),
                                                                         target, suite))
                            self.work_done += 1
                for name, line in suite.skipped.items():      # say each skip once, as soon as it happens
                    if name not in reported:
                        reported.add(name)
                        self._say(line)
            bar.close()
        return self._finish(ds, models, baselines, base_skipped, suite, done)

    def _finish(self, ds, models, baselines, base_skipped, suite, done) -> Dict:
        cfg = self.cfg
        names = {im.name for im in ds.images}
        rows = [r for r in read_rows(self.csv_path) if r["dataset"] == ds.name and r["image"] in names]
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
        series = series_by_codec(means)
        metrics = [c for c in (*IMAGE_METRICS, "fid", "kid") if any(m.get(c) is not None for m in means)]
        anchor = cfg.anchor or (baselines[0].name if baselines else OURS)
        bd = bd_table(series, anchor, metrics)

        skipped = dict(suite.skipped)
        if self.fid_skipped:
            skipped["fid"] = skipped["kid"] = self.fid_skipped
        elif not cfg.fid:
            skipped["fid"] = skipped["kid"] = "FID/KID skipped: disabled (--no-fid)"
        notes = list(suite.notes.values())
        if fk and ds.name not in ("tecnick", "clic2020"):
            notes.append("FID/KID on few patches are unreliable; the protocol reports them only on Tecnick/CLIC2020")
        for m in means:
            if m["n_floor"]:
                notes.append(f"{m['codec']} @ {m['point']}: {m['n_floor']}/{m['n']} images at the codec's lowest "
                             f"quality (floor) — it cannot reach the target rate there; achieved bpp reported")
        untrained = [m.label for m in models if not m.trained]
        ref_ds = reference_dataset(ds.name)
        plots = self._plots(ds, models, series, metrics, ref_ds)

        summary = {
            "dataset": ds.name, "preprocessing": ds.preprocessing, "source": ds.source, "n_images": len(ds.images),
            "models": [{"point": m.point, "label": m.label, "config": m.codec.config.name, "source": m.source,
                        "is_trained": m.trained, "setting": m.setting} for m in models],
            "untrained": bool(untrained),
            "device": self.device, "seed": cfg.seed, "steps": cfg.steps, "sampler": cfg.sampler,
            "means": means, "metrics_skipped": skipped, "baselines_skipped": base_skipped, "notes": notes,
            "bd": {"anchor": anchor, "method": "pchip on ln(bpp)", "results": bd},
            "published_reference": {"dataset": ref_ds, "same_dataset": ref_ds == ds.name},
            "versions": _versions(), "config": asdict(cfg),
            "files": {"csv": str(self.csv_path), "plots": [str(p) for p in plots],
                      "bitstreams": str(self.out / "bitstreams")},
            "bpp_definition": "8 * size of the written file / (H * W of the original); bpp_padded uses H, W "
                              "rounded up to multiples of 64 (paper-compatible)",
        }
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2, default=_json_default,
                                                          allow_nan=True))
        self.log(f"\n{ds.name}: {len(ds.images)} images -> {self.out}")
        if untrained:
            self.log(f"NOTE: {', '.join(untrained)} — random weights; numbers check the pipeline, not the method")
        self.log(format_table(means, extra=("fid", "kid")))
        self.log(format_bd(bd))
        return summary

    def _plots(self, ds, models, series, metrics, ref_ds) -> List[Path]:
        curves = []
        for codec, pts in series.items():
            ours = codec == OURS
            label = (" + ".join(dict.fromkeys(m.label for m in models)) if ours else codec)
            if any(p.get("n_floor") for p in pts):
                label += " (some at its lowest quality)"
            curves.append(Curve(label, [p["bpp"] for p in pts], {k: [p.get(k) for p in pts] for k in metrics},
                                ours=ours))
        published = published_series(ref_ds)
        untrained = any(not m.trained for m in models)
        title = f"{ds.name}: {' + '.join(dict.fromkeys(m.label for m in models))}"
        if ref_ds != ds.name:
            title += f"\npublished points are on {ref_ds} (other images: orientation only)"
        elif untrained:
            title += "\n(untrained model: not comparable to the published points)"
        paths: List[Path] = []
        for metric in metrics:
            paths += rd_plot(metric, curves, published, title, self.out / "plots" / f"rd_{metric}",
                             published_label=f"published, {ref_ds}")
        return paths


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
