"""Convert the official DiffEIC ``lc.ckpt`` files into diffeic checkpoint folders.

The official release (``huai-chang/DiffEIC``, five rate points λ ∈ {1, 2, 4, 8, 16}) ships the
trainable parts only: ``preprocess_model.*`` (the LFGCM, 563 keys) and ``control_model.*`` (the
control network and its 25 zero convolutions, 349 keys).  This module maps every one of those keys
onto :class:`~diffeic.lfgcm.LFGCM` and :class:`~diffeic.diffusion.control.ControlModule` and writes
the folder layout that :meth:`DiffEICCodec.from_pretrained <diffeic.codecs.diffeic.DiffEICCodec.from_pretrained>`
reads (``config.yaml``, ``lfgcm.safetensors``, ``control.safetensors``).

Rules:

* strict — every expected key present, every present key used, every shape equal; otherwise one
  :class:`ConversionError` listing the missing / unexpected / mis-shaped keys;
* LFGCM names mirror the official ones; only ``channel_context.k.fushion`` (official spelling) and
  compressai's EntropyBottleneck names differ (``_matrix{i}`` ≤1.2.6, ``matrices.{i}`` ≥1.2.7 —
  both accepted);
* control names are translated ldm → diffusers, derived from the instantiated module so that any
  drift in :mod:`diffeic.diffusion.control` fails loudly instead of silently dropping weights;
* constant buffers (EB ``target``, ``*.bound``, ``scale_bound``, ``scale_list``) are checked against
  their known values and rebuilt; CDF tables are discarded and rebuilt with ``update(force=True)``.
  Caveat: compressai 1.2.8 builds EntropyBottleneck tables that differ slightly from the 1.2.4 ones
  the official code pinned (its ``requirements.txt``), so official bitstreams are not
  decodable bit-exactly; diffeic's own streams are lossless and only the z rate may differ marginally.

Loading is ``weights_only=True``; unpickling arbitrary objects needs the explicit ``trust_pickle``
opt-in (``diffeic convert --trust-pickle``), for files from a trusted source only.  The command line is
``diffeic convert`` (:mod:`diffeic.cli`).
"""
from __future__ import annotations

import logging
import pickle
import re
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from .util import file_sha256

if TYPE_CHECKING:    # torch is imported where it is used, so `diffeic --help` does not pay for it
    import torch
    from torch import nn

    Tensor = torch.Tensor

logger = logging.getLogger(__name__)

StateDict = Dict[str, "torch.Tensor"]
PathLike = Union[str, Path]

LFGCM_PREFIX = "preprocess_model."
CONTROL_PREFIX = "control_model."
_NET = CONTROL_PREFIX + "control_model."          # the control network inside the official wrapper
SOURCE_TAG = "official DiffEIC lc.ckpt"

#: Keys of a full official *training* checkpoint that belong to the frozen SD parts or the diffusion
#: schedule.  They carry nothing we train, so a training checkpoint converts like ``lc.ckpt``.
FROZEN_PREFIXES = ("model.diffusion_model.", "first_stage_model.", "cond_stage_model.")
SCHEDULE_KEYS = frozenset((
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
    "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
    "logvar"))

#: Constant buffers: fixed by hyper-parameters, validated against a freshly built module.  (The CDF tables,
#: ``HyperpriorCoder.coding_table_names()``, are empty or absent in the published files and rebuilt by ``update``.)
CONSTANT_BUFFERS = {"entropy_bottleneck": ("target", "likelihood_lower_bound.bound"),
                    "gaussian_conditional": ("scale_bound", "likelihood_lower_bound.bound",
                                             "lower_bound_scale.bound")}
SCALE_LIST_KEY = CONTROL_PREFIX + "scale_list"
_ZERO_CONV_ROOTS = ("enc_zero_convs", "mid_zero_conv", "dec_zero_convs")

