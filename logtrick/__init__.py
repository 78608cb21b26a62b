"""logtrick: the log-derivative trick, as composable JAX estimators.

    grad_θ E_{x~p(x|θ)}[f(x)] = E_{x~p(x|θ)}[f(x) grad_θ log p(x|θ)]
"""

from logtrick import baselines, control_variates, discrete, exact, families, multisample, rl, testing
from logtrick.baselines import Baseline
from logtrick.control_variates import delta_method, sum_and_sample
from logtrick.dice import magic_box
from logtrick.estimators import Estimator, pathwise, score_function, score_function_jacobians
from logtrick.families import Family
from logtrick.multisample import vimco

__version__ = "0.1.0"

__all__ = [
    "Baseline",
    "Estimator",
    "Family",
    "baselines",
    "control_variates",
    "delta_method",
    "discrete",
    "exact",
    "families",
    "magic_box",
    "multisample",
    "pathwise",
    "rl",
    "score_function",
    "score_function_jacobians",
    "sum_and_sample",
    "testing",
    "vimco",
]
