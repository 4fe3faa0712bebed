"""Helpers for the engine tests: a tiny CNN, a synthetic 11-class toy trained in seconds, and an
independent count of nonlinearity calls taken from the autograd graph of a plain forward pass."""
from __future__ import annotations

import torch
from torch import nn

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
SIZE = 24
PATTERNS = 10
BACKGROUND = PATTERNS  # class index of the blank images
NONLINEAR_BACKWARD = ("ReluBackward", "LeakyReluBackward", "HardtanhBackward", "EluBackward",
                      "GeluBackward", "SiluBackward", "SigmoidBackward", "TanhBackward")


def small_cnn(classes: int, width: int = 8, seed: int = 0) -> nn.Module:
    """Conv-ReLU x3 (the first in place), global average pooling, linear head -> logits."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, classes))


def normalise(pixels: torch.Tensor) -> torch.Tensor:
    return (pixels - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]


def toy_images(n: int, seed: int = 0, background: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` pattern images (class k: a tinted square in cell k of a 4 x 3 grid, on dim noise)
    followed by ``background`` blank images of random brightness (class 10); normalised."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % PATTERNS
    pixels = 0.2 * torch.rand((n, 3, SIZE, SIZE), generator=g)
    cell = SIZE // 4
    for i, k in enumerate(labels.tolist()):
        y0, x0 = (k // 4) * cell + 1, (k % 4) * cell + 1
        tint = torch.tensor([1.0, 0.5 + 0.5 * (k % 2), 0.5 + 0.5 * (k % 3 == 0)])
        pixels[i, :, y0:y0 + cell - 2, x0:x0 + cell - 2] = tint[:, None, None]
    blank = torch.rand(background, 1, 1, 1, generator=g) * (
        0.2 + 0.8 * torch.rand((background, 3, SIZE, SIZE), generator=g))
    labels = torch.cat([labels, torch.full((background,), BACKGROUND)])
    return normalise(torch.cat([pixels, blank])), labels


def train_toy(steps: int = 150) -> nn.Module:
    """The 11-class toy classifier (10 patterns + background), trained with Adam in seconds."""
    images, labels = toy_images(400, background=80)
    model = small_cnn(PATTERNS + 1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        idx = torch.randint(len(images), (128,), generator=g)
        loss = nn.functional.cross_entropy(model(images[idx]), labels[idx], label_smoothing=0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def graph_nonlinearity_count(output: torch.Tensor) -> int:
    """Nonlinearity nodes in the autograd graph behind ``output`` (independent of the filter)."""
    seen, stack, count = set(), [output.grad_fn], 0
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        count += type(node).__name__.startswith(NONLINEAR_BACKWARD)
        stack.extend(child for child, _ in node.next_functions)
    return count


def hooks_left(model: nn.Module) -> int:
    """Hooks of every kind registered on any module of ``model``."""
    kinds = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
             "_state_dict_hooks", "_load_state_dict_pre_hooks")
    return sum(len(getattr(module, kind, {})) for module in model.modules() for kind in kinds)