# compressai ≥1.2.7 EntropyBottleneck names (ours) ↔ ≤1.2.6 names (the published files).
_EB_NEW = re.compile(r"^(.*entropy_bottleneck\.)(matrices|biases|factors)\.(\d+)$")
_EB_OLD = re.compile(r"^(.*entropy_bottleneck\.)_(matrix|bias|factor)(\d+)$")
_EB_NEW_TO_OLD = {"matrices": "matrix", "biases": "bias", "factors": "factor"}
_EB_OLD_TO_NEW = {v: k for k, v in _EB_NEW_TO_OLD.items()}

# ldm → diffusers sub-module names inside one block (first name component only).
_RESNET_LDM_NAMES = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
                     "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
_DOWNSAMPLE_LDM_NAMES = {"conv": "op"}
# SpatialTransformer ↔ Transformer2DModel: identical names (norm, proj_in, transformer_blocks.0.
# {norm1..3, attn1, attn2, ff.net.0.proj, ff.net.2}, proj_out); proj_in/proj_out are Linear [C, C]
# in both because SD2.1 uses linear projections, so no reshape is needed.

_LMBDA_FOLDER = re.compile(r"^\d+(?:\.\d+)?_\d+(?:\.\d+)?_(\d+(?:\.\d+)?)$")   # official "1_2_16" → λ 16
_MAX_LISTED = 10


class ConversionError(ValueError):
    """The file cannot be converted: unreadable, or its keys/shapes/values do not match the model."""


class UntrustedPickleError(ConversionError):
    """The file needs full unpickling (e.g. Lightning metadata); only allowed with ``trust_pickle``."""


@dataclass(frozen=True)
class Target:
    """Where one official key goes: ``part`` ("lfgcm" or "control"), our key, and the expected shape."""

    part: str
    key: str
    shape: Tuple[int, ...]


# =========================================================================== loading

