"""The pieces of one chunk's optimisation: the clean pass, the active-rows state, the step, the final
evaluation.  :class:`~retina_fgvis.fgvis.engine.FGVis` assembles them; the defense diagnostic
(``diagnose.py``) uses the same pieces, so there is one copy of the maths (``objective.py``).

A chunk holds n images and R rows (row r optimises image ``local[r]`` with ``lam[r]``)::

    clean = clean_pass(...)            # h(x) bounds, classes, initial scores, margins
    rows = ActiveRows.start(...)       # m ~ U(a, b), per-row tensors that are frozen/compacted together
    step = eager_step(...)             # one SGD update of every active row, in place on ``rows``
    for i in range(steps):
        step(rows)                     # done rows are frozen on the device, no host sync
        ...                            # every check_every steps: rows.check_finite(), rows.select(...)
    final_evaluation(...)              # scores of the final explanations (unmodified model)
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, fields
from typing import Callable

import torch
from torch import nn

from retina_fgvis.fgvis.defense import GradientFilter
from retina_fgvis.fgvis.games import Game, initial_mask
from retina_fgvis.fgvis.objective import explanation, game_loss, gradient_scale, logit_margin, sgd_update
from retina_fgvis.fgvis.stops import StopRule
from retina_fgvis.fgvis.targets import TOP_CLASS, check_class_range

__all__ = ["CleanPass", "ActiveRows", "Precision", "clean_pass", "loss_gradient", "update_state", "apply_update",
           "eager_step", "functional_step", "compile_step", "rows_step", "final_evaluation", "check_logits"]


@dataclass(frozen=True)
class Precision:
    """How the model runs: bf16 autocast or not, memory format of the inputs."""

    device_type: str
    autocast: bool
    channels_last: bool
    cache_autocast: bool = True  # False where a CUDA graph is captured (autocast's cache is not capturable)

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def amp(self):
        return torch.autocast(self.device_type, dtype=torch.bfloat16, enabled=self.autocast,
                              cache_enabled=self.cache_autocast)


def check_logits(logits, rows: int) -> torch.Tensor:
    """``ValueError`` naming ``model`` unless ``logits`` is a tensor R x K."""
    if not isinstance(logits, torch.Tensor):
        kind = type(logits).__name__
        raise ValueError(f"model: returned a {kind}, FGVis needs the logits tensor N x K alone "
                         "(wrap the model so that it returns only the logits)")
    if logits.dim() != 2 or logits.shape[0] != rows:
        raise ValueError(f"model: must return logits N x K, got shape {tuple(logits.shape)}")
    return logits


@dataclass
class CleanPass:
    """The clean images' forward pass, expanded to rows (R = len(local)).

    filt: the defense bounds of the n images (``None`` without defense); target: R classes, the
    clean top class where none was given; initial_score: R, ``y_x[c_T]``; margin: R, the target's
    logit margin ``z[c_T] - max_{k != c_T} z[k]``; classes: K.
    """

    filt: GradientFilter | None
    target: torch.Tensor
    initial_score: torch.Tensor
    margin: torch.Tensor
    classes: int


def clean_pass(model: nn.Module, x_img: torch.Tensor, local: torch.Tensor, target: torch.Tensor,
               precision: Precision, defense: bool, names: bool = False) -> CleanPass:
    """One no-grad pass of the n clean images: bounds of the defense, classes, scores, margins.

    ``target`` (R long) may hold :data:`~retina_fgvis.fgvis.targets.TOP_CLASS`.  ``names``: record
    where each nonlinearity call is made (``filt.names``).  Raises ``ValueError`` naming ``model``
    (not logits, non-finite logits), ``defense`` (no nonlinearity call) or ``target`` (>= K).
    """
    filt = GradientFilter() if defense else None
    record = filt.record(model if names else None) if filt is not None else contextlib.nullcontext()
    with torch.no_grad(), precision.amp(), record:
        logits = model(x_img.contiguous(memory_format=precision.memory_format))
    logits = check_logits(logits, len(x_img))
    if not torch.isfinite(logits).all():
        raise ValueError("model: returned non-finite logits (NaN or inf) on the clean inputs")
    if filt is not None and len(filt) == 0:
        raise ValueError("defense: the model made no nonlinearity call, nothing to defend; "
                         "pass defense=False to run undefended")
    classes = logits.shape[1]
    check_class_range(target, classes)
    logits = logits.float()[local]
    clean = torch.softmax(logits, 1)
    target = torch.where(target == TOP_CLASS, clean.argmax(1), target)
    initial_score = clean.gather(1, target[:, None])[:, 0]
    return CleanPass(filt, target, initial_score, logit_margin(logits, target), classes)


@dataclass
class ActiveRows:
    """The rows still optimised and their per-row state; every field is indexed by row.

    index: position of each row in the chunk's output; m: masks R x C x H x W; diff = x - r and r;
    target, lam, initial_score; done: the stop rule has been met (the row is frozen); iters: SGD
    updates applied; nonfinite_logits / nonfinite_grad: the first step (1-based) at which the row's
    logits / gradient were not finite, 0 if never; bounds: the rows' clean activations per
    nonlinearity call (empty without defense).
    """

    index: torch.Tensor
    m: torch.Tensor
    diff: torch.Tensor
    r: torch.Tensor
    target: torch.Tensor
    lam: torch.Tensor
    initial_score: torch.Tensor
    done: torch.Tensor
    iters: torch.Tensor
    nonfinite_logits: torch.Tensor
    nonfinite_grad: torch.Tensor
    bounds: list[torch.Tensor]

    @classmethod
    def start(cls, x: torch.Tensor, r: torch.Tensor, clean: CleanPass, local: torch.Tensor, lam: torch.Tensor,
              game: Game, seed: int, precision: Precision, start: tuple[float, float] | None = None) -> "ActiveRows":
        """Rows at the game's seeded start; ``x``, ``r``: R x C x H x W in ``precision``'s memory format."""
        rows, device = len(x), x.device
        m0 = initial_mask(game, x.shape[1:], seed, start)
        m = m0.to(device=device, dtype=x.dtype).expand_as(x).contiguous(memory_format=precision.memory_format)
        bounds: list[torch.Tensor] = []
        if clean.filt is not None:
            identity = rows == len(clean.filt.clean[0]) and torch.equal(local, torch.arange(rows, device=device))
            bounds = clean.filt.clean if identity else clean.filt.select(local).clean
        zeros = torch.zeros(rows, dtype=torch.long, device=device)
        return cls(index=torch.arange(rows, device=device), m=m, diff=x - r, r=r, target=clean.target,
                   lam=lam.to(x.dtype), initial_score=clean.initial_score,
                   done=torch.zeros(rows, dtype=torch.bool, device=device), iters=zeros,
                   nonfinite_logits=zeros.clone(), nonfinite_grad=zeros.clone(), bounds=bounds)

    def __len__(self) -> int:
        return len(self.index)

    def select(self, keep: torch.Tensor) -> "ActiveRows":
        """The rows ``keep`` (long indices) with all their state."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return ActiveRows(**{name: [h.index_select(0, keep) for h in value] if name == "bounds" else value[keep]
                             for name, value in values.items()})

    def padded(self, size: int) -> "ActiveRows":
        """``size`` rows: these, then copies of row 0 that are done from the start (frozen, never
        counted).  A compiled step sees one row count per chunk size instead of one per remainder."""
        extra = size - len(self)
        if extra <= 0:
            return self
        rows = self.select(torch.cat([torch.arange(len(self)), torch.zeros(extra, dtype=torch.long)]).to(self.m.device))
        rows.done[len(self):] = True
        return rows

    def check_finite(self) -> None:
        """``ValueError`` naming ``model``, what was not finite (logits or gradient) and the first step
        at which it happened, over all rows (a host synchronisation).  Non-finite logits give a
        non-finite gradient in the same step; the logits are then named."""
        found = []
        for flags, what in ((self.nonfinite_logits, "returned non-finite logits (NaN or inf)"),
                            (self.nonfinite_grad, "gave a non-finite gradient of the loss with respect to the mask")):
            bad = flags[flags > 0]
            if len(bad):
                found.append((int(bad.min()), what, len(bad)))
        if found:
            step, what, count = min(found, key=lambda item: item[0])
            raise ValueError(f"model: {what} at optimisation step {step} "
                             f"({count} of {len(self)} rows of the chunk)")


