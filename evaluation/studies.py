"""The paper's ImageNet studies (FGVis supplementary §A1, §A3.1, §A3.3) on any ImageNet model.

- :func:`adversarial_evidence` (Table A1): from a black image, the generation game with λ = 0 for
  every class except the black image's predicted class and the class of the starting condition
  (image · zero mask = the reference); the share of classes made top-1, with and without the defense.
- :func:`reference_entropy` (Table A2): entropy (nats) of the softmax for the zero reference,
  Gaussian noise references, blurred images and plain images, mean ± std over random instances.
- :func:`colour_swap` (Table A3): per class, the images classified correctly before and the share
  still correct after the cyclic channel swaps BGR→RBG and BGR→GRB.

Each function takes a model name (or a loaded :class:`~retina_fgvis.models.imagenet.ImageNetModel`),
returns a DataFrame and, given ``out_dir``, writes it as CSV with a ``run.json``.
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from retina_fgvis._io import atomic_write_csv
from retina_fgvis.checks import check_int
from retina_fgvis.fgvis import ClassShift, FGVis, make_reference
from retina_fgvis.models.imagenet import as_imagenet_model
from retina_fgvis.runs import RunFolder, claim_study
from retina_fgvis.runtime import progress_bar

__all__ = ["COLOUR_SWAPS", "IMAGE_EXTENSIONS", "adversarial_evidence", "adversarial_table", "colour_swap",
           "colour_swap_table", "entropy_table", "read_labelled_images", "reference_entropy"]

#: Channel order of each swap as an index into RGB pixels. The paper swaps the BGR channels (Caffe order)
#: to RBG or GRB: the slot that held B now holds R, G holds B, R holds G (RBG), and analogously for GRB.
COLOUR_SWAPS = {"RBG": (1, 2, 0), "GRB": (2, 0, 1)}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def _write(frame: pd.DataFrame, record: RunFolder | None, name: str, config: dict) -> None:
    if record is not None:
        atomic_write_csv(record.path / f"{name}.csv", frame)
        record.write_info(config)


# ---------------------------------------------------------------------------------------------- A1
def adversarial_evidence(model="efficientnet_lite0", *, classes: int | Sequence[int] | None = None,
                         max_iter: int = 500, lr: float = 0.1, reference: str = "zero",
                         batch_size: int | None = 64, weights="default", image_size: int | None = None,
                         device=None, seed: int = 0, out_dir: str | os.PathLike | None = None,
                         progress: bool = True) -> pd.DataFrame:
    """Table A1: can the generation game create evidence for a class on a black image?

    The input is the black image (pixel 0, normalised). For each candidate class ``c`` FGVis runs the
    generation game (mask start U(0, 0.01), loss ``−log y_e[c]``, λ = 0, SGD lr ``lr``) for at most
    ``max_iter`` steps, stopping once ``c`` is the top-1 class of ``e = x·m + (1−m)·r``; the class is
    *reached* when it is top-1 at the end. Every class runs once without and once with the defense,
    ``batch_size`` classes at a time.

    Args:
        classes: ``None`` = all classes except the two omitted ones (the black image's predicted class
            and the predicted class of the reference, ``image · zero mask``); an int N = a seeded random
            sample of N of those; or explicit class ids (the omitted two are dropped).

    Returns:
        One row per class and defense setting: model, class_id, class_name, defense, reached, score
        (final softmax of the class), iterations. Written to ``adversarial_evidence.csv``.
    """
    net = as_imagenet_model(model, weights=weights, image_size=image_size, device=device)
    size, device = net.image_size, net.device
    black = net.from_pixels(torch.zeros(1, 3, size, size, device=device))
    start = make_reference(reference, black, normalization=net.normalization)
    with torch.no_grad():
        omitted = {int(net.model(black).argmax()), int(net.model(start[:1]).argmax())}
    num_classes = len(net.class_names)
    candidates = [c for c in range(num_classes) if c not in omitted]
    if classes is None:
        chosen = candidates
    elif isinstance(classes, int) and not isinstance(classes, bool):
        if not 1 <= classes <= len(candidates):
            raise ValueError(f"classes: expected 1..{len(candidates)} classes, got {classes}")
        generator = torch.Generator().manual_seed(seed)
        chosen = sorted(candidates[i] for i in torch.randperm(len(candidates), generator=generator)[:classes].tolist())
    else:
        chosen = [int(c) for c in classes if int(c) not in omitted]
        if not chosen or any(not 0 <= c < num_classes for c in chosen):
            raise ValueError(f"classes: expected class ids in [0, {num_classes}) other than {sorted(omitted)}")
    config = {"study": "adversarial_evidence", "model": net.name, "weights": net.weights, "image_size": size,
              "omitted_classes": sorted(omitted), "classes": len(chosen), "max_iter": max_iter, "lr": lr,
              "reference": reference, "seed": seed}
    record = claim_study(out_dir, "adversarial_evidence", config)
    target = torch.tensor(chosen, device=device)
    rows = []
    for defense in (False, True):
        explainer = FGVis(net.model, game="generation", defense=defense, reference=reference, lr=lr,
                          max_iter=max_iter, normalization=net.normalization, batch_size=batch_size, seed=seed,
                          progress=progress)
        res = explainer.attribute(black.expand(len(chosen), -1, -1, -1), target=target, lam=0.0, stop=ClassShift())
        rows += [{"model": net.name, "class_id": c, "class_name": net.class_names[c], "defense": defense,
                  "reached": bool(res.success[k]), "score": float(res.score[k]),
                  "iterations": int(res.iterations[k])} for k, c in enumerate(chosen)]
    frame = pd.DataFrame(rows)
    _write(frame, record, "adversarial_evidence", config)
    return frame


def adversarial_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Table A1's shape: rows "No defense" / "Defended", one column per model, share of classes reached (%)."""
    table = frame.assign(setting=frame["defense"].map({False: "No defense", True: "Defended"}))
    table = table.pivot_table(index="setting", columns="model", values="reached", aggfunc="mean", sort=False) * 100
    return table.reindex(["No defense", "Defended"]).rename_axis(columns=None)


