"""Training of the referable-DR classifier on MONAI engines (imports the core; never imported by it)."""
from retina_fgvis.training.config import DATASET_DEFAULTS, TrainConfig
from retina_fgvis.training.trainer import TrainResult, train

__all__ = ["DATASET_DEFAULTS", "TrainConfig", "TrainResult", "train"]
