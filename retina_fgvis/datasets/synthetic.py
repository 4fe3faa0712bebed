"""The built-in semi-synthetic fundus set, written in the real on-disk formats.

Background: the real CC0 fundus photograph shipped with scikit-image (:func:`skimage.data.retina`),
re-posed per image (rotation, mirroring for the other eye, occasional 180° inversion, zoom, shift)
and re-lit (brightness, colour balance, gamma, illumination gradient, vignetting, blur, noise).
Lesions are painted procedurally, each with its true footprint:

=================  ===================================================================
red small dots     dark-red dots 2–5 px wide (microaneurysms)
hemorrhages        dark-red blotches: round dot-blot, elongated flame, or merged blots
hard exudates      clusters of small bright-yellow sharp-edged spots
soft exudates      pale, fuzzy-edged patches (cotton-wool spots)
=================  ===================================================================

Distractors appear in every class: thin vessel-like dark lines, soft bright reflections, small
whitish specks of light reflex and out-of-focus dust shadows. The DR grade follows from the
lesions (:func:`dr_grade`); RDR = grade ≥ 2. Under a :class:`LabelRule` (the known-evidence
control) one lesion type alone decides the label instead: RDR iff the image holds at least ``k``
lesions of that type, every other type drawn independently of the label. Four simulated experts
mark every lesion (circle, ellipse or polygon) with their own size bias, border jitter, occasional
misses and a confidence level that follows the lesion's contrast.

Layout written by :func:`generate_synthetic` (see ``data/README.md``)::

    OUT/eyepacs/trainLabels.csv, OUT/eyepacs/train/{patient}_{left|right}.jpeg   (training)
    OUT/diaretdb1/       DiaretDB1 v2.1 layout (images/, groundtruth/*.xml, split files)
    OUT/diaretdb1_v1/    DiaretDB1 v1.1 layout (resources/...) of the same test images
    OUT/images.csv       per image: set, image, grade, rdr and lesion counts
    OUT/synthetic.json   the settings and versions that produced the set
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from skimage import data as skdata
from skimage import draw

from retina_fgvis._io import atomic_write_bytes, atomic_write_csv, atomic_write_png, atomic_write_text, locked_folder
from retina_fgvis.checks import check_int
from retina_fgvis.datasets.errors import DatasetError
from retina_fgvis.runs import RUN_RECORD, RunFolder, RunFolderError, RunKind
from retina_fgvis.datasets.diaretdb1 import (
    LESION_TYPES,
    N_EXPERTS,
    V1_FMASK,
    V1_FOLDERS,
    V1_GROUNDTRUTH,
    V1_IMAGES,
    V1_SPLITS,
    V2_GROUNDTRUTH,
    V2_IMAGES,
    V2_SPLITS,
    Marking,
    expert_levels,
    expert_xml,
    summed_confidence,
)

#: Probability of each DR grade 0–4 (training set: 42 % RDR; test set: mostly diseased, like DiaretDB1).
#: The set's record, written last (a folder holding it holds a finished set).
SET_RECORD = "synthetic.json"
# Recorded with the set but fixed by the code (the grade mixes) or compared on their own (the label rule).
_DERIVED_SETTINGS = ("train_grade_p", "test_grade_p", "label_rule")
TRAIN_GRADE_P = (0.40, 0.18, 0.22, 0.11, 0.09)
TEST_GRADE_P = (0.10, 0.15, 0.40, 0.20, 0.15)
JPEG_QUALITY = 95

# Simulated experts: size bias of their regions, extra border margin (px), how often they miss.
_EXPERT_SCALE = (1.0, 1.15, 0.9, 1.3)
_EXPERT_MARGIN = (0, 1, 0, 2)
_EXPERT_MISS = (1.0, 0.7, 1.4, 1.0)
# Base miss probability per lesion type for a lesion of average contrast.
_MISS = {"red_small_dots": 0.15, "hemorrhages": 0.06, "hard_exudates": 0.08, "soft_exudates": 0.12}
_CONFIDENCE_NAMES = ("Low", "Medium", "High")
#: Known-evidence control: probability of RDR (training set, test set) and, per lesion type, the
#: chance that an image holds that type when it does not decide the label, and its count range.
RULE_RDR_P = (0.5, 0.75)
_RULE_OTHERS = {"red_small_dots": (0.5, 1, 9), "hemorrhages": (0.5, 1, 7), "hard_exudates": (0.5, 1, 5),
                "soft_exudates": (0.4, 1, 4)}


@dataclass(frozen=True)
class SyntheticPaths:
    """Where :func:`generate_synthetic` wrote each part of the set."""

    root: Path
    eyepacs: Path
    diaretdb1: Path
    diaretdb1_v1: Path
    images_csv: Path

    @classmethod
    def of(cls, root: str | os.PathLike) -> "SyntheticPaths":
        """The layout of a set in ``root``."""
        root = Path(root)
        return cls(root, root / "eyepacs", root / "diaretdb1", root / "diaretdb1_v1", root / "images.csv")


@dataclass(frozen=True)
class LabelRule:
    """The known-evidence control: RDR iff an image holds at least ``min_count`` lesions of ``lesion_type``.

    Written ``"TYPE:k"`` on the command line (:meth:`parse`, :meth:`__str__`). Under the rule the
    deciding type's count is drawn given the label (``k`` to ``2k + 3`` lesions for RDR, ``0`` to
    ``k − 1`` otherwise), the other types independently of it (:data:`RULE_RDR_P` gives the share
    of RDR images). The grade written in the EyePACS ``level`` column is 2 for RDR and 0 otherwise.
    """

    lesion_type: str
    min_count: int = 1

    def __post_init__(self) -> None:
        if self.lesion_type not in LESION_TYPES:
            raise ValueError(f"label_rule: unknown lesion type {self.lesion_type!r}; expected one of "
                             f"{', '.join(LESION_TYPES)}")
        check_int("label_rule", self.min_count, minimum=1)

    @classmethod
    def parse(cls, rule: "str | LabelRule | None") -> "LabelRule | None":
        """``"red_small_dots:3"`` (or ``"red_small_dots"``: k = 1), a rule, or None -> rule or None."""
        if rule is None or isinstance(rule, LabelRule):
            return rule
        lesion_type, _, count = str(rule).partition(":")
        try:
            min_count = int(count) if count else 1
        except ValueError:
            raise ValueError(f"label_rule: expected TYPE:k (e.g. red_small_dots:3), got {rule!r}") from None
        return cls(lesion_type.strip(), min_count)

    def __str__(self) -> str:
        return f"{self.lesion_type}:{self.min_count}"

    def rdr(self, counts: dict[str, int]) -> bool:
        """The label the rule gives an image with these lesion counts."""
        return counts.get(self.lesion_type, 0) >= self.min_count

    def counts(self, rng: np.random.Generator, rdr: bool) -> dict[str, int]:
        """Lesion counts of an image with label ``rdr``: only the deciding type depends on it."""
        counts = {}
        for lesion, (p_present, low, high) in _RULE_OTHERS.items():
            counts[lesion] = int(rng.integers(low, high)) if rng.random() < p_present else 0
        k = self.min_count
        counts[self.lesion_type] = int(rng.integers(k, 2 * k + 4)) if rdr else int(rng.integers(0, k))
        return {lesion: counts[lesion] for lesion in LESION_TYPES}


def _set_record(root: str | os.PathLike, name: str = "out") -> RunFolder:
    """The set's record ``synthetic.json`` (a :class:`~retina_fgvis.runs.RunFolder` record of kind ``synthetic``)."""
    return RunFolder(root, RunKind.SYNTHETIC, record=SET_RECORD, name=name)


