"""DiaretDB1 in both public releases: images, field of view and consensus lesion masks.

v1.1 (``diaretdb1_v_1_1``)::

    resources/images/ddb1_fundusimages/imageNNN.png
    resources/images/ddb1_groundtruth/{hardexudates,softexudates,hemorrhages,redsmalldots}/imageNNN.png
    resources/images/ddb1_fundusmask/fmask.tif
    resources/traindatasets/trainset.txt, resources/testdatasets/testset.txt

  The ground-truth grey level is the experts' summed confidence, ``21 × level`` per expert with
  level 1/2/3 for Low/Medium/High (multiples of 21 up to 252).

v2.1 (``ddb1_v02_01``)::

    images/diaretdb1_imageNNN.png
    groundtruth/diaretdb1_imageNNN_0{1..4}.xml      one file per expert
    ddb1_v02_01_train.txt, ddb1_v02_01_test.txt

Consensus rules (see ``data/README.md``):

* ``rule="experts"`` (v2.1 only, the default there; FGVis paper): a pixel is lesion where at least
  ``min_experts`` experts marked it with a confidence of at least ``min_confidence``.
* ``rule="official"`` (both releases, the default for v1.1; ``evaldiaretdb1.m``): a pixel is lesion
  where the summed confidence ``Σ 21·level`` reaches ``grey_threshold × 252``.

Rasterisation of the XML regions (coordinates are pixel centres, x to the right, y down):
a circle covers the pixels strictly inside its radius, an ellipse the pixels strictly inside it
with ``angle`` in degrees counter-clockwise as displayed, a polygon its interior and outline
(:mod:`skimage.draw`). Each expert's mask of one lesion type holds, per pixel, the highest
confidence level of that expert's markings covering it.

Every image id is ``imageNNN`` in both releases.
"""
from __future__ import annotations

import math
import os
import re
import xml.etree.ElementTree as ET
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
from skimage import draw

from retina_fgvis.checks import check_int
from retina_fgvis.datasets.errors import DatasetError
from retina_fgvis.datasets.fundus import CropGeometry, crop_to_fov, fov_mask, graham_normalize, read_rgb

LESION_TYPES = ("hard_exudates", "soft_exudates", "hemorrhages", "red_small_dots")
#: XML ``markingtype`` -> lesion type.
MARKING_TYPES = {
    "Hard_exudates": "hard_exudates",
    "Soft_exudates": "soft_exudates",
    "Haemorrhages": "hemorrhages",
    "Red_small_dots": "red_small_dots",
}
#: DiaretDB1's other marking types: not lesions of the four classes, skipped. Any type in neither
#: table is an error naming the file and the marking (a misspelt lesion type must not vanish).
OTHER_MARKING_TYPES = ("Disc", "Fundus_area", "IRMA", "Neovascularisation")
#: v1.1 ground-truth folder per lesion type.
V1_FOLDERS = {
    "hard_exudates": "hardexudates",
    "soft_exudates": "softexudates",
    "hemorrhages": "hemorrhages",
    "red_small_dots": "redsmalldots",
}
CONFIDENCE_LEVELS = {"Low": 1, "Medium": 2, "High": 3}
GREY_STEP = 21
N_EXPERTS = 4
GREY_MAX = GREY_STEP * 3 * N_EXPERTS  # 252

V1_IMAGES = Path("resources/images/ddb1_fundusimages")
V1_GROUNDTRUTH = Path("resources/images/ddb1_groundtruth")
V1_FMASK = Path("resources/images/ddb1_fundusmask/fmask.tif")
V1_SPLITS = {"train": Path("resources/traindatasets/trainset.txt"), "test": Path("resources/testdatasets/testset.txt")}
V2_IMAGES = Path("images")
V2_GROUNDTRUTH = Path("groundtruth")
V2_SPLITS = {"train": Path("ddb1_v02_01_train.txt"), "test": Path("ddb1_v02_01_test.txt")}
_ID = re.compile(r"image(\d{3})")


