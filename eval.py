#!/usr/bin/env python
"""Evaluate DiffEIC on an image set (see `python eval.py --help`); the work is in diffeic.evaluation."""
import warnings

# compressai (imported by the codec) warns about torch.jit.script on every start; it is not ours to fix.
warnings.filterwarnings("ignore", message=".*torch.jit.script.*")

from diffeic.evaluation.cli import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