def require_synthetic_set(root: str | os.PathLike) -> SyntheticPaths:
    """The layout of the finished set in ``root`` (read only); ``DatasetError`` naming ``root`` when there is
    none (its ``synthetic.json``, written last, is missing)."""
    root = Path(root)
    if not (root / SET_RECORD).is_file():
        raise DatasetError(root, f"no semi-synthetic set here (no {SET_RECORD}); create one with "
                                 f"`retina-fgvis synth {root}`")
    return SyntheticPaths.of(root)


def read_label_rule(root: str | os.PathLike) -> LabelRule | None:
    """The label rule recorded in a synthetic set's ``synthetic.json`` (None: the grade decides the label)."""
    record = _set_record(root)
    try:
        recorded = record.read_info(required=True).config.get("label_rule")
    except RunFolderError:
        raise ValueError(f"data_dir: {record.record_path} is not a synthetic set's record") from None
    return None if recorded is None else LabelRule(recorded["lesion_type"], int(recorded["min_count"]))


def dr_grade(counts: dict[str, int]) -> int:
    """DR grade 0–4 of an image from its lesion counts (a simplified international scale).

    4: ≥ 10 hemorrhages and ≥ 3 soft exudates; 3: ≥ 8 hemorrhages; 2: any hemorrhage, hard or
    soft exudate, or more than 5 red small dots; 1: 1–5 red small dots only; 0: no lesion.
    """
    dots, hem = counts.get("red_small_dots", 0), counts.get("hemorrhages", 0)
    hard, soft = counts.get("hard_exudates", 0), counts.get("soft_exudates", 0)
    if hem >= 10 and soft >= 3:
        return 4
    if hem >= 8:
        return 3
    if hem or hard or soft or dots > 5:
        return 2
    return 1 if dots else 0


