"""``retina-fgvis explain IMAGE... --model NAME``: FGVis explanations of ImageNet images (wraps :func:`explain`)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import pandas as pd
import typer

from retina_fgvis.cli._app import BAD_INPUT, app, choice, console, default, fail
from retina_fgvis.cli.studies import Reference, image_files, print_frame, weights_option
from retina_fgvis.explain import explain, results_table
from retina_fgvis.fgvis.games import GAMES

Game = choice("Game", GAMES)


@app.command("explain")
def explain_command(
    images: List[Path] = typer.Argument(..., help="Image files or folders of images."),
    model: str = typer.Option(..., "--model",
                              help="googlenet, vgg16, alexnet, resnet50 or efficientnet_lite0."),
    weights: Optional[str] = typer.Option(None, "--weights", help=(
        "Local state_dict file; 'random' for random initialisation. Default: the pretrained weights "
        "(torchvision's from the torch hub cache only, never downloaded).")),
    game: Game = typer.Option(Game(default(explain, "game")), "--game", help="FGVis game."),
    target: Optional[List[str]] = typer.Option(None, "--target", help=(
        "Class index or name to explain (repeat for several: class-discriminative explanations). "
        "Default: each image's most likely class.")),
    lam: str = typer.Option(default(explain, "lam"), "--lam", help="'search' (13 λ values 1e-4…1e-10) or a fixed λ."),
    out: Path = typer.Option(Path("explanations"), "--out", help="Output folder."),
    device: str = typer.Option("auto", "--device", help="cpu, cuda, cuda:1 … (auto: CUDA when available)."),
    max_iter: int = typer.Option(default(explain, "max_iter"), "--max-iter", help="SGD iterations per λ."),
    lr: float = typer.Option(default(explain, "lr"), "--lr", help="SGD learning rate."),
    secondary_drop: float = typer.Option(default(explain, "secondary_drop"), "--secondary-drop", help=(
        "For a class that is not the most likely one (deletion/repression): accept λ once its score is "
        "below this fraction of its clean score.")),
    defense: bool = typer.Option(default(explain, "defense"), "--defense/--no-defense", help="Adversarial defense (Sec. 3.2)."),
    reference: Reference = typer.Option(Reference(default(explain, "reference")), "--reference", help="Zero in normalised space or black."),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="Input side in pixels (default 224)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Most explanations optimised at once."),
    seed: int = typer.Option(default(explain, "seed"), "--seed", help="Seed of the mask start."),
    compile_step: bool = typer.Option(default(explain, "compile"), "--compile/--no-compile",
                                      help="torch.compile the optimisation step (CUDA graphs on a GPU)."),
) -> None:
    """FGVis explanations: a figure and arrays per image, results.csv/json (λ line search by default)."""
    try:
        if lam != "search":
            try:
                lam_value: float | str = float(lam)
            except ValueError:
                raise ValueError(f"lam: expected 'search' or a number, got {lam!r}") from None
        else:
            lam_value = lam
        results = explain(image_files(images), model, weights=weights_option(weights), game=game.value,
                          targets=target or None, lam=lam_value, secondary_drop=secondary_drop, max_iter=max_iter,
                          lr=lr, defense=defense, reference=reference.value, image_size=image_size, device=device,
                          batch_size=batch_size, seed=seed, compile=compile_step, out_dir=out)
    except BAD_INPUT as error:
        fail(error)
    rows = results_table(results)
    table = pd.DataFrame({"image": rows["image"], "target": rows["target_name"],
                          "p clean": rows["initial_score"].map("{:.3f}".format),
                          "p expl.": rows["score"].map("{:.3f}".format), "λ": rows["lam"].map("{:.1e}".format),
                          "iter.": rows["iterations"], "rule met": rows["success"], "top-1 after": rows["top_name"]})
    print_frame(table, f"FGVis {game.value} explanations ({model})")
    console.print(f"figures and arrays: {out}/<image>/   table: {out / 'results.csv'}")
