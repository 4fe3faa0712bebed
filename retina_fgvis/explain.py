"""Explain ImageNet classifiers with FGVis: arrays, a figure per image, a results table.

:func:`explain` runs FGVis on a batch of images with the paper's default settings (§A2): SGD with
lr 0.1 for at most 500 iterations, most-likely class, zero reference, adversarial defense on, and
the λ line search over 13 log-spaced values 10⁻⁴…10⁻¹⁰, largest first:

- the most-likely class ``c_ml`` is accepted with the first λ whose explanation shifts the top class
  (deletion, repression) or makes ``c_ml`` the top class (preservation, generation);
- any other requested class (class-discriminative explanations, §A3.2: "λ is optimised to
  significantly drop the softmax score") is accepted with the first λ that drops its softmax score
  below ``secondary_drop`` (default 0.1) times its score on the clean image (deletion, repression),
  or that makes it the top class (preservation, generation).

The same rules stop the optimisation early (deletion and generation: as soon as the rule holds) and
give each result's ``success`` flag, also with a fixed ``lam``.

Output folder (``out_dir``)::

    results.csv, results.json   one row per image and target class
    run.json                    settings and versions
    <image>/figure.png          image | mask | importance | explanation, one row per target class
    <image>/arrays.npz          image (H×W×3 uint8), targets (T), mask (T×3×H×W), mean_mask (T×H×W),
                                importance (T×H×W, high = important), explanation (T×H×W×3 RGB in [0, 1])

For deletion and repression the figure shows ``1 − m`` (the removed evidence in true colour) and
importance ``1 − mean mask``; for preservation and generation ``m`` and the mean mask.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from retina_fgvis._io import atomic_save_figure, atomic_save_npz, atomic_write_csv, atomic_write_json
from retina_fgvis.fgvis import ClassShift, FGVis, RelativeScoreBelow, lambda_grid
from retina_fgvis.fgvis.games import game_spec
from retina_fgvis.models.imagenet import ImageNetModel, as_imagenet_model, image_names
from retina_fgvis.runs import RunFolder, RunKind

__all__ = ["Explanation", "ImageExplanations", "explain", "plot_explanations", "results_table"]


@dataclass
class Explanation:
    """FGVis explanation of one image for one class (arrays on the CPU).

    mask: 3×H×W in [0, 1]; mean_mask, importance: H×W (importance high = important);
    explanation: H×W×3 RGB in [0, 1] (``e = x·m + (1−m)·r`` mapped back to pixels, clipped).
    """

    target: int
    target_name: str
    primary: bool              # True for the clean image's most-likely class
    lam: float
    initial_score: float
    score: float
    iterations: int
    success: bool
    top_class: int
    top_name: str
    mask: np.ndarray = field(repr=False)
    mean_mask: np.ndarray = field(repr=False)
    importance: np.ndarray = field(repr=False)
    explanation: np.ndarray = field(repr=False)


@dataclass
class ImageExplanations:
    """One image (as the model saw it: H×W×3 uint8 after the ImageNet transform) and its explanations."""

    name: str
    image: np.ndarray = field(repr=False)
    top_class: int
    top_name: str
    top_score: float
    explanations: list[Explanation]


def explain(images: Sequence, model_name: str | ImageNetModel = "googlenet", *, weights="default",
            game: str = "deletion", targets: Sequence[int | str] | None = None,
            lam: float | str = "search", lam_grid: Sequence[float] | None = None, secondary_drop: float = 0.1,
            max_iter: int = 500, lr: float = 0.1, defense: bool = True, reference: str = "zero",
            image_size: int | None = None, device=None, batch_size: int | None = None, seed: int = 0,
            compile: bool = False, out_dir: str | os.PathLike | None = None,
            progress: bool = True) -> list[ImageExplanations]:
    """FGVis explanations of ImageNet images.

    Args:
        images: image paths, uint8 H×W×3 RGB arrays or PIL images.
        model_name: a name of :data:`~retina_fgvis.models.imagenet.IMAGENET_MODELS` (loaded with
            ``weights``, ``image_size``, ``device``) or a loaded :class:`ImageNetModel`.
        game: ``deletion`` (default), ``preservation``, ``generation`` or ``repression``.
        targets: class indices or names to explain for every image; ``None`` = each image's most
            likely class. A target equal to the image's most-likely class uses the §A2 search rule,
            any other the ``secondary_drop`` rule (module docstring).
        lam: ``"search"`` (default) or a fixed λ ≥ 0. ``lam_grid``: the search grid (default
            ``lambda_grid(1e-4, 1e-10, 13)``).
        max_iter, lr, defense, reference, batch_size, seed: passed to :class:`~retina_fgvis.fgvis.FGVis`.
        compile: ``torch.compile`` the optimisation step (CUDA graphs on a GPU; docs/engine.md). Masks differ
            from eager by round-off, so it is part of the run's settings.
        out_dir: when given, figures, arrays and tables are written there (module docstring). It must be
            new, empty or hold this same run (its ``run.json``); it is locked while the explanations run.

    Returns:
        One :class:`ImageExplanations` per image, explanations in the order of ``targets``.
    """
    game_spec(game)  # ValueError naming ``game`` before any work
    if isinstance(lam, str) and lam != "search":
        raise ValueError(f"lam: expected 'search' or a number, got {lam!r}")
    if not 0 < secondary_drop < 1:
        raise ValueError(f"secondary_drop: expected a fraction in (0, 1), got {secondary_drop}")
    if isinstance(images, (str, os.PathLike)) or not len(images):
        raise ValueError("images: expected a non-empty sequence of image paths or arrays")
    model = as_imagenet_model(model_name, weights=weights, device=device, image_size=image_size)
    wanted = None if targets is None else [model.class_index(target) for target in targets]
    if wanted is not None and (not wanted or len(set(wanted)) != len(wanted)):
        raise ValueError(f"targets: expected distinct classes, got {list(targets)}")
    names = image_names(images)
    grid = lambda_grid() if lam_grid is None else lam_grid
    config = {"model": model.name, "weights": model.weights, "image_size": model.image_size, "game": game,
              "targets": wanted, "lam": lam, "lam_grid": list(grid), "secondary_drop": secondary_drop,
              "max_iter": max_iter, "lr": lr, "defense": defense, "reference": reference, "seed": seed,
              "compile": compile, "images": [str(image) if isinstance(image, (str, os.PathLike)) else name
                         for image, name in zip(images, names)]}
    with contextlib.ExitStack() as stack:
        if out_dir is not None:
            # Runs recorded before `compile` existed ran eagerly.
            stack.enter_context(RunFolder(out_dir, RunKind.EXPLAIN).writing(
                config, upgrade=lambda stored: {"compile": False, **stored}))
        inputs = model.preprocess_batch(images)
        with torch.no_grad():
            clean = model.model(inputs).softmax(dim=1)
        top = clean.argmax(dim=1)
        # One row per (image, target); rows of the most-likely class and of other classes differ in their rule.
        row_image = torch.arange(len(inputs)).repeat_interleave(1 if wanted is None else len(wanted))
        row_target = top.cpu()[row_image] if wanted is None else torch.tensor(wanted).repeat(len(inputs))
        primary = row_target == top.cpu()[row_image]
        fgvis = FGVis(model.model, game=game, defense=defense, reference=reference, lr=lr, max_iter=max_iter,
                      normalization=model.normalization, batch_size=batch_size, seed=seed, compile=compile,
                      progress=progress)
        results: dict[int, tuple] = {}
        for is_primary in (True, False):
            rows = (primary == is_primary).nonzero()[:, 0]
            if not len(rows):
                continue
            rule = ClassShift() if is_primary or game_spec(game).keeps_class else RelativeScoreBelow(secondary_drop)
            res = fgvis.attribute(inputs[row_image[rows]], target=row_target[rows].to(inputs.device),
                                  lam="search" if isinstance(lam, str) else float(lam), lam_grid=grid, stop=rule)
            for k, row in enumerate(rows.tolist()):
                results[row] = (res, k)
        pixels = (model.to_pixels(inputs) * 255).round().astype(np.uint8)
        output = []
        for index, name in enumerate(names):
            explanations = [_explanation(model, *results[row], bool(primary[row]))
                            for row in (row_image == index).nonzero()[:, 0].tolist()]
            output.append(ImageExplanations(name=name, image=pixels[index], top_class=int(top[index]),
                                            top_name=model.class_names[int(top[index])],
                                            top_score=float(clean[index, top[index]]), explanations=explanations))
        if out_dir is not None:
            _write(output, Path(out_dir), game)
    return output


def results_table(results: Sequence[ImageExplanations]) -> pd.DataFrame:
    """One row per image and target: image, clean top class, target, λ, scores, iterations, success."""
    rows = []
    for item in results:
        for exp in item.explanations:
            record = {key: value for key, value in asdict(exp).items()
                      if not isinstance(value, np.ndarray)}
            rows.append({"image": item.name, "clean_top_class": item.top_class, "clean_top_name": item.top_name,
                         "clean_top_score": item.top_score, **record})
    return pd.DataFrame(rows)


def plot_explanations(item: ImageExplanations, game: str, path: str | os.PathLike) -> Path:
    """Figure of one image: a row per target with image, mask, importance and explanation (PNG, atomic)."""
    from matplotlib.figure import Figure

    drop = not game_spec(game).keeps_class
    count = len(item.explanations)
    figure = Figure(figsize=(13, 3.4 * count))
    axes = figure.subplots(count, 4, squeeze=False)
    for axis_row, exp in zip(axes, item.explanations):
        shown_mask = (1 - exp.mask) if drop else exp.mask
        panels = [
            (item.image, f"{item.name}\ntop-1: {item.top_name} ({item.top_score:.2f})", None),
            (shown_mask.transpose(1, 2, 0), "1 − mask" if drop else "mask", None),
            (exp.importance, f"importance ({'1 − mean mask' if drop else 'mean mask'}), 0…{exp.importance.max():.2f}",
             "inferno"),
            (exp.explanation, f"{game}: {exp.target_name}\np {exp.initial_score:.2f} → {exp.score:.2f}, "
                              f"λ={exp.lam:.1e}, {exp.iterations} it{'' if exp.success else ' (not met)'}", None),
        ]
        for axis, (picture, title, cmap) in zip(axis_row, panels):
            # The importance map is shown from 0 to its own maximum: sparse masks would be invisible on 0…1.
            axis.imshow(picture, cmap=cmap, vmin=0 if cmap else None,
                        vmax=max(float(picture.max()), 1e-6) if cmap else None)
            axis.set_title(title, fontsize=9)
            axis.axis("off")
    figure.tight_layout()
    return atomic_save_figure(figure, path, dpi=110)


def _explanation(model: ImageNetModel, res, k: int, primary: bool) -> Explanation:
    target, top = int(res.target[k]), int(res.top_class[k])
    return Explanation(
        target=target, target_name=model.class_names[target], primary=primary, lam=float(res.lam[k]),
        initial_score=float(res.initial_score[k]), score=float(res.score[k]), iterations=int(res.iterations[k]),
        success=bool(res.success[k]), top_class=top, top_name=model.class_names[top],
        mask=res.mask[k].detach().float().cpu().numpy(), mean_mask=res.mean_mask[k, 0].detach().float().cpu().numpy(),
        importance=res.importance[k, 0].detach().float().cpu().numpy(),
        explanation=model.to_pixels(res.explanation[k:k + 1])[0])


def _write(results: list[ImageExplanations], out: Path, game: str) -> None:
    for item in results:
        folder = out / item.name
        stack = {key: np.stack([getattr(exp, key) for exp in item.explanations]).astype(np.float32)
                 for key in ("mask", "mean_mask", "importance", "explanation")}
        atomic_save_npz(folder / "arrays.npz", image=item.image,
                        targets=np.array([exp.target for exp in item.explanations]), **stack)
        plot_explanations(item, game, folder / "figure.png")
    table = results_table(results)
    atomic_write_csv(out / "results.csv", table)
    atomic_write_json(out / "results.json", table.to_dict(orient="records"))
