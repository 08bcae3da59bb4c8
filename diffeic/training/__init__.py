"""Training DiffEIC with Lightning ([Li2024] Sec. IV-A): module, data, callbacks, CLI (``train.py``)."""
from .backbone import BackbonePretrainModule
from .callbacks import ExportCallback, ExportConflictError
from .data import CropSpec, DatasetNotFoundError, DiffEICDataModule, RandomCropDataset, paper_crop
from .module import DiffEICModule, TrainingDiverged, build_codec, training_losses
from .onestep import OneStepModule
from .semantic import SemanticTinyModule

__all__ = ["DiffEICModule", "OneStepModule", "SemanticTinyModule", "DiffEICDataModule", "BackbonePretrainModule", "ExportCallback", "ExportConflictError", "TrainingDiverged", "build_codec",
           "training_losses", "CropSpec", "RandomCropDataset", "paper_crop", "DatasetNotFoundError"]
