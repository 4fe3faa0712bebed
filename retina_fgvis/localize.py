"""Localize lesions on a DiaretDB1-style dataset with FGVis or a baseline, one folder per image.

:func:`localize` runs one method over one split and writes a *run folder*::

    OUT/run.json                   config (method, checkpoint + its SHA-256, dataset, data_dir, split,
                                   threshold, method settings, image_ids) and library versions
    OUT/images/<id>/maps.npz       importance  H×W float32 in [0, 1], high = important
                                   binary      H×W bool, importance ≥ threshold · max
                                   mask        3×H×W float16    (fgvis only: the optimised mask m)
                                   mean_mask   H×W float32      (fgvis only: channel mean of m)
    OUT/images/<id>/overlay.png    the experts' markings and the detection (binary ∩ FOV), full size
    OUT/images/<id>/overlay_thumb.png
    OUT/images/<id>/overlay_full.png  the same on the original photograph at its own size (the detection
                                   mapped back through the FOV crop, pad and resize; nearest neighbour)
    OUT/images/<id>/record.json    image_id, method, prob_before, prob_after, iterations, lam, success,
                                   stop_score, threshold, seconds

H×W is the classifier's input resolution. Every file is written atomically and ``record.json`` last,
so an image is finished exactly when its ``record.json`` exists; a rerun skips finished images and a
killed run loses nothing. The sorted split is cut into batches of ``batch_size`` images; sharding
(``shard="i/n"`` or torchrun's ``RANK``/``WORLD_SIZE``) gives process i the batches ``i, i+n, i+2n, …``.
Shards write into the same folder, each holding the lock of its shard (a second process for the same
shard is refused; :meth:`retina_fgvis.runs.RunFolder.writing`), and the scoring, run once every image is
finished (:func:`run_complete`), merges them. As an image is always computed in the same batch, its result
does not depend on how the work was sharded or resumed.

FGVis (default) uses the paper's medical settings (supplementary A4.2): deletion game on the RDR class,
fixed λ = 1e-10, SGD lr 0.25, stop as soon as the RDR softmax falls below 0.10, at most 500 steps,
reference zero in the normalised input space; importance = 1 − mean mask (how much of each pixel was
deleted), all zero for an image the model already scores below the stop value (nothing was deleted).
``success`` says whether the explanation met that stop rule: a deletion that did not drop the RDR
probability below the stop value has not explained the score, and its mask is only where the search
ended. :func:`localize` warns (:class:`StopNotReachedWarning`, once per run) when most images fail.
The baselines (:mod:`retina_fgvis.attribution`) explain the same class on the same inputs: ``gradcam`` and
``gradcampp`` (Grad-CAM / Grad-CAM++ at the deepest layer whose map side is ≥ 1/16 of the input side,
``gradcam_layer="last"`` for the last stage), ``gradient`` (vanilla input gradient), ``smoothgrad``,
``occlusion`` and ``random`` (a seeded random map, the control); for them ``prob_after``, ``iterations``,
``lam``, ``success`` and ``stop_score`` are ``null``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from retina_fgvis._io import atomic_write_png
from retina_fgvis.binarize import PAPER_THRESHOLD, binarize_relative, check_threshold
from retina_fgvis.checks import check_int, check_number
from retina_fgvis.runs import RunFolder, RunKind
from retina_fgvis.runtime import progress_bar, resolve_device, torchrun_place

__all__ = ["LocalizeConfig", "localize", "StopNotReachedWarning", "run_complete", "run_folder", "shard_batches", "parse_shard", "open_dataset",
           "full_resolution_overlay", "FULL_RESOLUTION_OVERLAY", "METHODS", "DATASETS", "SPLITS"]

METHODS = ("fgvis", "gradcam", "gradcampp", "gradient", "smoothgrad", "occlusion", "random")
#: File name of an image's overlay on its original photograph, beside overlay.png.
FULL_RESOLUTION_OVERLAY = "overlay_full.png"
#: Baselines reading a Grad-CAM layer.
_CAM_METHODS = ("gradcam", "gradcampp")
DATASETS = ("diaretdb1", "synthetic")
SPLITS = ("test", "train", "all")
# Settings that do not change the results: a run may be resumed or sharded with other values.
_RUNTIME_KEYS = ("out", "device", "shard", "progress")
# Recorded in run.json but not compared: the checkpoint is identified by its SHA-256. The data folder is
# compared (the ground truth the run is scored against), so shards must see it under the same path.
_PATH_KEYS = ("checkpoint",)


class StopNotReachedWarning(UserWarning):
    """Most FGVis explanations of a localize run did not reach the stop value (see ``retina-fgvis diagnose``)."""


@dataclass
class LocalizeConfig:
    """Everything :func:`localize` needs; the defaults are the paper's medical settings.

    Attributes:
        data_dir: DiaretDB1 folder (v1.1 or v2.1 layout, or its parent); for ``dataset="synthetic"``
            the folder holding the built-in semi-synthetic set (written by ``retina-fgvis synth``).
        checkpoint: classifier checkpoint (``retina-fgvis train``).
        out: run folder.
        dataset: ``"diaretdb1"`` or ``"synthetic"``.
        split: ``"test"``, ``"train"`` or ``"all"``.
        method: one of :data:`METHODS`.
        device: torch device, ``None``/``"auto"`` = CUDA if present (under torchrun: ``cuda:LOCAL_RANK``).
        batch_size: images per engine call; also the unit of sharding and resuming, so it is part of the run.
        lam, lr, max_iter, stop_score: FGVis λ, learning rate, step limit and RDR-softmax stop value.
        threshold: binarization threshold as a fraction of each map's maximum, in (0, 1].
        shard: ``"i/n"`` (or ``(i, n)``): process only every n-th batch starting at i; ``None`` = torchrun's
            rank/world size when set, else everything.
        gradcam_layer: Grad-CAM / Grad-CAM++ target layer (module name; ``None`` = the deepest conv block whose
            map side is ≥ 1/16 of the input side, 16×16 at 256 px on FundusCNN; ``"last"`` = the last conv block).
        smoothgrad_samples: SmoothGrad's noisy copies per image (noise 15 % of the image's value range).
        occlusion_window, occlusion_stride: occlusion patch and step in px (``None`` = image size/16, half of it).
        random_cell: blob size in px of the random map (``None`` = image size/32).
        seed: FGVis seed (mask initialisation); also SmoothGrad's noise and the random map's seed.
        compile: FGVis only: ``torch.compile`` the optimisation step (CUDA graphs on a GPU; docs/engine.md).
            Masks differ from eager by round-off, so it is part of the run's identity.
        progress: show a progress bar with images/s.
    """

    data_dir: str | os.PathLike
    checkpoint: str | os.PathLike
    out: str | os.PathLike
    dataset: str = "diaretdb1"
    split: str = "test"
    method: str = "fgvis"
    device: str | None = None
    batch_size: int = 8
    lam: float = 1e-10
    lr: float = 0.25
    max_iter: int = 500
    stop_score: float = 0.10
    threshold: float = PAPER_THRESHOLD
    shard: str | tuple[int, int] | None = None
    gradcam_layer: str | None = None
    occlusion_window: int | None = None
    occlusion_stride: int | None = None
    smoothgrad_samples: int = 25
    random_cell: int | None = None
    seed: int = 0
    compile: bool = False
    progress: bool = True

    def validate(self) -> None:
        """One ``ValueError`` naming the first bad field."""
        check_threshold(self.threshold)
        for name, allowed in (("dataset", DATASETS), ("split", SPLITS), ("method", METHODS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}: expected one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        for name in ("batch_size", "max_iter", "smoothgrad_samples"):
            check_int(name, getattr(self, name), minimum=1)
        if self.random_cell is not None:
            check_int("random_cell", self.random_cell, minimum=1)
        if not isinstance(self.compile, bool):
            raise TypeError(f"compile: expected a bool, got {self.compile!r}")
        check_number("lam", self.lam, minimum=0)
        check_number("lr", self.lr, minimum=0, exclusive_minimum=True)
        check_number("stop_score", self.stop_score, minimum=0, maximum=1, exclusive_minimum=True)
        if self.shard is not None:
            parse_shard(self.shard)


@dataclass
class _Explanation:
    """One batch's outputs, tensors on the CPU; absent fields are ``None``."""

    importance: torch.Tensor                      # N×1×H×W, [0, 1], high = important
    prob_before: torch.Tensor                     # N
    prob_after: torch.Tensor | None = None        # N
    iterations: torch.Tensor | None = None        # N
    lam: torch.Tensor | None = None               # N
    success: torch.Tensor | None = None           # N bool, the stop rule holds on the explanation
    mask: torch.Tensor | None = None              # N×3×H×W
    mean_mask: torch.Tensor | None = None         # N×1×H×W


