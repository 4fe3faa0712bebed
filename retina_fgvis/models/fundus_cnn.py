"""An o_O-style convolutional network for referable diabetic retinopathy (RDR).

The layout follows "Net A" of the Kaggle diabetic-retinopathy solution by team o_O
(five stages of 5×5/3×3 convolutions separated by 3×3/2 max pooling), with the changes the
FGVis paper describes: batch normalisation before every leaky ReLU (slope 0.01) and a
binary softmax head instead of the regression output. Channel counts scale with ``width``
(o_O used ``width=32``) so small versions train on a CPU.

Shapes for an input of N×3×S×S (S ≥ 32; S = 512 for real EyePACS by default)::

    stage 1  conv w 5×5/2, conv w,            maxpool 3/2   -> N×w×S/4×S/4
    stage 2  conv 2w 5×5/2, 2×conv 2w,        maxpool 3/2   -> N×2w×S/16
    stage 3  3×conv 4w,                       maxpool 3/2   -> N×4w×S/32
    stage 4  3×conv 8w,                       maxpool 3/2   -> N×8w×S/64
    stage 5  2×conv 16w                                     -> N×16w×S/64×S/64
    pool     concat(global average, global max)             -> N×32w
    head     dropout, linear                                -> N×num_classes logits

(sizes rounded up; pooling pads by one so any S ≥ 32 works). Class index 1 is RDR; the
softmax over the logits is the score FGVis explains.
"""
from __future__ import annotations

import torch
from torch import nn

from retina_fgvis.checks import check_int

__all__ = ["FundusCNN", "conv_block"]


def conv_block(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1) -> nn.Sequential:
    """Conv (no bias: batch norm supplies it) -> BatchNorm -> LeakyReLU(0.01); 'same' padding."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.LeakyReLU(0.01, inplace=True),
    )


def _pool() -> nn.MaxPool2d:
    return nn.MaxPool2d(kernel_size=3, stride=2, padding=1)


class FundusCNN(nn.Module):
    """Binary fundus classifier: ``forward(x: N×C×H×W) -> logits N×num_classes``.

    Args:
        width: channels of the first stage; later stages use 2w, 4w, 8w, 16w.
        num_classes: logits produced (2: non-RDR, RDR).
        in_channels: image channels.
        dropout: dropout probability before the linear head.

    ``arch_kwargs`` holds these arguments so a checkpoint can rebuild the network;
    ``features`` is the convolutional trunk (its last module is the last conv stage,
    a natural Grad-CAM target layer).
    """

    def __init__(self, width: int = 32, num_classes: int = 2, in_channels: int = 3, dropout: float = 0.5):
        super().__init__()
        for name, value in (("width", width), ("num_classes", num_classes), ("in_channels", in_channels)):
            check_int(name, value, minimum=1)
        if num_classes < 2:
            raise ValueError(f"num_classes: a softmax classifier needs at least 2 classes, got {num_classes}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout: expected a probability in [0, 1), got {dropout!r}")
        self.arch_kwargs = {"width": width, "num_classes": num_classes, "in_channels": in_channels,
                            "dropout": float(dropout)}
        w = width
        self.features = nn.Sequential(
            nn.Sequential(conv_block(in_channels, w, 5, 2), conv_block(w, w), _pool()),
            nn.Sequential(conv_block(w, 2 * w, 5, 2), conv_block(2 * w, 2 * w), conv_block(2 * w, 2 * w), _pool()),
            nn.Sequential(conv_block(2 * w, 4 * w), conv_block(4 * w, 4 * w), conv_block(4 * w, 4 * w), _pool()),
            nn.Sequential(conv_block(4 * w, 8 * w), conv_block(8 * w, 8 * w), conv_block(8 * w, 8 * w), _pool()),
            nn.Sequential(conv_block(8 * w, 16 * w), conv_block(16 * w, 16 * w)),
        )
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        # Max pooling keeps a single small lesion visible in the global descriptor.
        self.max_pool = nn.AdaptiveMaxPool2d(1)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(32 * w, num_classes))
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, a=0.01, nonlinearity="leaky_relu")
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
