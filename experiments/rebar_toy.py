"""The REBAR / RELAX toy: minimise E_{b ~ Bernoulli(σ(θ))}[(b - t)²] for one logit θ.

With t just below 1/2 the two outcomes differ little, (1 - t)² - t² = 1 - 2t,
so the true gradient σ'(θ)(1 - 2t) is tiny beside the noise of a
single-sample estimate: the optimum σ(θ) → 0 is easy to state and hard to
reach without variance reduction. θ starts at 0; Adam (lr 0.01) follows each
estimator for 5000 steps, 5 seeds each, for t ∈ {0.45, 0.49, 0.499}:

    exact      jax.grad of σ(θ)(1 - t)² + (1 - σ(θ)) t²
    reinforce  1 sample, no baseline
    loo        2 samples, leave-one-out baseline
    arm        1 pair (2 evaluations)                  Yin and Zhou 2019
    disarm     1 antithetic pair (2 evaluations)       Dong, Mnih and Tucker 2020
    rebar      1 sample + 2 relaxed evaluations, learned scale and temperature
    relax      as REBAR plus a learned MLP r_ρ(z) in the control variate

The control variates of REBAR and RELAX are trained by Adam (lr 0.01) on the
squared gradient estimate, a single-sample estimate of the variance up to a
constant. Recorded: the exact loss (mean over seeds), the final σ(θ), and
log10 Var[ĝ] every 100 steps, from 1024 fresh draws at the current θ and
estimator state (fewer draws often miss the rare b = 1 once σ(θ) is small).

    python -m experiments.rebar_toy [--quick]

writes ``results/rebar_toy.json`` and ``results/rebar_toy.png``.

References:
  Tucker et al., "REBAR: Low-variance, unbiased gradient estimates for discrete
  latent variable models", 2017.
  Grathwohl et al., "Backpropagation through the Void: Optimizing control
  variates for black-box gradient estimation", 2018 (figure 1).
"""

from __future__ import annotations

from typing import Any

from experiments import bernoulli_toy

CONFIG = bernoulli_toy.Config()
QUICK = bernoulli_toy.Config(num_steps=40, log_every=10, checkpoint_every=20, variance_draws=16, num_seeds=2)


def run(config: bernoulli_toy.Config, *, progress: bool = False) -> dict[str, Any]:
    """The study; see :func:`experiments.bernoulli_toy.run`."""
    return bernoulli_toy.run(config, progress=progress)


def title(results: dict[str, Any]) -> str:
    config = results["config"]
    return (r"Minimising $E_{b \sim \mathrm{Bernoulli}(\sigma(\theta))}[(b-t)^2]$ from $\theta = 0$, Adam lr "
            f"{config['learning_rate']}, mean over {config['num_seeds']} seeds (cf. Grathwohl et al. 2018, fig. 1)\n"
            f"bottom: variance of the gradient estimate from {config['variance_draws']} fresh draws at the current "
            "θ and control variate")


def main() -> None:
    bernoulli_toy.main(__doc__, "rebar_toy", CONFIG, QUICK, title)


if __name__ == "__main__":
    main()
