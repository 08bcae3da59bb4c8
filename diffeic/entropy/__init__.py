"""The entropy-coding layer every codec family codes with (compressai's ``entropy_models`` / ``latent_codecs``
split, on compressai's entropy models and rANS coder).

``exact.py``          the exact integer arithmetic of the networks that choose CDFs (same σ, μ on any device)
``rans.py``           the rANS coder's CDF tables as it takes them, and every check before it sees data
``latent_coder.py``   :class:`HyperpriorCoder`: z then y in one rANS string, and the coding tables' lifecycle
``hyperprior.py``     :class:`MeanScaleHyperprior`, the mean-scale latent coder of the HiFiC and refine families

A model's own context model (the LFGCM's slices x checkerboard) stays in its package (:mod:`diffeic.lfgcm`).
"""
