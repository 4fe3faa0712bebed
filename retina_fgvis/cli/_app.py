"""The typer application every command module registers on, its one path for bad input, and the two
helpers that keep the library the one place where a closed choice or a default is stated."""
import dataclasses
import inspect
import os
from enum import Enum
from typing import Any, Iterable, NoReturn

import typer

from retina_fgvis.runtime import console, error_console

__all__ = ["BAD_INPUT", "app", "choice", "console", "default", "fail"]

app = typer.Typer(
    name="retina-fgvis",
    help="Fine-grained visual explanations (FGVis) for diabetic-retinopathy and ImageNet classifiers.",
    no_args_is_help=True,
    add_completion=False,
)

#: What a command reports with :func:`fail`: bad input (``ValueError``, every checked argument and file) and
#: operating-system errors on a path (a read-only folder, a file where a folder belongs, a full disk).
BAD_INPUT = (ValueError, OSError)


def choice(name: str, values: Iterable[str]) -> type[Enum]:
    """A ``str`` Enum of the library's closed choice ``values`` (typer lists and checks its members)."""
    return Enum(name, {value: value for value in values}, type=str)


def default(owner: Any, name: str) -> Any:
    """The library's default of ``name``: a field of dataclass ``owner`` or a parameter of function ``owner``."""
    if dataclasses.is_dataclass(owner):
        return next(field.default for field in dataclasses.fields(owner) if field.name == name)
    return inspect.signature(owner).parameters[name].default


def fail(error: Exception) -> NoReturn:
    """Report bad input as one red line on stderr and exit with code 2."""
    if isinstance(error, OSError) and error.filename is not None:
        # "PATH: Permission denied" (and the second path of a rename), not Python's "[Errno 13] ..." form.
        paths = [os.fspath(name) for name in (error.filename, error.filename2) if name is not None]
        message = f"{' -> '.join(paths)}: {error.strerror or error}"
    else:
        message = str(error)
    error_console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)
