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

The filter is a tensor gradient hook on ``h(e)``: it lives on the autograd graph, not on the
model, so nothing is left behind on the user's model and in-place operations after the call
are harmless.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
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


class _NonlinearityMode(TorchFunctionMode):
    """Runs every torch function unchanged and hands nonlinearity outputs to ``on_output``."""

    def __init__(self, on_output: Callable[[torch.Tensor], None]):
        super().__init__()
        self._on_output = on_output

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in NONLINEARITIES and isinstance(out, torch.Tensor):
            self._on_output(out)
        return out


class GradientFilter:
    """Per-call activation bounds of clean images and the backward filter built from them.

    Usage::

        filt = GradientFilter()
        with filt.record():              # clean pass: stores h_i(x), each N x ... (detached copy)
            logits = model(x)
        rows = filt.select(index)        # rows R: bounds of image index[r] (e.g. images x lambdas)
        with rows.apply():               # optimisation pass on e (R x C x H x W)
            logits = model(e)            # forward unchanged; backward through h_i masked by Eq. 6
        rows.last_calls                  # nonlinearity calls seen in that pass
        rows.last_filtered               # of which filtered (those whose output needs a gradient)

    Bounds are stored as the clean output ``h(x)`` only; ``b_l = min(0, h(x))`` and
    ``b_u = max(0, h(x))`` are formed when the filter is applied.
    """

    def __init__(self, clean: list[torch.Tensor] | None = None):
        self.clean: list[torch.Tensor] = clean if clean is not None else []
        self.last_calls = 0
        self.last_filtered = 0

    def __len__(self) -> int:
        return len(self.clean)

    @contextlib.contextmanager
    def record(self) -> Iterator["GradientFilter"]:
        """Record ``h(x)`` of every nonlinearity call of the forward run inside the block."""
        self.clean = []
        # A copy: an in-place op later in the forward may overwrite the activation.
        with _NonlinearityMode(lambda h: self.clean.append(h.detach().clone())):
            yield self

    def select(self, index: torch.Tensor) -> "GradientFilter":
        """Bounds for rows ``index`` (long, R): row r uses the clean image ``index[r]``."""
        return GradientFilter([h.index_select(0, index) for h in self.clean])

    @contextlib.contextmanager
    def apply(self) -> Iterator["GradientFilter"]:
        """Filter the gradient of every nonlinearity call inside the block (Eq. 6).

        Raises ``RuntimeError`` if the calls do not line up with the recorded ones (a model
        whose control flow depends on its input).
        """
        calls = filtered = 0

        def on_output(h: torch.Tensor) -> None:
            nonlocal calls, filtered
            if calls >= len(self.clean):
                raise RuntimeError(
                    f"defense: the model made more nonlinearity calls than the {len(self.clean)} "
                    "of the clean pass; its control flow depends on the input")
            hx = self.clean[calls]
            if hx.shape != h.shape:
                raise RuntimeError(
                    f"defense: nonlinearity call {calls} has shape {tuple(h.shape)} but "
                    f"{tuple(hx.shape)} in the clean pass")
            calls += 1
            if h.requires_grad:
                he = h.detach()
                # Decided now: an in-place op later in the forward may change h.
                keep = (he >= hx.clamp(max=0)) & (he <= hx.clamp(min=0))
                h.register_hook(lambda grad: grad * keep)
                filtered += 1

        with _NonlinearityMode(on_output):
            yield self
        if calls != len(self.clean):
            raise RuntimeError(
                f"defense: the model made {calls} nonlinearity calls, the clean pass {len(self.clean)}")
        self.last_calls, self.last_filtered = calls, filtered
