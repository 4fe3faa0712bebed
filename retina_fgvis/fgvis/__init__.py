"""The FGVis engine: four games, the gradient-filter defense, the lambda line search.

    from retina_fgvis.fgvis import FGVis, ScoreBelow
    res = FGVis(model, game="deletion").attribute(x, target=1, lam=1e-10, stop=ScoreBelow(0.10))
"""
from retina_fgvis.fgvis.defense import NONLINEARITIES, GradientFilter
from retina_fgvis.fgvis.engine import GAMES, FGVis, FGVisResult, initial_mask, model_guard
from retina_fgvis.fgvis.references import REFERENCES, make_reference
from retina_fgvis.fgvis.search import lambda_grid
from retina_fgvis.fgvis.stops import ClassShift, FixedSteps, RelativeScoreBelow, ScoreBelow, StopRule

__all__ = [
    "FGVis", "FGVisResult", "GAMES", "initial_mask", "model_guard",
    "GradientFilter", "NONLINEARITIES",
    "REFERENCES", "make_reference",
    "lambda_grid",
    "StopRule", "ScoreBelow", "RelativeScoreBelow", "ClassShift", "FixedSteps",
]