def generate_synthetic(
    out: str | os.PathLike,
    n_train: int = 400,
    n_test: int = 40,
    size: int = 256,
    seed: int = 0,
    progress: bool = False,
    label_rule: str | LabelRule | None = None,
) -> SyntheticPaths:
    """Write the semi-synthetic set: ``n_train`` EyePACS-layout training images (both eyes of
    ``ceil(n_train / 2)`` patients) and ``n_test`` test images in both DiaretDB1 layouts.

    Images are ``size`` px high and ``1.25·size`` wide with a ``size``-px fundus disc, so
    ``crop_to_fov(..., size=size)`` returns them unscaled. Deterministic for a seed: image ``i``
    of each set depends only on ``(seed, set, i)``. Files are written atomically; existing files
    of an earlier run in ``out`` are overwritten. ``label_rule`` (:class:`LabelRule` or ``"TYPE:k"``)
    makes the known-evidence control: the label follows that rule instead of the grade; it is
    recorded in ``synthetic.json`` (:func:`read_label_rule`).
    """
    rule = LabelRule.parse(label_rule)
    for name, value, low in (("n_train", n_train, 0), ("n_test", n_test, 0), ("size", size, 32), ("seed", seed, 0)):
        check_int(name, value, minimum=low)
    if n_test > 999:
        raise ValueError(f"n_test: DiaretDB1 ids have three digits, at most 999 images, got {n_test}")
    if n_train + n_test == 0:
        raise ValueError("n_train, n_test: nothing to generate (both are 0)")
    root = Path(out)
    paths = SyntheticPaths.of(root)
    from retina_fgvis.runtime import progress_bar  # imported here: it pulls in torch, which painting does not need

    painter = _Painter(int(size))
    rows: list[dict] = []
    with progress_bar(transient=True) as bar:
        task = bar.add_task("synthesising", total=n_train + n_test, status="", visible=progress)
        for index, (image_id, eye_code, grade) in enumerate(_training_plan(n_train, seed)):
            rng = np.random.default_rng([seed, 0, index])
            image, lesions = painter.paint(rng, grade, eye_code, _rule_counts(rule, seed, 0, index))
            _, jpeg = cv2.imencode(".jpeg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            atomic_write_bytes(paths.eyepacs / "train" / f"{image_id}.jpeg", jpeg.tobytes())
            rows.append(_row("train", image_id, lesions, rule))
            bar.advance(task)
        for index in range(n_test):
            rng = np.random.default_rng([seed, 1, index])
            grade = int(rng.choice(5, p=TEST_GRADE_P))
            image, lesions = painter.paint(rng, grade, int(rng.random() < 0.5), _rule_counts(rule, seed, 1, index))
            image_id = f"image{index + 1:03d}"
            _write_test_image(paths, image_id, image, _annotate(rng, lesions, image.shape[:2]))
            rows.append(_row("test", image_id, lesions, rule))
            bar.advance(task)
    table = pd.DataFrame(rows)
    train = table[table["set"] == "train"]
    atomic_write_csv(paths.eyepacs / "trainLabels.csv", pd.DataFrame({"image": train["image"], "level": train["grade"]}))
    test_ids = table.loc[table["set"] == "test", "image"].tolist()
    _write_split_files(paths, test_ids)
    _write_fmask_tif(paths.diaretdb1_v1 / V1_FMASK, painter.disc)
    atomic_write_csv(paths.images_csv, table)
    _set_record(root).write_info({"n_train": n_train, "n_test": n_test, "size": size, "seed": seed,
                          "train_grade_p": TRAIN_GRADE_P, "test_grade_p": TEST_GRADE_P,
                          "label_rule": None if rule is None else {
                              "rule": str(rule), "lesion_type": rule.lesion_type, "min_count": rule.min_count,
                              "rdr_p": RULE_RDR_P, "others": _RULE_OTHERS}})
    return paths


def _training_plan(n_train: int, seed: int) -> list[tuple[str, int, int]]:
    """(image id, eye code 0 left / 1 right, grade) for both eyes of each patient; eyes' grades correlate."""
    plan = []
    for patient in range((n_train + 1) // 2):
        rng = np.random.default_rng([seed, 2, patient])
        patient_id = 10 + 3 * patient + int(rng.integers(0, 3))
        grade = int(rng.choice(5, p=TRAIN_GRADE_P))
        other = grade if rng.random() < 0.6 else int(np.clip(grade + rng.choice([-1, 1]), 0, 4))
        plan.append((f"{patient_id}_left", 0, grade))
        plan.append((f"{patient_id}_right", 1, other))
    return plan[:n_train]


def _rule_counts(rule: LabelRule | None, seed: int, image_set: int, index: int) -> dict[str, int] | None:
    """Lesion counts under ``rule`` from their own random stream (the painting's stream stays as without a rule)."""
    if rule is None:
        return None
    rng = np.random.default_rng([seed, 3, image_set, index])
    return rule.counts(rng, bool(rng.random() < RULE_RDR_P[image_set]))


def _row(image_set: str, image_id: str, lesions: list["_Lesion"], rule: LabelRule | None) -> dict:
    counts = {lesion: sum(item.kind == lesion for item in lesions) for lesion in LESION_TYPES}
    grade = dr_grade(counts) if rule is None else 2 * rule.rdr(counts)
    return {"set": image_set, "image": image_id, "grade": grade, "rdr": int(grade >= 2), **{f"n_{k}": v for k, v in counts.items()}}


# --------------------------------------------------------------------------------------------
# painting
# --------------------------------------------------------------------------------------------
@dataclass
class _Lesion:
    """A painted lesion: its kind, true footprint (bool window at (y0, x0)), contrast in [0, 1]
    and the geometry experts outline: ("circle", cx, cy, r), ("ellipse", cx, cy, rx, ry, angle)
    or ("polygon",) (outline traced from the footprint)."""

    kind: str
    y0: int
    x0: int
    footprint: np.ndarray
    visibility: float
    geometry: tuple


@functools.lru_cache(maxsize=4)
def _base_texture(side: int) -> tuple[np.ndarray, tuple[float, float]]:
    """The scikit-image fundus photograph cropped to its disc at ``side`` px (float32) and its optic-disc centre (x, y)."""
    from retina_fgvis.datasets.fundus import crop_to_fov

    image = crop_to_fov(skdata.retina(), size=side).image.astype(np.float32)
    luminance = cv2.GaussianBlur(image.mean(axis=2), (0, 0), side / 30)
    y, x = np.unravel_index(int(np.argmax(luminance)), luminance.shape)
    return image, (float(x), float(y))


class _Painter:
    """Paints one image at a fixed geometry: ``size`` high, ``1.25·size`` wide, disc diameter ``size``."""

    def __init__(self, size: int):
        self.size = size
        self.width = size + 2 * round(size / 8)
        self.k = size / 256.0  # lesion scale relative to the 256-px reference
        self.radius = size / 2.0
        self.center = ((self.width - 1) / 2.0, (size - 1) / 2.0)
        ys, xs = np.mgrid[0:size, 0:self.width].astype(np.float32)
        self.rel = ((xs - self.center[0]) / self.radius, (ys - self.center[1]) / self.radius)
        self.disc = self.rel[0] ** 2 + self.rel[1] ** 2 <= 1.0
        self.texture, self.optic_disc = _base_texture(int(round(size * 1.3)))

    # -- background ----------------------------------------------------------------------------
    def _background(self, rng: np.random.Generator, eye: int) -> tuple[np.ndarray, np.ndarray]:
        """Re-posed photograph (float32 H×W×3) and the forward map base -> output (2×3)."""
        side = self.texture.shape[0]
        zoom = rng.uniform(1.05, 1.25)  # photo disc radius / FOV radius
        scale = zoom * self.radius / (side / 2.0)  # output px per texture px
        theta = np.deg2rad(rng.uniform(-20, 20))
        shift = rng.uniform(-1, 1, 2) * (zoom - 1.0) * self.radius * 0.6
        flip_x = -1.0 if eye == 1 else 1.0
        flip_y = 1.0
        if rng.random() < 0.08:  # inverted capture, as in some EyePACS images
            flip_x, flip_y = -flip_x, -1.0
        rotation = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
        linear = scale * rotation @ np.diag([flip_x, flip_y])
        base_center = np.array([(side - 1) / 2.0, (side - 1) / 2.0])
        offset = np.array(self.center) + shift - linear @ base_center
        forward = np.hstack([linear, offset[:, None]]).astype(np.float64)
        image = cv2.warpAffine(self.texture, forward, (self.width, self.size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        return image, forward

    def _relight(self, rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
        """Brightness, colour balance, gamma, smooth illumination, vignetting, blur and noise."""
        xs, ys = self.rel
        gradient = 1.0 + rng.uniform(-0.18, 0.18) * xs + rng.uniform(-0.18, 0.18) * ys
        vignette = 1.0 - rng.uniform(0.05, 0.35) * (xs**2 + ys**2)
        blotch = cv2.resize(rng.normal(0, 1, (4, 5)).astype(np.float32), (self.width, self.size), interpolation=cv2.INTER_CUBIC)
        field = rng.uniform(0.7, 1.12) * gradient * vignette * (1.0 + 0.06 * blotch)
        gains = np.array([rng.uniform(0.85, 1.1), rng.uniform(0.75, 1.15), rng.uniform(0.6, 1.3)], np.float32)
        image = image * field[..., None] * gains
        image = 255.0 * (np.clip(image, 0, 255) / 255.0) ** rng.uniform(0.85, 1.2)
        sigma = rng.uniform(0.0, 0.9) * max(1.0, self.k)
        if sigma > 0.25:
            image = cv2.GaussianBlur(image, (0, 0), sigma)
        image += rng.normal(0, rng.uniform(1.0, 3.0), image.shape).astype(np.float32)
        image[~self.disc] = 0.0
        return np.clip(image, 0, 255).astype(np.uint8)

    # -- placement -----------------------------------------------------------------------------
    def _place(self, rng: np.random.Generator, avoid: np.ndarray, near: np.ndarray | None = None, spread: float = 0.0,
               apart: list[np.ndarray] = (), gap: float = 0.0) -> np.ndarray:
        """A point (x, y) inside 0.85 of the disc radius, outside the optic disc and ``gap`` px from ``apart``."""
        for _ in range(100):
            if near is not None:
                point = near + rng.normal(0, spread * self.radius, 2)
            else:
                angle, distance = rng.uniform(0, 2 * np.pi), 0.85 * self.radius * np.sqrt(rng.random())
                point = np.array(self.center) + distance * np.array([np.cos(angle), np.sin(angle)])
            inside = np.hypot(*(point - self.center)) < 0.85 * self.radius
            clear = all(np.hypot(*(point - other)) > gap for other in apart)
            if inside and clear and np.hypot(*(point - avoid)) > 0.25 * self.radius:
                return point
        return np.array(self.center)

    # -- one image -----------------------------------------------------------------------------
    def paint(self, rng: np.random.Generator, grade: int, eye: int,
              counts: dict[str, int] | None = None) -> tuple[np.ndarray, list[_Lesion]]:
        """uint8 H×W×3 RGB image of the given DR grade (or with the given lesion counts) and its painted lesions."""
        image, forward = self._background(rng, eye)
        optic_disc = forward[:, :2] @ np.array(self.optic_disc) + forward[:, 2]
        macula = forward[:, :2] @ np.full(2, (self.texture.shape[0] - 1) / 2.0) + forward[:, 2]
        self._distractors(rng, image, optic_disc)
        # Drawn here, after the background, so that a set without a label rule keeps its images.
        counts = _lesion_counts(rng, grade) if counts is None else counts
        lesions: list[_Lesion] = []
        for _ in range(counts["hemorrhages"]):
            lesions.append(self._hemorrhage(rng, image, self._place(rng, optic_disc)))
        for _ in range(counts["soft_exudates"]):
            lesions.append(self._soft_exudate(rng, image, self._place(rng, optic_disc)))
        for _ in range(counts["hard_exudates"]):
            near = macula if rng.random() < 0.6 else None
            lesions.append(self._hard_exudates(rng, image, self._place(rng, optic_disc, near, 0.3)))
        dots: list[np.ndarray] = []
        for _ in range(counts["red_small_dots"]):  # kept apart so that no two dots merge into one region
            dots.append(self._place(rng, optic_disc, apart=dots, gap=9.0))
            lesions.append(self._red_dot(rng, image, dots[-1]))
        return self._relight(rng, image), lesions

    def _stamp(self, image: np.ndarray, y0: int, x0: int, alpha: np.ndarray, factor=None, colour=None) -> None:
        """Blend a window: darken (``image·(1 − α(1 − factor))``) or tint towards ``colour``."""
        h, w = alpha.shape
        ya, xa = max(y0, 0), max(x0, 0)
        yb, xb = min(y0 + h, image.shape[0]), min(x0 + w, image.shape[1])
        if ya >= yb or xa >= xb:
            return
        a = alpha[ya - y0 : yb - y0, xa - x0 : xb - x0, None]
        window = image[ya:yb, xa:xb]
        if factor is not None:
            window *= 1.0 - a * (1.0 - np.asarray(factor, np.float32))
        else:
            window += a * (np.asarray(colour, np.float32) - window)

    @staticmethod
    def _window(center: np.ndarray, reach: float) -> tuple[int, int, int, np.ndarray]:
        """Square window of half-size ``ceil(reach)`` around ``center``: y0, x0, side, local centre (x, y)."""
        half = int(np.ceil(reach)) + 2
        x0, y0 = int(np.floor(center[0])) - half, int(np.floor(center[1])) - half
        return y0, x0, 2 * half + 1, center - np.array([x0, y0])

    def _red_dot(self, rng: np.random.Generator, image: np.ndarray, center: np.ndarray) -> _Lesion:
        rho = rng.uniform(1.0, 2.4)
        y0, x0, side, local = self._window(center, rho + 2)
        footprint = np.zeros((side, side), bool)
        footprint[draw.disk((local[1], local[0]), rho, shape=footprint.shape)] = True
        if not footprint.any():
            footprint[int(round(local[1])), int(round(local[0]))] = True
        peak = rng.uniform(0.5, 0.95)
        alpha = peak * np.clip(1.3 * cv2.GaussianBlur(footprint.astype(np.float32), (0, 0), 0.5), 0, 1)
        factor = (rng.uniform(0.55, 0.8), rng.uniform(0.35, 0.65), rng.uniform(0.45, 0.75))
        self._stamp(image, y0, x0, alpha, factor=factor)
        return _Lesion("red_small_dots", y0, x0, footprint, (peak - 0.5) / 0.45, ("circle", *center, rho))

    def _hemorrhage(self, rng: np.random.Generator, image: np.ndarray, center: np.ndarray) -> _Lesion:
        r = max(2.5, rng.uniform(3.0, 7.0) * self.k)
        style = rng.choice(["dot-blot", "flame", "blot"], p=[0.5, 0.25, 0.25])
        if style == "dot-blot":
            parts = [(0.0, 0.0, r, r * rng.uniform(0.75, 1.0), rng.uniform(0, 180))]
        elif style == "flame":
            parts = [(0.0, 0.0, r * rng.uniform(1.5, 2.5), r * rng.uniform(0.4, 0.6), rng.uniform(0, 180))]
        else:
            parts = [(*rng.normal(0, 0.6 * r, 2), r * rng.uniform(0.6, 1.0), r * rng.uniform(0.5, 0.9), rng.uniform(0, 180))
                     for _ in range(int(rng.integers(2, 5)))]
        reach = max(np.hypot(dx, dy) + max(rx, ry) for dx, dy, rx, ry, _ in parts)
        y0, x0, side, local = self._window(center, reach + 2)
        footprint = np.zeros((side, side), bool)
        for dx, dy, rx, ry, angle in parts:
            footprint[draw.ellipse(local[1] + dy, local[0] + dx, ry, rx, shape=footprint.shape, rotation=np.deg2rad(angle))] = True
        peak = rng.uniform(0.5, 0.9)
        alpha = peak * np.clip(1.2 * cv2.GaussianBlur(footprint.astype(np.float32), (0, 0), max(0.6, 0.8 * self.k)), 0, 1)
        factor = (rng.uniform(0.55, 0.8), rng.uniform(0.3, 0.55), rng.uniform(0.35, 0.6))
        self._stamp(image, y0, x0, alpha, factor=factor)
        geometry = ("ellipse", *(center + parts[0][:2]), *parts[0][2:]) if len(parts) == 1 else ("polygon",)
        return _Lesion("hemorrhages", y0, x0, footprint, (peak - 0.5) / 0.4, geometry)

    def _hard_exudates(self, rng: np.random.Generator, image: np.ndarray, center: np.ndarray) -> _Lesion:
        spread = max(3.0, rng.uniform(4.0, 12.0) * self.k)
        spots = []
        for _ in range(int(rng.integers(3, 13))):
            angle, distance = rng.uniform(0, 2 * np.pi), spread * np.sqrt(rng.random())
            spots.append((distance * np.cos(angle), distance * np.sin(angle), rng.uniform(0.8, 2.2) * max(1.0, self.k)))
        y0, x0, side, local = self._window(center, spread + 2.2 * max(1.0, self.k) + 1)
        footprint = np.zeros((side, side), bool)
        for dx, dy, rho in spots:
            footprint[draw.disk((local[1] + dy, local[0] + dx), rho, shape=footprint.shape)] = True
        footprint[int(round(local[1])), int(round(local[0]))] = True
        peak = rng.uniform(0.45, 0.85)
        alpha = peak * np.clip(cv2.GaussianBlur(footprint.astype(np.float32), (0, 0), 0.4), 0, 1)
        colour = (rng.uniform(235, 255), rng.uniform(210, 240), rng.uniform(100, 160))
        self._stamp(image, y0, x0, alpha, colour=colour)
        return _Lesion("hard_exudates", y0, x0, footprint, (peak - 0.45) / 0.4, ("polygon",))

    def _soft_exudate(self, rng: np.random.Generator, image: np.ndarray, center: np.ndarray) -> _Lesion:
        rx = max(3.0, rng.uniform(5.0, 11.0) * self.k)
        ry, angle = rx * rng.uniform(0.55, 1.0), rng.uniform(0, 180)
        y0, x0, side, local = self._window(center, 2.2 * rx)
        footprint = np.zeros((side, side), bool)
        footprint[draw.ellipse(local[1], local[0], ry, rx, shape=footprint.shape, rotation=np.deg2rad(angle))] = True
        peak = rng.uniform(0.25, 0.5)
        alpha = peak * np.clip(1.3 * cv2.GaussianBlur(footprint.astype(np.float32), (0, 0), 0.35 * ry), 0, 1)
        colour = (rng.uniform(225, 245), rng.uniform(215, 235), rng.uniform(185, 215))
        self._stamp(image, y0, x0, alpha, colour=colour)
        return _Lesion("soft_exudates", y0, x0, footprint, (peak - 0.25) / 0.25, ("ellipse", *center, rx, ry, angle))

    def _distractors(self, rng: np.random.Generator, image: np.ndarray, optic_disc: np.ndarray) -> None:
        """Lesion look-alikes painted in every class: vessel-like lines, reflections, specks, dust."""
        canvas = np.zeros(image.shape[:2], np.float32)
        for _ in range(int(rng.choice(4, p=[0.3, 0.35, 0.2, 0.15]))):
            points = [self._place(rng, optic_disc)]
            direction = rng.uniform(0, 2 * np.pi)
            for _ in range(4):
                direction += rng.normal(0, 0.5)
                points.append(points[-1] + 0.12 * self.radius * np.array([np.cos(direction), np.sin(direction)]))
            cv2.polylines(canvas, [np.round(np.array(points) * 4).astype(np.int32)], False, 1.0,
                          thickness=max(1, round(self.k)), lineType=cv2.LINE_AA, shift=2)
        if canvas.any():
            self._stamp(image, 0, 0, canvas * rng.uniform(0.15, 0.35), factor=(0.6, 0.5, 0.6))
        for _ in range(int(rng.choice(3, p=[0.5, 0.35, 0.15]))):
            self._blob(rng, image, self._place(rng, optic_disc), rng.uniform(6, 20) * self.k, rng.uniform(0.08, 0.22), colour=(255, 245, 235))
        for _ in range(int(rng.choice(4, p=[0.55, 0.2, 0.15, 0.1]))):
            self._blob(rng, image, self._place(rng, optic_disc), rng.uniform(0.6, 1.2) * max(1.0, self.k), rng.uniform(0.15, 0.35), colour=(250, 245, 240))
        if rng.random() < 0.25:
            self._blob(rng, image, self._place(rng, optic_disc), rng.uniform(3, 6) * self.k + 1, rng.uniform(0.3, 0.6), factor=(0.88, 0.88, 0.88))

    def _blob(self, rng, image, center, sigma, peak, colour=None, factor=None) -> None:
        y0, x0, side, local = self._window(center, 3 * sigma)
        ys, xs = np.mgrid[0:side, 0:side].astype(np.float32)
        alpha = peak * np.exp(-((xs - local[0]) ** 2 + (ys - local[1]) ** 2) / (2 * sigma**2))
        self._stamp(image, y0, x0, alpha, factor=factor, colour=colour)


def _lesion_counts(rng: np.random.Generator, grade: int) -> dict[str, int]:
    """Lesion counts whose :func:`dr_grade` is ``grade``."""
    counts = dict.fromkeys(LESION_TYPES, 0)
    if grade == 1:
        counts["red_small_dots"] = int(rng.integers(1, 5))
    elif grade == 2:
        if rng.random() < 0.15:
            counts["red_small_dots"] = int(rng.integers(6, 11))
        else:
            counts["red_small_dots"] = int(rng.integers(0, 9))
            kinds = rng.choice(["hemorrhages", "hard_exudates", "soft_exudates"], size=int(rng.integers(1, 3)), replace=False)
            for kind in kinds:
                counts[kind] = int(rng.integers(1, {"hemorrhages": 5, "hard_exudates": 4, "soft_exudates": 3}[kind]))
    elif grade >= 3:
        counts["red_small_dots"] = int(rng.integers(4, 13))
        counts["hard_exudates"] = int(rng.integers(0, 5))
        if grade == 3:
            counts["hemorrhages"], counts["soft_exudates"] = int(rng.integers(8, 16)), int(rng.integers(0, 3))
        else:
            counts["hemorrhages"], counts["soft_exudates"] = int(rng.integers(10, 19)), int(rng.integers(3, 7))
    assert dr_grade(counts) == grade, (grade, counts)
    return counts


# --------------------------------------------------------------------------------------------
# simulated experts and the DiaretDB1 files
# --------------------------------------------------------------------------------------------
def _annotate(rng: np.random.Generator, lesions: list[_Lesion], shape: tuple[int, int]) -> list[list[Marking]]:
    """Markings of the four simulated experts (one list per expert)."""
    experts: list[list[Marking]] = [[] for _ in range(N_EXPERTS)]
    for lesion in lesions:
        for expert in range(N_EXPERTS):
            miss = _MISS[lesion.kind] * _EXPERT_MISS[expert] * (1.6 - lesion.visibility)
            if rng.random() < miss:
                continue
            confidence = _CONFIDENCE_NAMES[int(np.clip((lesion.visibility + rng.normal(0, 0.25)) * 3, 0, 2))]
            experts[expert].append(_outline(rng, lesion, expert, confidence, shape))
    return experts


def _outline(rng: np.random.Generator, lesion: _Lesion, expert: int, confidence: str, shape: tuple[int, int]) -> Marking:
    """One expert's region around a lesion, in integer image coordinates like the real files."""
    scale, margin = _EXPERT_SCALE[expert], _EXPERT_MARGIN[expert]
    kind, *params = lesion.geometry
    if kind == "circle":
        cx, cy, rho = params
        center = (int(round(cx + rng.normal(0, 0.4))), int(round(cy + rng.normal(0, 0.4))))
        # Integer radius 2 or 3 covers 3 or 5 px: microaneurysm regions stay <= 5 px wide.
        radius = 2 if rho * scale + rng.uniform(0, 0.8) < 2.0 else 3
        return Marking(lesion.kind, confidence, "circle", center, (radius, radius), representative=center)
    if kind == "ellipse":
        cx, cy, rx, ry, angle = params
        jitter = rng.uniform(0.9, 1.1, 2) * scale
        center = (int(round(cx + rng.normal(0, 0.7))), int(round(cy + rng.normal(0, 0.7))))
        radii = (int(max(1, round(rx * jitter[0] + margin))), int(max(1, round(ry * jitter[1] + margin))))
        return Marking(lesion.kind, confidence, "ellipse", center, radii, angle=int(round(angle + rng.normal(0, 8))), representative=center)
    grow = margin + int(scale > 1.0)
    padded = np.pad(lesion.footprint, grow + 1).astype(np.uint8)
    if grow:
        padded = cv2.dilate(padded, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1)))
    points = cv2.findNonZero(padded)
    hull = cv2.convexHull(points)[:, 0, :].astype(np.float64) if lesion.kind == "hard_exudates" else None
    if hull is None:
        contours, _ = cv2.findContours(padded, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        hull = max(contours, key=cv2.contourArea)[:, 0, :].astype(np.float64)
    hull += rng.normal(0, 0.35, hull.shape) + [lesion.x0 - grow - 1, lesion.y0 - grow - 1]
    hull = np.clip(np.round(hull), 0, [shape[1] - 1, shape[0] - 1]).astype(int)
    if len(hull) < 3:  # a one- or two-pixel footprint: outline its bounding square
        (xa, ya), (xb, yb) = hull.min(0), hull.max(0) + 1
        hull = np.array([[xa, ya], [xb, ya], [xb, yb], [xa, yb]])
    points = tuple((int(x), int(y)) for x, y in hull)
    centre = tuple(int(v) for v in np.round(hull.mean(axis=0)))
    return Marking(lesion.kind, confidence, "polygon", points=points, representative=centre)


def _write_test_image(paths: SyntheticPaths, image_id: str, image: np.ndarray, experts: list[list[Marking]]) -> None:
    """The image and its ground truth in the v2.1 (XML per expert) and v1.1 (grey sums) layouts."""
    _, png = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    atomic_write_bytes(paths.diaretdb1 / V2_IMAGES / f"diaretdb1_{image_id}.png", png.tobytes())
    atomic_write_bytes(paths.diaretdb1_v1 / V1_IMAGES / f"{image_id}.png", png.tobytes())
    shape = image.shape[:2]
    per_expert = []
    for number, markings in enumerate(experts, start=1):
        xml = expert_xml(markings, f"diaretdb1_{image_id}.png", expert=f"expert{number:02d}")
        atomic_write_text(paths.diaretdb1 / V2_GROUNDTRUTH / f"diaretdb1_{image_id}_{number:02d}.xml", xml)
        per_expert.append(expert_levels(markings, shape))
    for lesion in LESION_TYPES:
        grey = summed_confidence(np.stack([levels[lesion] for levels in per_expert]))
        atomic_write_png(paths.diaretdb1_v1 / V1_GROUNDTRUTH / V1_FOLDERS[lesion] / f"{image_id}.png", grey)


def _write_split_files(paths: SyntheticPaths, test_ids: list[str]) -> None:
    """All synthetic DiaretDB1 images are test images; the train split files are empty."""
    v2_lines = [
        " ".join([f"images/diaretdb1_{i}.png"] + [f"groundtruth/diaretdb1_{i}_{e:02d}.xml" for e in range(1, N_EXPERTS + 1)])
        for i in test_ids
    ]
    atomic_write_text(paths.diaretdb1 / V2_SPLITS["test"], "".join(line + "\n" for line in v2_lines))
    atomic_write_text(paths.diaretdb1 / V2_SPLITS["train"], "")
    atomic_write_text(paths.diaretdb1_v1 / V1_SPLITS["test"], "".join(f"images/ddb1_fundusimages/{i}.png\n" for i in test_ids))
    atomic_write_text(paths.diaretdb1_v1 / V1_SPLITS["train"], "")


def _write_fmask_tif(path: Path, disc: np.ndarray) -> None:
    _, tif = cv2.imencode(".tif", disc.astype(np.uint8) * 255)
    atomic_write_bytes(path, tif.tobytes())


def create_synthetic_set(out: str | os.PathLike, *, n_train: int, n_test: int, size: int, seed: int,
                         label_rule: str | LabelRule | None = None, progress: bool = True):
    """Write the semi-synthetic set into ``out``, or reuse the same set already there.

    ``out`` must be new, empty, or hold a finished set (``synthetic.json``) of the same settings (label rule
    included), which is reused as it is (nothing rewritten). Anything else is refused before a byte is
    written. The one way the commands (``synth``, the demo) create a set; readers never do.

    Returns:
        (:class:`~retina_fgvis.datasets.synthetic.SyntheticPaths`, whether the set was written now).
    """
    out = Path(out)
    rule = LabelRule.parse(label_rule)
    wanted = {"n_train": n_train, "n_test": n_test, "size": size, "seed": seed}
    record = _set_record(out)
    with locked_folder(out):
        try:
            # synthetic.json is written last, so a folder holding it holds a finished set.
            finished = record.claim(wanted, ignore=_DERIVED_SETTINGS)
        except RunFolderError as error:
            if record.read_info(required=False) is not None or (out / RUN_RECORD).exists():
                raise
            # Files but no record: most likely a set whose writing was interrupted.
            raise RunFolderError(f"{error} (an interrupted synth: delete the folder and rerun)") from None
        if finished:
            recorded = str(read_label_rule(out))
            if recorded != str(rule):
                raise RunFolderError(f"out: {out} holds another synthetic set (label_rule {recorded!r} vs "
                                     f"{str(rule)!r}); choose another folder or delete it")
            return SyntheticPaths.of(out), False
        return (generate_synthetic(out, n_train=n_train, n_test=n_test, size=size, seed=seed, progress=progress,
                                   label_rule=rule), True)