def load_official_state_dict(path: PathLike, trust_pickle: bool = False) -> StateDict:
    """Read an official checkpoint → flat ``{key: tensor}`` (nested ``state_dict`` unwrapped).

    Loads with ``weights_only=True``.  A file whose pickle holds other objects (Lightning metadata,
    custom classes) raises :class:`UntrustedPickleError` unless ``trust_pickle=True`` — which runs
    the file's pickle code and must only be used for files from a trusted source.

    Raises:
        FileNotFoundError: no such file.
        ConversionError: empty, not a PyTorch checkpoint, truncated/corrupt, or no tensor dict inside.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    _sniff_checkpoint_file(path)
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if not _is_weights_only_rejection(err):
            raise ConversionError(f"{path}: truncated or corrupt checkpoint ({_first_line(err)})") from err
        if not trust_pickle:
            raise UntrustedPickleError(
                f"{path}: the checkpoint holds Python objects besides tensors (probably Lightning training "
                f"metadata), which safe loading (weights_only=True) refuses: {_rejected_global(err)}. If you "
                f"trust the file's source, rerun with --trust-pickle (Python: trust_pickle=True); that "
                f"unpickles it fully, which can execute arbitrary code.") from err
        obj = _load_trusted(path)
    except (RuntimeError, EOFError, OSError, ValueError, IndexError, KeyError, struct.error) as err:
        raise ConversionError(f"{path}: truncated or corrupt checkpoint ({_first_line(err)})") from err
    return _extract_state_dict(obj, path)


def _sniff_checkpoint_file(path: Path) -> None:
    """Cheap format checks, so a wrong or half-downloaded file gets a useful message."""
    size = path.stat().st_size
    if size == 0:
        raise ConversionError(f"{path}: the file is empty (0 bytes); download it again")
    with path.open("rb") as f:
        head = f.read(16)
    if head.startswith(b"PK\x03\x04"):        # torch.save's zip format (torch ≥ 1.6)
        if not zipfile.is_zipfile(path):
            raise ConversionError(f"{path}: truncated or corrupt checkpoint ({size} bytes; the zip archive has no "
                                  f"central directory, as when a download was cut short); download it again")
        return
    if head[:1] == b"\x80":                    # legacy torch.save format: a pickle (protocol ≥ 2)
        return
    raise ConversionError(f"{path}: not a PyTorch checkpoint ({_describe_bytes(head)}); expected the "
                          f"official lc.ckpt written by torch.save")


def _describe_bytes(head: bytes) -> str:
    known = ((b"\x89PNG", "it is a PNG image"), (b"\xff\xd8\xff", "it is a JPEG image"),
             (b"GIF8", "it is a GIF image"), (b"\x1f\x8b", "it is gzip-compressed"))
    for magic, what in known:
        if head.startswith(magic):
            return what
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype", b"<html", b"<")):
        return "it is an HTML page — a download link (e.g. Google Drive's confirmation page) was saved instead " \
               "of the file"
    if len(head) >= 9 and head[8:9] == b"{":
        return "it looks like a .safetensors file, not an official .ckpt"
    return f"it starts with bytes {head[:8]!r}"


def _is_weights_only_rejection(err: Exception) -> bool:
    """True when ``weights_only`` refused an object type (as opposed to the bytes being broken)."""
    msg = str(err)
    return "Weights only load failed" in msg and ("global" in msg.lower() or "allowlist" in msg.lower())


def _rejected_global(err: Exception) -> str:
    for line in str(err).splitlines():
        if "GLOBAL" in line or "global" in line:
            return line.strip()
    return "a non-tensor object"


def _load_trusted(path: Path) -> object:
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except ModuleNotFoundError as err:
        raise ConversionError(f"{path}: the checkpoint's pickle needs the Python module {err.name!r}, which is not "
                              f"installed; install it (e.g. lightning) or re-save the file's state_dict with "
                              f"torch.save") from err
    except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError) as err:
        raise ConversionError(f"{path}: truncated or corrupt checkpoint ({_first_line(err)})") from err


def _first_line(err: BaseException) -> str:
    """The informative part of a loader error (torch prefixes weights-only errors with boilerplate)."""
    text = str(err).strip()
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1].strip()
    lines = text.splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}"


def _extract_state_dict(obj: object, path: Path) -> StateDict:
    """Unwrap ``{"state_dict": {...}}`` (Lightning / official) and strip a DDP ``module.`` prefix."""
    import torch

    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj:
        raise ConversionError(f"{path}: expected a dict of tensors (optionally under 'state_dict'), got "
                              f"{type(obj).__name__}{' (empty)' if isinstance(obj, Mapping) else ''}")
    not_tensors = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise ConversionError(f"{path}: {len(not_tensors)} entries of the state dict are not tensors: "
                              f"{_listing(not_tensors)}")
    return strip_module_prefix({str(k): v for k, v in obj.items()})


def strip_module_prefix(state_dict: Mapping[str, Tensor]) -> StateDict:
    """Remove the ``module.`` prefix DistributedDataParallel adds, when every key has it."""
    if state_dict and all(k.startswith("module.") for k in state_dict):
        return {k[len("module."):]: v for k, v in state_dict.items()}
    return dict(state_dict)


# =========================================================================== expected layout

def _build_meta_modules(config) -> Tuple[nn.Module, nn.Module]:
    """LFGCM + ControlModule of ``config`` on the meta device: names and shapes without memory."""
    import torch
    from diffusers import UNet2DConditionModel

    from .diffusion.control import ControlModule
    from .lfgcm import LFGCM

    with torch.device("meta"):
        unet = UNet2DConditionModel(**config.backbone.unet)
        control = ControlModule.from_unet(unet, config.control, init_from_unet=False)
        lfgcm = LFGCM(config.lfgcm)
    return lfgcm, control


def official_lfgcm_name(key: str) -> str:
    """Our LFGCM key → its official name (compressai ≤1.2.6 EB spelling, ``fushion``)."""
    key = re.sub(r"^channel_context\.(\d+)\.fusion\.", r"channel_context.\1.fushion.", key)
    m = _EB_NEW.match(key)
    if m:
        key = f"{m.group(1)}_{_EB_NEW_TO_OLD[m.group(2)]}{m.group(3)}"
    return LFGCM_PREFIX + key


def _control_blocks(control: nn.Module) -> List[Tuple[str, str, Dict[str, str]]]:
    """``(our module prefix, official prefix, first-name renames)`` for every part of the control module."""
    from diffusers.models.downsampling import Downsample2D
    from diffusers.models.resnet import ResnetBlock2D

    from .diffusion.control import ldm_input_blocks

    names = {id(m): n for n, m in control.named_modules()}

    def renames(module: nn.Module) -> Dict[str, str]:
        if isinstance(module, ResnetBlock2D):
            return _RESNET_LDM_NAMES
        if isinstance(module, Downsample2D):
            return _DOWNSAMPLE_LDM_NAMES
        return {}                                  # conv_in, Transformer2DModel: same names

    parts = [("time_embedding.linear_1", _NET + "time_embed.0", {}),
             ("time_embedding.linear_2", _NET + "time_embed.2", {})]
    for i, block in enumerate(ldm_input_blocks(control.conv_in, control.down_blocks)):
        for j, module in enumerate(block):
            parts.append((names[id(module)], f"{_NET}input_blocks.{i}.{j}", renames(module)))
    mid = control.mid_block                        # ldm middle_block = [resnet, attention, resnet, …]
    mid_seq = [mid.resnets[0]]
    for attention, resnet in zip(mid.attentions, mid.resnets[1:]):
        mid_seq += [attention, resnet]
    for j, module in enumerate(mid_seq):
        parts.append((names[id(module)], f"{_NET}middle_block.{j}", renames(module)))
    # Zero convs: the official ones sit at index 0 of a wrapper Sequential, hence the ".0".
    parts += [(f"enc_zero_convs.{i}", f"{CONTROL_PREFIX}enc_zero_convs_out.{i}.0", {})
              for i in range(len(control.enc_zero_convs))]
    parts.append(("mid_zero_conv", f"{CONTROL_PREFIX}middle_block_out.0", {}))
    parts += [(f"dec_zero_convs.{j}", f"{CONTROL_PREFIX}dec_zero_convs_out.{j}.0", {})
              for j in range(len(control.dec_zero_convs))]
    return parts


def official_control_names(control: nn.Module) -> Dict[str, str]:
    """Our control key → official key, for every tensor of ``control.state_dict()``.

    Raises ``RuntimeError`` if some tensor of the module has no official counterpart (the module
    gained a part this converter does not know — a bug to fix here, never to skip).
    """
    mapping: Dict[str, str] = {}
    for our_prefix, official_prefix, renames in _control_blocks(control):
        for key in control.get_submodule(our_prefix).state_dict():
            first, _, rest = key.partition(".")
            official = f"{official_prefix}.{renames.get(first, first)}" + (f".{rest}" if rest else "")
            mapping[f"{our_prefix}.{key}"] = official
    unmapped = sorted(set(control.state_dict()) - set(mapping))
    if unmapped:
        raise RuntimeError(f"ControlModule tensors without an official counterpart: {_listing(unmapped)}")
    return mapping


def expected_official_layout(config="sd21") -> Dict[str, Target]:
    """Official key → :class:`Target`, for every trainable tensor (no CDF tables, no constants)."""
    from .config import get_config

    cfg = get_config(config)
    lfgcm, control = _build_meta_modules(cfg)
    layout: Dict[str, Target] = {}
    for key, tensor in lfgcm.state_dict().items():
        if _lfgcm_buffer_kind(key) is None:
            layout[official_lfgcm_name(key)] = Target("lfgcm", key, tuple(tensor.shape))
    control_sd = control.state_dict()
    for key, official in official_control_names(control).items():
        layout[official] = Target("control", key, tuple(control_sd[key].shape))
    return layout


def _lfgcm_buffer_kind(key: str) -> Optional[str]:
    """"cdf" / "constant" for the entropy models' buffers (our LFGCM-relative key), else ``None``."""
    from .entropy.latent_coder import HyperpriorCoder

    module, _, name = key.partition(".")
    if key in HyperpriorCoder.coding_table_names():
        return "cdf"
    if name in CONSTANT_BUFFERS.get(module, ()):
        return "constant"
    return None


