"""FGVis: fine-grained visual explanations by mask optimisation (Wagner et al., CVPR 2019).

For an input ``x`` (N x C x H x W, the model's normalised input space) FGVis optimises a
mask ``m`` in [0, 1]^{N x C x H x W} -- one value per pixel and channel -- and forms the
explanation with the removal operator (Eq. 1/7)::

    e = x * m + (1 - m) * r                      (r: reference, see ``references.py``)

With ``y_e = softmax(model(e))`` and target class ``c_T`` the four games are two objectives
times two starting points (Sec. A2, A3.5)::

    game          loss L(m)                              start m ~
    preservation  -log y_e[c_T] + lam * ||m||_1          U(0.99, 1)
    generation    -log y_e[c_T] + lam * ||m||_1          U(0, 0.01)
    deletion       y_e[c_T]     + lam * ||1 - m||_1      U(0.99, 1)
    repression     y_e[c_T]     + lam * ||1 - m||_1      U(0, 0.01)

Optimiser: plain SGD whose gradient is normalised per image by its largest magnitude, then
a clamp to the box::

    g = dL/dm / max|dL/dm|        (max over C x H x W of that image; g = 0 if the gradient is 0)
    m <- clip(m - lr * g, 0, 1)

With ``defense=True`` the gradient through every nonlinearity call is filtered (Eq. 6, see
``defense.py``); the forward pass and every reported probability are the unmodified model's.
"""
from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
from torch import nn

from retina_fgvis.checks import check_int, check_number
from retina_fgvis.fgvis.fold import FoldedModel
from retina_fgvis.fgvis.games import GAMES, Game, check_start, game_spec, initial_mask
from retina_fgvis.fgvis.loop import (ActiveRows, Precision, clean_pass, compile_step, eager_step, final_evaluation,
                                     functional_step, rows_step)
from retina_fgvis.fgvis.objective import MARGIN_FACTOR, margin_limit
from retina_fgvis.fgvis.references import REFERENCES, check_normalization, make_reference
from retina_fgvis.fgvis.search import check_grid, lambda_grid, search_batched, search_sequential
from retina_fgvis.fgvis.stops import ClassShift, FixedSteps, StopRule, check_stop
from retina_fgvis.fgvis.targets import check_target
from retina_fgvis.runtime import progress_bar

__all__ = ["FGVis", "FGVisResult", "GAMES", "Game", "initial_mask", "model_guard", "check_inputs",
           "MarginWarning", "default_rows", "check_model_inputs"]

# Default CPU chunk: rows totalling about this many input values.  CPU kernels gain nothing from
# larger batches, while buffers above glibc's mmap threshold (32 MB) cost page faults every step.
_CPU_CHUNK_VALUES = 2**20
# Default CUDA chunk: this share of the free memory, at the measured peak of one row's eager step
# (a compiled step needs less; the rest is headroom for the allocator and CUDA-graph pools).
_CUDA_MEMORY_SHARE = 0.7


class MarginWarning(UserWarning):
    """The target's logit margin is so large that the drop objective has no gradient left against lambda."""


@dataclass
class FGVisResult:
    """Explanations of N images, every tensor on the inputs' device.

    mask:          N x C x H x W in [0, 1], the optimised mask ``m``.
    mean_mask:     N x 1 x H x W, channel mean of ``m``.
    importance:    N x 1 x H x W in [0, 1], high = important: ``1 - mean_mask`` for deletion and
                   repression (removed evidence), ``mean_mask`` for preservation and generation.
    explanation:   N x C x H x W, ``e = x*m + (1-m)*r`` in the model's input space.
    target:        N long, the explained class ``c_T``.
    score:         N, softmax probability of ``c_T`` on the explanation.
    initial_score: N, softmax probability of ``c_T`` on the clean input.
    iterations:    N long, number of SGD updates applied.
    lam:           N float64, the lambda used (the accepted one after a line search).
    success:       N bool, the stop rule holds on the final explanation (always True without one).
    top_class:     N long, top-1 class of the explanation.
    """

    mask: torch.Tensor
    mean_mask: torch.Tensor
    importance: torch.Tensor
    explanation: torch.Tensor
    target: torch.Tensor
    score: torch.Tensor
    initial_score: torch.Tensor
    iterations: torch.Tensor
    lam: torch.Tensor
    success: torch.Tensor
    top_class: torch.Tensor


