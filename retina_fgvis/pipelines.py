"""The pipelines that combine the core with training and evaluation: the demo, the known-evidence control,
localize's merge step (score a finished run, write its report) and the defense diagnostic of a checkpoint.

The CLI commands (``demo``, ``localize``, ``diagnose``) parse options and call these; a notebook can call them too.
:func:`run_demo` builds the set, trains a small classifier, localizes the lesions with FGVis and with
Grad-CAM, scores and compares both, and writes the HTML report (measured: 2.6 min on two idle CPU
cores, docs/localize.md). :func:`run_control` is the known-evidence control (docs/evaluation.md): a set
whose label one lesion type decides, a classifier trained on it, FGVis on its test images and the
explainer's sensitivity on the deciding type against the independent types and chance.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retina_fgvis._io import atomic_write_json, locked_folder
from retina_fgvis.datasets.synthetic import create_synthetic_set
from retina_fgvis.localize import LocalizeConfig, localize
from retina_fgvis.runtime import console

__all__ = ["CONTROL_RULE", "ControlResult", "DemoResult", "Diagnosis", "diagnose_checkpoint", "run_control", "run_demo",
           "score_and_report"]

#: Tables ``diagnose_checkpoint`` writes into its ``out`` folder.
DIAGNOSIS_CSV, DIAGNOSIS_CALLS_CSV = "diagnosis.csv", "diagnosis_calls.csv"

#: The control's default label rule: RDR iff the image holds at least one hard exudate.
CONTROL_RULE = "hard_exudates:1"


@dataclass
class ControlResult:
    """Where the known-evidence control wrote its set, model and FGVis run, its result (``control.json``) and time."""

    out: Path
    checkpoint: Path
    run: Path
    control: dict[str, Any]
    seconds: float


@dataclass
class DemoResult:
    """Where the demo wrote everything, its comparison and how long it took."""

    out: Path
    checkpoint: Path
    runs: dict[str, Path]
    comparison: dict[str, Any]
    report: Path
    seconds: float
    control: ControlResult | None = None


def run_control(out: str | Path = "demo_out/control", rule: str = CONTROL_RULE, device: str = "auto",
                progress: bool = True, *, n_train: int = 600, n_test: int = 24, size: int = 128,
                epochs: int | None = None, width: int | None = None, max_iter: int = 500,
                seed: int = 0) -> ControlResult:
    """Known-evidence control: label-rule set -> classifier -> FGVis run (paper protocol) -> ``control.json``.

    Args:
        out: folder for ``data/`` (the set, its rule in ``data/synthetic.json``), ``model/``, ``fgvis/`` (the
            scored run) and ``control.json`` (:func:`retina_fgvis.evaluation.control.known_evidence`).
        rule: ``"TYPE:k"``: RDR iff at least k lesions of TYPE, the other types independent of the label.
        device, n_train, n_test, size, epochs, width, max_iter, seed: as for :func:`run_demo`.

    Resumes like :func:`run_demo`. Prints the control's table.
    """
    from retina_fgvis.evaluation.control import control_table, known_evidence
    from retina_fgvis.evaluation.localization import score_run
    from retina_fgvis.training import TrainConfig, train

    started = time.perf_counter()
    out = Path(out)
    # Like the demo, the control creates its own set, and says so.
    _, written = create_synthetic_set(out / "data", n_train=n_train, n_test=n_test, size=size, seed=seed,
                                      label_rule=rule, progress=progress)
    console.print(f"control: {'wrote' if written else 'reusing'} the {rule} set in {out / 'data'}", soft_wrap=True)
    checkpoint = train(TrainConfig(
        dataset="synthetic", data_dir=out / "data", out=out / "model", image_size=size, epochs=epochs, width=width,
        seed=seed, device=device, resume=(out / "model" / "last.pt").is_file(), progress=progress)).best_checkpoint
    run = localize(LocalizeConfig(data_dir=out / "data", checkpoint=checkpoint, out=out / "fgvis", dataset="synthetic",
                                  device=device, max_iter=max_iter, seed=seed, progress=progress))
    control = known_evidence(score_run(run, progress=progress), rule)
    atomic_write_json(out / "control.json", control)
    console.print(control_table(control))
    return ControlResult(out=out, checkpoint=checkpoint, run=run, control=control,
                         seconds=time.perf_counter() - started)


def run_demo(out: str | Path = "demo_out", device: str = "auto", progress: bool = True, *,
             n_train: int = 600, n_test: int = 24, size: int = 128, epochs: int | None = None,
             width: int | None = None, max_iter: int = 500, seed: int = 0,
             control: str | None = None) -> DemoResult:
    """Synthetic set -> trained classifier -> FGVis and Grad-CAM runs -> comparison and report.

    Args:
        out: folder for everything: ``data/`` (the set), ``model/`` (training run, ``best.pt``), ``fgvis/``
            and ``gradcam/`` (scored run folders), ``comparison.json`` and ``fgvis/report.html``.
        device: torch device for training and localization (``"auto"``: CUDA if present).
        n_train, n_test, size: semi-synthetic set (training images, DiaretDB1-layout test images, pixels).
        epochs, width: classifier training epochs and :class:`FundusCNN` width (``None``: ``train``'s defaults).
        max_iter: FGVis step limit (everything else is the paper's medical protocol, λ = 1e-10 included).
        seed: seeds the set, the training and FGVis.
        control: a label rule ``"TYPE:k"``: also run :func:`run_control` with it, into ``out/control`` at the
            same sizes; ``None``: no control.

    Every step resumes: a rerun into the same folder continues the training and the runs where they stopped.
    """
    from retina_fgvis.evaluation.compare import compare_runs, comparison_table
    from retina_fgvis.evaluation.localization import score_run, summary_table
    from retina_fgvis.evaluation.report import write_report
    from retina_fgvis.datasets.synthetic import LabelRule
    from retina_fgvis.training import TrainConfig, train

    LabelRule.parse(control)  # a bad rule stops here, not after the main run
    started = time.perf_counter()
    out = Path(out)
    data = out / "data"
    with locked_folder(out):
        # The demo is the one pipeline that creates a set itself (the same as `retina-fgvis synth`) and says so.
        _, written = create_synthetic_set(data, n_train=n_train, n_test=n_test, size=size, seed=seed,
                                          progress=progress)
        console.print(f"demo: {'wrote' if written else 'reusing'} the semi-synthetic set in {data}", soft_wrap=True)
        # A rerun resumes the training run.
        checkpoint = train(TrainConfig(
            dataset="synthetic", data_dir=data, out=out / "model", image_size=size, epochs=epochs, width=width,
            seed=seed, device=device, resume=(out / "model" / "last.pt").is_file(), progress=progress)).best_checkpoint
        runs = {}
        for method in ("fgvis", "gradcam"):
            runs[method] = localize(LocalizeConfig(
                data_dir=data, checkpoint=checkpoint, out=out / method, dataset="synthetic", method=method,
                device=device, max_iter=max_iter, seed=seed, progress=progress))
            console.print(summary_table(score_run(runs[method], progress=progress)))
        comparison = compare_runs([runs["fgvis"], runs["gradcam"]], out, progress=progress)
        console.print(comparison_table(comparison))
        report = write_report(runs["fgvis"], comparison=comparison)
        control_result = None if control is None else run_control(
            out / "control", control, device, progress, n_train=n_train, n_test=n_test, size=size, epochs=epochs,
            width=width, max_iter=max_iter, seed=seed)
    return DemoResult(out=out, checkpoint=checkpoint, runs=runs, comparison=comparison, report=report,
                      seconds=time.perf_counter() - started, control=control_result)


_SCORE_TIMEOUT = 120.0  # seconds: scoring a finished run takes well under a minute


def score_and_report(out: str | Path, *, progress: bool = True) -> tuple[dict, Path]:
    """Merge step: score a finished run folder (``summary.json``), print its table, write ``report.html``.

    Holds the run folder's lock (waiting for a shard that finished at the same moment to be done with it).
    """
    from retina_fgvis.evaluation.localization import score_run, summary_table
    from retina_fgvis.evaluation.report import write_report

    with locked_folder(out, timeout=_SCORE_TIMEOUT):
        summary = score_run(out, progress=progress)
        console.print(summary_table(summary))
        report = write_report(out)
    return summary, report


@dataclass
class Diagnosis:
    """What :func:`diagnose_checkpoint` measured: per image and step (``summary``), per defended call (``calls``),
    the warnings it draws (``findings``), the explained class's name and the number of defended calls."""

    image_ids: list[str]
    class_name: str
    summary: Any
    calls: Any
    findings: list[str]
    n_calls: int


_PROTOCOL = {name: field.default for name, field in LocalizeConfig.__dataclass_fields__.items()}


def diagnose_checkpoint(checkpoint: str | Path, data_dir: str | Path, *, dataset: str = _PROTOCOL["dataset"],
                        split: str = _PROTOCOL["split"], images: int = 8, steps: tuple[int, ...] = (0, 20),
                        lam: float = _PROTOCOL["lam"], lr: float = _PROTOCOL["lr"],
                        stop_score: float = _PROTOCOL["stop_score"], device: str | None = None,
                        out: str | Path | None = None) -> Diagnosis:
    """The defense diagnostic (:func:`~retina_fgvis.fgvis.diagnose.diagnose_defense`) of a fundus classifier on
    the first ``images`` images of a DiaretDB1 split, deleting its positive class; with ``out``, its two tables
    are written there (a run folder of kind ``diagnose``, claimed before any work). The defaults are
    :class:`~retina_fgvis.localize.LocalizeConfig`'s, the paper's medical protocol."""
    from retina_fgvis._io import atomic_write_csv
    from retina_fgvis.checks import check_int
    from retina_fgvis.datasets.diaretdb1 import open_diaretdb1
    from retina_fgvis.fgvis import ScoreBelow
    from retina_fgvis.fgvis.diagnose import diagnose_defense
    from retina_fgvis.localize import DATASETS, SPLITS, checkpoint_sha256
    from retina_fgvis.models.checkpoint import load_classifier
    from retina_fgvis.runs import RunFolder, RunKind
    from retina_fgvis.runtime import resolve_device
    
    check_int("images", images, minimum=1)
    stop = ScoreBelow(stop_score)
    if dataset not in DATASETS or split not in SPLITS:
        raise ValueError(f"dataset, split: expected one of {DATASETS} and of {SPLITS}, got {dataset!r}, {split!r}")
    classifier = load_classifier(checkpoint, resolve_device(device))
    database = open_diaretdb1(Path(data_dir) / "diaretdb1" if dataset == "synthetic" else Path(data_dir))
    ids = database.image_ids(split)[:images]
    config = {"checkpoint_sha256": checkpoint_sha256(Path(checkpoint)), "data_dir": str(Path(data_dir).resolve()),
              "dataset": dataset, "split": split, "images": ids, "steps": list(steps), "lam": lam, "lr": lr,
              "stop_score": stop_score}
    with contextlib.ExitStack() as stack:
        if out is not None:
            stack.enter_context(RunFolder(out, RunKind.DIAGNOSE, name="--out").writing(config))
        pictures = [database.load(image_id, size=classifier.image_size,
                                  graham=bool(classifier.meta.get("graham", False))).image for image_id in ids]
        positive = int(classifier.meta["positive_class"])
        diagnosis = diagnose_defense(classifier.model, classifier.prepare(pictures), positive, lr=lr, lam=lam,
                                     steps=steps, stop=stop, normalization=classifier.normalization)
        names = list(classifier.meta.get("class_names") or [])
        result = Diagnosis(ids, names[positive] if positive < len(names) else f"class {positive}",
                           diagnosis.summary(ids), diagnosis.to_frame(ids), diagnosis.findings(ids),
                           len(diagnosis.call_names))
        if out is not None:
            atomic_write_csv(Path(out) / DIAGNOSIS_CSV, result.summary)
            atomic_write_csv(Path(out) / DIAGNOSIS_CALLS_CSV, result.calls)
    return result
