"""Batched and chunked runs equal per-image runs; batched lambda search equals sequential.

Undefended runs are compared in fp32.  Defended runs are compared in fp64: the filter's indicator
1[b_l <= h(e) <= b_u] is discontinuous, and at the start of deletion and preservation many neurons
sit at their bound, so the ~1e-6 round-off that differs between batch sizes in fp32 can flip them.
"""
from __future__ import annotations

import copy

import pytest
import torch
from fgvis_helpers import small_cnn

from retina_fgvis.fgvis import GAMES, ClassShift, FGVis, RelativeScoreBelow, lambda_grid
from retina_fgvis.fgvis.search import search_batched, search_sequential

FIELDS = ("mask", "explanation", "score", "initial_score", "iterations", "target", "success", "top_class", "lam")
# Early-stopping rules where a game can stop early, so frozen rows and batch shrinking are exercised.
STOP = {"deletion": RelativeScoreBelow(0.9), "generation": ClassShift(), "preservation": None, "repression": None}


# (dtype, defense) pairs compared
MODES = {"fp32-undefended": (torch.float32, False), "fp64-defended": (torch.float64, True)}


def _model(name, toy, dtype=torch.float32):
    model = toy[0] if name == "toy" else small_cnn(11, seed=3).eval()
    return model if dtype == torch.float32 else copy.deepcopy(model).to(dtype)


def _assert_same(a, b):
    for field in FIELDS:
        x, y = getattr(a, field), getattr(b, field)
        if x.is_floating_point():
            assert torch.allclose(x, y, atol=2e-5), field
        else:
            assert torch.equal(x, y), field


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("game", list(GAMES))
@pytest.mark.parametrize("model_name", ["toy", "random"])
def test_batched_equals_per_image(toy, model_name, game, mode):
    dtype, defense = MODES[mode]
    model = _model(model_name, toy, dtype)
    x = toy[1][:3].to(dtype)
    # batch_size=2: the first two images share a batch, the third is its own chunk.
    batch_size = 2
    kwargs = dict(game=game, defense=defense, max_iter=12, check_every=2, lr=0.2)
    stop = STOP[game]
    batched = FGVis(model, batch_size=batch_size, **kwargs).attribute(x, lam=[1e-4, 1e-6, 0.0], stop=stop)
    singles = [FGVis(model, **kwargs).attribute(x[i:i + 1], lam=lam, stop=stop)
               for i, lam in enumerate([1e-4, 1e-6, 0.0])]
    merged = type(batched)(**{f: torch.cat([getattr(s, f) for s in singles]) for f in batched.__dataclass_fields__})
    _assert_same(batched, merged)
    if stop is not None and model_name == "toy":
        assert (batched.iterations < 12).any()  # some rows stopped early and were frozen


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("game", ["deletion", "preservation"])
def test_batched_lambda_search_picks_the_same_lambda(toy, game, mode):
    dtype, defense = MODES[mode]
    model = _model("toy", toy, dtype)
    x = toy[1][:4].to(dtype)
    grid = lambda_grid(1e-1, 1e-7, 7)
    fg = FGVis(model, game=game, defense=defense, max_iter=15, lr=0.2, batch_size=10)
    seq = fg.attribute(x, lam="search", lam_grid=grid, search="sequential")
    bat = fg.attribute(x, lam="search", lam_grid=grid, search="batched")
    _assert_same(seq, bat)
    assert set(seq.lam.tolist()) <= set(grid)


def _fake_run(table):
    """A run whose success per (image, lambda) is given by ``table`` (images x lambdas)."""
    grid = [1.0, 0.1, 0.01]

    def run(row_image, row_lam):
        k = torch.tensor([grid.index(v) for v in row_lam.tolist()])
        return {"success": table[row_image, k], "value": row_image * 10 + k}

    return run, grid


@pytest.mark.parametrize("search", [search_sequential, search_batched])
def test_search_accepts_the_first_success_from_the_largest_lambda(search):
    table = torch.tensor([[False, True, True], [True, False, False], [False, False, False], [False, False, True]])
    run, grid = _fake_run(table)
    out = search(run, 4, grid, "cpu")
    assert out["lam"].tolist() == [0.1, 1.0, 0.01, 0.01]
    assert out["value"].tolist() == [1, 10, 22, 32]
    assert out["success"].tolist() == [True, True, False, True]


def test_lambda_grid_is_log_spaced():
    grid = lambda_grid()
    assert len(grid) == 13 and grid[0] == pytest.approx(1e-4) and grid[-1] == pytest.approx(1e-10)
    assert grid[1] == pytest.approx(10 ** -4.5)
    assert lambda_grid(1e-7, 1e-10, 4) == pytest.approx([1e-7, 1e-8, 1e-9, 1e-10])


def test_progress_bar_and_chunking_do_not_change_results(toy):
    model, images, _ = toy
    x = images[:3]
    plain = FGVis(model, defense=False, max_iter=4).attribute(x)
    shown = FGVis(model, defense=False, max_iter=4, progress=True, batch_size=1).attribute(x)
    _assert_same(plain, shown)


@pytest.mark.slow
@pytest.mark.parametrize("defense", [False, True])
def test_compiled_model_gives_the_eager_result(defense):
    model = small_cnn(4).eval()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    compiled = FGVis(model, defense=defense, max_iter=3, compile=True).attribute(x)
    eager = FGVis(model, defense=defense, max_iter=3).attribute(x)
    assert torch.allclose(compiled.mask, eager.mask, atol=1e-5)
