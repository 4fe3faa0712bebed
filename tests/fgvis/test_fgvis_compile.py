"""The compiled optimisation step: the autograd-function defense equals the hook defense, the whole
step (forward, loss, dL/dm, update, clamp, stop check) is one graph for the four models, and the
compiled engine gives the eager engine's masks.

Compiled vs eager is compared in fp64 with the defense on: the filter's indicator is discontinuous,
so in fp32 the round-off of a fused kernel can flip a unit that sits at its bound (docs/engine.md).
"""
from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from fgvis_helpers import small_cnn
from test_fgvis_defense import _Mixed

from retina_fgvis.fgvis import GAMES, FGVis, FixedSteps, RelativeScoreBelow, ScoreBelow
from retina_fgvis.fgvis.games import game_spec
from retina_fgvis.fgvis.loop import (ActiveRows, Precision, clean_pass, eager_step, functional_step,
                                     rows_step)
from retina_fgvis.models.fundus_cnn import FundusCNN

CPU = Precision("cpu", autocast=False, channels_last=False)
# Largest mask differences to eager (docs/engine.md): captured graph without code generation (fp64) below
# 1e-10; inductor code after 6 steps, defended fp64 1.4e-8, undefended fp32 3.6e-7.
CAPTURE_TOLERANCE, FP64_TOLERANCE, FP32_TOLERANCE = 1e-10, 1e-6, 1e-5


def _frozen(model):
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _rows(model, x, game, defense=True, lam=1e-4):
    n = len(x)
    local = torch.arange(n)
    spec = game_spec(game)
    clean = clean_pass(model, x, local, torch.full((n,), -1), CPU, defense)
    lam = torch.full((n,), lam, dtype=torch.float64)
    return ActiveRows.start(x, torch.zeros_like(x), clean, local, lam, spec, 0, CPU), spec


@pytest.mark.parametrize("game", list(GAMES))
@pytest.mark.parametrize("model_name", ["mixed", "small_cnn"])
def test_functional_step_equals_the_eager_step_bit_for_bit(model_name, game):
    """The autograd-function filter under torch.func.grad gives exactly the hook filter's masks."""
    torch.manual_seed(0)
    model = _frozen(_Mixed() if model_name == "mixed" else small_cnn(4, seed=2))
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    rule = RelativeScoreBelow(0.9)
    a, spec = _rows(model, x, game)
    b, start = copy.copy(a), a.m
    eager = eager_step(model, spec, 0.3, rule, spec.stops_early, CPU)
    functional = rows_step(functional_step(model, spec, 0.3, rule, spec.stops_early, CPU))
    with torch.enable_grad():
        for _ in range(4):
            eager(a)
            functional(b)
    for name in ("m", "done", "iters", "nonfinite_logits", "nonfinite_grad"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert not torch.equal(a.m, start)


def _fundus():
    return FundusCNN(width=8)


GRAPH_MODELS = {
    "fundus_cnn": _fundus,
    "googlenet": lambda: torchvision.models.googlenet(weights=None, init_weights=False, aux_logits=False),
    "resnet50": lambda: torchvision.models.resnet50(weights=None),
    "vgg16": lambda: torchvision.models.vgg16(weights=None, init_weights=False),
}
# Tracing GoogLeNet, ResNet50 or VGG16 takes 10-15 s on one CPU core.
_SLOW = {"googlenet", "resnet50", "vgg16"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in _SLOW else n for n in GRAPH_MODELS])
def test_the_whole_defended_step_is_one_graph(name):
    torch.manual_seed(0)
    model = _frozen(GRAPH_MODELS[name]())
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    rows, spec = _rows(model, x, "deletion")
    step = functional_step(model, spec, 0.1, ScoreBelow(0.1), True, CPU)
    torch._dynamo.reset()
    explained = torch._dynamo.explain(step)(rows.m, rows.diff, rows.r, rows.target, rows.lam, rows.initial_score,
                                            rows.done, rows.iters, rows.nonfinite_logits, rows.nonfinite_grad,
                                            rows.bounds)
    assert explained.graph_break_count == 0, explained.break_reasons
    assert explained.graph_count == 1


def test_captured_graph_equals_the_eager_step():
    """fullgraph capture (AOT autograd, no code generation: fast) of the defended step, 6 steps."""
    model = _frozen(small_cnn(4, seed=2)).double()
    x = torch.randn(3, 3, 12, 12, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    rule = RelativeScoreBelow(0.9)
    a, spec = _rows(model, x, "deletion")
    b = copy.copy(a)
    torch._dynamo.reset()
    captured = rows_step(torch.compile(functional_step(model, spec, 0.3, rule, True, CPU), fullgraph=True,
                                       backend="aot_eager", dynamic=False))
    eager = eager_step(model, spec, 0.3, rule, True, CPU)
    with torch.enable_grad():
        for _ in range(6):
            eager(a)
            captured(b)
    assert torch.allclose(a.m, b.m, atol=CAPTURE_TOLERANCE, rtol=0)
    assert torch.equal(a.iters, b.iters) and torch.equal(a.done, b.done)


@pytest.mark.slow
@pytest.mark.parametrize("defense, dtype", [(True, torch.float64), (False, torch.float32)])
def test_compiled_engine_equals_eager_engine(defense, dtype):
    """Inductor code: 5 images in chunks of 4 (a full chunk, a padded one), an early stop."""
    model = _frozen(FundusCNN(width=4)).to(dtype)
    x = torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(0), dtype=dtype)
    kwargs = dict(defense=defense, max_iter=12, lr=0.2, batch_size=4, check_every=2)
    torch._dynamo.reset()
    for stop in (FixedSteps(6), RelativeScoreBelow(0.95)):
        compiled = FGVis(model, compile=True, **kwargs).attribute(x, lam=1e-6, stop=stop)
        eager = FGVis(model, **kwargs).attribute(x, lam=1e-6, stop=stop)
        tolerance = FP64_TOLERANCE if dtype == torch.float64 else FP32_TOLERANCE
        assert (compiled.mask - eager.mask).abs().max() <= tolerance
        assert (compiled.score - eager.score).abs().max() <= tolerance
        assert torch.equal(compiled.iterations, eager.iterations)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
@pytest.mark.parametrize("defense", [False, True])
def test_cuda_graph_chunk_gives_the_eager_masks(defense):
    """A captured chunk (3 rows padded to 4, early stop frozen in place) against the eager engine, fp32
    without autocast; defended rows may flip a filter bit under the fused kernels' round-off."""
    model = _frozen(FundusCNN(width=4)).cuda()
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0)).cuda()
    kwargs = dict(defense=defense, max_iter=12, lr=0.2, batch_size=4, check_every=2, autocast=False)
    torch._dynamo.reset()
    stop = RelativeScoreBelow(0.95)
    graphed = FGVis(model, compile=True, cuda_graphs=True, **kwargs).attribute(x, lam=1e-6, stop=stop)
    eager = FGVis(model, **kwargs).attribute(x, lam=1e-6, stop=stop)
    assert torch.equal(graphed.iterations, eager.iterations)
    assert (graphed.mask - eager.mask).abs().max() <= (1e-2 if defense else FP32_TOLERANCE)
    assert (graphed.score - eager.score).abs().max() <= 1e-3
