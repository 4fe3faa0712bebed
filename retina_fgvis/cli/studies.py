"""``retina-fgvis study deletion|adversarial|entropy|colour-swap``: thin wrappers over ``evaluation``.

Each command prints a table shaped like the paper's (Tables A1–A3, the §A4.1 deletion AUCs) and
writes its CSV and its run record (``<study>_run.json``) into ``--out``.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import pandas as pd
import typer
from rich.table import Table

from retina_fgvis._io import locked_folder
from retina_fgvis.cli._app import BAD_INPUT, app, choice, console, default, fail
from retina_fgvis.evaluation.deletion import DELETION_METHODS, deletion_study, summarize_deletion
from retina_fgvis.evaluation.studies import (IMAGE_EXTENSIONS, adversarial_evidence, adversarial_table, colour_swap,
                                             colour_swap_table, entropy_table, reference_entropy)
from retina_fgvis.fgvis.references import IMAGE_REFERENCES

study_app = typer.Typer(help="Reproduce the paper's ImageNet studies (deletion metric, Tables A1–A3).",
                        no_args_is_help=True)
app.add_typer(study_app, name="study")

_MODEL_HELP = "googlenet, vgg16, alexnet, resnet50 or efficientnet_lite0."
_WEIGHTS_HELP = ("Local state_dict file; 'random' for random initialisation. Default: the pretrained weights "
                 "(torchvision's from the torch hub cache only, never downloaded).")


#: The references an image study or ``explain`` offers by name (also the deletion study's substrate).
Reference = choice("Reference", IMAGE_REFERENCES)


def weights_option(value: Optional[str]):
    """CLI ``--weights`` → ``load_imagenet_model(weights=...)``: absent = pretrained, ``random`` = None."""
    if value is None:
        return "default"
    return None if value == "random" else value


def print_frame(frame: pd.DataFrame, title: str) -> None:
    """Print a DataFrame (index included when named) as a rich table."""
    if frame.index.name is not None:
        frame = frame.reset_index()
    table = Table(title=title)
    for column in frame.columns:
        table.add_column(str(column), justify="right" if pd.api.types.is_numeric_dtype(frame[column]) else "left",
                         overflow="fold")
    for row in frame.itertuples(index=False):
        table.add_row(*[f"{value:.4g}" if isinstance(value, float) else str(value) for value in row])
    console.print(table)


def image_files(paths: List[Path]) -> list[Path]:
    """Expand folders into their image files (sorted, recursive); files are kept as given."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        else:
            files.append(path)
    if not files:
        raise ValueError(f"images: no image files in {', '.join(map(str, paths))}")
    return files


@study_app.command("deletion")
def deletion_command(
    images: List[Path] = typer.Argument(..., help="Image files or folders of images."),
    model: str = typer.Option(..., "--model", help=_MODEL_HELP),
    weights: Optional[str] = typer.Option(None, "--weights", help=_WEIGHTS_HELP),
    methods: str = typer.Option(",".join(DELETION_METHODS), "--methods",
                                help="Comma-separated: fgvis, gradcam, occlusion, random."),
    substrate: Reference = typer.Option(Reference(default(deletion_study, "substrate")), "--substrate",
                                        help="Removed pixels become zero in normalised space or black pixels."),
    out: Path = typer.Option(Path("deletion_study"), "--out", help="Output folder."),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="Input side in pixels (default 224)."),
    max_iter: int = typer.Option(default(deletion_study, "max_iter"), "--max-iter", help="FGVis iterations per λ."),
    lr: float = typer.Option(default(deletion_study, "lr"), "--lr", help="FGVis learning rate (§A4.1: 0.3)."),
    batch_size: int = typer.Option(default(deletion_study, "batch_size"), "--batch-size", help="Perturbed images per forward pass."),
    device: str = typer.Option("auto", "--device", help="cpu, cuda, cuda:1 … (auto: CUDA when available)."),
    seed: int = typer.Option(default(deletion_study, "seed"), "--seed", help="Seed of the tie-breaking and random rankings."),
) -> None:
    """Deletion/insertion curves and AUCs (§A4.1) of FGVis, Grad-CAM, occlusion and a random ranking."""
    try:
        with locked_folder(out):
            frame = deletion_study(image_files(images), model, weights=weights_option(weights), image_size=image_size,
                                   methods=[m.strip() for m in methods.split(",") if m.strip()],
                                   substrate=substrate.value, lr=lr, max_iter=max_iter, batch_size=batch_size,
                                   device=device, seed=seed, out_dir=out)
    except BAD_INPUT as error:
        fail(error)
    print_frame(summarize_deletion(frame), f"Deletion / insertion AUC ({model}, {substrate.value} substrate; "
                                          "deletion: lower is better)")
    console.print(f"per image: {out / 'deletion.csv'}   curves: {out / 'deletion_curves.png'}")


