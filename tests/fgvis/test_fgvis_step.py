"""One SGD step of every game equals a hand computation of loss, normalised gradient and clamp."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from fgvis_helpers import small_cnn

from retina_fgvis.fgvis import GAMES, FGVis, initial_mask

KEEP = {"preservation", "generation"}


def _hand_step(model, x, target, game, lam, lr, filtered_forward=None):
    m0 = initial_mask(game, x.shape[1:], seed=0).float().expand_as(x).clone().requires_grad_(True)
    e = x * m0  # zero reference
    logits = filtered_forward(e) if filtered_forward else model(e)
    p = F.softmax(logits, 1)[torch.arange(len(x)), target]
    if game in KEEP:
        loss = -torch.log(p) + lam * m0.abs().sum((1, 2, 3))
    else:
        loss = p + lam * (1 - m0).abs().sum((1, 2, 3))
    (grad,) = torch.autograd.grad(loss.sum(), m0)
    grad = grad / grad.abs().flatten(1).max(1).values.view(-1, 1, 1, 1)
    return (m0 - lr * grad).clamp(0, 1).detach(), m0.detach()


@pytest.mark.parametrize("game", list(GAMES))
def test_one_step_equals_hand_computation(game):
    model = small_cnn(4, seed=1).eval()
    x = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    target, lam, lr = torch.tensor([1, 3]), 1e-5, 0.5
    res = FGVis(model, game=game, defense=False, lr=lr, max_iter=1).attribute(x, target=target, lam=lam)
    expected, m0 = _hand_step(model, x, target, game, lam, lr)
    low, high = (0.99, 1.0) if game in ("preservation", "deletion") else (0.0, 0.01)
    assert m0.min() >= low and m0.max() <= high
    assert torch.allclose(res.mask, expected, atol=1e-6)
    # lr = 0.5 pushes part of the mask out of the box: the clamp must have acted.
    assert ((expected == 0) | (expected == 1)).any()
    assert torch.allclose(res.explanation, x * res.mask, atol=1e-6)
    assert res.iterations.tolist() == [1, 1]
    assert res.target.tolist() == [1, 3]
    with torch.no_grad():
        score = F.softmax(model(x * res.mask), 1)[torch.arange(2), target]
    assert torch.allclose(res.score, score, atol=1e-6)


@pytest.mark.parametrize("game", ["deletion", "generation"])
def test_one_defended_step_equals_hand_filter(game):
    """Eq. 6 written out by hand for conv -> ReLU -> conv -> LeakyReLU -> pool -> linear."""
    torch.manual_seed(2)
    conv1, conv2, head = torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Conv2d(4, 4, 3), torch.nn.Linear(4, 3)
    model = torch.nn.Sequential(conv1, torch.nn.ReLU(), conv2, torch.nn.LeakyReLU(0.1),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), head).eval()
    x = torch.randn(2, 3, 10, 10, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        hx1 = F.relu(conv1(x))
        hx2 = F.leaky_relu(conv2(hx1), 0.1)

    def filtered_forward(e):
        h1 = F.relu(conv1(e))
        keep1 = (h1 >= hx1.clamp(max=0)) & (h1 <= hx1.clamp(min=0))
        h1.register_hook(lambda g: g * keep1)
        h2 = F.leaky_relu(conv2(h1), 0.1)
        keep2 = (h2 >= hx2.clamp(max=0)) & (h2 <= hx2.clamp(min=0))
        h2.register_hook(lambda g: g * keep2)
        return head(h2.mean((2, 3)))

    target = torch.tensor([0, 2])
    res = FGVis(model, game=game, defense=True, lr=0.3, max_iter=1).attribute(x, target=target, lam=1e-4)
    expected, _ = _hand_step(model, x, target, game, 1e-4, 0.3, filtered_forward)
    undefended, _ = _hand_step(model, x, target, game, 1e-4, 0.3)
    assert torch.allclose(res.mask, expected, atol=1e-6)
    assert not torch.allclose(expected, undefended, atol=1e-4)  # the filter did something