def parse_shard(shard: str | tuple[int, int]) -> tuple[int, int]:
    """``"i/n"`` or ``(i, n)`` with ``0 ≤ i < n`` -> ``(i, n)``; ``ValueError`` naming ``shard`` otherwise."""
    try:
        index, count = (int(part) for part in (shard.split("/") if isinstance(shard, str) else shard))
    except (TypeError, ValueError):
        raise ValueError(f"shard: expected 'i/n' (e.g. 0/4), got {shard!r}") from None
    if not 0 <= index < count:
        raise ValueError(f"shard: need 0 ≤ i < n, got {shard!r}")
    return index, count


def shard_batches(image_ids: list[str], batch_size: int, shard: str | tuple[int, int] | None = None) -> list[list[str]]:
    """The batches one process handles.

    The sorted ids are cut into consecutive batches of ``batch_size``; shard ``i/n`` takes batches
    ``i, i+n, i+2n, …`` (``shard=None``: torchrun's ``RANK``/``WORLD_SIZE`` when set, else all). Every image
    is computed in the same batch however the work is split or resumed, so results are identical.
    """
    ordered = sorted(image_ids)
    batches = [ordered[start:start + batch_size] for start in range(0, len(ordered), batch_size)]
    resolved = _resolve_shard(shard)
    return batches if resolved is None else batches[resolved[0]::resolved[1]]


