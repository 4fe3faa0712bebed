"""retina-fgvis: fine-grained visual explanations (FGVis, Wagner et al., CVPR 2019)."""
__version__ = "0.1.0"

__all__ = ["FGVis", "FGVisResult", "__version__"]


def __getattr__(name: str):
    # Lazy, so that data-only code (e.g. `prepare` worker processes) does not import torch.
    if name in ("FGVis", "FGVisResult"):
        from retina_fgvis import fgvis

        return getattr(fgvis, name)
    raise AttributeError(f"module 'retina_fgvis' has no attribute {name!r}")
