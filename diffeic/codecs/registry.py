"""Names → codec families: presets, models shipped inside the package, checkpoint folders and hub ids.

* A preset name (``tiny``, ``sd21``, ``hific_tiny``, ``refine_tiny``, …) or a DiffEIC config ``.yaml``: that family's
  codec with deterministic random weights (``from_config``).
* A checkpoint folder, a model shipped in ``diffeic/data/pretrained/`` (:func:`pretrained_models`) or a Hugging
  Face hub id ``user/repo[@revision]``: the family its ``config.yaml`` names (``family``; absent means DiffEIC, as
  written before there were families).  A hub checkpoint is fetched with ``huggingface_hub.snapshot_download`` into
  the hub cache, so it downloads once; with ``HF_HUB_OFFLINE=1`` only the cache is read.

Anything else is a ``ValueError`` (or ``FileNotFoundError``) that lists what exists, never a silent default.
The family plug-ins are imported on first use (the DiffEIC one pulls in diffusers); this module imports nothing
heavy, so the CLI can decide what to load before it loads torch.

The shipped demo model ``demo-trained`` is one variable-rate model (λ from 0.5 to 32, rate parameter q = 0…6)
trained on a CPU on photos that other packages ship in their wheels (``scripts/train_demo.sh``), never on
scikit-image's, which evaluate it — a working codec end to end, offline, but *not* the paper's model.  Its frozen
prior sits beside it in ``demo-backbone/``.  The first demo model, ``tiny-trained`` (seven scikit-image photos,
``scripts/train_tiny.sh``, prior in ``tiny-backbone/``), stays shipped for old streams and code.
"""
from __future__ import annotations

import importlib
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

from ..util import first_line, hub_offline

#: The plug-in module and codec class of each family, imported on first use.
FAMILY_CODECS = {"diffeic": ("diffeic.codecs.diffeic", "DiffEICCodec"),
                 "hific": ("diffeic.codecs.hific", "HiFiCCodec"),
                 "refine": ("diffeic.codecs.refine", "RefineCodec"),
                 "semantic": ("diffeic.codecs.semantic", "SemanticCodec")}
#: The family of a checkpoint whose ``config.yaml`` names none (written before there were families); its folders
#: are still written without the key.
DEFAULT_FAMILY = "diffeic"
#: The preset table of each family (``name → config factory``), read without importing the codec.
FAMILY_PRESETS = {"diffeic": "diffeic.config", "hific": "diffeic.hific.config", "refine": "diffeic.refine.config",
                  "semantic": "diffeic.semantic.config"}

#: Where the shipped checkpoint folders live.
PRETRAINED_DIR = Path(__file__).resolve().parent.parent / "data" / "pretrained"
#: The demo model: variable-rate, so one name covers every rate point (``compress(x, rate=q)``).
DEMO_MODEL = "demo-trained"
#: What every output that shows a shipped model says it is.
SHIPPED_NOTES = {
    "demo-trained": "demo model, trained on a CPU on 65 photos other packages ship; not the paper's model",
    "tiny-trained": "tiny demo model, trained on 7 photos on a CPU; not the paper's model",
    "semantic-tiny-trained": "tiny semantic decoder, trained on a CPU; not SD1.5",
}
DEMO_NOTE = SHIPPED_NOTES[DEMO_MODEL]
#: ``owner/name`` with an optional ``@revision``; anything else is a local path.
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?")

PathLike = Union[str, "os.PathLike[str]"]


# --------------------------------------------------------------------------- families and presets
def codec_class(family: str) -> type:
    """The codec class of a family name (``diffeic``, ``hific``, ``refine``, ``semantic``)."""
    if family not in FAMILY_CODECS:
        raise ValueError(f"unknown codec family {family!r}; known: {', '.join(FAMILY_CODECS)}")
    module, name = FAMILY_CODECS[family]
    return getattr(importlib.import_module(module), name)


