"""Deprecated import path: ``diffeic.checkpoint`` is now :mod:`diffeic.codecs.folder` (the folder format, its
checks and the atomic write) and :meth:`diffeic.codecs.base.Codec.read_checkpoint` (the one reader; ``read`` here
is the DiffEIC family's).  A re-export kept for old code; see the README's changelog."""
import warnings

from .codecs.base import Fingerprint  # noqa: F401
from .codecs.diffeic import (CONTROL_FILE, FILES, LFGCM_FILE, ONESTEP_FILE, OPTIONAL_FILES,  # noqa: F401
                             WEIGHT_FILES, DiffEICCodec)
from .codecs.folder import (CONFIG_FILE, META_SCHEMA, Checkpoint, CheckpointError, MetaField,  # noqa: F401
                            check_backbone_files, check_common_meta, check_fingerprint, check_hashes, check_keys,
                            check_meta_schema, check_target, file_digests, load_tensors, shapes_only, write_folder)
from .codecs.registry import is_shipped  # noqa: F401

warnings.warn("diffeic.checkpoint is deprecated: import from diffeic.codecs.folder (and read checkpoints with "
              "DiffEICCodec.read_checkpoint)", DeprecationWarning, stacklevel=2)

read = DiffEICCodec.read_checkpoint

__all__ = ["CONFIG_FILE", "CONTROL_FILE", "Checkpoint", "CheckpointError", "FILES", "LFGCM_FILE", "META_SCHEMA",
           "MetaField", "ONESTEP_FILE", "OPTIONAL_FILES", "WEIGHT_FILES", "check_common_meta", "check_fingerprint",
           "check_backbone_files", "check_hashes", "check_keys", "check_meta_schema", "file_digests", "check_target",
           "is_shipped", "load_tensors", "read", "shapes_only", "write_folder"]
