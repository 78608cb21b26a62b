"""Policy gradients for reinforcement learning, one trajectory at a time.

Trajectories become returns and advantages (:mod:`returns`), which weight the
score-function surrogate (:mod:`losses`), or the DiCE objective of a
trajectory (:func:`dice_objective`) for unbiased derivatives of every order;
the caller ``vmap``s over trajectories. :mod:`tabular` samples episodes of
finite MDPs, offers REINFORCE as an estimator, and pairs every sampled
derivative with its exact counterpart by dynamic programming.
:mod:`sequence` holds the sequence-level losses of language-model-style
policies (RLOO, GRPO, Dr. GRPO, REINFORCE++, PPO-clip, KL penalties) and an
exact oracle for policies small enough to enumerate.
"""

from logtrick.rl import sequence, tabular
from logtrick.rl.losses import dice_objective, entropy_loss, policy_gradient_loss, value_loss
from logtrick.rl.returns import (
    advantages,
    discount_from_start,
    discounted_returns,
    episode_returns,
    episode_starts,
    group_normalised_advantages,
    leave_one_out_advantages,
    reward_to_go,
)

__all__ = [
    "advantages",
    "dice_objective",
    "discount_from_start",
    "discounted_returns",
    "entropy_loss",
    "episode_returns",
    "episode_starts",
    "group_normalised_advantages",
    "leave_one_out_advantages",
    "policy_gradient_loss",
    "reward_to_go",
    "sequence",
    "tabular",
    "value_loss",
]
