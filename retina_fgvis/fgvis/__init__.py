"""The FGVis engine: four games, the gradient-filter defense, the lambda line search, the defense diagnostic.

    from retina_fgvis.fgvis import FGVis, ScoreBelow
    res = FGVis(model, game="deletion").attribute(x, target=1, lam=1e-10, stop=ScoreBelow(0.10))
"""
from retina_fgvis.fgvis.defense import NONLINEARITIES, GradientFilter, MaskedGradient, inside_bounds
from retina_fgvis.fgvis.engine import FGVis, FGVisResult, MarginWarning, model_guard
from retina_fgvis.fgvis.games import GAMES, Game, initial_mask
from retina_fgvis.fgvis.objective import logit_margin, margin_limit
from retina_fgvis.fgvis.references import REFERENCES, make_reference
from retina_fgvis.fgvis.search import lambda_grid
from retina_fgvis.fgvis.stops import ClassShift, FixedSteps, RelativeScoreBelow, ScoreBelow, StopRule
from retina_fgvis.fgvis.targets import check_target

__all__ = [
    "FGVis", "FGVisResult", "GAMES", "Game", "initial_mask", "model_guard", "MarginWarning",
    "GradientFilter", "MaskedGradient", "NONLINEARITIES", "inside_bounds",
    "logit_margin", "margin_limit",
    "REFERENCES", "make_reference",
    "lambda_grid",
    "StopRule", "ScoreBelow", "RelativeScoreBelow", "ClassShift", "FixedSteps",
    "check_target",
]