def expected_lfgcm_buffers(lfgcm_cfg) -> StateDict:
    """The entropy models' buffers as a freshly built LFGCM has them (CDF tables empty)."""
    from . import _compressai  # noqa: F401  (compressai's import warning filtered there)
    from compressai.entropy_models import EntropyBottleneck, GaussianConditional

    from .entropy.latent_coder import HyperpriorCoder

    parts = {"entropy_bottleneck": EntropyBottleneck(lfgcm_cfg.N),
             "gaussian_conditional": GaussianConditional(None, scale_bound=lfgcm_cfg.scale_min)}
    out: StateDict = {}
    for module_name, module in parts.items():
        for name, buf in module.named_buffers():
            if f"{module_name}.{name}" in HyperpriorCoder.coding_table_names() or name in CONSTANT_BUFFERS[module_name]:
                out[f"{module_name}.{name}"] = buf.detach().clone()
    return out


# =========================================================================== mapping

def normalise_entropy_bottleneck_names(state_dict: Mapping[str, Tensor]) -> StateDict:
    """Rename compressai ≥1.2.7 EB keys (``matrices.0``) to the ≤1.2.6 spelling (``_matrix0``).

    Both spellings are legitimate; a file holding the same tensor under both is refused.
    """
    out: StateDict = {}
    clashes: List[str] = []
    for key, value in state_dict.items():
        m = _EB_NEW.match(key)
        new_key = f"{m.group(1)}_{_EB_NEW_TO_OLD[m.group(2)]}{m.group(3)}" if m else key
        if new_key in out or (m and new_key in state_dict):
            clashes.append(key)
        out[new_key] = value
    if clashes:
        raise ConversionError(f"EntropyBottleneck tensors present under both compressai spellings: {_listing(clashes)}")
    return out


