"""Why a defended optimisation does or does not delete the evidence: the defense diagnostic.

:func:`diagnose_defense` runs the engine's own pieces (clean pass, seeded start, defended SGD steps;
``loop.py``) on a batch of images and measures, at chosen step counts ``k`` (after ``k`` updates):

* per nonlinearity call ``i`` (in call order, named by module and function), the share of units
  inside their bounds ``min(0, h_i(x)) <= h_i(e) <= max(0, h_i(x))`` (Eq. 4): the share whose
  gradient the filter lets through;
* between the defended gradient ``g_d`` and the undefended gradient ``g_u`` of the game's loss with
  respect to the mask, at the same mask: the norm ratio ``||g_d|| / ||g_u||`` and the cosine
  ``<g_d, g_u> / (||g_d|| ||g_u||)`` (NaN where a gradient is zero).  The engine normalises each
  step by ``max|g|``, so a small ratio alone does not stop it; a cosine near 0 means its steps are
  unrelated to the class score;
* the score of the target on the reference alone (``e = r``, everything deleted).  For a drop game,
  if the stop rule does not hold there, no deletion can meet it (``reference_blocks_stop``);
* the target's logit margin on the clean image and the limit above which the drop objective has no
  gradient left against ``lam`` (:func:`~retina_fgvis.fgvis.objective.margin_limit`).

Between measurements the masks follow the defended engine exactly (same start, update, clamp, stop
check; rows that meet the stop rule are frozen).  Everything runs as one batch per chunk of images.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import pandas as pd
import torch
from torch import nn

from retina_fgvis.checks import check_int, check_number
from retina_fgvis.fgvis.engine import check_model_inputs, default_rows, model_guard
from retina_fgvis.fgvis.games import check_start, game_spec
from retina_fgvis.fgvis.loop import ActiveRows, Precision, apply_update, check_logits, clean_pass, loss_gradient
from retina_fgvis.fgvis.objective import margin_limit
from retina_fgvis.fgvis.references import check_normalization, make_reference
from retina_fgvis.fgvis.stops import FixedSteps, ScoreBelow, StopRule, check_stop
from retina_fgvis.fgvis.targets import check_target

__all__ = ["DefenseDiagnosis", "diagnose_defense"]


@dataclass
class DefenseDiagnosis:
    """The defense diagnostic of N images at S step counts over L nonlinearity calls (CPU tensors).

    game, lam, stop: the settings diagnosed.  steps: the S step counts measured (updates applied).
    call_names: L names, ``"<module> (<function>)"`` in call order.
    target: N long; score: N, ``y_x[c_T]`` on the clean image; margin: N, ``z[c_T] - max_{k!=c_T} z[k]``
    on the clean image; margin_limit: the margin above which the drop objective has no gradient
    left against ``lam``; reference_score: N, ``y_r[c_T]`` on the reference alone;
    reference_blocks_stop: N bool, a drop game whose stop rule does not hold even at ``e = r``.
    inside: N x S x L, share of units inside their bounds; cosine, norm_ratio: N x S, defended vs
    undefended gradient; step_score: N x S, ``y_e[c_T]`` at that mask; stopped: N x S bool, the
    stop rule had been met (the row is frozen, as in the engine).
    """

    game: str
    lam: float
    stop: StopRule
    steps: tuple[int, ...]
    call_names: list[str]
    target: torch.Tensor
    score: torch.Tensor
    margin: torch.Tensor
    margin_limit: float
    reference_score: torch.Tensor
    reference_blocks_stop: torch.Tensor
    inside: torch.Tensor
    cosine: torch.Tensor
    norm_ratio: torch.Tensor
    step_score: torch.Tensor
    stopped: torch.Tensor

    def __len__(self) -> int:
        return len(self.target)

    def _ids(self, image_ids: Sequence | None) -> list:
        ids = list(range(len(self))) if image_ids is None else list(image_ids)
        if len(ids) != len(self):
            raise ValueError(f"image_ids: has {len(ids)} entries for {len(self)} images")
        return ids

    def to_frame(self, image_ids: Sequence | None = None) -> pd.DataFrame:
        """One row per image x step x nonlinearity call: image, step, call, name, inside."""
        ids = self._ids(image_ids)
        n, s, calls = self.inside.shape
        index = pd.MultiIndex.from_product([range(n), range(s), range(calls)], names=["i", "s", "call"])
        frame = index.to_frame(index=False)
        return pd.DataFrame({
            "image": [ids[i] for i in frame["i"]],
            "step": [self.steps[k] for k in frame["s"]],
            "call": frame["call"],
            "name": [self.call_names[c] for c in frame["call"]],
            "inside": self.inside.reshape(-1).numpy(),
        })

    def summary(self, image_ids: Sequence | None = None) -> pd.DataFrame:
        """One row per image x step: the image's scores and margin, and at that step the score,
        whether it had stopped, the cosine and norm ratio, the mean and least share inside bounds."""
        ids = self._ids(image_ids)
        rows = []
        for i in range(len(self)):
            for k, step in enumerate(self.steps):
                shares = self.inside[i, k]
                rows.append({
                    "image": ids[i], "target": int(self.target[i]), "score": float(self.score[i]),
                    "margin": float(self.margin[i]), "margin_limit": self.margin_limit,
                    "reference_score": float(self.reference_score[i]),
                    "reference_blocks_stop": bool(self.reference_blocks_stop[i]),
                    "step": step, "step_score": float(self.step_score[i, k]), "stopped": bool(self.stopped[i, k]),
                    "cosine": float(self.cosine[i, k]), "norm_ratio": float(self.norm_ratio[i, k]),
                    "mean_inside": float(shares.mean()), "min_inside": float(shares.min()),
                })
        return pd.DataFrame(rows)

    def findings(self, image_ids: Sequence | None = None) -> list[str]:
        """Sentences a person should read before optimising: blocked stops and over-large margins."""
        ids = self._ids(image_ids)
        notes = []
        for i in self.reference_blocks_stop.nonzero()[:, 0].tolist():
            notes.append(f"{ids[i]}: the reference alone scores {float(self.reference_score[i]):.3f} for class "
                         f"{int(self.target[i])}, so the stop rule ({self.stop}) cannot hold even with everything "
                         "deleted: no deletion can succeed")
        for i in (self.margin > self.margin_limit).nonzero()[:, 0].tolist():
            notes.append(f"{ids[i]}: target-logit margin {float(self.margin[i]):.1f} is above "
                         f"{self.margin_limit:.1f}: at lambda = {self.lam:g} the loss has no gradient left "
                         "against the sparsity term")
        return notes


def _check_steps(steps) -> tuple[int, ...]:
    try:
        values = sorted({check_int("steps", step, minimum=0) for step in steps})
    except TypeError:
        raise TypeError(f"steps: expected a sequence of integers >= 0, got {steps!r}") from None
    if not values:
        raise ValueError("steps: is empty")
    return tuple(values)


def _cosine_and_ratio(defended: torch.Tensor, undefended: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    d, u = defended.flatten(1).double(), undefended.flatten(1).double()
    dn, un = d.norm(dim=1), u.norm(dim=1)
    return (d * u).sum(1) / (dn * un), dn / un


def diagnose_defense(
    model: nn.Module,
    inputs: torch.Tensor,
    target: int | Sequence[int] | torch.Tensor | None = None,
    *,
    game: str = "deletion",
    lr: float = 0.25,
    lam: float = 1e-10,
    steps: Sequence[int] = (0, 20),
    reference: str | torch.Tensor = "zero",
    normalization=None,
    seed: int = 0,
    stop: StopRule | None = ScoreBelow(0.10),
    start: tuple[float, float] | None = None,
    batch_size: int | None = None,
) -> DefenseDiagnosis:
    """Diagnose the defense on ``inputs`` (N x C x H x W, the model's input space, any device).

    target: ``None`` (each image's top class), an int or N ints.  game, lr, lam, reference,
    normalization, seed, stop, start: as for :class:`~retina_fgvis.fgvis.FGVis` (defaults: the
    paper's medical protocol, deletion with ``lr = 0.25``, ``lam = 1e-10``, ``ScoreBelow(0.10)``);
    ``stop=None`` never stops.  steps: the step counts ``k`` measured (0 = the start mask).
    batch_size: images per batch (default as the engine: all on CUDA, about 2**20 input values on
    the CPU).  The model runs in its own precision (no autocast), in eval mode with frozen
    parameters, and is left as it was.

    Returns a :class:`DefenseDiagnosis` (CPU tensors; ``summary()``, ``to_frame()``, ``findings()``).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    spec = game_spec(game)
    normalization = check_normalization(normalization)
    inputs = check_model_inputs(model, inputs, normalization)
    n, device = inputs.shape[0], inputs.device
    targets = check_target(target, n, device)
    lr = check_number("lr", lr, minimum=0, exclusive_minimum=True)
    lam = check_number("lam", lam, minimum=0)
    measured = _check_steps(steps)
    stop = check_stop(stop)
    rule = stop if stop is not None else FixedSteps(1)
    early = rule.early and spec.stops_early
    start = check_start(start)
    check_int("seed", seed)
    batch_size = check_int("batch_size", batch_size, minimum=1, allow_none=True) or default_rows(inputs, n)
    r_all = make_reference(reference, inputs, normalization=normalization, seed=seed + 1)
    precision = Precision(device.type, autocast=False, channels_last=False)

    parts = []
    with model_guard(model), torch.enable_grad():
        for begin in range(0, n, batch_size):
            sl = slice(begin, begin + batch_size)
            parts.append(_diagnose_chunk(model, inputs[sl], r_all[sl], targets[sl], spec, lr, lam,
                                         measured, rule, early, seed, start, precision))
    names = parts[0]["names"]
    joined = {key: torch.cat([part[key] for part in parts]) for key in parts[0] if key != "names"}
    drop = not spec.keeps_class
    return DefenseDiagnosis(
        game=spec.name, lam=lam, stop=rule, steps=measured, call_names=names,
        target=joined["target"], score=joined["score"], margin=joined["margin"],
        margin_limit=float(margin_limit(lam)), reference_score=joined["reference_score"],
        reference_blocks_stop=joined["reference_meets"].logical_not() & drop,
        inside=joined["inside"], cosine=joined["cosine"], norm_ratio=joined["norm_ratio"],
        step_score=joined["step_score"], stopped=joined["stopped"])


def _diagnose_chunk(model, x, r, target, spec, lr, lam, measured, rule, early, seed, start, precision) -> dict:
    n = len(x)
    local = torch.arange(n, device=x.device)
    clean = clean_pass(model, x, local, target, precision, defense=True, names=True)
    with torch.no_grad():
        probs_r = torch.softmax(check_logits(model(r.contiguous()), n).float(), 1)
    reference_score = probs_r.gather(1, clean.target[:, None])[:, 0]
    rows = ActiveRows.start(x.contiguous(), r.contiguous(), clean, local,
                            torch.full((n,), lam, dtype=torch.float64, device=x.device), spec, seed, precision, start)
    inside, cosine, ratio, score, stopped = [], [], [], [], []
    for k in range(measured[-1] + 1):
        if k in measured:
            grad, log_probs, logits, shares = loss_gradient(model, rows, spec.keeps_class, precision, inside=True)
            plain, *_ = loss_gradient(model, rows, spec.keeps_class, precision, defended=False)
            cos, rat = _cosine_and_ratio(grad, plain)
            probs = log_probs.exp()
            inside.append(torch.stack(shares, 1))
            cosine.append(cos)
            ratio.append(rat)
            score.append(probs.gather(1, rows.target[:, None])[:, 0])
            stopped.append(rows.done | (rule(probs, rows.target, rows.initial_score, spec.keeps_class) & early))
            if k == measured[-1]:
                break
        else:
            grad, log_probs, logits, _ = loss_gradient(model, rows, spec.keeps_class, precision)
        apply_update(rows, grad, log_probs, logits, lr, rule, spec.keeps_class, early)
        rows.check_finite()
    cpu = {
        "target": clean.target, "score": clean.initial_score, "margin": clean.margin,
        "reference_score": reference_score,
        "reference_meets": rule(probs_r, clean.target, clean.initial_score, spec.keeps_class),
        "inside": torch.stack(inside, 1), "cosine": torch.stack(cosine, 1), "norm_ratio": torch.stack(ratio, 1),
        "step_score": torch.stack(score, 1), "stopped": torch.stack(stopped, 1),
    }
    out = {key: value.detach().cpu() for key, value in cpu.items()}
    out["names"] = list(clean.filt.names)
    return out

