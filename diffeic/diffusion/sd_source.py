"""Where the pretrained SD2.1-base parts come from, and the cached empty-prompt embedding ([Li2024] Sec. III-C).

A source is one of

* a Hugging Face hub id (``owner/name``) of a diffusers repository (subfolders ``vae/``, ``unet/``,
  ``text_encoder/``, ``tokenizer/``), loaded through the hub cache (``HF_HUB_OFFLINE=1`` → cache only);
* a local diffusers folder with the same subfolders (``text_encoder/``/``tokenizer/`` are only needed
  until the embedding is cached; ``FrozenBackbone.save_pretrained`` writes ``empty_prompt.safetensors``
  into the folder so it never needs them); a subfolder's weights may be int8-packed
  (:mod:`diffeic.weight_packing`, as the shipped demo backbone's UNet);
* the original single file ``v2-1_512-ema-pruned.safetensors`` (or ``.ckpt``, loaded with
  ``weights_only=True``), converted by diffusers' single-file loaders with our own architecture configs,
  so no config download is needed.

Everything that cannot be found or read raises :class:`BackboneUnavailableError`, one message that
names the source and says what to download and where to put it.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.loaders.single_file_utils import SingleFileComponentError

from ..config import DEFAULT_SD_PATH, SD_PATH_ENV, BackboneConfig
from ..util import first_line as _first_line
from ..weight_packing import file_is_packed, unpack
from .patch_vae import vae_class

EMBEDDING_FILE = "empty_prompt.safetensors"
EMBEDDING_KEY = "text_embedding"
CACHE_ENV = "DIFFEIC_CACHE_DIR"
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")
DIFFUSERS_WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"   # the one weights file of a diffusers subfolder
# What diffusers/transformers/huggingface_hub raise for missing, partial or unconvertible weights.
_LOAD_ERRORS = (OSError, ValueError, KeyError, RuntimeError, SingleFileComponentError)
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")      # owner/name; anything else must exist locally

# OpenCLIP tokenisation of "" (official ``FrozenOpenCLIPEmbedder``): <start>, <end>, then zero padding to 77 tokens.
# diffusers' SD2 tokenizer gives the same ids (its pad token "!" has id 0).
_BOS, _EOS, _PAD = 49406, 49407, 0
# OpenCLIP ViT-H/14 text tower without its last layer: the last hidden state of this model plus
# final_layer_norm is the "penultimate" embedding SD2 uses (diffusers drops resblock 23 on conversion).
_OPENCLIP_H14_TEXT = dict(vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
                          num_attention_heads=16, max_position_embeddings=77, hidden_act="gelu",
                          layer_norm_eps=1e-5, projection_dim=1024)


class BackboneUnavailableError(RuntimeError):
    """The pretrained SD2.1-base weights (or the empty-prompt embedding) cannot be found or read."""


@dataclass(frozen=True)
class SDSource:
    """A resolved SD source: ``kind`` is ``"hub"``, ``"folder"`` or ``"single_file"``."""

    kind: str
    location: str

    def describe(self) -> str:
        return {"hub": "hub repository", "folder": "local folder", "single_file": "single file"}[self.kind] + \
            f" {self.location!r}"


def how_to_get_weights(source: SDSource) -> str:
    """The advice every :class:`BackboneUnavailableError` ends with."""
    return (
        "SD2.1-base (VAE + UNet + empty-prompt embedding) is needed for the sd21 preset. Either\n"
        f"  * download the diffusers repository (`hf download {DEFAULT_SD_PATH} "
        "--local-dir /path/to/sd21-base`, the command of huggingface_hub >= 1.0) and pass "
        "sd_path='/path/to/sd21-base' (a folder with vae/, unet/, text_encoder/, tokenizer/), or\n"
        "  * download the original single file v2-1_512-ema-pruned.safetensors and pass its path as sd_path, or\n"
        "  * run once online so the hub cache holds it (HF_HUB_OFFLINE=1 then reads only the cache).\n"
        f"The path can also be set with the environment variable {SD_PATH_ENV} or in the config "
        f"(backbone.sd_path). Tried: {source.describe()}."
    )


def resolve_source(path: str) -> SDSource:
    """Classify ``path`` as an existing folder, an existing single file, or a hub id."""
    expanded = os.path.expanduser(str(path))
    if os.path.isdir(expanded):
        return SDSource("folder", os.path.abspath(expanded))
    if os.path.isfile(expanded):
        if not expanded.endswith(SINGLE_FILE_SUFFIXES):
            raise BackboneUnavailableError(
                f"sd_path {path!r} is a file but not a .safetensors/.ckpt checkpoint.\n"
                + how_to_get_weights(SDSource("single_file", expanded)))
        return SDSource("single_file", os.path.abspath(expanded))
    if not _HUB_ID.fullmatch(str(path)) or str(path).endswith(SINGLE_FILE_SUFFIXES):
        raise BackboneUnavailableError(f"sd_path {path!r} does not exist.\n"
                                       + how_to_get_weights(SDSource("folder", expanded)))
    return SDSource("hub", str(path))


def cache_dir(override: Optional[str] = None) -> Path:
    """Where computed embeddings are cached: argument → ``DIFFEIC_CACHE_DIR`` → ``~/.cache/diffeic``."""
    base = override or os.environ.get(CACHE_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "diffeic")
    return Path(base)


# --------------------------------------------------------------------------- VAE + UNet

def load_vae_unet(source: SDSource, cfg: BackboneConfig, single_file_state: Optional[Dict[str, torch.Tensor]] = None
                  ) -> Tuple[AutoencoderKL, UNet2DConditionModel]:
    """Load the VAE and UNet from ``source`` (fp32, CPU); every failure is a :class:`BackboneUnavailableError`.

    ``single_file_state``: the already-loaded state dict of a single-file source (read once, shared).
    """
    try:
        if source.kind == "single_file":
            vae, unet = _from_single_file(single_file_state or load_single_file_state(source), cfg)
        else:
            if source.kind == "folder":
                missing = [d for d in ("vae", "unet") if not os.path.isdir(os.path.join(source.location, d))]
                if missing:
                    raise BackboneUnavailableError(
                        f"{source.describe()} has no {' or '.join(d + '/' for d in missing)} subfolder "
                        "(expected a diffusers repository layout).\n" + how_to_get_weights(source))
            vae = _load_part(vae_class(cfg.vae), source, "vae")
            unet = _load_part(UNet2DConditionModel, source, "unet")
    except BackboneUnavailableError:
        raise
    except _LOAD_ERRORS as err:
        where = " (HF_HUB_OFFLINE is set: only the local hub cache was searched)" \
            if source.kind == "hub" and _hub_offline() else ""
        raise BackboneUnavailableError(
            f"could not load the SD2.1-base VAE/UNet from {source.describe()}{where}: {type(err).__name__}: "
            f"{_first_line(err)}\n" + how_to_get_weights(source)) from err
    _check_architecture(unet, cfg, source)
    return vae, unet


def _load_part(cls, source: SDSource, subfolder: str):
    """One diffusers model (``cls``) of a hub or folder source, float32.  A local subfolder whose weights file is
    int8-packed (:mod:`diffeic.weight_packing`, how the shipped demo backbone stores its UNet), which diffusers cannot
    read, is built from its ``config.json`` and given the unpacked weights (all keys must match)."""
    weights = Path(source.location) / subfolder / DIFFUSERS_WEIGHTS_FILE
    if source.kind != "folder" or not _packed(weights):
        return cache_first(cls.from_pretrained, source, subfolder=subfolder, torch_dtype=torch.float32,
                           **low_memory())
    from safetensors.torch import load_file

    state = unpack(load_file(str(weights)))
    with torch.random.fork_rng(devices=[]):          # the throw-away random init leaves the global RNG as it was
        model = cls.from_config(cls.load_config(str(weights.parent)))
    model.load_state_dict(state, strict=True)
    return model.float().eval()


def _packed(path: Path) -> bool:
    """Whether ``path`` is a safetensors file with int8-packed tensors (an unreadable one is left to diffusers,
    whose error the caller reports)."""
    from safetensors import SafetensorError

    try:
        return path.is_file() and file_is_packed(path)
    except (SafetensorError, OSError):
        return False


def load_single_file_state(source: SDSource) -> Dict[str, torch.Tensor]:
    """The original checkpoint's state dict (safetensors, or ``.ckpt`` with ``weights_only=True``)."""
    if source.location.endswith(".safetensors"):
        from safetensors.torch import load_file
        try:
            return load_file(source.location)
        except Exception as err:  # safetensors raises its own error type for corrupt files
            raise BackboneUnavailableError(f"{source.describe()} is not a readable safetensors file: "
                                           f"{_first_line(err)}\n" + how_to_get_weights(source)) from err
    try:
        state = torch.load(source.location, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle contents outside the safe allow-list, or a corrupt file
        raise BackboneUnavailableError(
            f"{source.describe()} cannot be loaded safely (weights_only=True): {_first_line(err)}. "
            "Use the .safetensors release of the same checkpoint.") from err
    while isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    return state


def _from_single_file(state: Dict[str, torch.Tensor], cfg: BackboneConfig):
    # Point diffusers at our own configs so single-file loading never fetches one from the hub.
    with tempfile.TemporaryDirectory() as tmp:
        for sub, cls, arch in (("vae", AutoencoderKL, cfg.vae), ("unet", UNet2DConditionModel, cfg.unet)):
            os.makedirs(os.path.join(tmp, sub))
            with open(os.path.join(tmp, sub, "config.json"), "w") as f:
                json.dump({"_class_name": cls.__name__, **arch}, f)
        vae = AutoencoderKL.from_single_file(state, config=tmp, subfolder="vae", local_files_only=True,
                                             **low_memory())
        unet = UNet2DConditionModel.from_single_file(state, config=tmp, subfolder="unet", local_files_only=True,
                                                     **low_memory())
    return vae, unet


def _check_architecture(unet: UNet2DConditionModel, cfg: BackboneConfig, source: SDSource) -> None:
    """Refuse a backbone whose UNet is not the one the config describes (e.g. SD2.1-v instead of -base)."""
    keys = ("in_channels", "out_channels", "block_out_channels", "cross_attention_dim", "layers_per_block")
    wrong = {k: (unet.config[k], cfg.unet[k]) for k in keys if k in cfg.unet
             and _norm(unet.config[k]) != _norm(cfg.unet[k])}
    if wrong:
        detail = ", ".join(f"{k}: got {g}, expected {e}" for k, (g, e) in wrong.items())
        raise ValueError(f"{source.describe()} holds a different UNet than the config describes ({detail})")


def _norm(v):
    return list(v) if isinstance(v, (list, tuple)) else v


# --------------------------------------------------------------------------- empty-prompt embedding

def embedding_cache_file(source: SDSource, text_len: int, override_dir: Optional[str] = None) -> Path:
    """Cache file of the embedding for ``source`` (keyed by the source and the token count)."""
    key = hashlib.sha256(f"{source.kind}:{source.location}:{text_len}".encode()).hexdigest()[:16]
    return cache_dir(override_dir) / f"empty_prompt-{key}.safetensors"


def load_embedding_file(path: Path) -> torch.Tensor:
    from safetensors.torch import load_file
    return load_file(str(path))[EMBEDDING_KEY]


def save_embedding_file(embedding: torch.Tensor, path: Path) -> None:
    from safetensors.torch import save_file
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({EMBEDDING_KEY: embedding.detach().to("cpu", torch.float32).contiguous()}, str(tmp))
    os.replace(tmp, path)          # atomic: concurrent readers never see half a file


def empty_prompt_embedding(source: SDSource, cfg: BackboneConfig, cross_dim: int,
                           cache: Optional[str] = None,
                           single_file_state: Optional[Dict[str, torch.Tensor]] = None) -> torch.Tensor:
    """``(1, text_len, cross_dim)`` OpenCLIP embedding of "" (penultimate layer + ln_final, as the official code).

    Order: ``<folder>/empty_prompt.safetensors`` → the cache file → computed once with the text
    encoder from ``source`` and written to the cache (so later loads never need the encoder).
    """
    candidates = [embedding_cache_file(source, cfg.text_len, cache)]
    if source.kind == "folder":
        candidates.insert(0, Path(source.location) / EMBEDDING_FILE)
    for path in candidates:
        if path.is_file():
            return _checked(load_embedding_file(path), cfg, cross_dim, str(path))

    try:
        if source.kind == "single_file":
            emb = _embed_from_single_file(single_file_state or load_single_file_state(source), cfg.text_len)
        else:
            emb = _embed_from_diffusers(source, cfg.text_len)
    except BackboneUnavailableError:
        raise
    except _LOAD_ERRORS as err:
        raise BackboneUnavailableError(
            f"the empty-prompt embedding is not cached ({candidates[0]}) and the text encoder could not be "
            f"loaded from {source.describe()}: {type(err).__name__}: {_first_line(err)}\n"
            + how_to_get_weights(source)) from err
    emb = _checked(emb, cfg, cross_dim, source.describe())
    try:
        save_embedding_file(emb, candidates[-1])
    except OSError:
        pass                       # a read-only cache only costs a recomputation next time
    return emb


@torch.no_grad()
def _embed_from_diffusers(source: SDSource, text_len: int) -> torch.Tensor:
    from transformers import CLIPTextModel, CLIPTokenizer

    tokenizer = cache_first(CLIPTokenizer.from_pretrained, source, subfolder="tokenizer")
    encoder = cache_first(CLIPTextModel.from_pretrained, source, subfolder="text_encoder",
                           torch_dtype=torch.float32).eval()
    ids = tokenizer([""], padding="max_length", max_length=text_len, truncation=True,
                    return_tensors="pt").input_ids
    # As diffusers' SD2 pipelines (clip_skip=None): last hidden state of the 23-layer encoder.
    return encoder(ids)[0]


@torch.no_grad()
def _embed_from_single_file(state: Dict[str, torch.Tensor], text_len: int) -> torch.Tensor:
    from diffusers.loaders.single_file_utils import convert_open_clip_checkpoint
    from transformers import CLIPTextConfig, CLIPTextModel

    encoder = CLIPTextModel(CLIPTextConfig(**_OPENCLIP_H14_TEXT)).eval()
    converted = convert_open_clip_checkpoint(encoder, state)
    converted.pop("text_projection.weight", None)         # CLIPTextModel has no projection
    missing, unexpected = encoder.load_state_dict(converted, strict=False)
    missing = [k for k in missing if "position_ids" not in k]
    if missing or unexpected:
        raise KeyError(f"single file has no usable OpenCLIP text encoder (missing {missing[:3]}, "
                       f"unexpected {unexpected[:3]})")
    ids = torch.tensor([[_BOS, _EOS] + [_PAD] * (text_len - 2)])
    return encoder(ids)[0]


def _checked(emb: torch.Tensor, cfg: BackboneConfig, cross_dim: int, where: str) -> torch.Tensor:
    expected = (1, cfg.text_len, cross_dim)
    if tuple(emb.shape) != expected:
        raise ValueError(f"empty-prompt embedding from {where} has shape {tuple(emb.shape)}, expected {expected}")
    return emb.to(torch.float32)


def low_memory() -> Dict[str, bool]:
    """Low-memory loading when ``accelerate`` is installed; without it, ask for nothing (diffusers would
    otherwise print a paragraph recommending it on every load)."""
    from diffusers.utils import is_accelerate_available

    return {"low_cpu_mem_usage": bool(is_accelerate_available())}


def cache_first(load, source: SDSource, **kwargs):
    """``load(location, **kwargs)`` from local files first; go online only for a hub id when allowed (the SD2.1
    backbone and the SD1.5 decoder of the semantic family load their weights through it).

    SD2.1 weights never change, so a cache hit needs no network round trip at all.  Before going
    online, one quick request checks that the hub answers, so a machine without network fails in
    well under a second instead of after diffusers' retries.
    """
    try:
        return load(source.location, local_files_only=True, **kwargs)
    except OSError:
        if source.kind != "hub" or _hub_offline():
            raise
    _check_hub_reachable(source)
    return load(source.location, local_files_only=False, **kwargs)


_REACHABLE: set = set()       # hub ids that answered in this process


def _check_hub_reachable(source: SDSource, timeout_s: float = 10.0) -> None:
    if source.location in _REACHABLE:
        return
    from huggingface_hub import HfApi

    try:
        HfApi().model_info(source.location, timeout=timeout_s)
    except Exception as err:   # connection, DNS, 404, gated: the hub's client raises many types
        raise BackboneUnavailableError(
            f"{source.describe()} is not in the local hub cache, and the hub did not answer "
            f"({type(err).__name__}: {_first_line(err)}). Offline, set HF_HUB_OFFLINE=1 so only local files "
            f"are tried.\n" + how_to_get_weights(source)) from err
    _REACHABLE.add(source.location)


def _hub_offline() -> bool:
    from ..util import hub_offline

    return hub_offline()