def loss_gradient(model: nn.Module, rows: ActiveRows, keeps_class: bool, precision: Precision,
                  defended: bool = True, inside: bool = False):
    """Forward, loss and ``dL/dm`` at the rows' masks.

    Returns ``(grad, log_probs, logits, shares)``: grad R x C x H x W; log_probs R x K; logits as the
    model returned them; shares: with ``inside``, per nonlinearity call the share of each row's
    units inside their bounds (``[]`` otherwise).  ``defended=False`` computes the undefended
    gradient (the forward is the same).
    """
    m = rows.m.detach().requires_grad_(True)
    filt = GradientFilter(rows.bounds) if defended and rows.bounds else None
    with precision.amp(), (filt.apply(inside=inside) if filt is not None else contextlib.nullcontext()):
        logits = model(explanation(m, rows.diff, rows.r))
    loss, log_probs = game_loss(check_logits(logits, len(rows)), rows.target, m, rows.lam, keeps_class)
    (grad,) = torch.autograd.grad(loss.sum(), m)
    return grad, log_probs, logits, (filt.last_inside if filt is not None else [])


def update_state(m: torch.Tensor, grad: torch.Tensor, log_probs: torch.Tensor, logits: torch.Tensor,
                 done: torch.Tensor, iters: torch.Tensor, nonfinite_logits: torch.Tensor,
                 nonfinite_grad: torch.Tensor, target: torch.Tensor, initial_score: torch.Tensor, lr: float,
                 rule: StopRule, keeps_class: bool, early: bool) -> tuple[torch.Tensor, ...]:
    """The stop check, the normalised SGD update and the freeze of done rows, as new tensors.

    Returns ``(m, done, iters, nonfinite_logits, nonfinite_grad)`` (see :class:`ActiveRows`).  Pure
    tensor code without host synchronisation, shared by the eager and the compiled step.
    """
    if early:
        done = done | rule(log_probs.exp(), target, initial_score, keeps_class)
    scale = gradient_scale(grad)
    m = torch.where(done[:, None, None, None], m, sgd_update(m, grad, scale, lr))
    live = ~done
    step = iters + 1
    nonfinite_logits = torch.where(live & (nonfinite_logits == 0) & ~torch.isfinite(logits).all(1),
                                   step, nonfinite_logits)
    nonfinite_grad = torch.where(live & (nonfinite_grad == 0) & ~torch.isfinite(scale.flatten()),
                                 step, nonfinite_grad)
    return m, done, iters + live, nonfinite_logits, nonfinite_grad


