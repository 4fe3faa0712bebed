"""Deletion and insertion curves (Petsiuk et al.; FGVis supplementary §A4.1) and the deletion study.

**Curves.** Given an image ``x`` (3×H×W, model input space), an importance map (1×H×W, high =
important) and the class ``c`` the clean image is most likely to be (``c_ml``), pixels are ranked by
decreasing importance (ties broken by a seeded random permutation, the same for every image of a
size). For a schedule of fractions ``f_k`` the ``n_k = round(f_k·P)`` top-ranked of the ``P = H·W``
pixels are

- *deletion*: replaced by the substrate ``s`` (all channels), starting from the clean image;
- *insertion*: copied from ``x`` into the substrate, starting from ``s``;

and the softmax probability ``y_k`` of ``c`` is recorded. The area under the curve is the trapezoid
rule over the **true** fraction ``n_k / P`` (not the nominal ``f_k``)::

    AUC = Σ_k (n_{k+1} − n_k)/P · (y_k + y_{k+1}) / 2        (torch.trapezoid)

Lower deletion AUC and higher insertion AUC mean a more faithful importance map.

The paper's schedule (:func:`paper_fractions`): 100 steps of 0.25 % then 75 steps of 1 %, 176 points
including the clean image. The substrate defaults to ``"zero"`` in the model's normalised input
space (the dataset's mean colour, the same reference FGVis uses); ``"black"`` pixels (needs the
normalisation), ``"blur"`` or a tensor are available and the choice is recorded in every summary.

All perturbed images of all images in a batch are built on the inputs' device and evaluated
``batch_size`` at a time.
"""
from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from retina_fgvis._io import atomic_save_figure, atomic_write_csv
from retina_fgvis.attribution.gradcam import resolve_targets
from retina_fgvis.checks import check_int
from retina_fgvis.fgvis import FGVis, RelativeScoreBelow, lambda_grid, make_reference, model_guard
from retina_fgvis.fgvis.references import IMAGE_REFERENCES
from retina_fgvis.models.imagenet import as_imagenet_model, image_names
from retina_fgvis.runs import claim_study
from retina_fgvis.runtime import progress_bar

__all__ = ["DeletionCurve", "InsertionCurve", "PerturbationCurve", "DELETION_METHODS", "deletion_study",
           "fgvis_deletion", "plot_curves", "paper_fractions", "summarize_deletion"]

DELETION_METHODS = ("fgvis", "gradcam", "occlusion", "random")


def paper_fractions() -> torch.Tensor:
    """The §A4.1 schedule: 0, 0.25 %, …, 25 % (100 steps), then 26 %, …, 100 % (75 steps); 176 float64 values."""
    fine = torch.arange(0, 101, dtype=torch.float64) * 0.0025
    coarse = 0.25 + torch.arange(1, 76, dtype=torch.float64) * 0.01
    return torch.cat([fine, coarse]).clamp(max=1.0)


