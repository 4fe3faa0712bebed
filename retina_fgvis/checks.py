"""Argument checks shared by every module: one rule, one message shape (``name: expected ..., got ...``).

A value out of range raises ``ValueError``; a wrong type raises :class:`ArgumentTypeError`, which is
both a ``TypeError`` (Python's convention) and a ``ValueError`` (what the command line reports as bad
input). Both name the argument first. ``bool`` is never accepted as an integer or a number, although
Python treats it as one.
"""
from __future__ import annotations

import math
import numbers
from typing import Any

__all__ = ["ArgumentTypeError", "is_integer", "check_int", "check_number"]


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type."""


def is_integer(value: Any) -> bool:
    """True for Python and numpy integers, False for ``bool``."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _range_text(minimum, maximum, exclusive_minimum: bool = False) -> str:
    if minimum is not None and maximum is not None:
        return f"in [{minimum}, {maximum}]" if not exclusive_minimum else f"in ({minimum}, {maximum}]"
    if minimum is not None:
        return f"> {minimum}" if exclusive_minimum else f">= {minimum}"
    return f"<= {maximum}"


def check_int(name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None,
              allow_none: bool = False) -> int | None:
    """``value`` as an ``int`` within ``[minimum, maximum]`` (either bound may be ``None``)."""
    if value is None and allow_none:
        return None
    if not is_integer(value):
        bounds = "" if minimum is None and maximum is None else " " + _range_text(minimum, maximum)
        raise ArgumentTypeError(f"{name}: expected an integer{bounds}{' or None' if allow_none else ''}, got {value!r}")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ValueError(f"{name}: expected an integer {_range_text(minimum, maximum)}, got {value!r}")
    return int(value)


def check_number(name: str, value: Any, *, minimum: float | None = None, maximum: float | None = None,
                 exclusive_minimum: bool = False, allow_none: bool = False) -> float | None:
    """``value`` as a finite ``float`` within the bounds (``exclusive_minimum``: strictly above ``minimum``)."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArgumentTypeError(f"{name}: expected a number, got {value!r}")
    value = float(value)
    below = minimum is not None and (value <= minimum if exclusive_minimum else value < minimum)
    if not math.isfinite(value) or below or (maximum is not None and value > maximum):
        bounds = "" if minimum is None and maximum is None else " " + _range_text(minimum, maximum, exclusive_minimum)
        raise ValueError(f"{name}: expected a finite number{bounds}, got {value!r}")
    return value