@study_app.command("adversarial")
def adversarial_command(
    model: str = typer.Option(..., "--model", help=_MODEL_HELP),
    weights: Optional[str] = typer.Option(None, "--weights", help=_WEIGHTS_HELP),
    classes: Optional[int] = typer.Option(None, "--classes",
                                          help="Seeded sample of N classes (default: all but the two omitted)."),
    out: Path = typer.Option(Path("adversarial_study"), "--out", help="Output folder."),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="Input side in pixels (default 224)."),
    max_iter: int = typer.Option(default(adversarial_evidence, "max_iter"), "--max-iter", help="Generation-game iterations."),
    lr: float = typer.Option(default(adversarial_evidence, "lr"), "--lr", help="Learning rate."),
    batch_size: int = typer.Option(default(adversarial_evidence, "batch_size"), "--batch-size", help="Classes optimised at once."),
    device: str = typer.Option("auto", "--device", help="cpu, cuda, … (auto: CUDA when available)."),
    seed: int = typer.Option(default(adversarial_evidence, "seed"), "--seed", help="Seed of the class sample and mask start."),
) -> None:
    """Table A1: share of classes generated from a black image (λ = 0), with and without the defense."""
    try:
        with locked_folder(out):
            frame = adversarial_evidence(model, classes=classes, max_iter=max_iter, lr=lr, batch_size=batch_size,
                                         weights=weights_option(weights), image_size=image_size, device=device,
                                         seed=seed, out_dir=out)
    except BAD_INPUT as error:
        fail(error)
    table = adversarial_table(frame).map(lambda share: f"{share:.1f} %")
    print_frame(table.rename_axis("Model"), f"Adversarial class generated from a black image "
                                            f"({frame['class_id'].nunique()} classes, λ = 0)")
    console.print(f"per class: {out / 'adversarial_evidence.csv'}")


@study_app.command("entropy")
def entropy_command(
    images: List[Path] = typer.Argument(..., help="Image files or folders (e.g. ImageNet validation images)."),
    model: str = typer.Option(..., "--model", help=_MODEL_HELP),
    weights: Optional[str] = typer.Option(None, "--weights", help=_WEIGHTS_HELP),
    instances: int = typer.Option(default(reference_entropy, "n_instances"), "--instances", help="Random instances per reference (images are sampled)."),
    out: Path = typer.Option(Path("entropy_study"), "--out", help="Output folder."),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="Input side in pixels (default 224)."),
    batch_size: int = typer.Option(default(reference_entropy, "batch_size"), "--batch-size", help="Images per forward pass."),
    device: str = typer.Option("auto", "--device", help="cpu, cuda, … (auto: CUDA when available)."),
    seed: int = typer.Option(default(reference_entropy, "seed"), "--seed", help="Seed of the noise and the image sample."),
) -> None:
    """Table A2: softmax entropy of zero, noise, blurred-image and image references."""
    try:
        with locked_folder(out):
            frame = reference_entropy(image_files(images), model, n_instances=instances, batch_size=batch_size,
                                      weights=weights_option(weights), image_size=image_size, device=device,
                                      seed=seed, out_dir=out)
    except BAD_INPUT as error:
        fail(error)
    print_frame(entropy_table(frame), "Entropy of reference images (nats)")
    console.print(f"table: {out / 'reference_entropy.csv'}")


@study_app.command("colour-swap")
def colour_swap_command(
    data: Path = typer.Argument(..., help="Folder of class sub-folders (index, wnid or name) or a CSV file,label."),
    model: str = typer.Option(..., "--model", help=_MODEL_HELP),
    weights: Optional[str] = typer.Option(None, "--weights", help=_WEIGHTS_HELP),
    synsets: Optional[Path] = typer.Option(None, "--synsets",
                                           help="WordNet ids in class-index order (for wnid-named folders)."),
    rows: int = typer.Option(default(colour_swap_table, "rows"), "--rows", help="Most and least affected classes shown."),
    out: Path = typer.Option(Path("colour_swap_study"), "--out", help="Output folder."),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="Input side in pixels (default 224)."),
    batch_size: int = typer.Option(default(colour_swap, "batch_size"), "--batch-size", help="Images per forward pass."),
    device: str = typer.Option("auto", "--device", help="cpu, cuda, … (auto: CUDA when available)."),
) -> None:
    """Table A3: share of correct classifications kept after swapping BGR to RBG and GRB, per class."""
    try:
        with locked_folder(out):
            frame = colour_swap(data, model, synsets=synsets, batch_size=batch_size, weights=weights_option(weights),
                                image_size=image_size, device=device, out_dir=out)
    except BAD_INPUT as error:
        fail(error)
    print_frame(colour_swap_table(frame, rows), "Maintained true classifications after swapping colour channels")
    console.print(f"all classes: {out / 'colour_swap.csv'}")
