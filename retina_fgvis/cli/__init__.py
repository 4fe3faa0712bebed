"""Command-line interface. The only module that imports ``training`` and ``evaluation``.

Each command lives in its own module and registers itself on :data:`app`.
"""
from retina_fgvis.cli._app import app
from retina_fgvis.cli import data_commands, train, localize, evaluate, explain, studies, demo, diagnose  # noqa: F401  (registration)


def main() -> None:
    app()
