"""Why FGVis's defended deletion does or does not reach its stop on a fundus classifier.

Trains FundusCNN variants with the real trainer on the semi-synthetic set, then runs the paper's
medical protocol (supplementary A4.2: deletion of the RDR class, defense on, λ = 1e-10, lr 0.25,
stop at P(RDR) < 0.10, at most 500 steps, binarized at 4 % of the maximum) on every test image
the model calls RDR with P ≥ 0.5. One JSON line per row goes to ``OUT/rows.jsonl`` and the table
(markdown, the one in ``docs/defense.md``) is printed at the end. Rows whose model is already
trained in ``OUT`` reuse it, so a study can be extended without retraining.

Row columns: val AUC (best epoch), confident positives (P ≥ 0.5), defended-deletion success
(count and rate), median iterations and median marked area (share of the field of view) of the
successful explanations, lesion sensitivity of the binarized masks of the successful explanations
vs the same masks rotated (the chance control of ``evaluate``), the share of non-RDR test images
(ground truth) already below 0.10 (also per grade, 0 and 1, in ``rows.jsonl``), P(RDR) of the zero
reference, and the defense diagnostic's median cosine between defended and undefended mask gradients
at step 0 and after 20 steps (rows that stopped earlier keep their last mask). Also the median target-logit margin of the successful and
the failed explanations.

    python benchmarks/defense_study.py --out runs/defense-study            # the documented study
    python benchmarks/defense_study.py --out /tmp/s --quick                 # a smoke run (minutes)
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from retina_fgvis import FGVis
from retina_fgvis.binarize import PAPER_THRESHOLD, binarize_relative
from retina_fgvis.datasets.diaretdb1 import LESION_TYPES, open_diaretdb1
from retina_fgvis.datasets.synthetic import generate_synthetic
from retina_fgvis.evaluation.localization import LesionSensitivity, chance_mask
from retina_fgvis.fgvis import ScoreBelow
from retina_fgvis.fgvis.diagnose import diagnose_defense
from retina_fgvis.models.checkpoint import load_classifier
from retina_fgvis.training import TrainConfig, train

STOP, LAM, LR, MAX_ITER = 0.10, 1e-10, 0.25, 500


@dataclass(frozen=True)
class Row:
    """One study row: a classifier (trained once per size) and the engine settings run on it."""

    name: str
    layout: str = "plain"
    width: int = 16
    epochs: int = 24
    smoothing: float = 0.0  # the trainer's label smoothing
    network: dict = field(default_factory=dict)  # activation, batch_norm, downsample
    seed: int = 0  # the training's seed (weights, split, augmentation); the data set is always seed 0
    class_weights: str = "none"  # the trainer's cross-entropy class weights
    defense: bool = True
    start: tuple[float, float] | None = None  # None = the paper's U(0.99, 1)
    lr: float = LR

    @property
    def model_key(self) -> str:
        options = "-".join(f"{k}={v}" for k, v in sorted(self.network.items()))
        smoothing = f"-ls{self.smoothing:g}" if self.smoothing else ""
        seed = f"-s{self.seed}" if self.seed else ""
        weights = "" if self.class_weights == "none" else f"-{self.class_weights}"
        return (f"{self.layout}-w{self.width}-e{self.epochs}{smoothing}{weights}{seed}"
                + (f"-{options}" if options else ""))


#: The layout and engine study; its classifiers were trained with class-balanced cross-entropy.
_BALANCED_ROWS = (
    Row("plain w16, 24 ep"),
    Row("  engine: defense off", defense=False),
    Row("  engine: start m = 1", start=(1.0, 1.0)),
    Row("  engine: lr 0.1", lr=0.1),
    Row("compact w16, 24 ep", layout="compact"),
    Row("  compact, defense off", layout="compact", defense=False),
    Row("  compact, start m = 1", layout="compact", start=(1.0, 1.0)),
    Row("  compact, lr 0.1", layout="compact", lr=0.1),
    Row("compact, label smoothing 0.1", layout="compact", smoothing=0.1),
    Row("o_O (13 calls) w16, 24 ep", layout="o_O"),
    Row("plain, ReLU", network={"activation": "relu"}),
    Row("plain, no batch norm", network={"batch_norm": False}),
    Row("plain, stride instead of pooling", network={"downsample": "stride"}),
    Row("plain w8", width=8),
    Row("plain w8, ReLU", width=8, network={"activation": "relu"}),
    Row("plain, 8 ep", epochs=8),
    Row("plain, 12 ep", epochs=12),
    Row("plain w16, 24 ep, training seed 1", seed=1),
    Row("plain w16, 24 ep, training seed 2", seed=2),
)
#: The default classifier (cross-entropy without class weights) under three training seeds.
_DEFAULT_ROWS = tuple(Row(f"default, training seed {seed}", seed=seed) for seed in range(3))
ROWS = tuple(dataclasses.replace(row, class_weights="balanced") for row in _BALANCED_ROWS) + _DEFAULT_ROWS
#: Rows run at 256 px (all rows run at 128 px).
ROWS_256 = ("plain w16, 24 ep", "  engine: defense off", "compact w16, 24 ep", "o_O (13 calls) w16, 24 ep",
            "plain, ReLU", "plain w8", "plain w8, ReLU", "plain, 8 ep", "plain, 12 ep",
            "plain w16, 24 ep, training seed 1", "plain w16, 24 ep, training seed 2",
            *(row.name for row in _DEFAULT_ROWS))


def dataset(out: Path, size: int, n_train: int, n_test: int) -> Path:
    """The set of ``size`` px; its training images depend on ``n_train`` alone, so every test-set size
    shares the trained classifiers."""
    root = out / f"data-{size}-{n_train}-{n_test}"
    if not (root / "synthetic.json").is_file():
        generate_synthetic(root, n_train=n_train, n_test=n_test, size=size, seed=0, progress=True)
    return root


def trained(out: Path, data: Path, row: Row, size: int, n_train: int, n_test: int) -> tuple[Path, float]:
    """best.pt of the row's classifier (trained unless already in ``out``) and its validation AUC."""
    run = out / "models" / f"{size}-{row.model_key}"
    done = len(pd.read_csv(run / "metrics.csv")) if (run / "metrics.csv").is_file() else 0
    if done < row.epochs:  # new, or interrupted: resume from last.pt
        train(TrainConfig(resume=(run / "last.pt").is_file(),dataset="synthetic", data_dir=data, out=run, image_size=size,
                          epochs=row.epochs, width=row.width, layout=row.layout,
                          label_smoothing=row.smoothing, class_weights=row.class_weights,
                          network_options=dict(row.network), batch_size=16, lr=3e-3, seed=row.seed, device="cpu",
                          progress=True))
    metrics = pd.read_csv(run / "metrics.csv")
    return run / "best.pt", float(metrics["val_auc"].max())


