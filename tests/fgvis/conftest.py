"""Shared fixtures: tiny CNNs trained in seconds on synthetic toys, and an independent
count of nonlinearity calls taken from the autograd graph of a plain forward pass."""
from __future__ import annotations

import pytest
import torch
from torch import nn

# Tiny models on a CPU shared with other jobs: one thread avoids oversubscription stalls.
torch.set_num_threads(1)

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
NONLINEAR_BACKWARD = ("ReluBackward", "LeakyReluBackward", "HardtanhBackward", "EluBackward",
                      "GeluBackward", "SiluBackward", "SigmoidBackward", "TanhBackward")


def small_cnn(classes: int, seed: int = 0) -> nn.Module:
    """Conv-ReLU x3 (one in-place), global pooling, linear head; 3 x 32 x 32 -> logits."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(32, 32, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, classes))


def toy_images(classes: int, n: int, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Class k = a bright square at the k-th cell of a grid, tinted by k, on dim noise.

    Returns normalised images n x 3 x size x size and labels n.
    """
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    images = 0.2 * torch.rand((n, 3, size, size), generator=g)
    cols = 4
    cell = size // cols
    for i, k in enumerate(labels.tolist()):
        r, c = divmod(k, cols)
        y0, x0 = r * cell + 1, c * cell + 1
        tint = torch.tensor([1.0, 0.5 + 0.5 * (k % 2), 0.5 + 0.5 * (k % 3 == 0)])
        images[i, :, y0:y0 + cell - 2, x0:x0 + cell - 2] = tint[:, None, None]
    mean = torch.tensor(MEAN)[:, None, None]
    std = torch.tensor(STD)[:, None, None]
    return (images - mean) / std, labels


def train(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, steps: int = 150) -> nn.Module:
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        idx = torch.randint(len(images), (64,), generator=g)
        loss = nn.functional.cross_entropy(model(images[idx]), labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="session")
def toy2():
    """(model, test images, test labels) for the 2-class toy."""
    images, labels = toy_images(2, 256)
    model = train(small_cnn(2), images, labels)
    test_images, test_labels = toy_images(2, 8, seed=5)
    return model, test_images, test_labels


@pytest.fixture(scope="session")
def toy10():
    """(model, test images, test labels) for the 10-class toy."""
    images, labels = toy_images(10, 640)
    model = train(small_cnn(10), images, labels, steps=250)
    test_images, test_labels = toy_images(10, 20, seed=5)
    return model, test_images, test_labels


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
