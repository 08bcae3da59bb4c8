"""Training DiffEIC with Lightning (spec §7): module, data, callbacks, CLI (``train.py``)."""
from .callbacks import ExportCallback
from .data import CropSpec, DatasetNotFoundError, DiffEICDataModule, RandomCropDataset, paper_crop
from .module import DiffEICModule, TrainingDiverged, build_codec, training_losses

__all__ = ["DiffEICModule", "DiffEICDataModule", "ExportCallback", "TrainingDiverged", "build_codec",
           "training_losses", "CropSpec", "RandomCropDataset", "paper_crop", "DatasetNotFoundError"]