def evaluate(checkpoint: Path, data: Path, row: Row, size: int) -> dict:
    classifier = load_classifier(checkpoint)
    model = classifier.model
    truth = open_diaretdb1(data / "diaretdb1")
    table = pd.read_csv(data / "images.csv").query("set == 'test'").set_index("image")
    labels, grades = table["rdr"], table["grade"]
    samples = [truth.load(image_id, size=size) for image_id in truth.image_ids("test")]
    x = classifier.prepare(np.stack([s.image for s in samples]))
    prob = classifier.predict_proba(x)
    rdr = np.array([bool(labels[s.image_id]) for s in samples])
    grade = np.array([int(grades[s.image_id]) for s in samples])
    confident = np.flatnonzero(prob >= 0.5)
    reference = float(classifier.predict_proba(torch.zeros_like(x[:1]))[0])
    # non-RDR images below the stop value, per grade (0: no lesion; 1: 1–4 red small dots, none of RDR's lesions)
    below = {str(g): [int((prob[grade == g] < STOP).sum()), int((grade == g).sum())] for g in (0, 1)}
    measured = {"non_rdr_below_stop": float((prob[~rdr] < STOP).mean()), "non_rdr": int((~rdr).sum()),
                "non_rdr_below_stop_by_grade": below,
                "rdr_confident": float((prob[rdr] >= 0.5).mean()), "rdr": int(rdr.sum()),
                "reference_score": reference, "positives": int(len(confident))}
    if not len(confident):  # nothing to explain: the model calls no test image RDR
        return {**measured, "success": 0, "success_rate": float("nan"), "median_iterations": None,
                "median_area": None, "sensitivity": {k: None for k in LESION_TYPES},
                "chance": {k: None for k in LESION_TYPES}, "cosine_step0": None, "cosine_step20": None,
                "margin": None}
    with torch.no_grad():
        logits = model(x[confident])
    margin = (logits[:, 1] - logits[:, 0]).numpy()
    engine = FGVis(model, "deletion", defense=row.defense, lr=row.lr, max_iter=MAX_ITER,
                   normalization=classifier.normalization, start=row.start, batch_size=16)
    result = engine.attribute(x[confident], target=1, lam=LAM, stop=ScoreBelow(STOP))
    success = result.success.numpy()
    fgvis_hits = {lesion: LesionSensitivity() for lesion in LESION_TYPES}
    chance_hits = {lesion: LesionSensitivity() for lesion in LESION_TYPES}
    areas = []
    for k, index in enumerate(confident):
        sample = samples[index]
        detection = binarize_relative(result.importance[k, 0].numpy(), PAPER_THRESHOLD) & sample.fov
        areas.append(detection.sum() / sample.fov.sum())
        if not success[k]:
            continue  # a failed optimisation's mask has not explained anything
        rotated, _ = chance_mask(detection, sample.fov, sample.image_id)
        for lesion in LESION_TYPES:
            fgvis_hits[lesion].update(detection, sample.lesions[lesion])
            chance_hits[lesion].update(rotated, sample.lesions[lesion])
    diagnosis = diagnose_defense(model, x[confident], target=1, lr=row.lr, lam=LAM, steps=(0, 20),
                                 normalization=classifier.normalization, start=row.start)
    iterations = result.iterations.numpy()
    return {
        **measured, "success": int(success.sum()), "success_rate": float(success.mean()),
        "median_iterations": float(np.median(iterations[success])) if success.any() else None,
        "median_area": float(np.median(np.array(areas)[success])) if success.any() else None,
        "sensitivity": {lesion: fgvis_hits[lesion].summary() for lesion in LESION_TYPES},
        "chance": {lesion: chance_hits[lesion].summary() for lesion in LESION_TYPES},
        "cosine_step0": float(diagnosis.cosine[:, 0].nanmedian()),
        "cosine_step20": float(diagnosis.cosine[:, 1].nanmedian()),
        # target-logit margin of the successful and the failed explanations (median)
        "margin": {"success": float(np.median(margin[success])) if success.any() else None,
                   "failed": float(np.median(margin[~success])) if (~success).any() else None},
    }


