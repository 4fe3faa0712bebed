"""retina-fgvis: fine-grained visual explanations (FGVis, Wagner et al., CVPR 2019)."""
__version__ = "0.1.0"