def preset_names() -> Dict[str, str]:
    """Every preset name → its family."""
    return {name: family for family, module in FAMILY_PRESETS.items()
            for name in importlib.import_module(module).PRESETS}


# --------------------------------------------------------------------------- shipped models
def _shipped() -> Dict[str, Path]:
    if not PRETRAINED_DIR.is_dir():
        return {}
    # A folder without config.yaml (tiny-backbone: a frozen prior's diffusers folders) is not a codec.
    return {p.name: p for p in sorted(PRETRAINED_DIR.iterdir()) if (p / "config.yaml").is_file()}


def pretrained_models() -> List[str]:
    """Every model name ``from_pretrained`` and :func:`diffeic.load_codec` accept without a path."""
    return list(_shipped())


def pretrained_folder(name: str) -> Optional[Path]:
    """The folder of a shipped model name, or ``None`` if ``name`` is not one."""
    return _shipped().get(name)


def is_shipped(folder: PathLike) -> bool:
    """Whether ``folder`` is a model shipped inside the package (its files must be verified)."""
    try:
        return Path(folder).resolve().parent == PRETRAINED_DIR.resolve()
    except OSError:
        return False


def shipped_or_path(key: PathLike) -> Path:
    """``key`` as a path, or the folder of the model of that name shipped inside the package."""
    path = Path(key)
    return pretrained_folder(str(key)) if not path.exists() and pretrained_folder(str(key)) is not None else path


# --------------------------------------------------------------------------- hub ids
def is_hub_id(text: str) -> bool:
    """Whether ``text`` can name a hub repository (and is not an existing local path)."""
    return bool(HUB_ID.fullmatch(str(text))) and not os.path.exists(os.path.expanduser(str(text)))


def resolve_checkpoint(path: PathLike, files: Sequence[str], optional: Sequence[str] = ()) -> Path:
    """A local checkpoint folder as is; a hub id → the local snapshot folder holding ``files``
    (and ``optional`` ones when the repository has them).

    Raises ``FileNotFoundError`` naming the repository and what to do when it cannot be fetched.
    """
    text = str(path)
    if not is_hub_id(text):
        return Path(text).expanduser()
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    from .. import __version__

    repo_id, _, revision = text.partition("@")
    offline = hub_offline()
    try:
        folder = snapshot_download(repo_id, revision=revision or None, allow_patterns=[*files, *optional],
                                   local_files_only=offline, library_name="diffeic", library_version=__version__)
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as err:
        why = ("HF_HUB_OFFLINE is set and the hub cache does not hold it" if offline
               else f"{type(err).__name__}: {first_line(err)}")
        raise FileNotFoundError(
            f"{text}: no such local checkpoint folder, and the hub repository {repo_id!r} could not be read "
            f"({why}). Check the name, or download it once online (`hf download {repo_id}`), or pass a local "
            f"folder with {', '.join(files)}") from err
    missing = [f for f in files if not (Path(folder) / f).is_file()]
    if missing:
        family = _family_in(Path(folder)) if (Path(folder) / "config.yaml").is_file() else None
        whose = f"it holds a {family!r} model: load it with diffeic.load_codec({text!r})" if family else "it lacks"
        raise FileNotFoundError(f"{text}: the hub repository {repo_id!r} is not a checkpoint of this family "
                                f"({whose}; missing {', '.join(missing)})")
    return Path(folder)