def _pct(value) -> str:
    return "–" if value is None or value != value else f"{100 * value:.0f} %"


def table(rows: list[dict]) -> str:
    short = {"hard_exudates": "HE", "soft_exudates": "SE", "hemorrhages": "H", "red_small_dots": "RSD"}
    head = ("| px | row | val AUC | success | median it. | area | sensitivity vs chance (" +
            ", ".join(short.values()) + ") | non-RDR < 0.10 | P(ref) | cos₀ | cos₂₀ |")
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        sens = ", ".join(f"{_pct(r['sensitivity'][k])}/{_pct(r['chance'][k])}" for k in short)
        iters = "–" if r["median_iterations"] is None else f"{r['median_iterations']:.0f}"
        cosine = " | ".join("–" if r.get(key) is None else f"{r[key]:.2f}" for key in ("cosine_step0", "cosine_step20"))
        lines.append(f"| {r['size']} | {r['row'].strip()} | {r['val_auc']:.3f} | {r['success']}/{r['positives']} "
                     f"({_pct(r['success_rate'])}) | {iters} | {_pct(r['median_area'])} | {sens} | "
                     f"{_pct(r['non_rdr_below_stop'])} of {r['non_rdr']} | {r['reference_score']:.2f} | {cosine} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--n-train", type=int, default=600)
    parser.add_argument("--n-test", type=int, default=60)
    parser.add_argument("--rows", nargs="*", help="row names to run (default: all)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 64 px, 80 training images, 2 epochs")
    args = parser.parse_args(argv)
    rows = [row for row in ROWS if not args.rows or row.name.strip() in args.rows]
    if args.quick:
        args.sizes, args.n_train, args.n_test = [64], 80, 12
        rows = [dataclasses.replace(row, width=4, epochs=2) for row in rows[:3]]
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    results = []
    for size in args.sizes:
        data = dataset(args.out, size, args.n_train, args.n_test)
        for row in rows:
            if size == 256 and row.name not in ROWS_256:
                continue
            checkpoint, auc = trained(args.out, data, row, size, args.n_train, args.n_test)
            started = time.perf_counter()
            measured = {"size": size, "row": row.name, "model": row.model_key, "val_auc": auc,
                        **evaluate(checkpoint, data, row, size)}
            measured["seconds"] = round(time.perf_counter() - started, 1)
            results.append(measured)
            with open(args.out / "rows.jsonl", "a") as stream:
                stream.write(json.dumps(measured) + "\n")
            print(table([measured]).splitlines()[-1], flush=True)
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
