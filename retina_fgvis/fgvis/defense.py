"""The FGVis adversarial defense: a backward-only filter after every nonlinearity call.

Wagner et al. (CVPR 2019, Sec. 3.2, Eq. 4-6) require every neuron to respond to the
explanation ``e`` no more strongly than, and in the same direction as, it responded to the
clean image ``x``.  With ``h`` the output of a nonlinearity call, the bounds come from one
clean forward pass of ``x``::

    b_u = max(0, h(x)),   b_l = min(0, h(x))                     (Eq. 4)

The forward pass is left unchanged (the clamp of Eq. 5 would alter the model); only the
gradient flowing back through ``h`` is masked (Eq. 6)::

    gamma = gamma_bar * 1[h(e) <= b_u] * 1[h(e) >= b_l]

How the calls are found: a :class:`torch.overrides.TorchFunctionMode` sees every torch
function call made inside the model's forward, whether it comes from a module
(``nn.ReLU``, ``nn.ReLU6`` -> ``F.hardtanh``, ``nn.LeakyReLU``), a functional call
(torchvision GoogLeNet's ``F.relu``), a tensor method (``x.relu()``) or an in-place variant.
Every call is a separate site, so a module that runs several times per forward (ResNet's
shared ``relu``) gets separate bounds per call.  Call order is deterministic for a given
model and input shape, so call ``i`` of the clean pass pairs with call ``i`` of each
optimisation pass.  Pooling is not treated as a nonlinearity.

Two constructions of the same filter, sharing the indicator :func:`inside_bounds`:

* eager (``apply()``): a tensor gradient hook on ``h(e)``.  It lives on the autograd graph, not
  on the model, so nothing is left behind on the user's model; in-place operations after the
  call, and code that discards the return value of an in-place call, are filtered too.
* graph (``apply(graph=True)``): the call's output is replaced by ``MaskedGradient(h, keep)``,
  an autograd function that is the identity forward and multiplies the gradient by ``keep``
  backward.  It has no hooks, so ``torch.compile`` captures it (also under ``torch.func``), with
  the clean activations as graph inputs.  It filters the value the call returns.  Eager autograd
  forbids in-place operations on the output of a custom function that returns a view of its input,
  so this construction runs under ``torch.func.grad`` (the compiled step, ``loop.functional_step``),
  where they are allowed; the eager step keeps the hooks.

The hook multiplies the gradient with respect to ``h``; the autograd function does the same at
the same place, so both give the same numbers.
"""
from __future__ import annotations

import contextlib
import sys
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

# Element-wise nonlinearities whose output is filtered.  Nested calls (F.relu6 ->
# hardtanh) are not seen twice: a mode is disabled while its handler runs.
_FUNCTIONS = (
    F.relu, F.relu_, F.relu6, F.leaky_relu, F.leaky_relu_, F.hardtanh, F.hardtanh_,
    F.elu, F.elu_, F.selu, F.celu, F.gelu, F.silu, F.mish, F.hardswish, F.hardsigmoid,
    F.softplus, F.sigmoid, F.tanh, F.prelu, F.rrelu, F.logsigmoid, F.softsign,
    torch.relu, torch.relu_, torch.sigmoid, torch.sigmoid_, torch.tanh, torch.tanh_,
    torch.selu, torch.celu, torch.prelu, torch.rrelu,
    torch.Tensor.relu, torch.Tensor.relu_, torch.Tensor.sigmoid, torch.Tensor.sigmoid_,
    torch.Tensor.tanh, torch.Tensor.tanh_,
)
NONLINEARITIES: frozenset = frozenset(_FUNCTIONS)
"""The torch functions treated as nonlinearities (module activations dispatch to these)."""



