"""Runs attention kinds side by side over sequence lengths, with a baseline in the same process."""

from __future__ import annotations

import dataclasses
import gc
import json
import os
from collections.abc import Callable, Mapping, Sequence

import jax
from tqdm.auto import tqdm

from attention_jax import ops
from attention_jax.bench import measure, report, torch_peer


def _jax_nn(query, key, value, bias=None, mask=None, **kwargs):
    return jax.nn.dot_product_attention(query, key, value, bias, mask, **kwargs)


# Peers measured beside the registry's kinds; they are baselines, not kinds of this library.
PEERS: dict[str, Callable] = {"jax.nn": _jax_nn}


def split_name(name: str) -> tuple[str, str | None]:
    """'flash@cudnn' -> ('flash', 'cudnn'): a kind or peer run by a named implementation; a
    bare name runs with implementation=None (the fastest here)."""
    kind, _, implementation = name.partition("@")
    return kind, implementation or None


def _implementations(kind: str) -> tuple[str, ...]:
    if kind == "jax.nn":
        return ("xla", "cudnn")
    return ops.kind(kind).implementations if kind in ops.names() else ()


def resolve(name: str, params: Mapping | None = None) -> Callable:
    """The op for a kind or peer name ('kind@implementation' names its engine), with its
    parameters bound. A state-carrying kind gets its gates from the keys (`ops.Gates.derive`),
    inside the measured function."""
    kind, implementation = split_name(name)
    op = PEERS[kind] if kind in PEERS else ops.get(kind)
    params = dict(params or {})
    if implementation is not None:
        params["implementation"] = implementation
    gates = None if kind in PEERS else ops.kind(kind).gates
    if gates is not None:

        def gated(q, k, v, **kw):
            k, derived = gates.derive(k)
            return op(q, k, v, **derived, **params, **kw)

        return gated
    return lambda q, k, v, **kw: op(q, k, v, **params, **kw)


def known_kinds() -> list[str]:
    """Everything the comparison can measure: JAX peers, the torch peer and the registry, and
    'name@implementation' for each implementation a peer or kind has beyond XLA."""
    names = [*PEERS, torch_peer.NAME, *ops.names()]
    return names + [
        f"{name}@{implementation}"
        for name in names
        for implementation in _implementations(name)
        if len(_implementations(name)) > 1
    ]


def ran_with(name: str, params: Mapping | None, shape: measure.Shape, n: int) -> str:
    """The implementation that runs `name` at this n on this machine (`ops.explain`)."""
    kind, implementation = split_name(name)
    if kind == torch_peer.NAME:
        return "torch"
    if kind in PEERS or len(_implementations(kind)) == 1:
        return implementation or "xla"
    q, k, v = jax.eval_shape(lambda: measure.make_inputs(shape, n))
    arguments = {**(params or {}), **shape.mask_kwargs(), "implementation": implementation}
    return ops.explain(kind, q, k, v, **arguments).implementation


def _measure(name, params, shape, n, *, memory_budget_bytes, **kwargs) -> measure.Cost:
    if name == torch_peer.NAME:
        return torch_peer.measure_torch(shape, n, **kwargs)
    kind, _ = split_name(name)
    # Vendor kernels are opaque to the FLOP count: count the same kind in XLA.
    counted = f"{kind}@xla" if len(_implementations(kind)) > 1 else name
    return measure.measure_cost(
        name,
        resolve(name, params),
        shape,
        n,
        memory_budget_bytes=memory_budget_bytes,
        flops_op=resolve(counted, params),
        implementation=ran_with(name, params, shape, n),
        **kwargs,
    )


def run_comparison(
    workdir: str,
    *,
    kinds: Sequence[str],
    seq_lens: Sequence[int],
    shape: measure.Shape,
    kind_params: Mapping[str, Mapping] | None = None,
    baseline: str = "jax.nn",
    warmup: int = 1,
    repeats: int = 5,
    memory_budget_bytes: int = 12 * 2**30,
    backward: bool = True,
) -> tuple[list[measure.Cost], str]:
    """Measures every kind at every n; writes costs.csv, costs.md, costs.png to `workdir`.

    Returns the measured rows and the Markdown table.
    """
    kind_params = kind_params or {}
    for kind in [*kinds, baseline]:
        if kind not in known_kinds():
            raise ValueError(
                f"unknown kind {kind!r} in the cost comparison; choose from {known_kinds()}."
            )
    for kind, params in kind_params.items():
        if "is_causal" in params:
            raise ValueError(
                f"kind_params[{kind!r}] sets is_causal; causality belongs to the Shape, so every "
                "kind is measured on the same task."
            )
        if "local_window_size" in params and shape.local_window_size is not None:
            raise ValueError(
                f"kind_params[{kind!r}] sets local_window_size while the Shape sets one for every "
                "kind; use one or the other."
            )
    if torch_peer.NAME in kinds:
        torch_peer.import_torch()  # fail before hours of measuring, not at the first torch case
    if baseline not in kinds:
        kinds = [baseline, *kinds]
    os.makedirs(workdir, exist_ok=True)
    roofline = measure.matmul_gflops_per_s(dtype=shape.dtype)
    rows = []
    cases = [(kind, n) for n in seq_lens for kind in kinds]
    for kind, n in (bar := tqdm(cases, desc="cost", unit="case")):
        bar.set_postfix(kind=kind, n=n)
        gc.collect()  # free the previous case's (possibly many-GiB) buffers before timing
        rows.append(
            _measure(
                kind,
                kind_params.get(kind, kind_params.get(split_name(kind)[0])),
                shape,
                n,
                warmup=warmup,
                repeats=repeats,
                memory_budget_bytes=memory_budget_bytes,
                backward=backward,
            )
        )
    table = report.markdown(rows, baseline, roofline)
    report.write_csv(rows, os.path.join(workdir, "costs.csv"))
    with open(os.path.join(workdir, "costs.md"), "w") as f:
        f.write(table)
    title = f"{shape.describe()} on {jax.devices()[0].device_kind}"
    report.plot(rows, os.path.join(workdir, "costs.png"), title)
    with open(os.path.join(workdir, "shape.json"), "w") as f:
        json.dump({**dataclasses.asdict(shape), "roofline_gflops_per_s": roofline}, f, indent=2)
    return rows, table
