"""Convolutional networks for referable diabetic retinopathy (RDR), in three layouts.

All follow the stage plan of "Net A" of the Kaggle diabetic-retinopathy solution by team o_O
(five stages of 5×5/3×3 convolutions separated by 3×3/2 max pooling) with the changes the FGVis
paper describes: batch normalisation before every leaky ReLU (slope 0.01) and a binary softmax
head instead of the regression output. Channel counts scale with ``width`` (o_O used 32).

``layout`` says how many convolutions each stage holds and how the first two stages open:

- ``"plain"`` (default) — one 3×3 stride-1 convolution per stage: five defended nonlinearity
  calls, and the first features are computed at full resolution.
- ``"compact"`` — the same with o_O's 5×5 stride-2 stem.
- ``"o_O"`` — Net A's (2, 3, 3, 3, 2) convolutions with its stem, 13 calls.

FGVis's defense (supplementary A3) zeroes the gradient wherever a unit leaves its clean bounds;
every call compounds that filter, and the coarser the first features, the fewer pixels a mask
step can move without pushing some unit out of bounds. ``docs/defense.md`` has the study that
measured how often the paper's medical protocol reaches its stop on each layout.

Shapes for an input of N×3×S×S (S ≥ 32), strided stem::

    stage 1  conv w 5×5/2 (+ convs w),          maxpool 3/2 -> N×w×S/4×S/4
    stage 2  conv 2w 5×5/2 (+ convs 2w),        maxpool 3/2 -> N×2w×S/16
    stage 3  conv 4w (+ convs 4w),              maxpool 3/2 -> N×4w×S/32
    stage 4  conv 8w (+ convs 8w),              maxpool 3/2 -> N×8w×S/64
    stage 5  conv 16w (+ conv 16w)                          -> N×16w×S/64×S/64
    pool     concat(global average, global max)             -> N×32w
    head     dropout, linear                                -> N×num_classes logits

``"plain"``: stages 1-2 are 3×3 stride 1, so the map halves at each of the four pools (S/16 at
stage 5). Sizes are rounded up; pooling pads by one so any S ≥ 32 works. ``downsample="stride"``
drops the max pools and gives the first convolution of every stage stride 2.
Class index 1 is RDR; the softmax over the logits is the score FGVis explains.
"""
from __future__ import annotations

import torch
from torch import nn

from retina_fgvis.checks import check_int

__all__ = ["ACTIVATIONS", "DOWNSAMPLING", "FundusCNN", "LAYOUTS", "conv_block"]

#: Convolutions per stage of each layout.
LAYOUTS: dict[str, tuple[int, ...]] = {"compact": (1, 1, 1, 1, 1), "o_O": (2, 3, 3, 3, 2), "plain": (1, 1, 1, 1, 1)}
#: Layouts whose first two stages open with a 5×5 stride-2 convolution (o_O's stem); the others use 3×3 stride 1.
_STRIDED_STEM = ("compact", "o_O")
ACTIVATIONS = ("leaky_relu", "relu")
DOWNSAMPLING = ("pool", "stride")


def conv_block(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, *,
               activation: str = "leaky_relu", batch_norm: bool = True) -> nn.Sequential:
    """Conv -> BatchNorm -> LeakyReLU(0.01) (or ReLU); 'same' padding; the conv has a bias only without batch norm."""
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                                         padding=kernel_size // 2, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_channels))
    layers.append(nn.LeakyReLU(0.01, inplace=True) if activation == "leaky_relu" else nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def _choice(name: str, value, options) -> None:
    if value not in options:
        raise ValueError(f"{name}: expected one of {list(options)}, got {value!r}")


class FundusCNN(nn.Module):
    """Binary fundus classifier: ``forward(x: N×C×H×W) -> logits N×num_classes``.

    Args:
        width: channels of the first stage; later stages use 2w, 4w, 8w, 16w.
        num_classes: logits produced (2: non-RDR, RDR).
        in_channels: image channels.
        dropout: dropout probability before the linear head.
        layout: a key of :data:`LAYOUTS` (convolutions per stage).
        activation: ``"leaky_relu"`` (slope 0.01, the paper's) or ``"relu"``.
        batch_norm: batch normalisation after every convolution.
        downsample: ``"pool"`` (3×3/2 max pooling between stages) or ``"stride"``.

    ``arch_kwargs`` holds these arguments so a checkpoint can rebuild the network;
    ``features`` is the convolutional trunk, one ``nn.Sequential`` per stage (its last module is
    the last stage, a natural Grad-CAM target layer).
    """

    def __init__(self, width: int = 32, num_classes: int = 2, in_channels: int = 3, dropout: float = 0.5, *,
                 layout: str = "plain", activation: str = "leaky_relu", batch_norm: bool = True,
                 downsample: str = "pool"):
        super().__init__()
        for name, value in (("width", width), ("num_classes", num_classes), ("in_channels", in_channels)):
            check_int(name, value, minimum=1)
        if num_classes < 2:
            raise ValueError(f"num_classes: a softmax classifier needs at least 2 classes, got {num_classes}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout: expected a probability in [0, 1), got {dropout!r}")
        _choice("layout", layout, LAYOUTS)
        _choice("activation", activation, ACTIVATIONS)
        _choice("downsample", downsample, DOWNSAMPLING)
        if not isinstance(batch_norm, bool):
            raise TypeError(f"batch_norm: expected a bool, got {batch_norm!r}")
        self.arch_kwargs = {"width": width, "num_classes": num_classes, "in_channels": in_channels,
                            "dropout": float(dropout), "layout": layout, "activation": activation,
                            "batch_norm": batch_norm, "downsample": downsample}
        pooled = downsample == "pool"
        block = {"activation": activation, "batch_norm": batch_norm}
        stages, channels = [], in_channels
        for index, convs in enumerate(LAYOUTS[layout]):
            out = width * 2 ** index
            if index < 2 and layout in _STRIDED_STEM:
                kernel, stride = 5, 2
            else:
                kernel, stride = 3, 1 if pooled else 2
            layers = [conv_block(channels, out, kernel, stride, **block)]
            layers += [conv_block(out, out, **block) for _ in range(convs - 1)]
            if pooled and index < 4:
                layers.append(nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
            stages.append(nn.Sequential(*layers))
            channels = out
        self.features = nn.Sequential(*stages)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        # Max pooling keeps a single small lesion visible in the global descriptor.
        self.max_pool = nn.AdaptiveMaxPool2d(1)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(2 * channels, num_classes))
        self._init_weights(activation)

    def _init_weights(self, activation: str) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, a=0.01 if activation == "leaky_relu" else 0.0,
                                        nonlinearity=activation)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.01)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: N×in_channels×H×W (normalised) -> logits N×num_classes."""
        if x.ndim != 4 or x.shape[1] != self.arch_kwargs["in_channels"]:
            raise ValueError(
                f"x: expected N×{self.arch_kwargs['in_channels']}×H×W, got shape {tuple(x.shape)}")
        features = self.features(x)
        pooled = torch.cat([self.avg_pool(features), self.max_pool(features)], dim=1)
        return self.head(pooled)
