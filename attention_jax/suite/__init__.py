"""Comparison suites: every attention kind trained on every task, quality set against cost."""

from attention_jax.suite.cost import length_sweep, task_cost
from attention_jax.suite.plan import KindSpec, Suite, TaskSpec, run_config, skip_reason
from attention_jax.suite.runner import SuiteStopped, run_suite

__all__ = [
    "KindSpec",
    "Suite",
    "SuiteStopped",
    "TaskSpec",
    "length_sweep",
    "run_config",
    "run_suite",
    "skip_reason",
    "task_cost",
]
