"""Each game moves the target score the right way; Table A1 of the paper in kind."""
from __future__ import annotations

import pytest
import torch
from fgvis_helpers import BACKGROUND, SIZE, normalise

from retina_fgvis.fgvis import GAMES, ClassShift, FGVis, initial_mask

# Targets that leave room to move: pattern images start with their pattern class near 1 and the
# background class near 0; the zero reference is background.  Deletion removes the pattern,
# generation builds it from the reference, repression brings the image back while keeping the
# background class down, preservation keeps only what makes the image look blank.
TARGET = {"deletion": "pattern", "generation": "pattern", "repression": "background", "preservation": "background"}


@pytest.mark.parametrize("defense", [True, False], ids=["defended", "undefended"])
@pytest.mark.parametrize("game", list(GAMES))
def test_each_game_moves_the_target_score(toy, game, defense):
    model, images, labels = toy
    x = images[:4]
    target = labels[:4] if TARGET[game] == "pattern" else torch.full((4,), BACKGROUND)
    res = FGVis(model, game=game, defense=defense, max_iter=60).attribute(x, target=target, lam=0.0)
    m0 = initial_mask(game, x.shape[1:]).float()
    with torch.no_grad():
        start = torch.softmax(model(x * m0), 1)[torch.arange(4), target]
    if game in ("preservation", "generation"):
        assert (start < 0.5).all() and (res.score > 0.5).all(), (start, res.score)
    else:
        assert (start > 0.5).all() and (res.score < 0.5).all(), (start, res.score)


def test_table_a1_in_kind(toy):
    """From a black image (generation game, lambda = 0, zero reference in normalised space) the
    undefended optimisation reaches almost every other class, the defended one almost none."""
    model = toy[0]
    black = normalise(torch.zeros(1, 3, SIZE, SIZE))
    with torch.no_grad():
        omitted = {int(model(black).argmax()), int(model(torch.zeros_like(black)).argmax())}
    classes = [c for c in range(BACKGROUND + 1) if c not in omitted]
    inputs = black.expand(len(classes), -1, -1, -1)
    rates = {}
    for defense in (False, True):
        res = FGVis(model, game="generation", defense=defense, reference="zero", max_iter=100).attribute(
            inputs, target=classes, lam=0.0, stop=ClassShift())
        assert torch.equal(res.success, res.top_class == res.target)
        rates[defense] = res.success.float().mean().item()
    assert len(classes) >= 9
    assert rates[False] >= 0.8 and rates[True] <= 0.2, rates
