"""compressai, imported for the whole package with one dependency warning filtered at that import.

compressai 1.2.8 imports ``torch_geometric``, whose import calls ``torch.jit.script``, which torch
deprecates with a ``FutureWarning`` on every start.  Nothing a diffeic user can act on, so exactly
that message and category are ignored, only while compressai is imported (not globally: the same
warning raised by anyone's code later is still shown).  Every diffeic module that uses compressai
imports this module first (``tests/test_import_graph.py`` checks that ``import`` prints nothing).
"""
import warnings

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
    import compressai  # noqa: F401

__all__ = ["compressai"]
