"""retina-fgvis: fine-grained visual explanations (FGVis, Wagner et al., CVPR 2019)."""
__version__ = "0.1.0"

from retina_fgvis.fgvis import FGVis, FGVisResult  # noqa: E402

__all__ = ["FGVis", "FGVisResult", "__version__"]