class PerturbationCurve:
    """Stateful deletion/insertion metric: ``update`` per batch, ``summary`` over all, ``reset``.

    Args:
        model: classifier, ``model(x)`` returns logits N×C; evaluated in eval mode without gradients
            (train/eval flags and ``requires_grad`` are restored afterwards).
        mode: ``"deletion"`` or ``"insertion"``.
        substrate: what removed pixels become / the starting image of insertion: ``"zero"`` (0 in the
            model's input space), ``"black"`` (pixel 0, needs ``normalization``), ``"blur"`` (the image
            blurred with ``blur_sigma`` px) or a tensor (C×H×W, 1×C×H×W or N×C×H×W).
        normalization: ``(mean, std)`` of the model's inputs (for ``"black"``).
        fractions: nominal fractions of pixels changed at each point, increasing, starting at 0 and
            ending at 1 (default :func:`paper_fractions`).
        batch_size: perturbed images per forward pass.
        seed: seed of the tie-breaking permutation.
    """

    mode: str = ""

    def __init__(self, model: nn.Module, mode: str | None = None, *, substrate: str | torch.Tensor = "zero",
                 normalization=None, fractions: Sequence[float] | torch.Tensor | None = None,
                 batch_size: int = 64, blur_sigma: float = 5.0, seed: int = 0, progress: bool = False):
        mode = mode or self.mode
        if mode not in ("deletion", "insertion"):
            raise ValueError(f"mode: expected 'deletion' or 'insertion', got {mode!r}")
        check_int("batch_size", batch_size, minimum=1)
        fractions = paper_fractions() if fractions is None else torch.as_tensor(fractions, dtype=torch.float64)
        if (fractions.ndim != 1 or fractions.numel() < 2 or fractions[0] != 0 or fractions[-1] != 1
                or bool((fractions.diff() < 0).any())):
            raise ValueError("fractions: expected an increasing 1-D sequence from 0 to 1")
        self.model = model
        self.mode = mode
        self.substrate = substrate
        self.normalization = normalization
        self.fractions = fractions
        self.batch_size = batch_size
        self.blur_sigma = blur_sigma
        self.seed = seed
        self.progress = progress
        self.reset()

    def reset(self) -> None:
        """Forget every curve seen so far."""
        self._curves: list[torch.Tensor] = []
        self._removed: torch.Tensor | None = None

    @property
    def substrate_name(self) -> str:
        return self.substrate if isinstance(self.substrate, str) else "tensor"

    def compute(self, inputs: torch.Tensor, importance: torch.Tensor,
                target: int | Sequence[int] | torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Curves of a batch without touching the state.

        Args:
            inputs: N×C×H×W float images in the model's input space, any device.
            importance: N×1×H×W (or N×H×W) importance, high = important, same spatial size.
            target: class per image; ``None`` = each clean image's most likely class.

        Returns:
            ``(curves, removed)``: N×K softmax probabilities of the target (float32, on the inputs'
            device) and the K true fractions ``round(f·P)/P`` (float64, CPU).
        """
        x, ranks = self._check(inputs, importance)
        n, _, h, w = x.shape
        pixels = h * w
        counts = torch.round(self.fractions * pixels).long()
        substrate = make_reference(self.substrate, x, normalization=self.normalization,
                                   blur_sigma=self.blur_sigma, seed=self.seed)
        steps = counts.numel()
        curves = torch.empty(n * steps, dtype=torch.float32, device=x.device)
        counts_dev = counts.to(x.device)
        with model_guard(self.model), torch.no_grad():
            targets = resolve_targets(self.model, x, target)
            pairs = torch.arange(n * steps, device=x.device)
            chunks = pairs.split(self.batch_size)
            with _maybe_progress(self.progress, f"{self.mode} curves", len(chunks)) as advance:
                for chunk in chunks:
                    image, step = chunk // steps, chunk % steps
                    # changed[b, p]: pixel p is among the first counts[step] in image's ranking
                    changed = (ranks[image] < counts_dev[step, None]).view(-1, 1, h, w)
                    if self.mode == "deletion":
                        batch = torch.where(changed, substrate[image], x[image])
                    else:
                        batch = torch.where(changed, x[image], substrate[image])
                    probs = self.model(batch).float().softmax(dim=1)
                    curves[chunk] = probs.gather(1, targets[image, None])[:, 0]
                    advance()
        return curves.view(n, steps), counts.double() / pixels

    def update(self, inputs: torch.Tensor, importance: torch.Tensor,
               target: int | Sequence[int] | torch.Tensor | None = None) -> torch.Tensor:
        """:meth:`compute` and remember the curves; returns the N per-image AUCs (CPU float64)."""
        curves, removed = self.compute(inputs, importance, target)
        if self._removed is not None and not torch.equal(self._removed, removed):
            raise ValueError("inputs: every update must use images of the same size (the fraction axes differ)")
        self._removed = removed
        self._curves.append(curves.detach().cpu().double())
        return torch.trapezoid(self._curves[-1], x=removed, dim=1)

    @property
    def removed_fraction(self) -> torch.Tensor:
        """K true fractions ``round(f·P)/P`` of the curves seen so far (CPU float64)."""
        if self._removed is None:
            raise ValueError("no curves yet: call update() first")
        return self._removed

    @property
    def curves(self) -> torch.Tensor:
        """N×K probabilities of every image seen so far (CPU float64)."""
        if not self._curves:
            raise ValueError("no curves yet: call update() first")
        return torch.cat(self._curves)

    @property
    def aucs(self) -> torch.Tensor:
        """N per-image trapezoid AUCs over the true fraction axis."""
        return torch.trapezoid(self.curves, x=self.removed_fraction, dim=1)

    def summary(self) -> dict:
        """``{"mode", "auc" (mean), "auc_std", "n_images", "points", "substrate"}``."""
        aucs = self.aucs
        return {"mode": self.mode, "auc": float(aucs.mean()),
                "auc_std": float(aucs.std()) if aucs.numel() > 1 else 0.0,
                "n_images": int(aucs.numel()), "points": int(self.removed_fraction.numel()),
                "substrate": self.substrate_name}

    def _check(self, inputs: torch.Tensor, importance: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(inputs, torch.Tensor) or inputs.ndim != 4 or not inputs.is_floating_point():
            raise ValueError("inputs: expected a float N×C×H×W tensor")
        if not isinstance(importance, torch.Tensor):
            raise TypeError(f"importance: expected a tensor, got {type(importance).__name__}")
        n, _, h, w = inputs.shape
        if importance.ndim == 4 and importance.shape[1] == 1:
            importance = importance[:, 0]
        if tuple(importance.shape) != (n, h, w):
            raise ValueError(f"importance: expected shape {n}×1×{h}×{w}, got {tuple(importance.shape)}")
        if not torch.isfinite(importance).all():
            raise ValueError("importance: contains NaN or infinite values")
        return inputs.detach(), _ranks(importance.detach().to(inputs.device), self.seed)


class DeletionCurve(PerturbationCurve):
    """Deletion curve: remove the most important pixels first (lower AUC = more faithful)."""

    mode = "deletion"


class InsertionCurve(PerturbationCurve):
    """Insertion curve: insert the most important pixels into the substrate first (higher AUC = better)."""

    mode = "insertion"


def _ranks(importance: torch.Tensor, seed: int) -> torch.Tensor:
    """N×P long: rank of each pixel (0 = most important); ties in a seeded random order."""
    flat = importance.reshape(importance.shape[0], -1).float()
    generator = torch.Generator().manual_seed(seed)
    perm = torch.randperm(flat.shape[1], generator=generator).to(flat.device)
    order = perm[torch.sort(flat[:, perm], dim=1, descending=True, stable=True).indices]
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(flat.shape[1], device=flat.device).expand_as(order))
    return ranks


@contextlib.contextmanager
def _maybe_progress(show: bool, description: str, total: int):
    if not show:
        yield lambda: None
        return
    with progress_bar(transient=True) as bar:
        task = bar.add_task(description, total=total, status="")
        yield lambda: bar.advance(task)


def fgvis_deletion(model: nn.Module, inputs: torch.Tensor, *, normalization=None, reference: str = "zero",
                   lr: float = 0.3, max_iter: int = 500, lam_grid=None, stop_fraction: float = 0.02,
                   target=None, batch_size: int | None = None, seed: int = 0, progress: bool = False):
    """FGVis deletion-game masks with the §A4.1 settings; the importance map is ``result.importance``.

    Deletion game, SGD lr 0.3, line search over ``lam_grid`` (default 4 log-spaced values
    10⁻⁷…10⁻¹⁰, largest first), stopping an image once ``y_e[c] < stop_fraction · y_x[c]``; the same
    rule accepts a λ. ``reference`` should be the deletion curve's substrate.

    Returns:
        :class:`~retina_fgvis.fgvis.FGVisResult`; ``importance`` is N×1×H×W ``1 − mean mask`` (high = important).
    """
    explainer = FGVis(model, game="deletion", reference=reference, lr=lr, max_iter=max_iter,
                      normalization=normalization, batch_size=batch_size, seed=seed, progress=progress)
    return explainer.attribute(inputs, target=target, lam="search",
                               lam_grid=lambda_grid(1e-7, 1e-10, 4) if lam_grid is None else lam_grid,
                               stop=RelativeScoreBelow(stop_fraction))


def deletion_study(images: Sequence, model="efficientnet_lite0", *, weights="default", image_size: int | None = None,
                   methods: Sequence[str] = DELETION_METHODS, substrate: str = "zero",
                   fractions: Sequence[float] | None = None, lr: float = 0.3, max_iter: int = 500,
                   lam_grid=None, stop_fraction: float = 0.02, occlusion_window: int | None = None,
                   occlusion_stride: int | None = None, image_batch: int = 16, batch_size: int = 64,
                   device=None, seed: int = 0, out_dir: str | os.PathLike | None = None,
                   progress: bool = True) -> pd.DataFrame:
    """Deletion and insertion AUCs of several importance maps on the same images (§A4.1).

    Args:
        images: image paths, uint8 H×W×3 RGB arrays or PIL images (ImageNet evaluation transform).
        model: a model name (see :data:`retina_fgvis.models.imagenet.IMAGENET_MODELS`, loaded with
            ``weights``/``image_size``/``device``) or an already loaded :class:`ImageNetModel`.
        methods: any of ``"fgvis"`` (§A4.1 settings, see :func:`fgvis_deletion`), ``"gradcam"``
            (at the model's ``cam_layer``), ``"occlusion"`` (window ``S/8``, stride half the window,
            filled with the substrate's zero) and ``"random"`` (a seeded uniform map).
        substrate: ``"zero"`` (normalised zero) or ``"black"`` (pixel black); also FGVis's reference.
        fractions: curve schedule (default :func:`paper_fractions`, 176 points).
        image_batch: images explained and scored together; ``batch_size``: perturbed images per forward.
        out_dir: when given, writes ``deletion.csv`` (one row per image and method), ``curves.csv`` (mean
            and std of each method's curves over the images), ``deletion_curves.png`` and ``deletion_run.json``.

    Returns:
        DataFrame with columns image, method, target, target_name, p_clean, deletion_auc,
        insertion_auc, substrate, seconds (attribution time). ``frame.attrs["curves"]`` holds the
        curve table written to ``curves.csv``.
    """
    from retina_fgvis.attribution import GradCAM, Occlusion

    unknown = [method for method in methods if method not in DELETION_METHODS]
    if unknown or not methods:
        raise ValueError(f"methods: {unknown or 'none given'}; choose from {DELETION_METHODS}")
    if substrate not in IMAGE_REFERENCES:
        raise ValueError(f"substrate: expected one of {IMAGE_REFERENCES}, got {substrate!r}")
    model = as_imagenet_model(model, weights=weights, device=device, image_size=image_size)
    names, inputs = _load_images(images, model)
    window = occlusion_window or max(model.image_size // 8, 2)
    curve_args = dict(substrate=substrate, normalization=model.normalization, fractions=fractions,
                      batch_size=batch_size, seed=seed)
    metrics = {(method, mode): PerturbationCurve(model.model, mode, **curve_args)
               for method in methods for mode in ("deletion", "insertion")}
    config = {"study": "deletion", "model": model.name, "weights": model.weights,
              "image_size": model.image_size, "methods": list(methods), "substrate": substrate,
              "points": int(metrics[methods[0], "deletion"].fractions.numel()),
              "lr": lr, "max_iter": max_iter, "stop_fraction": stop_fraction,
              "occlusion_window": window, "seed": seed, "images": names}
    record = claim_study(out_dir, "deletion", config)
    fill = float(make_reference(substrate, inputs[:1], normalization=model.normalization)[0].mean())
    rows = []
    with _maybe_progress(progress, "deletion study", len(inputs) // image_batch + bool(len(inputs) % image_batch)
                         ) as advance:
        for start in range(0, len(inputs), image_batch):
            x = inputs[start:start + image_batch]
            with torch.no_grad():
                probs = model.model(x).softmax(dim=1)
            target = probs.argmax(dim=1)
            for method in methods:
                began = time.perf_counter()
                success = [None] * len(x)  # the explanation met its stop rule (FGVis only)
                if method == "fgvis":
                    result = fgvis_deletion(model.model, x, normalization=model.normalization,
                                            reference=substrate, lr=lr, max_iter=max_iter, lam_grid=lam_grid,
                                            stop_fraction=stop_fraction, target=target, seed=seed)
                    importance, success = result.importance, result.success.tolist()
                elif method == "gradcam":
                    importance = GradCAM(model.model, target_layer=model.cam_layer).attribute(x, target=target)
                elif method == "occlusion":
                    # Occlusion fills with one value; for "black" that is the mean of the per-channel black.
                    importance = Occlusion(model.model, window=window, stride=occlusion_stride or max(window // 2, 1),
                                           fill=fill, batch_size=batch_size).attribute(x, target=target)
                else:
                    generator = torch.Generator().manual_seed(seed + start)
                    importance = torch.rand((len(x), 1, *x.shape[2:]), generator=generator).to(x.device)
                seconds = (time.perf_counter() - began) / len(x)
                aucs = {mode: metrics[method, mode].update(x, importance, target) for mode in ("deletion", "insertion")}
                for row in range(len(x)):
                    rows.append({"image": names[start + row], "method": method, "target": int(target[row]),
                                 "target_name": model.class_names[int(target[row])],
                                 "p_clean": float(probs[row, target[row]]),
                                 "deletion_auc": float(aucs["deletion"][row]),
                                 "insertion_auc": float(aucs["insertion"][row]),
                                 "success": success[row], "substrate": substrate, "seconds": seconds})
            advance()
    frame = pd.DataFrame(rows)
    frame.attrs["curves"] = _curve_table(metrics)
    if record is not None:
        atomic_write_csv(record.path / "deletion.csv", frame)
        atomic_write_csv(record.path / "curves.csv", frame.attrs["curves"])
        plot_curves(frame.attrs["curves"], record.path / "deletion_curves.png",
                    title=f"{model.name} ({substrate} substrate)")
        record.write_info(config)
    return frame


def summarize_deletion(frame: pd.DataFrame) -> pd.DataFrame:
    """Per method: number of images, how many explanations met their stop rule (FGVis; empty for the
    others) and mean ± std of the deletion and insertion AUCs."""
    grouped = frame.groupby("method", sort=False)
    table = grouped[["deletion_auc", "insertion_auc"]].agg(["mean", "std"])
    table.columns = [f"{metric}_{stat}" for metric, stat in table.columns]
    table.insert(0, "n_images", grouped.size())
    judged = frame.dropna(subset=["success"]).groupby("method", sort=False)["success"]
    table.insert(1, "n_success", judged.sum().astype("Int64").reindex(table.index))
    return table.reset_index()


def plot_curves(curves: pd.DataFrame, path: str | os.PathLike, title: str = "") -> Path:
    """Plot the mean deletion and insertion curves of each method (table as in ``curves.csv``) to a PNG."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4))
    axes = figure.subplots(1, 2, sharey=True)
    for axis, mode in zip(axes, ("deletion", "insertion")):
        for method, part in curves[curves["mode"] == mode].groupby("method", sort=False):
            auc = np.trapezoid(part["mean"], part["fraction"])
            axis.plot(part["fraction"], part["mean"], label=f"{method} (AUC {auc:.3f})")
        axis.set(xlabel=f"fraction of pixels {'removed' if mode == 'deletion' else 'inserted'}",
                 title=f"{mode} curve", xlim=(0, 1), ylim=(0, 1.02))
        axis.legend()
    axes[0].set_ylabel("probability of the clean image's top class")
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return atomic_save_figure(figure, path, dpi=120)


def _curve_table(metrics: dict[tuple[str, str], PerturbationCurve]) -> pd.DataFrame:
    parts = []
    for (method, mode), metric in metrics.items():
        curves = metric.curves
        parts.append(pd.DataFrame({"method": method, "mode": mode, "point": np.arange(curves.shape[1]),
                                   "fraction": metric.removed_fraction.numpy(), "mean": curves.mean(0).numpy(),
                                   "std": curves.std(0).numpy() if len(curves) > 1 else 0.0}))
    return pd.concat(parts, ignore_index=True)


def _load_images(images: Sequence, model) -> tuple[list[str], torch.Tensor]:
    """Names (file stems or ``image<i>``) and the N×3×S×S inputs of ``images``."""
    if isinstance(images, (str, os.PathLike)) or not len(images):
        raise ValueError("images: expected a non-empty sequence of image paths or arrays")
    return image_names(images), model.preprocess_batch(images)