# ---------------------------------------------------------------------------------------------- A2
def reference_entropy(images: Sequence, model="efficientnet_lite0", *, n_instances: int = 1000,
                      noise_sigmas: Sequence[float] = (8, 32), blur_sigmas: Sequence[float] = (5, 10),
                      batch_size: int = 64, weights="default", image_size: int | None = None, device=None,
                      seed: int = 0, out_dir: str | os.PathLike | None = None, progress: bool = True) -> pd.DataFrame:
    """Table A2: entropy ``H = −Σ_c y_c ln y_c`` (nats) of the model's softmax for candidate references.

    - zero image: ``r = 0`` in the model's normalised input space (one instance);
    - Gaussian noise: i.i.d. zero-mean noise of std ``σ_n/255`` in [0, 1] pixel units, divided by the
      per-channel std (so zero-mean in normalised space), ``n_instances`` seeds;
    - blurred image: each image blurred with a Gaussian of ``σ_b`` pixels at the model's input resolution;
    - plain image: the images themselves.

    ``images`` (paths or arrays) are sampled without replacement down to ``n_instances`` (seeded).

    Returns:
        Rows reference, sigma, n, mean, std, and a last row "maximum" with ``ln C``. Written to
        ``reference_entropy.csv``.
    """
    net = as_imagenet_model(model, weights=weights, image_size=image_size, device=device)
    if isinstance(images, (str, os.PathLike)) or not len(images):
        raise ValueError("images: expected a non-empty sequence of image paths or arrays")
    check_int("n_instances", n_instances, minimum=1)
    generator = torch.Generator().manual_seed(seed)
    picked = torch.randperm(len(images), generator=generator)[:n_instances].sort().values.tolist()
    config = {"study": "reference_entropy", "model": net.name, "weights": net.weights, "image_size": net.image_size,
              "n_instances": n_instances, "noise_sigmas": list(noise_sigmas), "blur_sigmas": list(blur_sigmas),
              "seed": seed,
              "images": [str(images[i]) if isinstance(images[i], (str, os.PathLike)) else i for i in picked]}
    record = claim_study(out_dir, "reference_entropy", config)
    x = net.preprocess_batch([images[i] for i in picked])
    empty = torch.zeros(1, 3, net.image_size, net.image_size, device=net.device)

    def entropy(batch: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            values = [(-(log_p.exp() * log_p).sum(dim=1)) for log_p in
                      (net.model(chunk).float().log_softmax(dim=1) for chunk in batch.split(batch_size))]
        return torch.cat(values).cpu()

    references: list[tuple[str, float | None, torch.Tensor]] = [("zero image", None, entropy(empty))]
    for sigma in noise_sigmas:
        noise = torch.cat([make_reference("noise", empty, normalization=net.normalization, noise_std=sigma / 255,
                                          seed=seed + i) for i in range(n_instances)])
        references.append(("Gaussian noise image", float(sigma), entropy(noise)))
    for sigma in blur_sigmas:
        references.append(("blurred image", float(sigma), entropy(make_reference("blur", x, blur_sigma=sigma))))
    references.append(("image", None, entropy(x)))
    rows = [{"reference": name, "sigma": sigma, "n": len(values), "mean": float(values.mean()),
             "std": float(values.std()) if len(values) > 1 else 0.0} for name, sigma, values in references]
    rows.append({"reference": "maximum", "sigma": None, "n": 0, "mean": math.log(len(net.class_names)), "std": 0.0})
    frame = pd.DataFrame(rows).assign(model=net.name)
    _write(frame, record, "reference_entropy", config)
    return frame


def entropy_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Table A2's shape: one row per reference ("Gaussian noise image (σn = 8)" …), "mean ± std" per model."""
    def label(row) -> str:
        if row["reference"] == "maximum":
            return f"Maximum ({int(round(math.exp(row['mean'])))} classes)"
        symbol = {"Gaussian noise image": "σn", "blurred image": "σb"}.get(row["reference"])
        name = row["reference"].capitalize()
        return f"{name} ({symbol} = {row['sigma']:g})" if symbol else name

    def value(row) -> str:
        return f"{row['mean']:.2f}" if row["n"] <= 1 else f"{row['mean']:.2f} ± {row['std']:.2f}"

    table = frame.assign(label=frame.apply(label, axis=1), value=frame.apply(value, axis=1))
    return table.pivot_table(index="label", columns="model", values="value", aggfunc="first", sort=False
                             ).rename_axis(index="Reference image r", columns=None)


# ---------------------------------------------------------------------------------------------- A3
def read_labelled_images(source: str | os.PathLike, class_names: Sequence[str],
                         synsets: str | os.PathLike | None = None) -> pd.DataFrame:
    """List a labelled image set as a DataFrame ``path, label`` (label = class index).

    ``source`` is either
    - a folder with one sub-folder per class (the ImageNet validation layout), each named by the class
      index (``281``), its WordNet id (``n02123045``, needs ``synsets``) or its class name; or
    - a CSV file with columns ``file`` (relative to the CSV's folder, or absolute) and ``label``
      (index, wnid or class name).

    ``synsets``: a text file with one WordNet id per line in class-index order, optionally followed by
    the names (ImageNet's ``LOC_synset_mapping.txt``).
    """
    source = Path(source)
    wnids = _read_synsets(synsets) if synsets is not None else None
    lowered = {name.lower(): index for index, name in enumerate(class_names)}

    def to_index(label, where: str) -> int:
        text = str(label).strip()
        if text.isdigit() and int(text) < len(class_names):
            return int(text)
        if re.fullmatch(r"n\d{8}", text):
            if wnids is None:
                raise ValueError(f"synsets: {where} is labelled by the WordNet id {text}; pass the synset list "
                                 "(one wnid per line in class-index order, e.g. LOC_synset_mapping.txt)")
            if text in wnids:
                return wnids[text]
        key = text.replace("_", " ").lower()
        if key in lowered:
            return lowered[key]
        raise ValueError(f"labels: {where}: {text!r} is not a class index, wnid or class name of this model")

    if source.is_file():
        try:
            table = pd.read_csv(source)
        except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as error:
            raise ValueError(f"labels: {source} is not a readable CSV ({error})") from None
        if not {"file", "label"} <= set(table.columns):
            raise ValueError(f"labels: {source} needs the columns 'file' and 'label', has {list(table.columns)}")
        paths = [Path(f) if Path(f).is_absolute() else source.parent / f for f in table["file"].astype(str)]
        labels = [to_index(label, f"{source} row {row + 2}") for row, label in enumerate(table["label"])]
    elif source.is_dir():
        paths, labels = [], []
        for folder in sorted(p for p in source.iterdir() if p.is_dir()):
            files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
            paths += files
            labels += [to_index(folder.name, str(folder))] * len(files)
    else:
        raise ValueError(f"data: {source} is neither a folder of class sub-folders nor a CSV file")
    if not paths:
        raise ValueError(f"data: {source} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise ValueError(f"data: image file {missing[0]} listed in {source} does not exist")
    return pd.DataFrame({"path": [str(p) for p in paths], "label": labels})


def colour_swap(data: str | os.PathLike, model="efficientnet_lite0", *, synsets: str | os.PathLike | None = None,
                batch_size: int = 64, weights="default", image_size: int | None = None, device=None,
                out_dir: str | os.PathLike | None = None, progress: bool = True) -> pd.DataFrame:
    """Table A3: how often does a correct classification survive a cyclic colour-channel swap?

    Every image is preprocessed once; the swaps permute the RGB channels of the preprocessed pixels
    (:data:`COLOUR_SWAPS`) before normalisation. Per class: ``n_images`` = images correct before the
    swap; ``RBG``/``GRB`` = the share of those still correct after each swap; ``mean`` = their mean
    (NaN when no image of the class was correct).

    Returns:
        One row per class present in ``data``: class_id, class_name, n_total, n_images, mean, RBG, GRB,
        sorted by ``mean`` (most affected first, ties by class id). Written to ``colour_swap.csv``.
    """
    net = as_imagenet_model(model, weights=weights, image_size=image_size, device=device)
    table = read_labelled_images(data, net.class_names, synsets)
    config = {"study": "colour_swap", "model": net.name, "weights": net.weights, "image_size": net.image_size,
              "data": str(data), "synsets": None if synsets is None else str(synsets), "images": len(table),
              "swaps": {name: list(order) for name, order in COLOUR_SWAPS.items()}}
    record = claim_study(out_dir, "colour_swap", config)
    mean = torch.tensor(net.mean, device=net.device).view(1, 3, 1, 1)
    std = torch.tensor(net.std, device=net.device).view(1, 3, 1, 1)
    correct = {name: [] for name in ("clean", *COLOUR_SWAPS)}
    with progress_bar(transient=True) as bar:
        task = bar.add_task("colour swap", total=len(table), status="", visible=progress)
        for start in range(0, len(table), batch_size):
            part = table.iloc[start:start + batch_size]
            x = net.preprocess_batch(list(part["path"]))
            labels = torch.tensor(part["label"].to_numpy(), device=net.device)
            pixels = x * std + mean
            with torch.no_grad():
                correct["clean"].append(net.model(x).argmax(1) == labels)
                for name, order in COLOUR_SWAPS.items():
                    swapped = net.from_pixels(pixels[:, list(order)])
                    correct[name].append(net.model(swapped).argmax(1) == labels)
            bar.advance(task, len(part))
    flags = pd.DataFrame({name: torch.cat(values).cpu().numpy() for name, values in correct.items()})
    flags["label"] = table["label"].to_numpy()
    rows = []
    for label, group in flags.groupby("label"):
        kept = group[group["clean"]]
        shares = {name: float(kept[name].mean()) if len(kept) else float("nan") for name in COLOUR_SWAPS}
        rows.append({"class_id": int(label), "class_name": net.class_names[int(label)], "n_total": len(group),
                     "n_images": len(kept), "mean": float(np.mean(list(shares.values()))), **shares})
    frame = pd.DataFrame(rows).sort_values(["mean", "class_id"], na_position="last", kind="stable")
    frame = frame.reset_index(drop=True)
    _write(frame, record, "colour_swap", config)
    return frame


def colour_swap_table(frame: pd.DataFrame, rows: int = 19) -> pd.DataFrame:
    """Table A3's shape: the ``rows`` most and least affected classes (percentages), "…" in between."""
    shown = frame.dropna(subset=["mean"])
    table = shown if len(shown) <= 2 * rows else pd.concat(
        [shown.head(rows), pd.DataFrame([{c: "…" for c in shown.columns}]), shown.tail(rows)])

    def percent(value):
        return value if isinstance(value, str) else f"{100 * value:.2f}%"

    return pd.DataFrame({"ID": table["class_id"], "Class name": table["class_name"], "#Images": table["n_images"],
                         "Avg. RBG, GRB": table["mean"].map(percent), "RBG": table["RBG"].map(percent),
                         "GRB": table["GRB"].map(percent)}).reset_index(drop=True)


def _read_synsets(path: str | os.PathLike) -> dict[str, int]:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"synsets: {path} does not exist or is not a file")
    wnids = [line.split()[0] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not all(re.fullmatch(r"n\d{8}", wnid) for wnid in wnids):
        raise ValueError(f"synsets: {path} must hold one WordNet id (n########) per line")
    return {wnid: index for index, wnid in enumerate(wnids)}
