"""The DiffEIC family: an LFGCM, a control module and the frozen SD parts, with real bitstreams.

Pipeline ([Li2024] Fig. 2): pad x to multiples of 64 → z_g = VAE latent (posterior mode) → LFGCM →
one rANS string in a versioned container.  Decoding: container → ŷ, ẑ → z_c → controlled
diffusion sampling from noise (or from z_c for the few-step mode) → VAE decode → crop.
"""
from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import yaml

from ..bitstream import NON_FINITE_STREAM, SAMPLER_IDS, BitstreamError, StreamHeader, pack
from ..config import SEED_LIMIT, DiffEICConfig, SamplerConfig, check_bool, check_float, check_int, get_config
from ..decode_cost import check_steps_to_write
from ..diffusion.backbone import FrozenBackbone
from ..diffusion.control import ControlModule
from ..diffusion.decoder import DecodeOptions, Decoder
from ..diffusion.fast import vae_tiling
from ..diffusion.onestep import OneStepConfig, OneStepDecoder
from ..diffusion.sampling import check_steps, sampler_limit
from ..lfgcm import LFGCM, PAD_MULTIPLE
from ..lfgcm.variable_rate import check_rate, rate_range as q_range
from ..sizes import size_text
from ..target_size import TargetTooSmall, fit_to_budget
from ..util import first_line
from . import folder as ckpt_folder
from .base import Bits, Codec, padded_size
from .folder import CONFIG_FILE, Checkpoint
from .registry import DEMO_MODEL, is_shipped

LFGCM_FILE = "lfgcm.safetensors"
CONTROL_FILE = "control.safetensors"
ONESTEP_FILE = "onestep.safetensors"
WEIGHT_FILES = (LFGCM_FILE, CONTROL_FILE)          # in every checkpoint
OPTIONAL_FILES = (ONESTEP_FILE,)
FILES = (CONFIG_FILE, *WEIGHT_FILES)
#: The largest size targets compress accepts (a stream is far smaller: beyond these a target means nothing).
MAX_TARGET_BPP = 1024.0
MAX_TARGET_BYTES = 1 << 40
#: The one-step decoding mode's sampler name (diffusion/onestep.py); needs one-step weights in trained checkpoints.
ONESTEP = "onestep"


_warned_untrained = False


#: What the untrained-model warning advises a Python user, and what the commands (``diffeic``, ``eval.py``) advise:
#: flags, never the Python API.
PYTHON_ADVICE = "load trained weights with DiffEICCodec.from_pretrained for real use"
CLI_ADVICE = f"for real use pass --model {DEMO_MODEL} (the shipped demo model) or --model CHECKPOINT_FOLDER"


def warn_if_untrained(codec: "DiffEICCodec", name: Optional[str] = None, always: bool = False,
                      advice: str = PYTHON_ADVICE) -> None:
    """Warn (once per process, or ``always``) that ``codec`` has random, untrained weights, ending with ``advice``."""
    global _warned_untrained
    if codec.is_trained or (_warned_untrained and not always):
        return
    _warned_untrained = True
    warnings.warn(f"model {name or codec.config.name!r} has random, untrained weights: fine for tests and demos, "
                  f"but reconstructions will not resemble the input ({advice})", UserWarning, stacklevel=3)