def inside_bounds(h: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """``1[b_l <= h(e) <= b_u]`` with ``b_l = min(0, h(x))``, ``b_u = max(0, h(x))`` (Eq. 4, 6).

    ``h``: the call's output on the explanation, ``clean``: on the clean image, same shape; bool.
    """
    return (h >= clean.clamp(max=0)) & (h <= clean.clamp(min=0))


class MaskedGradient(torch.autograd.Function):
    """``MaskedGradient.apply(h, keep)``: identity forward, ``grad * keep`` backward (Eq. 6)."""

    @staticmethod
    def forward(h: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        return h.view_as(h)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(inputs[1])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (keep,) = ctx.saved_tensors
        return grad * keep, None


def _call_site(func, modules: dict[int, str]) -> str:
    """``"<module name> (<function>)"`` of the innermost module whose ``forward`` made the call."""
    frame = sys._getframe(2)
    while frame is not None:
        name = modules.get(id(frame.f_locals.get("self")))
        if name is not None:
            return f"{name or '<model>'} ({func.__name__})"
        frame = frame.f_back
    return func.__name__


class _Recorder(TorchFunctionMode):
    """Stores a copy of every nonlinearity output (and where the call was made) of the clean pass."""

    def __init__(self, clean: list[torch.Tensor], names: list[str], modules: dict[int, str] | None):
        super().__init__()
        self._clean, self._names, self._modules = clean, names, modules

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in NONLINEARITIES and isinstance(out, torch.Tensor):
            # A copy: an in-place op later in the forward may overwrite the activation.
            self._clean.append(out.detach().clone())
            self._names.append(_call_site(func, self._modules) if self._modules is not None else func.__name__)
        return out


class FilterMode(TorchFunctionMode):
    """Filters the gradient of every nonlinearity call made while it is active (Eq. 6).

    clean: ``h_i(x)`` per call, in call order (R x ... each).  graph: the autograd-function
    construction instead of tensor hooks.  inside: also store, per call, the share of each row's
    units inside their bounds (``shares``, a list of R float tensors).  After the forward,
    ``calls`` (seen) and ``filtered`` (of which needed a gradient) count the calls; :meth:`check`
    raises if they do not match the clean pass.
    """

    def __init__(self, clean: list[torch.Tensor], graph: bool = False, inside: bool = False):
        super().__init__()
        self.clean, self.graph = clean, graph
        self.shares: list[torch.Tensor] | None = [] if inside else None
        self.calls = self.filtered = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func not in NONLINEARITIES or not isinstance(out, torch.Tensor):
            return out
        if self.calls >= len(self.clean):
            raise RuntimeError(
                f"defense: the model made more nonlinearity calls than the {len(self.clean)} "
                "of the clean pass; its control flow depends on the input")
        hx = self.clean[self.calls]
        if hx.shape != out.shape:
            raise RuntimeError(
                f"defense: nonlinearity call {self.calls} has shape {tuple(out.shape)} but "
                f"{tuple(hx.shape)} in the clean pass")
        self.calls += 1
        if not self.graph and not out.requires_grad:
            return out
        # Decided now: an in-place op later in the forward may change the output.
        keep = inside_bounds(out.detach(), hx)
        if self.shares is not None:
            self.shares.append(keep.reshape(keep.shape[0], -1).float().mean(1))
        self.filtered += 1
        if self.graph:
            return MaskedGradient.apply(out, keep)
        out.register_hook(lambda grad: grad * keep)
        return out

    def check(self) -> None:
        """``RuntimeError`` unless the forward made exactly the clean pass's calls."""
        if self.calls != len(self.clean):
            raise RuntimeError(
                f"defense: the model made {self.calls} nonlinearity calls, the clean pass {len(self.clean)}")


class GradientFilter:
    """Per-call activation bounds of clean images and the backward filter built from them.

    Usage::

        filt = GradientFilter()
        with filt.record(model):         # clean pass: stores h_i(x), each N x ... (detached copy)
            logits = model(x)
        filt.names                       # where each call was made: "layer1.0.relu (relu)"
        rows = filt.select(index)        # rows R: bounds of image index[r] (e.g. images x lambdas)
        with rows.apply():               # optimisation pass on e (R x C x H x W)
            logits = model(e)            # forward unchanged; backward through h_i masked by Eq. 6
        rows.last_calls                  # nonlinearity calls seen in that pass
        rows.last_filtered               # of which filtered (those whose output needs a gradient)
        rows.last_inside                 # with apply(inside=True): per call, R shares inside bounds

    Bounds are stored as the clean output ``h(x)`` only; ``b_l = min(0, h(x))`` and
    ``b_u = max(0, h(x))`` are formed when the filter is applied.
    """

    def __init__(self, clean: list[torch.Tensor] | None = None, names: list[str] | None = None):
        self.clean: list[torch.Tensor] = clean if clean is not None else []
        self.names: list[str] = names if names is not None else []
        self.last_calls = 0
        self.last_filtered = 0
        self.last_inside: list[torch.Tensor] = []

    def __len__(self) -> int:
        return len(self.clean)

    @contextlib.contextmanager
    def record(self, model: nn.Module | None = None) -> Iterator["GradientFilter"]:
        """Record ``h(x)`` of every nonlinearity call of the forward run inside the block.

        With ``model``, ``names`` holds the module (as in ``model.named_modules()``) whose forward
        made each call and the function called; without, the function only.
        """
        self.clean, self.names = [], []
        modules = None if model is None else {id(module): name for name, module in model.named_modules()}
        with _Recorder(self.clean, self.names, modules):
            yield self

    def select(self, index: torch.Tensor) -> "GradientFilter":
        """Bounds for rows ``index`` (long, R): row r uses the clean image ``index[r]``."""
        return GradientFilter([h.index_select(0, index) for h in self.clean], self.names)

    @contextlib.contextmanager
    def apply(self, graph: bool = False, inside: bool = False) -> Iterator["GradientFilter"]:
        """Filter the gradient of every nonlinearity call inside the block (Eq. 6).

        ``graph``: the autograd-function construction (see the module docstring).  ``inside``:
        store the share of units inside their bounds per call in ``last_inside``.  Raises
        ``RuntimeError`` if the calls do not line up with the recorded ones (a model whose control
        flow depends on its input).
        """
        mode = FilterMode(self.clean, graph=graph, inside=inside)
        with mode:
            yield self
        mode.check()
        self.last_calls, self.last_filtered = mode.calls, mode.filtered
        self.last_inside = mode.shares or []