@dataclass
class FundusSample:
    """One image with its ground truth, all at the same resolution H×W.

    image: uint8 H×W×3 RGB; fov: bool H×W; lesions: lesion type -> bool H×W (all of LESION_TYPES);
    geometry: how the photograph was cropped and resized to H×W (``geometry.to_photograph`` maps a mask
    back onto it), ``None`` for an image at its native resolution.
    """

    image_id: str
    image: np.ndarray
    fov: np.ndarray
    lesions: dict[str, np.ndarray] = field(default_factory=dict)
    geometry: CropGeometry | None = None


@dataclass(frozen=True)
class Marking:
    """One expert region of a v2.1 XML file, in image pixel coordinates (x right, y down).

    region "circle": ``center``, ``radii=(r, r)``; "ellipse": ``center``, ``radii=(rx, ry)``,
    ``angle`` (degrees, counter-clockwise as displayed); "polygon": ``points``.
    """

    lesion: str
    confidence: str
    region: str
    center: tuple[float, float] | None = None
    radii: tuple[float, float] | None = None
    angle: float = 0.0
    points: tuple[tuple[float, float], ...] = ()
    representative: tuple[float, float] | None = None


def parse_expert_xml(path: str | os.PathLike) -> list[Marking]:
    """The lesion markings of one expert's v2.1 XML file (:data:`OTHER_MARKING_TYPES` are skipped).

    Raises :class:`DatasetError` naming ``path`` (and the marking's number) when the file is missing or
    malformed: an unknown marking type, a region with a radius that is not a finite number > 0, or
    coordinates that are not finite.
    """
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError:
        raise DatasetError(path, "expert annotation file not found") from None
    except ET.ParseError as error:
        raise DatasetError(path, f"malformed XML ({error})") from None
    marking_list = root.find(".//markinglist")
    if marking_list is None:
        raise DatasetError(path, "malformed expert annotation: no <markinglist>")
    markings = []
    for number, node in enumerate(marking_list.findall("marking"), start=1):
        kind = (node.findtext("markingtype") or "").strip()
        if not kind:
            raise DatasetError(path, f"marking {number} has no <markingtype>")
        if kind in OTHER_MARKING_TYPES:
            continue
        if kind not in MARKING_TYPES:
            raise DatasetError(path, f"marking {number}: unknown markingtype {kind!r} (expected one of "
                                     f"{', '.join([*MARKING_TYPES, *OTHER_MARKING_TYPES])})")
        confidence = (node.findtext("confidencelevel") or "").strip().capitalize()
        if confidence not in CONFIDENCE_LEVELS:
            raise DatasetError(path, f"marking {number}: unknown confidencelevel {confidence!r} (expected Low/Medium/High)")
        try:
            markings.append(_parse_region(node, MARKING_TYPES[kind], confidence))
        except (ValueError, TypeError, AttributeError, KeyError) as error:
            raise DatasetError(path, f"marking {number}: malformed region ({error})") from None
    return markings


def _point(node: ET.Element | None) -> tuple[float, float]:
    x, y = (float(value) for value in node.text.split(","))
    if not (math.isfinite(x) and math.isfinite(y)):
        raise ValueError(f"coordinates {node.text.strip()!r} are not finite")
    return x, y


def _radius(text: str | None) -> float:
    radius = float(text)
    if not (math.isfinite(radius) and radius > 0):
        raise ValueError(f"radius {text.strip()!r} is not a finite number > 0")
    return radius


def _parse_region(node: ET.Element, lesion: str, confidence: str) -> Marking:
    representative = node.find("representativepoint/coords2d")
    representative = _point(representative) if representative is not None else None
    circle = node.find("circleregion")
    if circle is not None:
        radius = _radius(circle.findtext("radius"))
        return Marking(lesion, confidence, "circle", _point(circle.find("centroid/coords2d")), (radius, radius), representative=representative)
    ellipse = node.find("ellipseregion")
    if ellipse is not None:
        radii = {r.get("direction"): _radius(r.text) for r in ellipse.findall("radius")}
        return Marking(
            lesion, confidence, "ellipse", _point(ellipse.find("centroid/coords2d")), (radii["x"], radii["y"]),
            angle=float(ellipse.findtext("angle") or 0.0), representative=representative,
        )
    polygon = node.find("polygonregion")
    if polygon is not None:
        points = tuple(_point(p) for p in polygon.findall("coords2d"))
        if len(points) < 3:
            raise ValueError(f"polygon with {len(points)} points")
        return Marking(lesion, confidence, "polygon", points=points, representative=representative)
    raise ValueError("no circleregion, ellipseregion or polygonregion")