def map_official_keys(state_dict: Mapping[str, Tensor], config="sd21") -> Tuple[StateDict, StateDict]:
    """Split and rename an official state dict → ``(lfgcm_state_dict, control_state_dict)``.

    The results hold exactly the keys of ``LFGCM(cfg.lfgcm).state_dict()`` (with empty CDF tables,
    to be rebuilt by ``update(force=True)``) and ``ControlModule.state_dict()``; tensors are shared
    with the input (float32 ones are not copied).

    Raises:
        ConversionError: listing every missing, unexpected and mis-shaped key, wrong constant values.
    """
    import torch

    from .config import get_config

    cfg = get_config(config)
    layout = expected_official_layout(cfg)
    constants = {LFGCM_PREFIX + k: v for k, v in expected_lfgcm_buffers(cfg.lfgcm).items()
                 if _lfgcm_buffer_kind(k) == "constant"}
    sd = normalise_entropy_bottleneck_names(strip_module_prefix(state_dict))

    out: Dict[str, StateDict] = {"lfgcm": {}, "control": {}}
    unexpected: List[str] = []
    misshaped: List[str] = []
    bad_values: List[str] = []
    frozen = filled_cdf = 0
    for key, value in sd.items():
        target = layout.get(key)
        if target is not None:
            if tuple(value.shape) != target.shape:
                misshaped.append(f"{key}: file {list(value.shape)} vs model {list(target.shape)}")
            elif not value.is_floating_point():
                bad_values.append(f"{key}: dtype {value.dtype}, expected floating point")
            else:
                out[target.part][target.key] = value.to(torch.float32)
        elif key in constants:
            problem = _check_constant(key, value, constants[key])
            if problem:
                bad_values.append(problem)
        elif key == SCALE_LIST_KEY:
            problem = _check_scale_list(value, n_zero_convs=_count_zero_convs(layout))
            if problem:
                bad_values.append(problem)
        elif key.startswith(LFGCM_PREFIX) and _lfgcm_buffer_kind(key[len(LFGCM_PREFIX):]) == "cdf":
            filled_cdf += value.numel() > 0           # discarded: rebuilt from the weights below
        elif key.startswith(FROZEN_PREFIXES) or key in SCHEDULE_KEYS:
            frozen += 1                                # full training checkpoint: SD parts are not ours
        else:
            unexpected.append(key)
    seen = set(sd)
    missing = [_with_alternative(k) for k in layout if k not in seen]
    _raise_if_problems(missing, unexpected, misshaped, bad_values)

    if frozen:
        logger.info("ignored %d frozen Stable Diffusion / schedule tensors (training checkpoint)", frozen)
    if filled_cdf:
        logger.info("discarded %d stored CDF tables; they are rebuilt with this compressai version", filled_cdf)
    lfgcm_sd = out["lfgcm"]
    lfgcm_sd.update(expected_lfgcm_buffers(cfg.lfgcm))       # empty CDF tables + validated constants
    return lfgcm_sd, out["control"]


