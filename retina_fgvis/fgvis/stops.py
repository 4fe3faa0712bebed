"""Stop rules, evaluated per image on device (no host synchronisation).

A rule is called with the softmax ``probs`` of the explanations (R x K), the ``target``
classes (R, long), the clean images' target scores ``initial_score`` (R) and ``keep``
(True for the keep-class games preservation/generation) and returns a bool tensor (R).

Early stopping applies to the games that start on the side where the rule is not met yet:
deletion (m ~ 1, e ~ x) and generation (m ~ 0, e ~ r).  Preservation and repression start on
the other side, where class-shift and score rules already hold, so they run every step and the
rule is only checked on the final explanation.  For every game ``FGVisResult.success`` is the
rule evaluated on the final explanation.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


def _target_score(probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return probs.gather(1, target[:, None])[:, 0]


@dataclass(frozen=True)
class StopRule:
    """Base class.  ``early=False`` runs every step and only checks the rule at the end."""

    early: bool = field(default=True, kw_only=True)

    def __call__(self, probs, target, initial_score, keep: bool) -> torch.Tensor:
        raise NotImplementedError


@dataclass(frozen=True)
class ScoreBelow(StopRule):
    """Met when ``y_e[target] < threshold`` (medical setting, Sec. A4.2: 0.10)."""

    threshold: float = 0.10

    def __post_init__(self):
        if not (0 < self.threshold <= 1):
            raise ValueError(f"stop: ScoreBelow threshold must be in (0, 1], got {self.threshold}")

    def __call__(self, probs, target, initial_score, keep):
        return _target_score(probs, target) < self.threshold

    def __str__(self) -> str:
        return f"score < {self.threshold:g}"


@dataclass(frozen=True)
class RelativeScoreBelow(StopRule):
    """Met when ``y_e[target] < fraction * y_x[target]`` (deletion metric, Sec. A4.1: 0.02)."""

    fraction: float = 0.02

    def __post_init__(self):
        if not (0 < self.fraction <= 1):
            raise ValueError(f"stop: RelativeScoreBelow fraction must be in (0, 1], got {self.fraction}")

    def __call__(self, probs, target, initial_score, keep):
        return _target_score(probs, target) < self.fraction * initial_score

    def __str__(self) -> str:
        return f"score < {self.fraction:g} x clean score"


@dataclass(frozen=True)
class ClassShift(StopRule):
    """The line-search rule (Sec. A2).

    Drop games (deletion, repression): the top class of ``e`` is no longer the target.
    Keep games (preservation, generation): the target is the top class of ``e``.
    For a drop game on a target that is not the clean image's top class the rule holds from the
    start; use :class:`ScoreBelow` or :class:`RelativeScoreBelow` there.
    """

    def __call__(self, probs, target, initial_score, keep):
        top = probs.argmax(1)
        return top == target if keep else top != target

    def __str__(self) -> str:
        return "class shift"


@dataclass(frozen=True)
class FixedSteps(StopRule):
    """Run exactly ``steps`` iterations (overrides ``max_iter``); always met."""

    steps: int = 500
    early: bool = field(default=False, kw_only=True)

    def __post_init__(self):
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"stop: FixedSteps steps must be an int >= 1, got {self.steps!r}")

    def __call__(self, probs, target, initial_score, keep):
        return torch.ones_like(target, dtype=torch.bool)

    def __str__(self) -> str:
        return f"{self.steps} fixed steps"


def check_stop(stop) -> StopRule | None:
    """Validate the ``stop`` argument (``None`` = fixed ``max_iter``)."""
    if stop is not None and not isinstance(stop, StopRule):
        raise TypeError(f"stop: expected None or a StopRule (ScoreBelow, ...), got {type(stop).__name__}")
    return stop


__all__ = ["StopRule", "ScoreBelow", "RelativeScoreBelow", "ClassShift", "FixedSteps", "check_stop"]