@torch.no_grad()
def apply_update(rows: ActiveRows, grad: torch.Tensor, log_probs: torch.Tensor, logits: torch.Tensor,
                 lr: float, rule: StopRule, keeps_class: bool, early: bool) -> None:
    """:func:`update_state` in place on ``rows``."""
    (rows.m, rows.done, rows.iters, rows.nonfinite_logits, rows.nonfinite_grad) = update_state(
        rows.m.detach(), grad, log_probs, logits, rows.done, rows.iters, rows.nonfinite_logits,
        rows.nonfinite_grad, rows.target, rows.initial_score, lr, rule, keeps_class, early)


def eager_step(model: nn.Module, game: Game, lr: float, rule: StopRule, early: bool,
               precision: Precision) -> Callable[[ActiveRows], None]:
    """One SGD step of every active row (forward, loss, ``dL/dm``, update), in place on the rows."""

    def step(rows: ActiveRows) -> None:
        grad, log_probs, logits, _ = loss_gradient(model, rows, game.keeps_class, precision)
        apply_update(rows, grad, log_probs, logits, lr, rule, game.keeps_class, early)

    return step


_STATE = ("m", "done", "iters", "nonfinite_logits", "nonfinite_grad")
"""The per-row fields one step replaces (the outputs of :func:`functional_step`)."""


