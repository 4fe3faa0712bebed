"""The one error type every dataset reader raises on bad input."""
from __future__ import annotations

import os


class DatasetError(ValueError):
    """A dataset file is missing, unreadable or inconsistent.

    The message always starts with the offending file (or folder), so a user can find it::

        DatasetError("/data/train/10_left.jpeg: truncated JPEG (no end-of-image marker)")
    """

    def __init__(self, path: str | os.PathLike | None, problem: str):
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(problem if path is None else f"{path}: {problem}")