def _resolve_shard(shard: str | tuple[int, int] | None) -> tuple[int, int] | None:
    """``(i, n)`` of this process (``shard``, else torchrun's rank/world size); ``None`` = everything."""
    if shard is None:
        place = torchrun_place()
        if place.world_size <= 1:
            return None
        shard = (place.rank, place.world_size)
    return parse_shard(shard)


def open_dataset(dataset: str, data_dir: str | os.PathLike):
    """Open the ground truth (read only): DiaretDB1 in ``data_dir``, or the semi-synthetic set there.

    For ``"synthetic"``, ``data_dir`` must hold a set written by ``retina-fgvis synth`` (its ``synthetic.json``).

    Returns the opened dataset; a folder without DiaretDB1 (or without a synthetic set) raises
    ``DatasetError`` (a ``ValueError``) naming it.
    """
    from retina_fgvis.datasets.diaretdb1 import open_diaretdb1
    from retina_fgvis.datasets.synthetic import require_synthetic_set

    return open_diaretdb1(require_synthetic_set(data_dir).diaretdb1 if dataset == "synthetic" else Path(data_dir))


def checkpoint_sha256(path: Path) -> str:
    """The SHA-256 of a checkpoint file: what identifies it in a run record (its path may change)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _device(config: LocalizeConfig) -> torch.device:
    place = torchrun_place()
    if config.device in (None, "auto") and torch.cuda.is_available() and place.world_size > 1:
        return torch.device("cuda", place.local_rank)
    return resolve_device(config.device)


def _run_config(config: LocalizeConfig, checkpoint: Path, image_ids: list[str], classifier) -> dict[str, Any]:
    """What run.json records; every key but the paths must match for a resume or a shard."""
    record = {key: value for key, value in dataclasses.asdict(config).items() if key not in _RUNTIME_KEYS}
    record.update({
        "checkpoint": str(checkpoint.resolve()),
        "checkpoint_sha256": checkpoint_sha256(checkpoint),
        "data_dir": str(Path(config.data_dir).resolve()),
        "image_size": classifier.image_size,
        "target_class": int(classifier.meta["positive_class"]),
        "image_ids": sorted(image_ids),
    })
    if config.method != "fgvis":
        for key in ("lam", "lr", "max_iter", "stop_score"):
            record.pop(key)
    if config.method not in ("fgvis", "smoothgrad", "random"):
        record.pop("seed")
    if config.method in _CAM_METHODS:
        # The layer actually read, so a run records its map resolution.
        record["gradcam_layer"] = _cam(config, classifier).layer_for(
            (1, 3, classifier.image_size, classifier.image_size))
    else:
        record.pop("gradcam_layer")
    for method, keys in (("occlusion", ("occlusion_window", "occlusion_stride")),
                         ("smoothgrad", ("smoothgrad_samples",)), ("random", ("random_cell",))):
        if config.method != method:
            for key in keys:
                record.pop(key)
    record["threshold"] = float(config.threshold)
    return record


def run_folder(out: str | os.PathLike) -> RunFolder:
    """The run folder a localize run writes (:class:`~retina_fgvis.runs.RunFolder` of kind ``localize``)."""
    return RunFolder(out, RunKind.LOCALIZE)


def run_complete(out: str | os.PathLike) -> bool:
    """Whether every image listed in ``out/run.json`` has its ``record.json`` (all shards done)."""
    return run_folder(out).is_complete()


def _explainer(config: LocalizeConfig, classifier) -> Callable[[torch.Tensor, int], _Explanation]:
    model = classifier.model
    if config.method == "fgvis":
        from retina_fgvis import FGVis
        from retina_fgvis.fgvis import ScoreBelow

        engine = FGVis(model, game="deletion", reference="zero", lr=float(config.lr), max_iter=config.max_iter,
                       normalization=classifier.normalization, seed=config.seed, compile=config.compile, progress=False)

        def explain(x: torch.Tensor, target: int) -> _Explanation:
            result = engine.attribute(x, target=target, lam=float(config.lam), stop=ScoreBelow(float(config.stop_score)))
            # An image already below the stop score is left as it was (0 iterations): its 1 − m̄ is only
            # the jitter of the start m ~ U(0.99, 1), not a deletion, so its importance is zero.
            untouched = (result.iterations == 0)[:, None, None, None]
            importance = torch.where(untouched, torch.zeros_like(result.importance), result.importance)
            return _Explanation(
                importance=importance.detach().cpu(), prob_before=result.initial_score.detach().cpu(),
                prob_after=result.score.detach().cpu(), iterations=result.iterations.detach().cpu(),
                lam=result.lam.detach().cpu(), success=result.success.detach().cpu(), mask=result.mask.detach().cpu(),
                mean_mask=result.mean_mask.detach().cpu())
        return explain

    from retina_fgvis.attribution import Occlusion, RandomMap, SmoothGradient, VanillaGradient

    if config.method in _CAM_METHODS:
        method = _cam(config, classifier)
    elif config.method == "gradient":
        method = VanillaGradient(model)
    elif config.method == "smoothgrad":
        method = SmoothGradient(model, n_samples=config.smoothgrad_samples, seed=config.seed)
    elif config.method == "random":
        method = RandomMap(cell=config.random_cell or max(1, classifier.image_size // 32), seed=config.seed)
    else:
        window = config.occlusion_window or max(4, classifier.image_size // 16)
        method = Occlusion(model, window=window, stride=config.occlusion_stride or max(1, window // 2),
                           batch_size=max(config.batch_size, 16))

    def explain(x: torch.Tensor, target: int) -> _Explanation:
        with torch.no_grad():
            prob = model(x).softmax(dim=1)[:, target]
        return _Explanation(importance=method.attribute(x, target=target).cpu(), prob_before=prob.cpu())
    return explain


def _cam(config: LocalizeConfig, classifier):
    """The Grad-CAM / Grad-CAM++ explainer of a run."""
    from retina_fgvis.attribution import GradCAM, GradCAMpp
    from retina_fgvis.attribution.gradcam import LAST_LAYER

    layer = config.gradcam_layer
    if layer not in (None, LAST_LAYER) and layer not in dict(classifier.model.named_modules()):
        raise ValueError(f"gradcam_layer: {layer!r} is not a module of the classifier (or use {LAST_LAYER!r})")
    return (GradCAM if config.method == "gradcam" else GradCAMpp)(classifier.model, target_layer=layer)


def _value(tensor: torch.Tensor | None, row: int, kind: type) -> Any:
    return None if tensor is None else kind(tensor[row].item())


def full_resolution_overlay(dataset, sample, detection: np.ndarray) -> np.ndarray:
    """The experts' markings and ``detection`` drawn on the photograph ``sample`` was cropped from, at its own size.

    Args:
        dataset: the DiaretDB1 release ``sample`` was loaded from (``dataset.load(sample.image_id, size=S)``).
        sample: the S×S sample, with the crop geometry the loader recorded.
        detection: bool S×S binarized explanation on ``sample``.

    Returns:
        uint8 H×W×3 overlay (:func:`retina_fgvis.viz.overlay_lesions`) of the H×W photograph, its lesion
        masks at native resolution and the detection mapped back by ``sample.geometry.to_photograph``,
        restricted to the photograph's field of view.
    """
    from retina_fgvis.viz import overlay_lesions

    native = dataset.load(sample.image_id)
    return overlay_lesions(native.image, native.lesions, sample.geometry.to_photograph(detection) & native.fov)


def _write_image(run: RunFolder, folder: Path, image_id: str, sample, explanation: _Explanation, row: int,
                 config: LocalizeConfig, seconds: float, dataset) -> None:
    from retina_fgvis.viz import overlay_lesions, thumbnail

    importance = explanation.importance[row, 0].numpy().astype(np.float32)
    binary = binarize_relative(importance, config.threshold)
    arrays = {"importance": importance, "binary": binary}
    if explanation.mask is not None:
        arrays["mask"] = explanation.mask[row].numpy().astype(np.float16)
        arrays["mean_mask"] = explanation.mean_mask[row, 0].numpy().astype(np.float32)
    run.save_maps(image_id, **arrays)
    detection = binary & np.asarray(sample.fov, bool)
    overlay = overlay_lesions(sample.image, sample.lesions, detection)
    atomic_write_png(folder / "overlay.png", overlay)
    atomic_write_png(folder / "overlay_thumb.png", thumbnail(overlay))
    atomic_write_png(folder / FULL_RESOLUTION_OVERLAY, full_resolution_overlay(dataset, sample, detection))
    run.write_item_record(image_id, {
        "image_id": image_id,
        "method": config.method,
        "prob_before": _value(explanation.prob_before, row, float),
        "prob_after": _value(explanation.prob_after, row, float),
        "iterations": _value(explanation.iterations, row, int),
        "lam": _value(explanation.lam, row, float),
        "success": _value(explanation.success, row, bool),
        "stop_score": float(config.stop_score) if explanation.success is not None else None,
        "threshold": float(config.threshold),
        "seconds": round(seconds, 4),
    })


def localize(config: LocalizeConfig) -> Path:
    """Run ``config.method`` over the images of ``config.split`` (this process's shard) into ``config.out``.

    Checks everything before writing: a bad setting, a checkpoint that is not a fundus classifier
    (``CheckpointError``), a folder without DiaretDB1 (``DatasetError``), or an output folder holding
    another run (``ValueError``) stops with one error and leaves the folder as it was; so does an output
    folder (or shard of it) another process holds (``FolderBusyError``, naming the holder).

    Returns:
        The run folder. Finished images are skipped; see :func:`run_complete` for whether all shards are done.
    """
    from retina_fgvis.models.checkpoint import load_classifier

    config.validate()
    device = _device(config)
    checkpoint = Path(config.checkpoint)
    classifier = load_classifier(checkpoint, map_location=device)
    dataset = open_dataset(config.dataset, config.data_dir)
    all_ids = list(dataset.image_ids(config.split))
    if not all_ids:
        raise ValueError(f"split: no {config.split!r} images in {config.data_dir}")
    run = run_folder(config.out)
    run_config = _run_config(config, checkpoint, all_ids, classifier)
    shard = _resolve_shard(config.shard)
    # A process holds its part of the folder (the whole run, or its shard) until it returns.
    # Runs recorded before `compile` existed ran eagerly.
    with run.writing(run_config, ignore=_PATH_KEYS, shard=shard, upgrade=lambda stored: {"compile": False, **stored}
                     ) as lock:
        _explain_batches(config, classifier, dataset, shard_batches(all_ids, config.batch_size, shard), run, lock)
    return run.path


def _explain_batches(config: LocalizeConfig, classifier, dataset, batches: list[list[str]], run: RunFolder,
                     lock) -> None:
    """Explain and write the unfinished images of ``batches`` into ``run`` (held by ``lock``)."""
    explain = _explainer(config, classifier)
    target = int(classifier.meta["positive_class"])
    graham = bool(classifier.meta.get("graham", False))
    finished = run.is_finished

    total = sum(len(batch) for batch in batches)
    bar = progress_bar()
    done, started = 0, time.perf_counter()
    with bar if config.progress else contextlib.nullcontext():
        task = bar.add_task(f"{config.method} {config.split}", total=total,
                            completed=sum(finished(i) for batch in batches for i in batch), status="")
        for batch in batches:
            pending = [image_id for image_id in batch if not finished(image_id)]
            if not pending:
                continue
            # The whole batch is recomputed (finished images are not rewritten) so that every image's
            # result is the one of its batch, bit for bit.
            tick = time.perf_counter()
            samples = [dataset.load(image_id, size=classifier.image_size, graham=graham) for image_id in batch]
            explanation = explain(classifier.prepare(np.stack([s.image for s in samples])), target)
            seconds = (time.perf_counter() - tick) / len(batch)
            for row, (image_id, sample) in enumerate(zip(batch, samples)):
                if image_id in pending:
                    folder = run.start_item(image_id, lock)
                    _write_image(run, folder, image_id, sample, explanation, row, config, seconds, dataset)
            done += len(pending)
            rate = done / (time.perf_counter() - started)
            bar.update(task, advance=len(pending), status=f"{rate:.2f} img/s")
    if config.method == "fgvis":
        _warn_if_most_failed(run, [image_id for batch in batches for image_id in batch], config.stop_score)


def _warn_if_most_failed(run: RunFolder, image_ids: list[str], stop_score: float) -> None:
    """One :class:`StopNotReachedWarning` when more than half of this process's images missed the stop."""
    outcomes = [run.item_record(image_id).get("success") for image_id in image_ids]
    failed = sum(outcome is False for outcome in outcomes)
    if failed * 2 > len(outcomes):
        warnings.warn(StopNotReachedWarning(
            f"{failed} of {len(outcomes)} FGVis explanations did not bring P(RDR) below {stop_score:g}: their masks "
            "explain nothing; run `retina-fgvis diagnose` on this checkpoint to see whether the defense starves "
            "the gradient or the reference already scores above the stop value"), stacklevel=4)
