"""How much work a stream may ask a decoder for: the one decode-cost limit of every codec family.

A stream's header may ask for a number of sampling steps (up to :data:`~diffeic.bitstream.MAX_STEPS`) and
declares its image size; the decoding time is about steps × the pixels the sampling network runs at (DiffEIC:
the 1/8-resolution latent; the refinement codec: the image), that is steps × image pixels × a constant of the
model.  A server that decodes user streams must be able to bound that before any work starts, so every family
checks, right after reading the header and before entropy decoding:

* **steps** ≤ ``max_steps``, by default :data:`STEP_FACTOR` × the model's own default step count;
* **steps × image pixels** ≤ ``max_steps`` × ``max_pixels`` / :data:`STEP_FACTOR`: any image the codec accepts
  (``max_pixels``) decodes at the model's default steps, and ``max_steps`` steps are allowed up to a quarter of
  that size (larger images get proportionally fewer).

Either refusal is a :class:`~diffeic.bitstream.BitstreamError` naming what the stream asks for and the limit.
The caller raises the limit with ``decompress(..., max_steps=N)`` (DiffEIC: also ``DecodeOptions.max_steps``;
CLI: ``diffeic decompress --max-steps N``).  Steps the *caller* passes (``decompress(steps=...)``) are the
caller's choice and are not limited; nor are the model's defaults.  A decoder without sampling steps (HiFiC)
counts one step.
"""
from __future__ import annotations

from typing import Any, Optional

from .bitstream import MAX_STEPS, BitstreamError
from .config import check_int
from .sizes import size_text

#: Default ``max_steps``: this many times the model's own default step count.
STEP_FACTOR = 4


def resolve_max_steps(max_steps: Any, default_steps: int) -> int:
    """The step limit: the caller's ``max_steps`` (checked: an integer in 1..MAX_STEPS) or
    :data:`STEP_FACTOR` × ``default_steps``."""
    if max_steps is None:
        return min(STEP_FACTOR * default_steps, MAX_STEPS)
    return check_int("max_steps", max_steps, 1, MAX_STEPS)


def check_decode_cost(steps: int, height: int, width: int, max_pixels: int, default_steps: int,
                      max_steps: Any, model: str) -> None:
    """Refuse (:class:`BitstreamError`) a stream asking for ``steps`` steps on a ``height`` × ``width`` image when
    that exceeds the limits of the module docstring.

    ``max_pixels``: the largest image the codec accepts; ``default_steps``: the model's default; ``max_steps``: the
    caller's limit or None; ``model`` names the model in the message.
    """
    limit = resolve_max_steps(max_steps, default_steps)
    how = ("" if max_steps is not None else
           f" ({STEP_FACTOR} times {model}'s default of {default_steps})")
    if steps > limit:
        raise BitstreamError(f"stream asks for {steps} decoding steps, more than this decoder's limit of {limit}"
                             f"{how}; pass max_steps={steps} to decompress (CLI: --max-steps {steps}) if you "
                             f"trust it")
    work, work_limit = steps * height * width, limit * max_pixels // STEP_FACTOR
    if work > work_limit:
        raise BitstreamError(f"stream asks for {steps} decoding steps on a {size_text(height, width)} image ({work} "
                             f"step-pixels), more than this decoder's limit of {work_limit} (max_steps {limit} x "
                             f"max_pixels {max_pixels} / {STEP_FACTOR}); raise max_steps or max_pixels if you "
                             f"trust it")


def check_steps_to_write(steps: Optional[int], default_steps: int, max_steps: Any, model: str) -> None:
    """``compress(steps=N)``: refuse (``ValueError``) to write a stream that a decoder refuses by default, unless the
    caller raised ``max_steps`` for it (decoders then need the same ``max_steps``)."""
    if steps is None:
        return
    limit = resolve_max_steps(max_steps, default_steps)
    if steps > limit:
        raise ValueError(f"steps={steps} is more than decoders accept by default ({limit}: {STEP_FACTOR} times {model}'s "
                         f"default of {default_steps}); pass max_steps={steps} to compress to write it anyway "
                         f"(decoders need max_steps={steps} too)")


__all__ = ["STEP_FACTOR", "check_decode_cost", "check_steps_to_write", "resolve_max_steps"]
