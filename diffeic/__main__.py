"""``python -m diffeic``: the ``diffeic`` command line (see :mod:`diffeic.cli`)."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
