"""Classifiers: the o_O-style fundus CNN and self-describing checkpoints."""
from retina_fgvis.models.checkpoint import CheckpointError, LoadedClassifier, load_classifier, save_checkpoint
from retina_fgvis.models.fundus_cnn import FundusCNN

__all__ = ["CheckpointError", "FundusCNN", "LoadedClassifier", "load_classifier", "save_checkpoint"]
