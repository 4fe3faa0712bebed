"""The typer application every command module registers on."""
from typing import NoReturn

import typer
from rich.console import Console

app = typer.Typer(
    name="retina-fgvis",
    help="Fine-grained visual explanations (FGVis) for diabetic-retinopathy and ImageNet classifiers.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()


def fail(error: Exception) -> NoReturn:
    """Report bad input as one red line on stderr and exit with code 2."""
    Console(stderr=True).print(f"[red]error:[/red] {error}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)
