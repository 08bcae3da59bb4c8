#!/usr/bin/env python
"""Evaluate DiffEIC on an image set (see `python eval.py --help`); the work is in diffeic.evaluation."""
from diffeic.evaluation.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
