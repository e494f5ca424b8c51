"""Meta-learning algorithms (a registry) and the module DeepSpeed wraps."""

from metarec_dist.meta.algorithms import (
    ALGORITHMS,
    MetaAlgorithm,
    MetaStepOutput,
    build_algorithm,
    inner_loop,
    register,
)
from metarec_dist.meta.learner import MetaLearner

__all__ = [
    "ALGORITHMS",
    "MetaAlgorithm",
    "MetaLearner",
    "MetaStepOutput",
    "build_algorithm",
    "inner_loop",
    "register",
]