def expert_xml(markings: Sequence[Marking], image_name: str, expert: str = "") -> str:
    """Serialise markings as a v2.1 expert file (``imgannotooldata``), the inverse of :func:`parse_expert_xml`."""
    names = {lesion: kind for kind, lesion in MARKING_TYPES.items()}
    root = ET.Element("imgannotooldata")
    header = ET.SubElement(root, "header")
    ET.SubElement(header, "creator").text = expert
    ET.SubElement(header, "software").text = "retina-fgvis"
    ET.SubElement(root, "imagename").text = image_name
    marking_list = ET.SubElement(root, "markinglist")

    def coords(parent: ET.Element, point: tuple[float, float]) -> None:
        ET.SubElement(parent, "coords2d").text = f"{_fmt(point[0])},{_fmt(point[1])}"

    for marking in markings:
        node = ET.SubElement(marking_list, "marking")
        if marking.region == "polygon":
            region = ET.SubElement(node, "polygonregion")
            for point in marking.points:
                coords(region, point)
        else:
            region = ET.SubElement(node, f"{marking.region}region")
            coords(ET.SubElement(region, "centroid"), marking.center)
            if marking.region == "circle":
                ET.SubElement(region, "radius").text = _fmt(marking.radii[0])
            else:
                ET.SubElement(region, "radius", direction="x").text = _fmt(marking.radii[0])
                ET.SubElement(region, "radius", direction="y").text = _fmt(marking.radii[1])
                ET.SubElement(region, "angle").text = _fmt(marking.angle)
        if marking.representative is not None:
            coords(ET.SubElement(node, "representativepoint"), marking.representative)
        ET.SubElement(node, "confidencelevel").text = marking.confidence
        ET.SubElement(node, "markingtype").text = names[marking.lesion]
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.2f}"


def rasterize_marking(marking: Marking, shape: tuple[int, int]) -> np.ndarray:
    """bool H×W mask of one region (conventions in the module docstring)."""
    mask = np.zeros(shape, bool)
    if marking.region == "polygon":
        xs, ys = np.array(marking.points, float).T
        rr, cc = draw.polygon(ys, xs, shape=shape)
        mask[rr, cc] = True
        rr, cc = draw.polygon_perimeter(np.round(ys), np.round(xs), shape=shape)
    elif marking.region == "circle":
        rr, cc = draw.disk((marking.center[1], marking.center[0]), marking.radii[0], shape=shape)
    else:
        rx, ry = marking.radii
        rr, cc = draw.ellipse(marking.center[1], marking.center[0], ry, rx, shape=shape, rotation=np.deg2rad(marking.angle))
    mask[rr, cc] = True
    return mask


