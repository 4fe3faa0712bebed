"""Batch norm folded into the convolution before it, on a private copy of the model.

An eval-mode ``BatchNorm2d`` after a ``Conv2d`` (weight ``W``, bias ``b``) is an affine map per
output channel, so the pair is one convolution::

    s  = gamma / sqrt(running_var + eps)
    W' = W * s[:, None, None, None],   b' = (b - running_mean) * s + beta

Exact up to round-off; it saves one pass over every such activation, forward and backward, in each
optimisation step.  The pairs are found in two ways: adjacent children of an ``nn.Sequential``
(a convolution used only there), and on the ``torch.fx`` graph of the model where it can be
traced (``torch.fx.experimental.optimization.fuse``, which also folds ``Linear`` ->
``BatchNorm1d`` and leaves a convolution whose output is used elsewhere alone).  A model whose
``forward`` torch.fx cannot trace (e.g. one that checks its input's shape) keeps its other batch
norms.  The defense sees the folded model's nonlinearity calls, the same calls as the original's.
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.fx.experimental.optimization import fuse
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = ["fold_batchnorm", "FoldedModel"]


def _fold_sequential(model: nn.Module) -> None:
    """Fold every Conv2d -> BatchNorm2d pair of adjacent ``nn.Sequential`` children, in place."""
    uses: dict[int, int] = {}
    for _, module in model.named_modules(remove_duplicate=False):
        uses[id(module)] = uses.get(id(module), 0) + 1
    for module in model.modules():
        if not isinstance(module, nn.Sequential):
            continue
        names = list(module._modules)
        for first, second in zip(names, names[1:]):
            conv, bn = module._modules[first], module._modules[second]
            if (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats
                    and uses[id(conv)] == 1 and uses[id(bn)] == 1):
                module._modules[first] = fuse_conv_bn_eval(conv, bn)
                module._modules[second] = nn.Identity()


def fold_batchnorm(model: nn.Module, channels_last: bool = False) -> nn.Module:
    """A copy of ``model`` in eval mode with frozen parameters and batch norm folded (see above).

    ``model`` is only read.  ``channels_last``: the copy's parameters in that memory format.
    """
    private = copy.deepcopy(model).eval()
    for p in private.parameters():
        p.requires_grad_(False)
    _fold_sequential(private)
    try:
        private = fuse(private, inplace=True)
    # Symbolic tracing raises whatever the model's Python code raises on a proxy (TraceError,
    # TypeError, ...): any of them means the graph pairs cannot be found.
    except Exception:  # noqa: BLE001
        pass
    for p in private.parameters():
        p.requires_grad_(False)
    return private.to(memory_format=torch.channels_last) if channels_last else private


class FoldedModel:
    """The folded copy of one model, rebuilt only when the model's tensors change.

    ``get(model, channels_last)`` returns the cached copy while every parameter and buffer of
    ``model`` is the same tensor at the same version (in-place updates such as an optimiser step
    or ``load_state_dict`` bump the version), so a compiled step keeps seeing the same module.
    """

    def __init__(self):
        self._key: tuple | None = None
        self._model: nn.Module | None = None

    @staticmethod
    def _fingerprint(model: nn.Module, channels_last: bool) -> tuple:
        tensors = model.state_dict(keep_vars=True).values()
        return (id(model), channels_last,
                tuple((id(t), t.data_ptr(), t._version) for t in tensors if isinstance(t, torch.Tensor)))

    def get(self, model: nn.Module, channels_last: bool) -> nn.Module:
        key = self._fingerprint(model, channels_last)
        if key != self._key:
            self._model, self._key = fold_batchnorm(model, channels_last), key
        return self._model