class DiffEICCodec(Codec):
    """An LFGCM, a control module and the frozen SD parts, with real bitstreams.

    Build one with :meth:`from_config` (random deterministic weights, offline) or
    :meth:`from_pretrained` (a checkpoint folder written by :meth:`save_pretrained` or the trainer).
    """

    family = "diffeic"
    weight_files = WEIGHT_FILES
    optional_files = OPTIONAL_FILES
    pad_mode = "constant"       # zeros, as the official ``utils/image/common.py`` ``pad``
    #: Run the guidance VAE encoder in tiles for every image, not only above the decoder's ``auto_tile_pixels``
    #: (``optimize(vae_tiling=True)``): less memory, a slightly different stream.
    encoder_tiling: bool = False

    def __init__(self, config: DiffEICConfig, lfgcm: LFGCM, backbone: FrozenBackbone, control: ControlModule,
                 trained: bool = False, onestep: Optional[OneStepDecoder] = None) -> None:
        super().__init__(config, trained)
        self.lfgcm = lfgcm
        self.backbone = backbone
        self.control = control
        self.onestep = onestep          # trained one-step decoder, if any (see one_step_decoder)
        self._backbone_fingerprint: Optional[str] = None

    def __repr__(self) -> str:
        # One line instead of nn.Module's thousands: what a user needs to know about this codec.
        return (f"DiffEICCodec(preset={self.config.name!r}, is_trained={self.is_trained}, "
                f"fingerprint={self.fingerprint()[:8]!r}, device={str(self.device)!r})")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, config: Union[str, Path, DiffEICConfig] = "tiny", pretrained_backbone: bool = False,
                    sd_path: Optional[str] = None) -> "DiffEICCodec":
        """Random, deterministic initialisation from a preset name, a YAML file or a config.

        The control module is crop-initialised from the UNet as in training and its zero
        convolutions are zero, so this codec's decoder is the frozen UNet's prior alone.  By default the
        frozen parts are random too and nothing is downloaded; ``pretrained_backbone=True`` loads them
        from ``sd_path`` (the start of stage-1 training).
        """
        cfg = get_config(config)
        seed_state = torch.random.get_rng_state()
        try:
            torch.manual_seed(cfg.init_seed)
            lfgcm = LFGCM(cfg.lfgcm)
            if pretrained_backbone and cfg.backbone.pretrained:
                backbone = FrozenBackbone.from_pretrained(cfg.backbone, sd_path)
            else:
                backbone = FrozenBackbone.from_config(cfg.backbone, seed=cfg.init_seed + 1)
            control = ControlModule.from_unet(backbone.unet, cfg.control)
        finally:
            torch.random.set_rng_state(seed_state)
        codec = cls(cfg, lfgcm, backbone, control, trained=False)
        codec.eval()
        codec.lfgcm.update(force=True)
        return codec

    @classmethod
    def get_config(cls, config: Union[str, Path, DiffEICConfig]) -> DiffEICConfig:
        """A fresh config from a preset name, a YAML file or a config (:func:`diffeic.get_config`)."""
        return get_config(config)

    @classmethod
    def from_pretrained(cls, path: Union[str, Path], sd_path: Optional[str] = None,
                        device: Union[str, torch.device, None] = None, check_backbone: bool = True) -> "DiffEICCodec":
        """Load a checkpoint folder (``config.yaml`` + ``lfgcm.safetensors`` + ``control.safetensors``) or a
        model shipped with the package by name (:func:`diffeic.pretrained_models`, e.g. ``"tiny-trained"``).

        ``path`` is a local folder or a Hugging Face hub repository id (``"user/repo"``, optionally
        ``"user/repo@revision"``) holding those files; a hub checkpoint is downloaded once into the hub
        cache and read from there afterwards (``HF_HUB_OFFLINE=1``: cache only).

        For presets with pretrained frozen parts (``sd21``) the VAE/UNet come from ``sd_path``
        (argument, else the value recorded in ``config.yaml``, else ``DIFFEIC_SD_PATH``/default);
        presets without them (``tiny``) rebuild the frozen parts from the config.  The backbone's
        content fingerprint must equal the one recorded at training time unless ``check_backbone=False``.
        Everything in the folder is checked first (:meth:`~diffeic.codecs.base.Codec.read_checkpoint`): a broken
        or tampered folder raises :class:`~diffeic.codecs.folder.CheckpointError` naming the file and the problem.
        """
        return super().from_pretrained(path, device, sd_path=sd_path, check_backbone=check_backbone)

    # ------------------------------------------------------------------ the checkpoint folder (plug-in)
    @classmethod
    def config_from_meta(cls, model: Any, meta: Dict[str, Any]) -> DiffEICConfig:
        # A folder written before there was a ``model`` key holds the config at the top level.
        return DiffEICConfig.from_dict(model if model is not None else meta)

    @classmethod
    def check_meta(cls, meta: Dict[str, Any], config: DiffEICConfig) -> None:
        info = meta.get("onestep")
        if info is None:
            return
        settings = dict(info)
        check_bool("onestep.trained", settings.pop("trained", False))
        timestep = OneStepConfig.from_dict(settings).timestep
        if timestep >= config.schedule.num_train_timesteps:
            raise ValueError(f"onestep.timestep = {timestep}: must be below schedule.num_train_timesteps "
                             f"({config.schedule.num_train_timesteps})")
        if meta.get("files") is not None and ONESTEP_FILE not in meta["files"]:
            raise ValueError(f"files names no SHA-256 of {ONESTEP_FILE}, which the one-step decoder needs")

    @classmethod
    def fingerprint_checked(cls, options: Dict[str, Any]) -> bool:
        return options.get("check_backbone", True)   # (another backbone, by the caller's choice, is another model)

    @classmethod
    def build(cls, ckpt: Checkpoint, sd_path: Optional[str] = None, check_backbone: bool = True) -> "DiffEICCodec":
        cfg, meta, folder = ckpt.config, ckpt.meta, ckpt.folder
        if meta.get("onestep") is not None and ONESTEP_FILE not in ckpt.tensors:
            raise FileNotFoundError(f"{folder}: {CONFIG_FILE} declares a one-step decoder but {ONESTEP_FILE} is "
                                    f"missing")
        # The LFGCM before the (slow) backbone: a bad folder fails fast.
        lfgcm = ckpt.load(LFGCM_FILE, lambda: LFGCM(cfg.lfgcm), LFGCM.coding_table_names())
        if cfg.backbone.pretrained:
            backbone = _recorded_backbone(cfg, meta, sd_path, folder)
        else:
            backbone = FrozenBackbone.from_config(cfg.backbone, seed=cfg.init_seed + 1)
        recorded = meta.get("backbone_fingerprint")
        if check_backbone and recorded and backbone.fingerprint() != recorded:
            raise ValueError(f"the loaded SD backbone (fingerprint {backbone.fingerprint()}) differs from the one this "
                             f"checkpoint was trained with ({recorded}); pass the original weights as sd_path, or "
                             f"check_backbone=False to use it anyway")
        control = ckpt.load(CONTROL_FILE, ControlModule.from_unet(backbone.unet, cfg.control, init_from_unet=False))
        onestep = None
        if ONESTEP_FILE in ckpt.tensors:
            info = dict(meta["onestep"])
            trained = info.pop("trained", False)
            onestep = ckpt.load(ONESTEP_FILE, OneStepDecoder(
                ControlModule.from_unet(backbone.unet, cfg.control, init_from_unet=False),
                OneStepConfig.from_dict(info), cfg.schedule, trained=trained))
        return cls(cfg, lfgcm, backbone, control, trained=ckpt.trained, onestep=onestep)

    def weights(self) -> Dict[str, Dict[str, torch.Tensor]]:
        files = {LFGCM_FILE: self.lfgcm.state_dict(), CONTROL_FILE: self.control.state_dict()}
        if self.onestep is not None:
            files[ONESTEP_FILE] = self.onestep.state_dict()
        return files

    def model_config(self) -> Dict[str, Any]:
        return self.config.to_dict()

    def save_metadata(self) -> Dict[str, Any]:
        meta = {"backbone_fingerprint": self.backbone_fingerprint(),
                "sd_path": self.config.backbone.resolved_sd_path() if self.config.backbone.pretrained else None}
        if self.onestep is not None:
            meta["onestep"] = self.onestep.metadata()
        return meta

    def save_pretrained(self, path: Union[str, Path], overwrite: bool = True, **metadata: Any) -> Path:
        """Write the trainable parts (and the LFGCM's coding tables) as a checkpoint folder, atomically
        (:func:`~diffeic.codecs.folder.write_folder`): readers see the previous folder or the new one, never a mix."""
        self.lfgcm.update(force=True)          # store tables that match the weights being saved
        return super().save_pretrained(path, overwrite, **metadata)

    def refresh_tables(self) -> None:
        self.lfgcm.refresh_tables()

    # ------------------------------------------------------------------ dtype: float32 only
    def to(self, *args: Any, **kwargs: Any) -> "DiffEICCodec":
        """Move the codec to a device (``codec.to("cuda")``); its weights stay float32 (see :meth:`double`)."""
        _, dtype, _, _ = torch._C._nn._parse_to(*args, **kwargs)
        _refuse_dtype(dtype, "to")
        return super().to(*args, **kwargs)

    def double(self) -> "DiffEICCodec":
        """Refused: the coder's exact integer path and tables are defined on float32 weights. Faster
        decoding in half precision: ``codec.optimize(dtype="bf16")`` (or ``"fp16"``)."""
        _refuse_dtype(torch.float64, "double")
        return self

    def half(self) -> "DiffEICCodec":
        """Refused, as :meth:`double`; use ``codec.optimize(dtype="fp16")``."""
        _refuse_dtype(torch.float16, "half")
        return self

    def bfloat16(self) -> "DiffEICCodec":
        """Refused, as :meth:`double`; use ``codec.optimize(dtype="bf16")``."""
        _refuse_dtype(torch.bfloat16, "bfloat16")
        return self

    # ------------------------------------------------------------------ identity
    @property
    def device(self) -> torch.device:
        return next(self.lfgcm.parameters()).device

    def backbone_fingerprint(self) -> str:
        if self._backbone_fingerprint is None:
            self._backbone_fingerprint = self.backbone.fingerprint()
        return self._backbone_fingerprint

    def describe_model(self) -> List[bytes]:
        config = self.config.to_dict()
        config["backbone"].pop("sd_path")    # where the backbone lies is not what it is (its fingerprint is)
        return [yaml.safe_dump(config, sort_keys=True).encode(), self.backbone_fingerprint().encode()]

    def fingerprinted_tensors(self) -> List[Tuple[str, torch.Tensor]]:
        # The LFGCM names what its coder depends on (weights, CDF and scale tables, bounds): two models
        # that would decode a stream differently refuse each other's streams instead of decoding garbage.
        if getattr(self, "_control_params", None) is None:     # Parameter objects are stable; gather once
            self._control_params = [("control." + n, p) for n, p in self.control.named_parameters()]
        return [("lfgcm." + n, t) for n, t in self.lfgcm.fingerprint_tensors()] + self._control_params

    # ------------------------------------------------------------------ encoding
    @torch.no_grad()
    def _guidance(self, x_pad: torch.Tensor) -> torch.Tensor:
        """The VAE latent ``z_g`` that guides the LFGCM encoder: the posterior mode at inference, as the official code.

        Above ``DecodeOptions.auto_tile_pixels`` (and whenever :attr:`encoder_tiling` is on) the VAE encoder runs
        in tiles, so a 4K image does not need tens of GB for its full-resolution activations.  Only the
        encoder sees ``z_g``, so this changes which stream is written, never whether it decodes.
        """
        opts = self.fast_decoder().options
        tiled = self.encoder_tiling or opts.exceeds_auto_tile(x_pad.shape[-2] * x_pad.shape[-1])
        with vae_tiling(self.backbone.vae, opts.vae_tile_pixels, enabled=tiled):
            return self.backbone.encode(x_pad)

    def compress(self, x: torch.Tensor, *, sampler: Optional[str] = None, steps: Optional[int] = None,
                 seed: Optional[int] = None, rate: Optional[float] = None, target_bpp: Optional[float] = None,
                 target_bytes: Optional[int] = None, max_steps: Optional[int] = None) -> Union[bytes, List[bytes]]:
        """Compress an image ``(3,H,W)`` in [0,1] → bytes, or a batch ``(B,3,H,W)`` → list of bytes.

        ``sampler``/``steps``/``seed`` are stored in the stream as the decoder's defaults (only when
        they differ from the model's own defaults, to save bytes).  ``steps`` above what decoders accept by default
        (:mod:`diffeic.decode_cost`: 4× the model's default) are refused unless ``max_steps`` allows them.

        Variable-rate models (:attr:`rate_range` is not None) take at most one of: ``rate=q`` in
        ``rate_range`` (default: the highest rate), ``target_bpp`` or ``target_bytes`` — the largest q
        whose real stream (container included) is at most that size, per image; a target below the
        model's lowest rate raises :class:`~diffeic.target_size.TargetTooSmall` (a ``ValueError``).
        q is rounded to float32 and stored in the stream.  Fixed-rate models refuse all three.
        """
        batch, single = self.check_images(x)
        s = self.resolve_settings(None, steps, seed, sampler)       # never write what decode refuses
        d = self.config.sampler
        steps, seed = (None if steps is None else s.steps), (None if seed is None else s.seed)     # checked ints
        check_steps_to_write(steps, d.steps, max_steps, self.config.name)
        # Only what the caller chose and the model would not: a stream leaves its defaults to the model.
        header_kw = {"sampler": None if sampler in (None, d.name) else sampler,
                     "steps": None if steps in (None, d.steps) else steps,
                     "seed": None if seed in (None, d.seed) else seed}
        h, w = batch.shape[-2:]
        q, budget = self._rate_request(rate, target_bpp, target_bytes, h * w)
        warn_if_untrained(self)
        fp = self.fingerprint()[:8]

        def stream(payload: bytes, q: Optional[float]) -> bytes:
            return pack(StreamHeader(fingerprint=fp, height=h, width=w, rate=q, **header_kw), payload)

        x_pad = self.pad(batch)
        z_g = self._guidance(x_pad)
        if budget is None:
            streams = [stream(payload, q) for payload in self.lfgcm.compress(x_pad, z_g, q)["strings"][0]]
        else:
            streams = []
            for i in range(batch.shape[0]):
                compress_at = self.lfgcm.compressor(x_pad[i:i + 1], z_g[i:i + 1])

                def encode(q: float) -> bytes:
                    return stream(compress_at(q)["strings"][0][0], q)
                try:
                    streams.append(fit_to_budget(encode, *self.rate_range, budget)[1])
                except TargetTooSmall as err:
                    where = "" if single else f"image {i}: "
                    raise TargetTooSmall(f"{where}{err} ({8 * budget / (h * w):.4g} bpp requested for an image "
                                         f"of {size_text(h, w)})") from None
        return streams[0] if single else streams

    @property
    def rate_range(self) -> Optional[Tuple[float, float]]:
        """``(q_min, q_max)`` of a variable-rate model (q = log2(λ_max/λ): larger q, more bits), else None."""
        rc = self.config.lfgcm.rate
        return None if rc is None else q_range(rc)

    def _rate_request(self, rate: Any, target_bpp: Any, target_bytes: Any,
                      pixels: int) -> Tuple[Optional[float], Optional[int]]:
        """Validate the rate options → ``(q, byte budget)``; q is float32-rounded, one of them is None."""
        given = [name for name, v in (("rate", rate), ("target_bpp", target_bpp), ("target_bytes", target_bytes))
                 if v is not None]
        rc = self.config.lfgcm.rate
        if rc is None:
            if given:
                raise ValueError(f"{given[0]} needs a variable-rate model, but {self.config.name!r} is fixed-rate "
                                 f"(trained for one λ); use a variable-rate model (presets tiny_vr, sd21_vr)")
            return None, None
        if len(given) > 1:
            raise ValueError(f"give at most one of rate, target_bpp, target_bytes; got {', '.join(given)}")
        if target_bpp is not None:
            bpp = check_float("target_bpp", target_bpp, 0.0, MAX_TARGET_BPP)
            return None, int(bpp * pixels // 8)          # finite and bounded: int() cannot overflow
        if target_bytes is not None:
            return None, check_int("target_bytes", target_bytes, 1, MAX_TARGET_BYTES)
        return (q_range(rc)[1] if rate is None else check_rate(rate, rc)), None

    def resolve_settings(self, header: Optional[StreamHeader] = None, steps: Optional[int] = None,
                         seed: Optional[int] = None, sampler: Optional[str] = None,
                         max_steps: Optional[int] = None) -> SamplerConfig:
        """The decode settings: the caller's override, else the stream's ``header``, else the model's default.

        The one place they are resolved (compress, decompress, the CLI and eval call it) and checked against
        the chosen sampler's own limit (:data:`~diffeic.diffusion.sampling.SAMPLERS`).  A bad override is a
        ``ValueError``; settings that a stream asks for and this model cannot decode make it corrupt
        (``BitstreamError``), as the encoder never writes them.  ``onestep`` always makes one step.
        """
        if sampler is not None and sampler not in SAMPLER_IDS:
            raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLER_IDS)}")
        seed = None if seed is None else check_int("seed", seed, 0, SEED_LIMIT - 1)
        d = self.config.sampler
        stored = header or StreamHeader(fingerprint="0" * 8, height=1, width=1)
        name = sampler or stored.sampler or d.name
        # A sampler with one possible count (onestep) takes it: neither the model's default count nor, on a caller's
        # override of the sampler, the count the stream stored for its own sampler applies to it.
        one = sampler_limit(name, self.config.schedule, d.fewstep_start) == 1
        n = next(v for v in (steps, None if one and sampler else stored.steps, 1 if one else d.steps) if v is not None)
        try:
            n = check_steps(name, n, self.config.schedule, d.fewstep_start)      # numpy ints yes, True no
        except ValueError as err:
            if header is not None and sampler is None and steps is None:
                raise BitstreamError(f"corrupt header: {err}") from None
            raise
        if name == ONESTEP:
            try:
                self.one_step_decoder()         # refuses a trained checkpoint without one-step weights
            except ValueError as err:
                if header is not None and sampler is None:
                    raise BitstreamError(f"the stream asks for one-step decoding, but {err}") from None
                raise
        if max_steps is None:
            max_steps = self.fast_decoder().options.max_steps
        self.check_decode_cost(header, steps, n, d.steps, max_steps)
        return SamplerConfig(name, n, next(v for v in (seed, stored.seed, d.seed) if v is not None), d.fewstep_start)

    @torch.no_grad()
    def estimate_bits(self, x: torch.Tensor, rate: Optional[float] = None) -> Union[float, List[float]]:
        """Entropy-model estimate of the payload bits for ``x`` (hard rounding, as coded) at ``rate``."""
        batch, single = self.check_images(x)
        q, _ = self._rate_request(rate, None, None, 0)
        x_pad = self.pad(batch)
        values = self.lfgcm.estimate_bits(x_pad, self._guidance(x_pad), rate=q)
        return values[0] if single else values

    # ------------------------------------------------------------------ decoding
    def _open(self, bits: Bits) -> Tuple[StreamHeader, bytes]:
        header, payload = self.unpack(bits)
        rc = self.config.lfgcm.rate
        if (header.rate is None) != (rc is None):
            problem = ("the stream has no rate parameter, but this model is variable-rate" if rc is not None
                       else "the stream carries a rate parameter, but this model is fixed-rate")
            raise BitstreamError(f"corrupt header: {problem}")
        if rc is not None:
            try:
                check_rate(header.rate, rc)
            except ValueError as err:
                raise BitstreamError(f"corrupt header: {err}") from None
        return header, payload

    @torch.no_grad()
    def decompress_latents(self, bits: Bits) -> Dict[str, Any]:
        """Entropy-decode a stream without diffusion: ``{header, z_c, y_hat, z_hat}``."""
        header, payload = self._open(bits)
        return self._decode_latents(header, payload)

    @torch.no_grad()
    def _decode_latents(self, header: StreamHeader, payload: bytes) -> Dict[str, Any]:
        hp, wp = padded_size(header.height, header.width)
        try:
            latents = self.lfgcm.decompress([[payload]], (hp // PAD_MULTIPLE, wp // PAD_MULTIPLE), rate=header.rate)
        except (RuntimeError, ValueError, OverflowError) as err:
            raise BitstreamError(f"corrupt payload: {err}") from err
        if not torch.isfinite(latents["z_c"]).all():
            raise BitstreamError(NON_FINITE_STREAM)
        return {"header": header, **latents}

    def decompress(self, bits: Union[Bits, Sequence[Bits]], steps: Optional[int] = None,
                   seed: Optional[int] = None, sampler: Optional[str] = None,
                   progress: bool = False, generator: Optional[torch.Generator] = None,
                   max_steps: Optional[int] = None) -> Union[torch.Tensor, List[torch.Tensor]]:
        """Decode a stream → ``(3,H,W)`` in [0,1] at the original size, or a list of streams → list.

        ``steps``, ``seed`` and ``sampler`` override what the stream's header asks for (which in turn
        defaults to the model's config).  What is promised for the same stream and seed: ŷ, ẑ and z_c
        (:meth:`decompress_latents`) are bit-identical on every machine and thread count (exact integer
        coding); the image is equal to within one 8-bit step (float kernels differ with thread count and
        batching: measured up to 8e-7 on the tiny preset, which can move a value across a rounding boundary).
        ``generator``: a CPU ``torch.Generator`` to draw the noise from instead of a seed (as in diffusers
        pipelines; its state advances, so a list of streams draws different noise for each).
        ``max_steps``: the most steps a stream may ask for (:mod:`diffeic.decode_cost`; default
        ``DecodeOptions.max_steps``, else 4× the model's default), checked when the header is read.
        """
        if generator is not None and seed is not None:
            raise ValueError("pass either seed or generator, not both")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        if isinstance(bits, (list, tuple)):
            return [self.decompress(b, steps=steps, seed=seed, sampler=sampler, progress=progress,
                                    generator=generator, max_steps=max_steps) for b in bits]
        if not isinstance(bits, (bytes, bytearray, memoryview)):
            raise TypeError(f"expected bytes (or a list of bytes), got {type(bits).__name__}")
        warn_if_untrained(self)
        header, payload = self._open(bits)
        s = self.resolve_settings(header, steps, seed, sampler, max_steps)     # the cost limit, before any work
        latents = self._decode_latents(header, payload)
        image = self.generate(latents["z_c"], sampler=s.name, steps=s.steps,
                              seed=s.seed if generator is None else generator, progress=progress)
        if not torch.isfinite(image).all():
            raise BitstreamError(NON_FINITE_STREAM)
        return image[0, :, :header.height, :header.width]

    @torch.no_grad()
    def generate(self, z_c: torch.Tensor, sampler: str, steps: int,
                 seed: Union[int, Sequence[int], torch.Generator], progress: bool = False) -> torch.Tensor:
        """Controlled diffusion sampling from content variables ``z_c`` → padded images in [0,1].

        ``seed``: one seed for the batch, or one per batch item (then each item is decoded exactly as
        it would be alone with its seed), or a CPU ``torch.Generator`` used as is.  Runs with the options
        of :meth:`optimize` (default: plain float32; latent + VAE tiling above
        ``DecodeOptions.auto_tile_pixels``, 1024×1024 padded pixels).
        """
        if isinstance(seed, torch.Generator):
            generator = seed
        elif isinstance(seed, (list, tuple)):
            generator = [torch.Generator("cpu").manual_seed(int(s)) for s in seed]
        else:
            generator = torch.Generator("cpu").manual_seed(int(seed))
        if sampler == ONESTEP:
            one_step = self.one_step_decoder()
            return self.one_step_fast_decoder().decode_one_step(z_c, one_step, generator,
                                                                 colour_fix=self.config.sampler.colour_fix)
        return self.fast_decoder().decode(z_c, sampler=sampler, steps=steps, generator=generator,
                                          schedule=self.config.schedule,
                                          fewstep_start=self.config.sampler.fewstep_start, progress=progress,
                                          colour_fix=self.config.sampler.colour_fix)

    # ------------------------------------------------------------------ one-step decoding
    def one_step_decoder(self) -> OneStepDecoder:
        """The decoder of ``sampler="onestep"``: trained one-step weights, or (untrained codecs only) a default.

        An untrained codec (``from_config``) runs the mode with its own control module and the default
        :class:`~diffeic.diffusion.onestep.OneStepConfig`, so the plumbing works without training.  A trained
        codec without one-step weights (no ``onestep`` entry with ``trained: true`` in its ``config.yaml``)
        raises ``ValueError``: its control module was trained for multi-step sampling only.
        """
        if self.onestep is not None and (self.onestep.trained or not self.is_trained):
            return self.onestep
        if self.is_trained:
            raise ValueError(f"this checkpoint ({self.config.name}, model {self.fingerprint()[:8]}) has no trained "
                             f"one-step decoder, so it cannot decode with sampler='onestep'; train one with "
                             f"`python train.py fit --config configs/{self.config.name}_onestep.yaml "
                             f"--model.init_from <this checkpoint>`, or decode with a multi-step sampler (e.g. 'ddpm')")
        default = self.__dict__.get("_default_one_step")      # not a submodule: it wraps self.control
        if default is None or default.control is not self.control:
            default = OneStepDecoder(self.control, OneStepConfig(), self.config.schedule, trained=False)
            self.__dict__["_default_one_step"] = default
        return default

    def draws_noise(self, sampler: str) -> bool:
        """Whether decoding with ``sampler`` draws noise, so that the image depends on the decode seed: every
        sampler does but the one-step decoder fed ``z_c`` itself (input ``content``)."""
        return sampler != ONESTEP or self.one_step_decoder().config.input != "content"

    def one_step_fast_decoder(self) -> Decoder:
        """The :class:`~diffeic.Decoder` of the one-step mode: the one-step control module and :meth:`optimize`'s
        options."""
        one_step = self.one_step_decoder()
        options = self.fast_decoder().options
        decoder = self.__dict__.get("_one_step_fast")
        if decoder is None or decoder.control is not one_step.control or decoder.backbone is not self.backbone \
                or decoder.options is not options:
            # configure(): memory format and attention of the one-step control module follow the options too
            decoder = Decoder(self.backbone, one_step.control, options).configure()
            self.__dict__["_one_step_fast"] = decoder
        return decoder

    # ------------------------------------------------------------------ speed
    def fast_decoder(self) -> Decoder:
        """The :class:`~diffeic.Decoder` :meth:`generate` uses (set by :meth:`optimize`; plain options until then)."""
        decoder = getattr(self, "_fast_decoder", None)
        if decoder is None or decoder.backbone is not self.backbone or decoder.control is not self.control:
            decoder = self._fast_decoder = Decoder(self.backbone, self.control, DecodeOptions())
        return decoder

    def optimize(self, options: Optional[DecodeOptions] = None, *, vae_tiling: Optional[bool] = None,
                 **kwargs: Any) -> "DiffEICCodec":
        """Switch decoding fast paths on or off: ``codec.optimize(dtype="bf16", channels_last=True, cuda_graphs=True)``.

        Takes a :class:`~diffeic.DecodeOptions` or its fields as keywords;
        ``codec.optimize()`` restores the plain path.  Only the diffusion decoder and the VAE are
        affected — the LFGCM's entropy coding always runs its exact float32/integer path, so
        streams stay bit-identical across settings and devices.  ``vae_tiling`` sets :attr:`encoder_tiling`
        (kept when not given): the VAE *encoder* then runs tiled for every image, as it does by default above
        ``auto_tile_pixels``, which changes the stream written, not its decoding.
        """
        opts = DecodeOptions(**kwargs) if options is None else dataclasses.replace(options, **kwargs)
        self._fast_decoder = Decoder(self.backbone, self.control, opts).configure()
        if vae_tiling is not None:
            self.encoder_tiling = bool(vae_tiling)
        return self

    @torch.no_grad()
    def decompress_batch(self, bits: Sequence[Bits], steps: Optional[int] = None, seed: Optional[int] = None,
                         sampler: Optional[str] = None, max_batch: int = 8,
                         max_steps: Optional[int] = None) -> List[torch.Tensor]:
        """Decode several streams, sampling those of the same padded size and settings together.

        Each stream keeps its own seed (one generator per batch item), so the images equal
        ``[decompress(b) for b in bits]`` to within one 8-bit step (batched float kernels round differently,
        on a CPU too); the latents are the same bits.
        """
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        warn_if_untrained(self)
        groups: Dict[tuple, List[Tuple[int, StreamHeader, torch.Tensor, int]]] = {}
        for i, b in enumerate(bits):
            if not isinstance(b, (bytes, bytearray, memoryview)):
                raise TypeError(f"expected a list of bytes, got {type(b).__name__} at index {i}")
            h, payload = self._open(b)
            s = self.resolve_settings(h, steps, seed, sampler, max_steps)      # every stream's cost, before any work
            lat = self._decode_latents(h, payload)
            groups.setdefault((tuple(lat["z_c"].shape), s.name, s.steps), []).append((i, h, lat["z_c"], s.seed))
        out: List[Optional[torch.Tensor]] = [None] * len(bits)
        for (_, name, n_steps), items in groups.items():
            for k in range(0, len(items), max_batch):
                chunk = items[k:k + max_batch]
                images = self.generate(torch.cat([z for _, _, z, _ in chunk]), sampler=name, steps=n_steps,
                                       seed=[s for _, _, _, s in chunk])
                if not torch.isfinite(images).all():
                    raise BitstreamError(NON_FINITE_STREAM)
                for (i, h, _, _), image in zip(chunk, images):
                    out[i] = image[:, :h.height, :h.width]
        return out


def _recorded_backbone(cfg: DiffEICConfig, meta: Dict[str, Any], override: Optional[str],
                       folder: Path) -> FrozenBackbone:
    """The frozen backbone of a checkpoint: ``override`` (the caller's ``sd_path``), else the one its config records.

    A relative recorded path (``../tiny-backbone``: a backbone shipped beside the checkpoint) is resolved against
    the config file's real location, so a checkpoint reached through a symbolic link finds its backbone, and its
    files are checked against ``backbone_files`` (their SHA-256); if that backbone cannot be loaded, the error
    names the checkpoint and its preset rather than SD2.1's download advice.
    """
    from ..diffusion.sd_source import BackboneUnavailableError

    recorded = meta.get("sd_path")
    if override or not recorded:
        return FrozenBackbone.from_pretrained(cfg.backbone, override or recorded)
    meta_path = (folder / CONFIG_FILE).resolve()
    local = Path(recorded).expanduser()
    if not local.is_absolute() and (recorded.startswith((".", "~")) or (meta_path.parent / local).exists()):
        local = (meta_path.parent / local).resolve()
    elif not local.is_absolute():
        return FrozenBackbone.from_pretrained(cfg.backbone, recorded)     # a hub id
    if local.is_dir():
        ckpt_folder.check_backbone_files(meta_path, local, meta.get("backbone_files"), shipped=is_shipped(folder))
    try:
        return FrozenBackbone.from_pretrained(cfg.backbone, str(local))
    except BackboneUnavailableError as err:
        first = first_line(err)
        raise BackboneUnavailableError(f"{meta_path}: sd_path = {recorded!r}, the frozen backbone of this "
                                       f"{cfg.name!r} checkpoint, resolves to {local}: {first}; pass sd_path= to "
                                       f"load it from elsewhere") from None


def _refuse_dtype(dtype: Optional[torch.dtype], method: str) -> None:
    if dtype is not None and dtype != torch.float32:
        raise TypeError(f"DiffEICCodec.{method}(): dtype {dtype} is not allowed, the codec's weights stay float32 "
                        f"(its exact entropy coding depends on them); for faster decoding use "
                        f"codec.optimize(dtype='bf16' or 'fp16')")