def push_folder(write: Callable[[Path], object], repo_id: str, *, private: Optional[bool] = None,
                token: Optional[str] = None, commit_message: str = "Upload diffeic checkpoint") -> str:
    """``write(folder)`` into a temporary folder, then upload it as one commit; returns the commit URL."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    with tempfile.TemporaryDirectory(prefix="diffeic-push-") as tmp:
        write(Path(tmp))
        info = api.upload_folder(repo_id=repo_id, folder_path=tmp, commit_message=commit_message,
                                 repo_type="model")
    return str(getattr(info, "commit_url", info))


# --------------------------------------------------------------------------- names → folders and families
def resolve_folder(path: PathLike, files: Sequence[str], optional: Sequence[str] = ()) -> Path:
    """The local checkpoint folder of a path, a shipped model's name or a hub id; ``FileNotFoundError`` listing
    the shipped models when it is none of them."""
    folder = Path(path)
    if folder.exists():
        return folder
    if pretrained_folder(str(path)) is not None:
        return pretrained_folder(str(path))
    if is_hub_id(str(path)):
        return resolve_checkpoint(path, files, optional)
    raise FileNotFoundError(f"{folder}: no such checkpoint folder, not a shipped model name "
                            f"(shipped: {', '.join(pretrained_models()) or 'none installed'}) and not a hub id "
                            f"(user/repo)")


def model_kind(spec: PathLike) -> str:
    """What a model spec names, decided before anything is loaded or any input read: ``"preset"`` or
    ``"config"`` (a DiffEIC YAML file) — random weights — or ``"checkpoint"`` (a folder, a shipped model's
    name, a hub id ``user/repo``).  Anything else is a ``ValueError`` that lists the choices."""
    key, path = str(spec), Path(str(spec))
    presets = preset_names()
    if key in presets:
        return "preset"
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return "config"
    if path.is_dir() or pretrained_folder(key) is not None or is_hub_id(key):
        return "checkpoint"
    raise ValueError(f"{key!r}: neither a preset ({', '.join(presets)}), a shipped model "
                     f"({', '.join(pretrained_models()) or 'none installed'}), a checkpoint folder, a hub id "
                     f"(user/repo) nor a config .yaml file")


def family_of(name_or_folder: PathLike) -> str:
    """The family of a preset name, a DiffEIC config ``.yaml``, a checkpoint folder, a shipped model's name or a
    hub id (the family its ``config.yaml`` names; absent: DiffEIC).  Anything else is a ``ValueError`` listing what
    exists (:func:`model_kind`); a folder without ``config.yaml`` is a ``FileNotFoundError``."""
    key = str(name_or_folder)
    kind = model_kind(key)
    if kind == "preset":
        return preset_names()[key]
    if kind == "config":
        return "diffeic"
    if is_hub_id(key) and not Path(key).exists():
        # Only config.yaml is fetched to decide; the family's own files come with from_pretrained.
        folder = resolve_checkpoint(key, ["config.yaml"])
    else:
        folder = shipped_or_path(key)
    return _family_in(folder)


def _family_in(folder: Path) -> str:
    from .folder import read_meta

    family = read_meta(folder).get("family", DEFAULT_FAMILY)
    if family not in FAMILY_CODECS:
        raise ValueError(f"{folder / 'config.yaml'}: family = {family!r}: must be one of {', '.join(FAMILY_CODECS)}")
    return str(family)


def load_codec(name_or_folder: PathLike, device: Union[str, Any, None] = None, **kwargs: Any) -> Any:
    """The codec for a preset name or a DiffEIC config ``.yaml`` (random weights), or for a checkpoint folder,
    a shipped model's name or a hub id (trained weights), on ``device`` — the one loader of the CLI, eval
    and scripts.  Returns the family's :class:`~diffeic.codecs.base.Codec` subclass.

    ``kwargs`` go to the family's ``from_pretrained`` for checkpoints (e.g. ``sd_path`` for DiffEIC).
    """
    key = str(name_or_folder)
    cls = codec_class(family_of(key))
    if model_kind(key) == "checkpoint":
        codec = cls.from_pretrained(shipped_or_path(key), **kwargs)
    else:
        codec = cls.from_config(key)
    return codec.to(device) if device is not None else codec


__all__ = ["DEMO_MODEL", "DEMO_NOTE", "SHIPPED_NOTES", "FAMILY_CODECS", "HUB_ID", "PRETRAINED_DIR", "codec_class", "family_of",
           "hub_offline", "is_hub_id", "is_shipped", "load_codec", "model_kind", "preset_names", "pretrained_folder",
           "pretrained_models", "push_folder", "resolve_checkpoint", "resolve_folder", "shipped_or_path"]
