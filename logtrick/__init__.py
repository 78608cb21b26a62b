"""logtrick: the log-derivative trick, as composable JAX estimators.

    grad_θ E_{x~p(x|θ)}[f(x)] = E_{x~p(x|θ)}[f(x) grad_θ log p(x|θ)]
"""

from logtrick import baselines, categorical, discrete, exact, families, gaussian, layout, qmc, rl, sites, testing
from logtrick.base import Estimator, from_loss
from logtrick.baselines import Baseline
from logtrick.categorical import sum_and_sample
from logtrick.dice import magic_box
from logtrick.estimators import (
    dice_sum,
    measure_valued,
    optimal_control_variate,
    pathwise,
    score_function,
    score_function_jacobians,
    scores,
    vimco,
)
from logtrick.families import Family
from logtrick.gaussian import delta_method
from logtrick.graph import graph

__version__ = "0.2.0"

__all__ = [
    "Baseline",
    "Estimator",
    "Family",
    "baselines",
    "categorical",
    "delta_method",
    "dice_sum",
    "discrete",
    "exact",
    "families",
    "from_loss",
    "gaussian",
    "graph",
    "layout",
    "magic_box",
    "measure_valued",
    "optimal_control_variate",
    "pathwise",
    "qmc",
    "rl",
    "score_function",
    "score_function_jacobians",
    "scores",
    "sites",
    "sum_and_sample",
    "testing",
    "vimco",
]