def functional_step(model: nn.Module, game: Game, lr: float, rule: StopRule, early: bool,
                    precision: Precision) -> Callable[..., tuple[torch.Tensor, ...]]:
    """One SGD step as a pure function of tensors, the function ``torch.compile`` captures whole.

    ``step(m, diff, r, target, lam, initial_score, done, iters, nonfinite_logits, nonfinite_grad,
    bounds) -> (m, done, iters, nonfinite_logits, nonfinite_grad)`` with the :class:`ActiveRows`
    fields of those names.  Same maths as :func:`eager_step`; the gradient comes from
    ``torch.func.grad`` and the defense from the autograd-function filter
    (``GradientFilter.apply(graph=True)``): no tensor hooks, no host synchronisation.
    """
    keeps_class = game.keeps_class

    def step(m, diff, r, target, lam, initial_score, done, iters, nonfinite_logits, nonfinite_grad, bounds):
        def loss_of(mask):
            filt = GradientFilter(bounds).apply(graph=True) if bounds else contextlib.nullcontext()
            with precision.amp(), filt:
                logits = model(explanation(mask, diff, r))
            loss, log_probs = game_loss(check_logits(logits, len(mask)), target, mask, lam, keeps_class)
            return loss.sum(), (log_probs, logits)

        grad, (log_probs, logits) = torch.func.grad(loss_of, has_aux=True)(m)
        return update_state(m, grad, log_probs, logits, done, iters, nonfinite_logits, nonfinite_grad,
                            target, initial_score, lr, rule, keeps_class, early)

    return step


def compile_step(step: Callable[..., tuple[torch.Tensor, ...]], cuda_graphs: bool = False):
    """``torch.compile`` of a :func:`functional_step`: one graph (``fullgraph=True``), static shapes;
    ``cuda_graphs``: captured in CUDA graphs (``mode="reduce-overhead"``)."""
    return torch.compile(step, fullgraph=True, dynamic=False, mode="reduce-overhead" if cuda_graphs else None)


def rows_step(step: Callable[..., tuple[torch.Tensor, ...]], cuda_graphs: bool = False) -> Callable[[ActiveRows], None]:
    """A :func:`functional_step` (compiled or not) applied in place on :class:`ActiveRows`.

    With ``cuda_graphs`` each call starts a new CUDA-graph step: the previous step's outputs are
    inputs of this one and are not read afterwards.
    """

    def apply(rows: ActiveRows) -> None:
        if cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        state = step(rows.m, rows.diff, rows.r, rows.target, rows.lam, rows.initial_score, rows.done, rows.iters,
                     rows.nonfinite_logits, rows.nonfinite_grad, rows.bounds)
        for name, value in zip(_STATE, state):
            setattr(rows, name, value)

    return apply


@torch.no_grad()
def final_evaluation(model: nn.Module, x: torch.Tensor, r: torch.Tensor, mask: torch.Tensor, target: torch.Tensor,
                     initial_score: torch.Tensor, rule: StopRule, keeps_class: bool,
                     precision: Precision) -> dict[str, torch.Tensor]:
    """Scores of the final explanations ``e = x*m + (1-m)*r`` (same precision as the optimisation;
    no defense needed: the forward pass is the unmodified model's)."""
    e = x * mask + (1 - mask) * r
    with precision.amp():
        logits = check_logits(model(e), len(e))
    if not torch.isfinite(logits).all():
        raise ValueError("model: returned non-finite logits (NaN or inf) on the final explanations")
    probs = torch.softmax(logits.float(), 1)
    return {
        "mask": mask.contiguous(),
        "explanation": e.contiguous(),
        "target": target,
        "score": probs.gather(1, target[:, None])[:, 0],
        "initial_score": initial_score,
        "success": rule(probs, target, initial_score, keeps_class),
        "top_class": probs.argmax(1),
    }
