"""Fundus datasets: EyePACS, DiaretDB1 (v1.1 and v2.1) and the built-in semi-synthetic set.

Images are uint8 H×W×3 RGB arrays, masks bool H×W. Bad input raises
:class:`~retina_fgvis.datasets.errors.DatasetError` (a ValueError) naming the file.
"""
from retina_fgvis.datasets.diaretdb1 import LESION_TYPES, FundusSample, open_diaretdb1
from retina_fgvis.datasets.errors import DatasetError
from retina_fgvis.datasets.eyepacs import load_eyepacs_table, patient_split, read_split, write_split
from retina_fgvis.datasets.fundus import CropGeometry, crop_to_fov, fov_mask, graham_normalize, load_fundus, read_rgb
from retina_fgvis.datasets.synthetic import SyntheticPaths, generate_synthetic

__all__ = [
    "LESION_TYPES",
    "CropGeometry",
    "DatasetError",
    "FundusSample",
    "SyntheticPaths",
    "crop_to_fov",
    "fov_mask",
    "generate_synthetic",
    "graham_normalize",
    "load_eyepacs_table",
    "load_fundus",
    "open_diaretdb1",
    "patient_split",
    "read_rgb",
    "read_split",
    "write_split",
]