@contextlib.contextmanager
def model_guard(model: nn.Module, channels_last: bool = False) -> Iterator[nn.Module]:
    """Run ``model`` in eval mode with frozen parameters; restore everything on exit, also on error.

    Restores every module's training flag, every parameter's ``requires_grad`` and (when
    ``channels_last`` converted it) every parameter's and buffer's original tensor.
    """
    modes = [(module, module.training) for module in model.modules()]
    params = list(model.parameters())
    grads = [p.requires_grad for p in params]
    tensors = params + list(model.buffers())
    data = [t.data for t in tensors] if channels_last else []
    try:
        model.eval()
        for p in params:
            p.requires_grad_(False)
        if channels_last:
            model.to(memory_format=torch.channels_last)
        yield model
    finally:
        for t, original in zip(tensors, data):
            t.data = original
        for p, flag in zip(params, grads):
            p.requires_grad_(flag)
        for module, training in modes:
            module.training = training


def check_inputs(inputs) -> None:
    """``inputs`` must be a non-empty, finite, floating-point N x C x H x W tensor."""
    if not isinstance(inputs, torch.Tensor):
        raise TypeError(f"inputs: expected a torch.Tensor N x C x H x W, got {type(inputs).__name__}")
    if inputs.dim() != 4:
        raise ValueError(f"inputs: expected rank 4 (N x C x H x W), got shape {tuple(inputs.shape)}")
    if not inputs.is_floating_point():
        raise TypeError(f"inputs: expected a floating-point tensor, got {inputs.dtype}")
    if inputs.shape[0] == 0:
        raise ValueError("inputs: the batch is empty")
    if not torch.isfinite(inputs).all():
        raise ValueError("inputs: contain NaN or infinite values")


def check_model_inputs(model: nn.Module, inputs, normalization=None) -> torch.Tensor:
    """:func:`check_inputs` plus what the mask optimisation needs of ``inputs`` and ``model``.

    float32 or float64 inputs of the model's parameter dtype and device, with the channels of its
    first convolution and of ``normalization``.  Returns the inputs detached (an inference tensor
    cloned).  Errors name ``inputs`` or ``normalization``.
    """
    check_inputs(inputs)
    if inputs.dtype in (torch.float16, torch.bfloat16):
        raise TypeError(f"inputs: {inputs.dtype} is too coarse for the mask updates; pass float32 or float64 "
                        "inputs (autocast=True runs the model in bfloat16)")
    param = next(model.parameters(), None)
    if param is not None and param.is_floating_point() and param.dtype != inputs.dtype:
        raise TypeError(f"inputs: are {inputs.dtype} but the model's parameters {param.dtype}; convert one of them")
    first_conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if first_conv is not None and inputs.shape[1] != first_conv.in_channels:
        raise ValueError(f"inputs: have {inputs.shape[1]} channels, the model expects {first_conv.in_channels}")
    if normalization is not None and len(normalization[0]) != inputs.shape[1]:
        raise ValueError(f"normalization: has {len(normalization[0])} channels, the inputs {inputs.shape[1]}")
    if param is not None and param.device != inputs.device:
        raise ValueError(f"inputs: are on {inputs.device}, the model on {param.device}")
    return inputs.detach().clone() if inputs.is_inference() else inputs.detach()


def _positive(name: str, value, *, integer: bool = False, allow_none: bool = False):
    if integer:
        return check_int(name, value, minimum=1, allow_none=allow_none)
    return check_number(name, value, minimum=0, exclusive_minimum=True, allow_none=allow_none)


