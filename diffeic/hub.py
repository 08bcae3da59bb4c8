"""Checkpoint folders on the Hugging Face hub: ``from_pretrained("user/repo")`` and ``push_to_hub``.

A hub checkpoint is the same folder ``save_pretrained`` writes (``config.yaml`` + ``*.safetensors``),
stored in a model repository.  It is fetched with ``huggingface_hub.snapshot_download`` into the hub
cache, so it downloads once; with ``HF_HUB_OFFLINE=1`` only the cache is read and nothing waits on the
network.  Imports nothing heavy: the CLI uses it before deciding to load torch.
"""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

#: ``owner/name`` with an optional ``@revision``; anything else is a local path.
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?")


def is_hub_id(text: str) -> bool:
    """Whether ``text`` can name a hub repository (and is not an existing local path)."""
    return bool(HUB_ID.fullmatch(str(text))) and not os.path.exists(os.path.expanduser(str(text)))


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` as set now (huggingface_hub reads it once at import, so read it again here)."""
    if os.environ.get("HF_HUB_OFFLINE", "0").upper() in ("1", "ON", "YES", "TRUE"):
        return True
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def resolve_checkpoint(path: Union[str, os.PathLike], files: Sequence[str], optional: Sequence[str] = ()) -> Path:
    """A local checkpoint folder as is; a hub id → the local snapshot folder holding ``files``
    (and ``optional`` ones when the repository has them).

    Raises ``FileNotFoundError`` naming the repository and what to do when it cannot be fetched.
    """
    text = str(path)
    if not is_hub_id(text):
        return Path(text).expanduser()
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    from . import __version__

    repo_id, _, revision = text.partition("@")
    offline = hub_offline()
    try:
        folder = snapshot_download(repo_id, revision=revision or None, allow_patterns=[*files, *optional],
                                   local_files_only=offline, library_name="diffeic", library_version=__version__)
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as err:
        why = ("HF_HUB_OFFLINE is set and the hub cache does not hold it" if offline
               else f"{type(err).__name__}: {_first_line(err)}")
        raise FileNotFoundError(
            f"{text}: no such local checkpoint folder, and the hub repository {repo_id!r} could not be read "
            f"({why}). Check the name, or download it once online (`hf download {repo_id}`), or pass a local "
            f"folder with {', '.join(files)}") from err
    missing = [f for f in files if not (Path(folder) / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{text}: the hub repository {repo_id!r} is not a diffeic checkpoint "
                                f"(it lacks {', '.join(missing)})")
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


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else ""