def _count_zero_convs(layout: Mapping[str, Target]) -> int:
    return sum(1 for t in layout.values()
               if t.part == "control" and t.key.split(".")[0] in _ZERO_CONV_ROOTS and t.key.endswith(".weight"))


def _check_constant(key: str, value: Tensor, expected: Tensor) -> Optional[str]:
    import torch

    if tuple(value.shape) != tuple(expected.shape):
        return f"{key}: file shape {list(value.shape)} vs expected {list(expected.shape)}"
    if not torch.allclose(value.double(), expected.double(), rtol=1e-5, atol=0):
        return f"{key}: value {value.flatten().tolist()[:4]} differs from the constant {expected.flatten().tolist()}"
    return None


def _check_scale_list(value: Tensor, n_zero_convs: int) -> Optional[str]:
    """The official injection scales: one per zero conv, all 1.0 (our forward hard-codes scale 1)."""
    import torch

    if tuple(value.shape) != (n_zero_convs,):
        return f"{SCALE_LIST_KEY}: file shape {list(value.shape)} vs expected [{n_zero_convs}]"
    if not torch.all(value == 1):
        return (f"{SCALE_LIST_KEY}: injection scales must all be 1.0 (got {value.tolist()}); "
                f"other scales are not supported")
    return None


def _with_alternative(key: str) -> str:
    m = _EB_OLD.match(key)
    if m:
        return f"{key} (or {m.group(1)}{_EB_OLD_TO_NEW[m.group(2)]}.{m.group(3)})"
    return key


def _raise_if_problems(missing: Sequence[str], unexpected: Sequence[str], misshaped: Sequence[str],
                       bad_values: Sequence[str]) -> None:
    sections = [(missing, "missing"), (unexpected, "unexpected"), (misshaped, "mis-shaped"),
                (bad_values, "with wrong values/dtypes")]
    lines = [f"{len(items)} {what} key(s): {_listing(items)}" for items, what in sections if items]
    if lines:
        raise ConversionError("the checkpoint does not match the DiffEIC sd21 model "
                              "(is it an official lc.ckpt?):\n  " + "\n  ".join(lines))