class FGVis:
    """FGVis explainer with a Captum-style ``attribute`` verb.

    Args:
        model: ``nn.Module`` mapping N x C x H x W (normalised) to logits N x K.  Left exactly as
            it was: it runs in eval mode with frozen parameters inside ``attribute`` only.
        game: ``"deletion"`` (default), ``"preservation"``, ``"generation"`` or ``"repression"``.
        defense: filter the gradient of every nonlinearity call (Eq. 6).  Raises ``ValueError``
            during ``attribute`` if the model makes no nonlinearity call.
        reference: ``"zero"`` (zero in normalised space), ``"black"`` (pixel black, needs
            ``normalization``), ``"noise"``, ``"blur"`` or a tensor, see ``references.py``.
        lr: SGD learning rate (> 0).  max_iter: SGD steps (>= 1) unless stopped earlier.
        normalization: ``(mean, std)`` per channel of images scaled to [0, 1].
        noise_std: std of the noise reference in [0, 1] pixel units (8/255 = sigma_n 8).
        blur_sigma: std in pixels of the blur reference.
        batch_size: most rows (image x lambda pairs) optimised at once; ``None`` = on CUDA as many
            rows as fit in 70 % of the free memory at the measured peak of one row's step, on the CPU
            chunks of about 2**20 input values (one 512 px image, six at 224 px).
        seed: seeds the uniform start of ``m`` (``initial_mask(game, shape, seed)``) and the noise
            reference (``make_reference("noise", ..., seed=seed + 1)``); both depend only on the
            seed and the image shape, so an image gets the same result in any batch.
        progress: show a rich progress bar over the rows.
        autocast: bf16 autocast of the model; ``None`` = on for CUDA inputs.  Scores are then
            bf16-model scores too.
        channels_last: channels-last memory format; ``None`` = on for CUDA inputs.  Also faster
            on the CPU, but off there by default: a model that calls ``.view`` on feature maps
            fails with it.
        compile: ``torch.compile`` the whole optimisation step (forward, loss, ``dL/dm`` through the
            autograd-function defense, update, clamp, stop check) into one graph.  Finished rows
            are then frozen, not dropped, and a chunk's rows are padded to a power of two (at most
            ``batch_size``), so each chunk size compiles once.
        fold_batchnorm: explain a private copy of the model with the eval-mode batch norms that
            follow a convolution folded into it (exact up to round-off, see ``fold.py``; the
            model itself is untouched); ``None`` = on for CUDA inputs.
        cuda_graphs: capture the compiled step in CUDA graphs (``mode="reduce-overhead"``);
            ``None`` = on for CUDA inputs when ``compile`` is set.
        check_every: early stopping checks ``done.all()`` on the host every this many steps
            (finished images are frozen on device in between).
    """

    def __init__(
        self,
        model: nn.Module,
        game: str = "deletion",
        defense: bool = True,
        reference: str | torch.Tensor = "zero",
        lr: float = 0.1,
        max_iter: int = 500,
        normalization: tuple[Sequence[float], Sequence[float]] | None = None,
        noise_std: float = 8 / 255,
        blur_sigma: float = 5.0,
        batch_size: int | None = None,
        seed: int = 0,
        progress: bool = False,
        autocast: bool | None = None,
        channels_last: bool | None = None,
        compile: bool = False,
        cuda_graphs: bool | None = None,
        fold_batchnorm: bool | None = None,
        check_every: int = 10,
        start: tuple[float, float] | None = None,
    ):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
        self.spec: Game = game_spec(game)
        if not isinstance(reference, torch.Tensor) and reference not in REFERENCES:
            raise ValueError(f"reference: {reference!r} is not one of {REFERENCES} or a tensor")
        self.normalization = check_normalization(normalization)
        if isinstance(reference, str) and reference == "black" and self.normalization is None:
            raise ValueError("normalization: reference='black' needs normalization=(mean, std)")
        check_int("seed", seed)
        self.model = model
        self.game = self.spec.name
        self.defense = bool(defense)
        self.reference = reference
        self.lr = float(_positive("lr", lr))
        self.max_iter = _positive("max_iter", max_iter, integer=True)
        self.noise_std = float(_positive("noise_std", noise_std))
        self.blur_sigma = float(_positive("blur_sigma", blur_sigma))
        self.batch_size = _positive("batch_size", batch_size, integer=True, allow_none=True)
        self.check_every = _positive("check_every", check_every, integer=True)
        self.seed = seed
        self.start = check_start(start)
        self.progress = bool(progress)
        self.autocast = autocast
        self.channels_last = channels_last
        self.compile = bool(compile)
        self.cuda_graphs = cuda_graphs
        self.fold_batchnorm = fold_batchnorm
        self._folded = FoldedModel()
        self._compiled: dict[tuple, Callable] = {}

    # ------------------------------------------------------------------ public verb
    def attribute(
        self,
        inputs: torch.Tensor,
        target: int | Sequence[int] | torch.Tensor | None = None,
        lam: float | Sequence[float] | torch.Tensor | str = 1e-10,
        lam_grid: Sequence[float] | None = None,
        search: str = "sequential",
        stop: StopRule | None = None,
    ) -> FGVisResult:
        """Explain ``inputs`` (N x C x H x W float, model input space, any device).

        target: ``None`` = each image's top class on the clean input; an int; or N ints.
        lam: the sparsity weight: a float >= 0, N floats, or ``"search"`` for the line search
            over ``lam_grid`` (default ``lambda_grid(1e-4, 1e-10, 13)``, tried largest first).
        search: ``"sequential"`` (one lambda at a time, only over images not accepted yet) or
            ``"batched"`` (all images x lambdas as rows); both pick the same lambda.
        stop: ``None`` = ``max_iter`` steps (line search: ``ClassShift()``), or a
            :class:`StopRule` evaluated per image.

        Returns an :class:`FGVisResult` on the inputs' device.  Warns (:class:`MarginWarning`, once)
        when rows of the deletion game start with a target-logit margin above
        :func:`~retina_fgvis.fgvis.objective.margin_limit` of their lambda.
        """
        inputs = self._check_inputs(inputs)
        n, device = inputs.shape[0], inputs.device
        stop = check_stop(stop)
        targets = check_target(target, n, device)
        if search not in ("sequential", "batched"):
            raise ValueError(f"search: {search!r} is not 'sequential' or 'batched'")
        searching = isinstance(lam, str)
        if searching:
            if lam != "search":
                raise ValueError(f"lam: {lam!r} is not a number, a sequence of numbers or 'search'")
            grid = check_grid(lambda_grid() if lam_grid is None else lam_grid)
            stop = stop if stop is not None else ClassShift()
        else:
            lams = self._check_lam(lam, n, device)
        reference = make_reference(
            self.reference, inputs, normalization=self.normalization,
            noise_std=self.noise_std, blur_sigma=self.blur_sigma, seed=self.seed + 1)
        # Margin warning: rows over the limit, rows checked; a search checks its smallest lambda only.
        self._margin_rows, self._margin_lam = [0, 0], min(grid) if searching else math.inf

        cuda = device.type == "cuda"
        channels_last = self.channels_last if self.channels_last is not None else cuda
        model = self._explained_model(cuda, channels_last)

        def run(row_image: torch.Tensor, row_lam: torch.Tensor) -> dict[str, torch.Tensor]:
            return self._run(model, inputs, reference, row_image, targets[row_image], row_lam, stop)

        with model_guard(self.model, channels_last=channels_last), torch.enable_grad():
            if not searching:
                rows = run(torch.arange(n, device=device), lams)
                rows["lam"] = lams
            elif search == "sequential":
                rows = search_sequential(run, n, grid, device)
            else:
                rows = search_batched(run, n, grid, device)
        self._warn_margin()
        mask = rows["mask"]
        mean_mask = mask.mean(1, keepdim=True)
        return FGVisResult(
            mask=mask, mean_mask=mean_mask, importance=mean_mask if self.spec.keeps_class else 1 - mean_mask,
            explanation=rows["explanation"], target=rows["target"], score=rows["score"],
            initial_score=rows["initial_score"], iterations=rows["iterations"], lam=rows["lam"],
            success=rows["success"], top_class=rows["top_class"])

    # ------------------------------------------------------------------ validation
    def _check_inputs(self, inputs) -> torch.Tensor:
        return check_model_inputs(self.model, inputs, self.normalization)

    @staticmethod
    def _check_lam(lam, n: int, device) -> torch.Tensor:
        if isinstance(lam, bool):
            raise TypeError("lam: expected a number, N numbers or 'search'")
        try:
            values = torch.as_tensor(lam, dtype=torch.float64).reshape(-1)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"lam: expected a number, {n} numbers or 'search', got {lam!r}") from None
        if values.numel() == 1:
            values = values.expand(n)
        if values.numel() != n:
            raise ValueError(f"lam: has {values.numel()} entries for {n} images")
        if not torch.isfinite(values).all() or (values < 0).any():
            raise ValueError(f"lam: must be finite and >= 0, got {lam!r}")
        return values.to(device).clone()

    def _warn_margin(self) -> None:
        over, checked = self._margin_rows
        if over:
            warnings.warn(
                f"{over} of {checked} rows start with a target-logit margin above the limit of their lambda "
                f"(exp(-margin) < {MARGIN_FACTOR:g} * lambda): the {self.game} loss has effectively no gradient "
                "left against the sparsity term, so these rows rarely meet a score stop; use a smaller lambda "
                "(e.g. 0) or a less over-confident model", MarginWarning, stacklevel=3)

    # ------------------------------------------------------------------ optimisation
    def _precision(self, device: torch.device) -> Precision:
        cuda = device.type == "cuda"
        return Precision(device.type,
                         autocast=self.autocast if self.autocast is not None else cuda,
                         channels_last=self.channels_last if self.channels_last is not None else cuda,
                         cache_autocast=not self._cuda_graphs(device))

    def _cuda_graphs(self, device: torch.device) -> bool:
        if not self.compile or device.type != "cuda":
            return False
        return self.cuda_graphs is None or bool(self.cuda_graphs)

    def _stepper(self, model: nn.Module, rule: StopRule, early: bool, precision: Precision,
                 device: torch.device) -> Callable[[ActiveRows], None]:
        """The step of every active row: eager, or the compiled functional step (one per settings)."""
        if not self.compile:
            return eager_step(model, self.spec, self.lr, rule, early, precision)
        graphs = self._cuda_graphs(device)
        key = (model, rule, early, precision, graphs)
        if key not in self._compiled:
            self._compiled[key] = compile_step(functional_step(model, self.spec, self.lr, rule, early, precision),
                                               cuda_graphs=graphs)
        return rows_step(self._compiled[key], cuda_graphs=graphs)

    def _explained_model(self, cuda: bool, channels_last: bool) -> nn.Module:
        """The model the optimisation runs: the user's, or its folded private copy."""
        fold = self.fold_batchnorm if self.fold_batchnorm is not None else cuda
        return self._folded.get(self.model, channels_last) if fold else self.model

    def _run(self, model, inputs, reference, row_image, row_target, row_lam, stop) -> dict[str, torch.Tensor]:
        """Optimise rows (image ``row_image[r]`` with ``row_lam[r]``) in chunks of ``batch_size``."""
        total = len(row_image)
        size = self.batch_size
        if size is None and inputs.device.type == "cuda":
            first = row_image[:1]
            size = self._cuda_rows(model, inputs[first], reference[first], row_target[:1], row_lam[:1], total)
        elif size is None:
            size = default_rows(inputs, total)
        chunks = []
        bar = progress_bar(transient=True) if self.progress else contextlib.nullcontext()
        with bar:
            task = bar.add_task(f"FGVis {self.game}", total=total, status="") if self.progress else None
            for begin in range(0, total, size):
                sl = slice(begin, begin + size)
                images, local = torch.unique(row_image[sl], return_inverse=True)
                chunks.append(self._optimise(
                    model, inputs[images], reference[images], local, row_target[sl], row_lam[sl], stop, size))
                if self.progress:
                    bar.update(task, advance=len(local))
        return {key: torch.cat([c[key] for c in chunks]) for key in chunks[0]}

    def _cuda_rows(self, model, x, r, target, lam, total: int) -> int:
        """Rows per CUDA chunk from free memory: ``_CUDA_MEMORY_SHARE`` of it over the measured peak
        memory of one eager step of the one row ``x`` (1 x C x H x W) with its reference ``r``."""
        device = x.device
        precision = self._precision(device)
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        local = torch.zeros(1, dtype=torch.long, device=device)
        clean = clean_pass(model, x, local, target, precision, self.defense)
        fmt = precision.memory_format
        rows = ActiveRows.start(x.contiguous(memory_format=fmt), r.contiguous(memory_format=fmt), clean, local, lam,
                                self.spec, self.seed, precision, self.start)
        eager_step(model, self.spec, self.lr, FixedSteps(1), False, precision)(rows)
        torch.cuda.synchronize(device)
        per_row = max(1, torch.cuda.max_memory_allocated(device) - before)
        del rows, clean
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        free = torch.cuda.mem_get_info(device)[0] + cached
        return max(1, min(total, int(_CUDA_MEMORY_SHARE * free / per_row)))

    def _optimise(self, model, x_img, ref_img, local, target, lam, stop, size: int) -> dict[str, torch.Tensor]:
        """One chunk of at most ``size`` rows.  x_img, ref_img: n x C x H x W images; row r uses image
        ``local[r]``.

        Early-stopped rows are frozen on the device (no host sync); every ``check_every`` steps the
        host checks that every value is finite and whether all rows are done, and drops the
        finished ones from the batch (compiled: pads the rows once and keeps finished ones frozen).
        """
        precision = self._precision(x_img.device)
        rule = stop if stop is not None else FixedSteps(self.max_iter)
        steps = rule.steps if isinstance(rule, FixedSteps) else self.max_iter
        early = rule.early and self.spec.stops_early

        clean = clean_pass(model, x_img, local, target, precision, self.defense)
        self._count_margins(clean.margin, lam)
        fmt = precision.memory_format
        x = x_img[local].contiguous(memory_format=fmt)
        r = ref_img[local].contiguous(memory_format=fmt)
        rows = ActiveRows.start(x, r, clean, local, lam, self.spec, self.seed, precision, self.start)
        real = len(rows)
        out_mask = torch.empty_like(rows.m)
        out_iters = torch.zeros(real, dtype=torch.long, device=x.device)

        def retire(finished: torch.Tensor) -> None:
            out_mask[rows.index[finished]] = rows.m[finished].detach()
            out_iters[rows.index[finished]] = rows.iters[finished]

        step = self._stepper(model, rule, early, precision, x.device)
        if self.compile:
            rows = rows.padded(min(size, 1 << (real - 1).bit_length()))
        for i in range(steps):
            step(rows)
            if (i + 1) % self.check_every:
                continue
            rows.check_finite()
            if not early:
                continue
            if self.compile:  # fixed shapes: finished rows stay frozen in the batch
                if bool(rows.done.all()):
                    break
                continue
            finished = int(rows.done.sum())  # with check_finite, the loop's host syncs
            if finished == len(rows):
                break
            if finished:
                retire(rows.done.nonzero()[:, 0])
                rows = rows.select((~rows.done).nonzero()[:, 0])
        else:
            rows.check_finite()
        retire(torch.arange(real if self.compile else len(rows), device=x.device))
        result = final_evaluation(model, x, r, out_mask, clean.target, clean.initial_score, rule,
                                  self.spec.keeps_class, precision)
        result["iterations"] = out_iters
        return result

    def _count_margins(self, margin: torch.Tensor, lam: torch.Tensor) -> None:
        """Count rows whose clean margin exceeds :func:`margin_limit` (games that drop the class from
        e ~ x: the clean margin is the start's)."""
        if self.spec.keeps_class or not self.spec.starts_at_image:
            return
        lam = lam.detach().double().cpu()
        checked = lam <= self._margin_lam
        over = (margin.detach().double().cpu() > margin_limit(lam)) & checked
        self._margin_rows[0] += int(over.sum())
        self._margin_rows[1] += int(checked.sum())


def default_rows(inputs: torch.Tensor, total: int) -> int:
    """Rows per chunk when ``batch_size`` is not given: all on CUDA, about 2**20 input values on the CPU."""
    if inputs.device.type == "cuda":
        return total
    return max(1, _CPU_CHUNK_VALUES // inputs[0].numel())
