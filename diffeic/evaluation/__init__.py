"""Evaluation of DiffEIC and baselines: datasets, metrics, rate, BD-rate, plots, runs.

Modules, one job each:
``datasets`` (Kodak/Tecnick/CLIC2020/samples/folder, preprocessing, cache), ``metrics`` (PSNR,
MS-SSIM, LPIPS, DISTS, NIQE), ``fid`` (FID/KID on 256² patches), ``rate`` (bpp from files, the
official file size), ``bdrate`` (Bjøntegaard), ``baselines`` (JPEG/WebP/AVIF, HEVC/JPEG XL/JPEG 2000
from PyPI, BPG/VTM/CompressAI, quality search), ``published`` (reference points), ``plots``,
``schema`` (the CSV), ``compressai_format`` (CompressAI-style JSON), ``protocol`` (seeds, tiling,
run identity), ``models`` (which model), ``summary``, ``runner``, ``cli``.

    from diffeic.evaluation import EvalConfig, run_evaluation
    summary = run_evaluation(EvalConfig(dataset="samples", models=["tiny"], out="eval_out/demo"))
"""
__all__ = ["EvalConfig", "run_evaluation"]


def __getattr__(name: str):
    # Lazy: `eval.py --help` should not pay for importing torch and the codec.
    if name in __all__:
        from . import runner

        return getattr(runner, name)
    raise AttributeError(name)
