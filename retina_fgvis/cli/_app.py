"""The typer application every command module registers on."""
import typer

app = typer.Typer(
    name="retina-fgvis",
    help="Fine-grained visual explanations (FGVis) for diabetic-retinopathy and ImageNet classifiers.",
    no_args_is_help=True,
    add_completion=False,
)