def expert_levels(markings: Sequence[Marking], shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """Per lesion type, uint8 H×W: the highest confidence level (0 none, 1 Low … 3 High) of one expert."""
    levels = {lesion: np.zeros(shape, np.uint8) for lesion in LESION_TYPES}
    for marking in markings:
        level = levels[marking.lesion]
        region = rasterize_marking(marking, shape)
        level[region] = np.maximum(level[region], CONFIDENCE_LEVELS[marking.confidence])
    return levels


def summed_confidence(levels: np.ndarray) -> np.ndarray:
    """v1.1 grey level from per-expert levels (E×H×W, 0–3): ``Σ_e 21·level_e`` as uint8 (≤ 252)."""
    return (GREY_STEP * np.asarray(levels, np.int32).sum(axis=0)).astype(np.uint8)


class DiaretDB1(ABC):
    """A DiaretDB1 release on disk; use :func:`open_diaretdb1` to create one.

    ``load(image_id, size=None, graham=False)`` returns a :class:`FundusSample`: without ``size``
    the image at its native resolution; with ``size`` the image cropped to its field of view,
    padded to a square and resized to ``size``, the FOV and lesion masks resampled with the same
    geometry (:func:`retina_fgvis.datasets.fundus.crop_to_fov`). The crop box always comes from
    the image itself (:func:`fov_mask`), exactly as for training images, so both releases and
    every ground-truth source of an image are cropped identically.
    """

    version: str = ""

    def __init__(self, root: Path, rule: str, min_experts: int, min_confidence: int, grey_threshold: float):
        self.root = root
        self.rule = rule
        self.min_experts = min_experts
        self.min_confidence = min_confidence
        self.grey_threshold = grey_threshold
        self._splits: dict[str, list[str]] = {}

    def __repr__(self) -> str:
        return f"DiaretDB1(version={self.version!r}, root={str(self.root)!r}, rule={self.rule!r})"

    # -- ids -------------------------------------------------------------------------------
    def image_ids(self, split: str = "test") -> list[str]:
        """Image ids (``imageNNN``) of the official ``"train"`` or ``"test"`` split, or ``"all"`` images."""
        if split == "all":
            ids = sorted({f"image{m.group(1)}" for p in self._image_dir().glob("*.png") if (m := _ID.search(p.name))})
            if not ids:
                raise DatasetError(self._image_dir(), "no images")
            return ids
        if split not in ("train", "test"):
            raise ValueError(f"split: expected 'train', 'test' or 'all', got {split!r}")
        if split not in self._splits:
            self._splits[split] = self._read_split(split)
        return list(self._splits[split])

    def _read_split(self, split: str) -> list[str]:
        path = self._split_file(split)
        if not path.is_file():
            raise DatasetError(path, "split file not found")
        ids = []
        for line in path.read_text().splitlines():
            match = _ID.search(line)
            if match:
                ids.append(f"image{match.group(1)}")
        return ids

    def image_path(self, image_id: str) -> Path:
        return self._image_dir() / self._image_name(self._check_id(image_id))

    @staticmethod
    def _check_id(image_id: str) -> str:
        if not isinstance(image_id, str) or not re.fullmatch(r"image\d{3}", image_id):
            raise ValueError(f"image_id: expected 'imageNNN', got {image_id!r}")
        return image_id

    # -- ground truth ---------------------------------------------------------------------
    @abstractmethod
    def grey(self, image_id: str, shape: tuple[int, int]) -> dict[str, np.ndarray]:
        """Summed expert confidence per lesion type (v1.1 grey levels, 0–252), uint8 H×W."""

    def lesion_masks(self, image_id: str, shape: tuple[int, int]) -> dict[str, np.ndarray]:
        """Consensus masks (bool H×W) per lesion type at the native resolution ``shape``."""
        grey = self.grey(image_id, shape)
        return {lesion: grey[lesion] >= self.grey_threshold * GREY_MAX - 1e-6 for lesion in LESION_TYPES}

    def fov(self, image_fov: np.ndarray) -> np.ndarray:
        """Field of view at native resolution: the release's mask if it ships one, else ``image_fov``."""
        return image_fov

    def load(self, image_id: str, size: int | None = None, graham: bool = False) -> FundusSample:
        """Image, FOV and consensus lesion masks of ``image_id`` (see the class docstring)."""
        path = self.image_path(image_id)
        image = read_rgb(path)
        lesions = self.lesion_masks(image_id, image.shape[:2])
        image_fov = fov_mask(image)
        if not image_fov.any():
            raise DatasetError(path, "no field of view found (the image is black)")
        fov = self.fov(image_fov)
        geometry = None
        if size is not None:
            image, fov, lesions, geometry = crop_to_fov(image, fov, size=size, masks=lesions, box_fov=image_fov)
        if graham:
            image = graham_normalize(image, fov)
        return FundusSample(image_id, image, fov, lesions, geometry)

    # -- layout hooks -----------------------------------------------------------------------
    @abstractmethod
    def _image_dir(self) -> Path:
        """Folder of the fundus images."""

    @abstractmethod
    def _image_name(self, image_id: str) -> str:
        """File name of an image id."""

    @abstractmethod
    def _split_file(self, split: str) -> Path:
        """Official split file of "train" or "test"."""


class _V11(DiaretDB1):
    version = "1.1"

    def _image_dir(self) -> Path:
        return self.root / V1_IMAGES

    def _image_name(self, image_id: str) -> str:
        return f"{image_id}.png"

    def _split_file(self, split: str) -> Path:
        return self.root / V1_SPLITS[split]

    def grey(self, image_id: str, shape: tuple[int, int]) -> dict[str, np.ndarray]:
        return {lesion: self._read_grey(self.root / V1_GROUNDTRUTH / V1_FOLDERS[lesion] / f"{image_id}.png", shape) for lesion in LESION_TYPES}

    def fov(self, image_fov: np.ndarray) -> np.ndarray:
        path = self.root / V1_FMASK
        if not path.is_file():
            return image_fov
        return self._read_grey(path, image_fov.shape) > 0

    @staticmethod
    def _read_grey(path: Path, shape: tuple[int, int]) -> np.ndarray:
        """A single-channel 8-bit map (3 equal channels are accepted as grey) of the image's shape."""
        if not path.is_file():
            raise DatasetError(path, "ground-truth file not found")
        grey = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if grey is None:
            raise DatasetError(path, "not a readable image (corrupt or unsupported format)")
        if grey.dtype != np.uint8:
            raise DatasetError(path, f"expected an 8-bit ground-truth map, got {grey.dtype}")
        if grey.ndim == 3:
            if grey.shape[2] not in (3, 4) or np.any(grey[..., 1:3] != grey[..., :1]):
                raise DatasetError(path, "ground-truth map is coloured; expected grey levels")
            grey = grey[..., 0]
        if grey.shape != tuple(shape):
            raise DatasetError(path, f"ground truth is {grey.shape[1]}×{grey.shape[0]} but its image is {shape[1]}×{shape[0]}")
        return grey


class _V21(DiaretDB1):
    version = "2.1"

    def _image_dir(self) -> Path:
        return self.root / V2_IMAGES

    def _image_name(self, image_id: str) -> str:
        return f"diaretdb1_{image_id}.png"

    def _split_file(self, split: str) -> Path:
        path = self.root / V2_SPLITS[split]
        plain = path.with_name(path.stem + "_plain.txt")
        return plain if not path.is_file() and plain.is_file() else path

    def expert_files(self, image_id: str) -> list[Path]:
        """The four expert XML files of an image."""
        stem = f"diaretdb1_{self._check_id(image_id)}"
        return [self.root / V2_GROUNDTRUTH / f"{stem}_{expert:02d}.xml" for expert in range(1, N_EXPERTS + 1)]

    def expert_levels(self, image_id: str, shape: tuple[int, int]) -> dict[str, np.ndarray]:
        """Per lesion type, uint8 E×H×W confidence levels (0 none, 1 Low, 2 Medium, 3 High) of the E = 4 experts."""
        per_expert = []
        for path in self.expert_files(image_id):
            markings = parse_expert_xml(path)
            _check_inside(markings, shape, path)
            per_expert.append(expert_levels(markings, shape))
        return {lesion: np.stack([levels[lesion] for levels in per_expert]) for lesion in LESION_TYPES}

    def grey(self, image_id: str, shape: tuple[int, int]) -> dict[str, np.ndarray]:
        return {lesion: summed_confidence(levels) for lesion, levels in self.expert_levels(image_id, shape).items()}

    def lesion_masks(self, image_id: str, shape: tuple[int, int]) -> dict[str, np.ndarray]:
        if self.rule == "official":
            return super().lesion_masks(image_id, shape)
        return {
            lesion: (levels >= self.min_confidence).sum(axis=0) >= self.min_experts
            for lesion, levels in self.expert_levels(image_id, shape).items()
        }


def _check_inside(markings: Sequence[Marking], shape: tuple[int, int], path: Path) -> None:
    """Refuse ground truth drawn for another image size (a region centre far outside the image)."""
    height, width = shape
    slack_x, slack_y = 0.02 * width, 0.02 * height
    for number, marking in enumerate(markings, start=1):
        points = [marking.center] if marking.center is not None else list(marking.points)
        for x, y in points:
            if not (-slack_x <= x <= width + slack_x and -slack_y <= y <= height + slack_y):
                raise DatasetError(
                    path, f"ground truth does not fit its {width}×{height} image: marking {number} at ({x:g}, {y:g})"
                )


def open_diaretdb1(
    root: str | os.PathLike,
    min_experts: int = 3,
    min_confidence: str = "Low",
    rule: str | None = None,
    grey_threshold: float = 0.75,
    version: str | None = None,
) -> DiaretDB1:
    """Open a DiaretDB1 release, detecting v1.1 or v2.1 (``root`` may be the release folder or a parent).

    Args:
        min_experts: ``rule="experts"``: experts (of 4) that must mark a pixel.
        min_confidence: ``rule="experts"``: lowest confidence that counts, "Low"/"Medium"/"High".
        rule: "experts" (≥ ``min_experts`` experts, v2.1 only) or "official" (summed confidence
            ≥ ``grey_threshold``·252); None picks "experts" for v2.1 and "official" for v1.1.
        grey_threshold: ``rule="official"``: fraction of 252 (0.75 in the official evaluation).
        version: "1.1" or "2.1" to choose when ``root`` holds both releases.

    Raises :class:`DatasetError` naming ``root`` when no release is found, and ValueError for bad settings.
    """
    check_int("min_experts", min_experts, minimum=1, maximum=N_EXPERTS)
    confidence = str(min_confidence).strip().capitalize()
    if confidence not in CONFIDENCE_LEVELS:
        raise ValueError(f"min_confidence: expected 'Low', 'Medium' or 'High', got {min_confidence!r}")
    if not 0.0 < float(grey_threshold) <= 1.0:
        raise ValueError(f"grey_threshold: expected a fraction in (0, 1], got {grey_threshold!r}")
    if rule not in (None, "experts", "official"):
        raise ValueError(f"rule: expected 'experts' or 'official', got {rule!r}")
    if version not in (None, "1.1", "2.1"):
        raise ValueError(f"version: expected '1.1' or '2.1', got {version!r}")
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(root, "dataset folder not found")
    found = _find_releases(root, version)
    if not found:
        what = f"DiaretDB1 v{version}" if version else "DiaretDB1 release (v1.1 resources/images/ddb1_fundusimages or v2.1 images/ + groundtruth/)"
        raise DatasetError(root, f"no {what} found here or in its subfolders")
    if len(found) > 1:
        listing = ", ".join(f"v{v} in {path}" for v, path in found)
        raise DatasetError(root, f"holds several releases ({listing}); pass version= or a release folder")
    found_version, release = found[0]
    rule = rule or ("experts" if found_version == "2.1" else "official")
    if rule == "experts" and found_version == "1.1":
        raise DatasetError(
            release,
            "v1.1 ground truth stores summed confidences, from which the number of experts cannot be recovered; "
            "use rule='official' or the v2.1 release",
        )
    cls = _V21 if found_version == "2.1" else _V11
    return cls(release, rule, int(min_experts), CONFIDENCE_LEVELS[confidence], float(grey_threshold))


def _find_releases(root: Path, version: str | None, depth: int = 2) -> list[tuple[str, Path]]:
    """(version, release folder) found at the shallowest level of ``root`` … ``depth`` levels down."""
    level = [root]
    for _ in range(depth + 1):
        found = []
        for folder in level:
            if (folder / V1_IMAGES).is_dir():
                found.append(("1.1", folder))
            if (folder / V2_IMAGES).is_dir() and (folder / V2_GROUNDTRUTH).is_dir():
                found.append(("2.1", folder))
        found = [(v, path) for v, path in found if version in (None, v)]
        if found:
            return found
        level = sorted(child for folder in level for child in folder.iterdir() if child.is_dir() and not child.name.startswith("."))
    return []
