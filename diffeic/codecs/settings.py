"""The decode settings of a family whose decoder takes a step count and a seed, or nothing (HiFiC, refinement,
semantic): the caller's override, else the stream's header, else the model's default, with the decode-cost limit
(:mod:`diffeic.decode_cost`).  DiffEIC has its own (it also has samplers): ``DiffEICCodec.resolve_settings``.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import torch

from ..bitstream import MAX_STEPS, BitstreamError, StreamHeader
from ..config import SEED_LIMIT, check_int
from ..decode_cost import check_steps_to_write


class StepSeedSettings:
    """Mixin of a :class:`~diffeic.codecs.base.Codec` subclass: ``steps``/``seed`` decode settings (or none).

    A family declares :meth:`decode_defaults`; it has no sampler choice (``sampler`` must be ``None``).
    """

    def decode_defaults(self) -> Dict[str, Optional[int]]:
        """The model's default ``steps`` and ``seed`` (``{}``: decoding takes no settings)."""
        return {}

    def _open(self, bits: Union[bytes, bytearray]) -> Tuple[StreamHeader, bytes]:
        """``(header, payload)`` of one of this family's streams, refusing header fields its decoder has no use for."""
        header, payload = self.unpack(bits)
        if header.rate is not None or header.sampler is not None:
            raise BitstreamError(f"corrupt header: a {self.family} stream carries no rate or sampler field")
        if not self.decode_defaults() and (header.steps is not None or header.seed is not None):
            raise BitstreamError(f"corrupt header: a {self.family} stream carries no steps or seed")
        return header, payload

    def _header_settings(self, steps: Any, seed: Any, max_steps: Any = None) -> Dict[str, Optional[int]]:
        """Validate encoder-chosen settings → the header fields (only those that differ from the defaults)."""
        defaults = self.decode_defaults()
        for name, value in (("steps", steps), ("seed", seed)):
            if value is not None and name not in defaults:
                raise ValueError(f"a {self.family} codec takes no {name!r} setting")
        given = self._check_settings(steps, seed, allow_zero_steps=False)
        check_steps_to_write(given["steps"], self._default_steps(), max_steps, self.config.name)
        return {k: (None if v is None or v == defaults.get(k) else v) for k, v in given.items()}

    @staticmethod
    def _check_settings(steps: Any, seed: Any, allow_zero_steps: bool) -> Dict[str, Optional[int]]:
        """``steps``/``seed`` as ints (:func:`~diffeic.config.check_int`: any integer scalar), None kept."""
        return {"steps": None if steps is None else check_int("steps", steps, 0 if allow_zero_steps else 1, MAX_STEPS),
                "seed": None if seed is None else check_int("seed", seed, 0, SEED_LIMIT - 1)}

    def _default_steps(self) -> int:
        """The model's default step count (1 for a decoder that does not sample)."""
        return self.decode_defaults().get("steps") or 1

    def resolve_settings(self, header: Optional[StreamHeader] = None, steps: Any = None, seed: Any = None,
                         sampler: Optional[str] = None, max_steps: Any = None) -> Dict[str, int]:
        """Override > header (if any) > model default, for the settings this family takes; steps that the stream
        (or the default) asks for are checked against the decode-cost limit (:mod:`diffeic.decode_cost`)."""
        self._no_sampler(sampler)
        defaults = self.decode_defaults()
        if not defaults:
            if steps is not None or seed is not None:
                raise ValueError(f"a {self.family} codec decodes deterministically and takes no steps or seed")
            resolved: Dict[str, int] = {}
        else:
            given = self._check_settings(steps, seed, allow_zero_steps=True)
            stored = {"steps": getattr(header, "steps", None), "seed": getattr(header, "seed", None)}
            resolved = {k: next(v for v in (given[k], stored[k], defaults[k]) if v is not None) for k in defaults}
        self.check_decode_cost(header, steps, resolved.get("steps", 1), self._default_steps(), max_steps)
        return resolved

    def _decode_streams(self, bits: Any, decode_one: Callable[[StreamHeader, bytes, Dict[str, int]], torch.Tensor],
                        steps: Any, seed: Any, sampler: Optional[str],
                        max_steps: Any) -> Union[torch.Tensor, List[torch.Tensor]]:
        """These families' ``decompress``: one stream → ``decode_one(header, payload, settings)``, a list of streams
        → a list; each stream's settings are resolved from its header before any decoding work."""
        self._no_sampler(sampler)
        if isinstance(bits, (list, tuple)):
            return [self._decode_streams(b, decode_one, steps, seed, None, max_steps) for b in bits]
        if not isinstance(bits, (bytes, bytearray, memoryview)):
            raise TypeError(f"expected bytes (or a list of bytes), got {type(bits).__name__}")
        header, payload = self._open(bits)
        return decode_one(header, payload, self.resolve_settings(header, steps, seed, None, max_steps))

    def _no_sampler(self, sampler: Optional[str]) -> None:
        # Accepted (as None) so callers can treat every family alike; these families have one decoder each.
        if sampler is not None:
            raise ValueError(f"a {self.family} codec has no sampler choice (got sampler={sampler!r})")


__all__ = ["StepSeedSettings"]