def _listing(items: Sequence[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    return shown + (f", … (+{len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else "")


# =========================================================================== writing

def infer_lmbda(ckpt_path: PathLike) -> Optional[float]:
    """λ from the official folder name ``<simple>_<guide>_<λ>`` (e.g. ``weight/1_2_16/lc.ckpt`` → 16)."""
    m = _LMBDA_FOLDER.match(Path(ckpt_path).parent.name)
    return _number(m.group(1)) if m else None


def _number(text: Union[str, float]) -> Union[int, float]:
    value = float(text)
    return int(value) if value.is_integer() else value


def build_modules(lfgcm_sd: StateDict, control_sd: StateDict, config="sd21") -> Tuple[nn.Module, nn.Module]:
    """Real (CPU) LFGCM + ControlModule loaded strictly from converted dicts; LFGCM tables rebuilt."""
    import torch
    from diffusers import UNet2DConditionModel

    from .config import get_config
    from .diffusion.control import ControlModule
    from .lfgcm import LFGCM

    cfg = get_config(config)
    lfgcm = LFGCM(cfg.lfgcm)
    lfgcm.load_state_dict(lfgcm_sd, strict=True)
    try:
        lfgcm.update(force=True)
    except (ValueError, RuntimeError) as err:   # e.g. a density with an all-zero pmf: not trained weights
        raise ConversionError(f"the entropy models' CDF tables cannot be built from the file's weights ({err}); "
                              f"the EntropyBottleneck parameters are not those of a trained model") from err
    with torch.device("meta"):                     # only its config and module shapes are read
        unet = UNet2DConditionModel(**cfg.backbone.unet)
    control = ControlModule.from_unet(unet, cfg.control, init_from_unet=False)
    control.load_state_dict(control_sd, strict=True)
    return lfgcm.eval(), control.eval()


def write_checkpoint_folder(out_dir: PathLike, config, lfgcm: nn.Module, control: nn.Module,
                            metadata: Mapping[str, object], overwrite: bool = False) -> Path:
    """Write the layout of ``DiffEICCodec.save_pretrained`` (atomically) without needing the SD backbone.

    ``backbone_fingerprint`` is left unset (the SD weights are unknown here), so ``from_pretrained``
    skips the backbone check.
    """
    from .codecs.diffeic import CONTROL_FILE, LFGCM_FILE, OPTIONAL_FILES
    from .codecs.folder import write_folder

    return write_folder(out_dir, {LFGCM_FILE: lfgcm.state_dict(), CONTROL_FILE: control.state_dict()},
                        {"trained": True, "backbone_fingerprint": None, **metadata}, config.to_dict(), overwrite,
                        also=OPTIONAL_FILES)


def convert_official(ckpt_path: PathLike, out_dir: PathLike, lmbda: Optional[float] = None,
                     sd_path: Optional[str] = None, trust_pickle: bool = False, overwrite: bool = False) -> Path:
    """Convert one official ``lc.ckpt`` into a diffeic checkpoint folder; returns the folder.

    Args:
        ckpt_path: the official file (``weight/1_2_<λ>/lc.ckpt``).
        out_dir: folder to create (``config.yaml``, ``lfgcm.safetensors``, ``control.safetensors``).
        lmbda: the rate weight λ to record; default: read from the official folder name, else unset.
        sd_path: SD2.1-base location to record for ``from_pretrained`` (hub id, folder or file).
        trust_pickle: allow full unpickling (``weights_only=False``) — trusted files only.
        overwrite: replace an existing checkpoint in ``out_dir``.
    """
    from ._compressai import compressai
    from .codecs.diffeic import OPTIONAL_FILES, DiffEICCodec
    from .codecs.folder import check_target
    from .config import get_config

    ckpt_path = Path(ckpt_path)
    cfg = get_config("sd21")
    check_target(out_dir, overwrite, DiffEICCodec.files() + OPTIONAL_FILES)      # fail before the slow part
    state = load_official_state_dict(ckpt_path, trust_pickle=trust_pickle)
    lfgcm_sd, control_sd = map_official_keys(state, cfg)
    del state
    lfgcm, control = build_modules(lfgcm_sd, control_sd, cfg)
    del lfgcm_sd, control_sd
    lmbda = _number(lmbda) if lmbda is not None else infer_lmbda(ckpt_path)
    metadata = {
        "lmbda": lmbda, "sd_path": sd_path, "source": SOURCE_TAG, "source_file": ckpt_path.name,
        "source_sha256": file_sha256(ckpt_path),
        "entropy_tables": f"rebuilt with compressai {compressai.__version__} (the official code used 1.2.4; "
                          f"EntropyBottleneck tables differ slightly, so official bitstreams are not decodable "
                          f"bit-exactly)",
    }
    return write_checkpoint_folder(out_dir, cfg, lfgcm, control, metadata, overwrite=overwrite)
