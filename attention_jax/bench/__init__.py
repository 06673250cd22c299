"""Cost measurement of attention kinds: time, peak memory and FLOPs as sequence length grows."""

from attention_jax.bench.compare import PEERS, run_comparison
from attention_jax.bench.flops import count_flops
from attention_jax.bench.measure import Cost, Shape, matmul_gflops_per_s, measure_cost
from attention_jax.bench.scaling import fit_exponent

__all__ = [
    "PEERS",
    "Cost",
    "Shape",
    "count_flops",
    "fit_exponent",
    "matmul_gflops_per_s",
    "measure_cost",
    "run_comparison",
]
