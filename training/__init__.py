"""Training of the referable-DR classifier on MONAI engines (imports the core; never imported by it).

``train`` and ``TrainResult`` load MONAI and ignite on first use, so reading the configuration
(:mod:`retina_fgvis.training.config`, e.g. for the command line's choices and defaults) stays fast.
"""
from retina_fgvis.training.config import DATASET_DEFAULTS, TrainConfig

__all__ = ["DATASET_DEFAULTS", "TrainConfig", "TrainResult", "train"]


def __getattr__(name: str):
    if name in ("TrainResult", "train"):
        from retina_fgvis.training import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
