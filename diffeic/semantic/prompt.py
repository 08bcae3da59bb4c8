"""The prompt part: the user's text, or a caption from a local captioning model — never a silent empty prompt.

A prompt is UTF-8 text of 1 .. :data:`MAX_PROMPT_BYTES` bytes, without control characters other than tab and
newline (:func:`check_prompt`).  ``None`` is the explicit choice of *no* prompt part; the empty string is refused,
so an empty prompt can never come from a caption or a variable that was left empty by mistake.

Captions (:func:`caption_image`) come from a BLIP captioning model (transformers' ``BlipForConditionalGeneration``,
e.g. ``Salesforce/blip-image-captioning-base``) loaded **only from a local folder**: the ``model_dir`` argument or
the ``DIFFEIC_CAPTION_MODEL`` environment variable.  Nothing is downloaded; without a folder, or with one that
holds no such model, :class:`CaptionUnavailable` says what to do (give a prompt, or ``prompt=None``).
"""
from __future__ import annotations

import os
import unicodedata
from pathlib import Path
from typing import Optional, Union

import numpy as np

from ..bitstream import BitstreamError

MAX_PROMPT_BYTES = 1024        #: the longest prompt, in UTF-8 bytes (CLIP reads 77 tokens, roughly 300 characters)
CAPTION_ENV = "DIFFEIC_CAPTION_MODEL"   #: environment variable naming the local captioning model's folder
_ALLOWED_CONTROLS = {"\t", "\n"}
#: What every CaptionUnavailable ends with: how to give the prompt, or to send none, in each API.
ADVICE = ("give the prompt yourself, or send none explicitly (encode_parts: prompt=None; SemanticCodec.compress: "
          "prompt=''; diffeic compress: --prompt '')")

__all__ = ["MAX_PROMPT_BYTES", "CAPTION_ENV", "CaptionUnavailable", "check_prompt", "prompt_bytes",
           "parse_prompt", "caption_folder", "caption_image", "ADVICE"]


class CaptionUnavailable(RuntimeError):
    """No captioning model is on this machine (or it does not load): give the prompt yourself."""


def check_prompt(prompt: str) -> str:
    """``prompt`` if it is a valid prompt (see the module), else ``TypeError``/``ValueError`` naming the problem."""
    if not isinstance(prompt, str):
        raise TypeError(f"a prompt is a str (or None for no prompt), got {type(prompt).__name__}")
    if not prompt:
        raise ValueError("empty prompt: pass prompt=None to send no prompt (an empty string is refused so that "
                         "no prompt is ever dropped by accident)")
    try:
        size = len(prompt.encode("utf-8"))
    except UnicodeEncodeError as err:
        raise ValueError(f"prompt is not valid Unicode text (lone surrogate at character {err.start})") from None
    if size > MAX_PROMPT_BYTES:
        raise ValueError(f"prompt is {size} bytes in UTF-8; at most {MAX_PROMPT_BYTES}")
    for i, ch in enumerate(prompt):
        if ch not in _ALLOWED_CONTROLS and unicodedata.category(ch) == "Cc":
            raise ValueError(f"prompt has control character {ch!r} at position {i} (only tab and newline allowed)")
    return prompt


def prompt_bytes(prompt: str) -> bytes:
    """The prompt part's bytes: the checked prompt in UTF-8."""
    return check_prompt(prompt).encode("utf-8")


def parse_prompt(data: bytes) -> str:
    """The prompt of a prompt part; invalid UTF-8 or an invalid prompt raises :class:`BitstreamError`."""
    try:
        text = bytes(data).decode("utf-8", errors="strict")
    except UnicodeDecodeError as err:
        raise BitstreamError(f"corrupt prompt part: not UTF-8 ({err.reason} at byte {err.start})") from None
    try:
        return check_prompt(text)
    except ValueError as err:
        raise BitstreamError(f"corrupt prompt part: {err}") from None


def caption_folder(model_dir: Optional[Union[str, os.PathLike]] = None) -> Path:
    """The local captioning model's folder (``model_dir``, else ``$DIFFEIC_CAPTION_MODEL``), checked without loading
    it; :class:`CaptionUnavailable` saying what to do when there is none."""
    advice = ADVICE
    where = model_dir if model_dir is not None else os.environ.get(CAPTION_ENV)
    if not where:
        raise CaptionUnavailable(f"no captioning model on this machine: set {CAPTION_ENV} to a local folder holding "
                                 f"a BLIP captioning model (e.g. Salesforce/blip-image-captioning-base), or {advice}")
    folder = Path(where).expanduser()
    if not (folder / "config.json").is_file():
        raise CaptionUnavailable(f"captioning model folder {folder} has no config.json (not a downloaded "
                                 f"transformers model); {advice}")
    return folder


def caption_image(image, model_dir: Optional[Union[str, os.PathLike]] = None, max_new_tokens: int = 30) -> str:
    """A caption of ``image`` (``(H, W, 3)`` uint8 array or Pillow image) by the BLIP model in ``model_dir`` (or
    the folder ``$DIFFEIC_CAPTION_MODEL``), loaded offline; checked like a user's prompt.

    Raises :class:`CaptionUnavailable` when there is no such folder, when the model does not load from it, or
    when it returns an empty caption.
    """
    from PIL import Image

    from ._webp import check_rgb8

    rgb = check_rgb8(image)
    folder = caption_folder(model_dir)
    try:
        from transformers import BlipForConditionalGeneration, BlipProcessor

        processor = BlipProcessor.from_pretrained(folder, local_files_only=True)
        model = BlipForConditionalGeneration.from_pretrained(folder, local_files_only=True).eval()
    except Exception as err:     # ImportError, OSError, ValueError: transformers' ways of saying "not here"
        raise CaptionUnavailable(f"captioning model in {folder} does not load ({type(err).__name__}: {err}); "
                                 f"{ADVICE}") from err
    import torch

    with torch.no_grad():
        inputs = processor(images=Image.fromarray(np.ascontiguousarray(rgb), "RGB"), return_tensors="pt")
        tokens = model.generate(**inputs, max_new_tokens=max_new_tokens)
    text = " ".join(processor.decode(tokens[0], skip_special_tokens=True).split())
    if not text:
        raise CaptionUnavailable(f"captioning model in {folder} returned an empty caption; {ADVICE}")
    return check_prompt(text)
