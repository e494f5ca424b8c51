"""Meta-learning algorithms (a registry of classes that state their own capabilities) and the module
DeepSpeed wraps."""

from metarec_dist.meta.algorithms import (
    ALGORITHMS,
    MetaAlgorithm,
    MetaStepOutput,
    algorithm_class,
    build_algorithm,
    check_training,
    inner_loop,
    register,
)
from metarec_dist.meta.context_init import ContextEncoder  # registers the context-init algorithms
from metarec_dist.meta.learner import MetaLearner

__all__ = [
    "ALGORITHMS",
    "ContextEncoder",
    "MetaAlgorithm",
    "MetaLearner",
    "MetaStepOutput",
    "algorithm_class",
    "build_algorithm",
    "check_training",
    "inner_loop",
    "register",
]
