"""The four FGVis games (Sec. A2, A3.5) as one table of named specs.

Two objectives times two starting points::

    game          objective                              start m ~     stops early
    preservation  -log y_e[c_T] + lam * ||m||_1          U(0.99, 1)    no
    generation    -log y_e[c_T] + lam * ||m||_1          U(0, 0.01)    yes
    deletion       y_e[c_T]     + lam * ||1 - m||_1      U(0.99, 1)    yes
    repression     y_e[c_T]     + lam * ||1 - m||_1      U(0, 0.01)    no

A game stops early when it starts where the stop rules do not hold yet: deletion from e ~ x,
generation from e ~ r.  Preservation and repression start where class-shift and score rules
already hold, so they run every step and the rule is only checked on the final explanation.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

__all__ = ["Game", "GAMES", "game_spec", "initial_mask", "check_start"]


@dataclass(frozen=True)
class Game:
    """One game's properties.

    keeps_class: the keep-class objective ``-log y_e[c_T] + lam*||m||_1`` (preservation,
        generation); otherwise the drop-class objective ``y_e[c_T] + lam*||1 - m||_1``.
    start_low, start_high: the uniform start ``m ~ U(start_low, start_high)``.
    stops_early: the stop rule is checked every step (and finished rows are frozen).
    """

    name: str
    keeps_class: bool
    start_low: float
    start_high: float
    stops_early: bool

    @property
    def starts_at_image(self) -> bool:
        """The start explanation is (almost) the image itself: ``m ~ 1``."""
        return self.start_low >= 0.5


GAMES: dict[str, Game] = {game.name: game for game in (
    Game("preservation", keeps_class=True, start_low=0.99, start_high=1.0, stops_early=False),
    Game("generation", keeps_class=True, start_low=0.0, start_high=0.01, stops_early=True),
    Game("deletion", keeps_class=False, start_low=0.99, start_high=1.0, stops_early=True),
    Game("repression", keeps_class=False, start_low=0.0, start_high=0.01, stops_early=False),
)}
"""Game name -> :class:`Game`."""


def game_spec(game: str | Game) -> Game:
    """The :class:`Game` named ``game`` (a spec passes through); ``ValueError`` naming ``game`` otherwise."""
    if isinstance(game, Game):
        return game
    if not isinstance(game, str) or game not in GAMES:
        raise ValueError(f"game: {game!r} is not one of {tuple(GAMES)}")
    return GAMES[game]


def initial_mask(game: str | Game, shape: Sequence[int], seed: int = 0,
                 start: tuple[float, float] | None = None) -> torch.Tensor:
    """The start of ``m`` for one image of ``shape`` (C x H x W): 1 x C x H x W float64 ~ U(a, b).

    ``(a, b)`` is the game's start, or ``start`` when given (``(1.0, 1.0)``: exactly ``m = 1``).
    Drawn on the CPU from a generator seeded with ``seed``, so it is the same for every image,
    batch and device.
    """
    spec = game_spec(game)
    low, high = (spec.start_low, spec.start_high) if start is None else start
    generator = torch.Generator().manual_seed(seed)
    return low + (high - low) * torch.rand((1, *shape), generator=generator, dtype=torch.float64)


def check_start(start) -> tuple[float, float] | None:
    """Validate ``start``: ``None`` or ``(low, high)`` with ``0 <= low <= high <= 1``."""
    if start is None:
        return None
    try:
        low, high = (float(v) for v in start)
    except (TypeError, ValueError):
        raise TypeError(f"start: expected None or (low, high), got {start!r}") from None
    if not 0.0 <= low <= high <= 1.0:
        raise ValueError(f"start: expected 0 <= low <= high <= 1, got {start!r}")
    return low, high
