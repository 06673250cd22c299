"""Writes measured costs as CSV, a Markdown table and a log-log plot."""

from __future__ import annotations

import csv
import dataclasses
import math
import os
from collections.abc import Sequence

from attention_jax.bench.measure import Cost
from attention_jax.bench.scaling import fit_exponent

_MIB = 2**20


def exponents(rows: Sequence[Cost]) -> dict[str, dict[str, float]]:
    """Per kind, the fitted exponent p of cost ~ n^p for time, memory and FLOPs."""
    out = {}
    for kind in dict.fromkeys(r.kind for r in rows):
        mine = [r for r in rows if r.kind == kind]
        ns = [r.n for r in mine]
        out[kind] = {
            metric: fit_exponent(ns, [getattr(r, metric) for r in mine])
            for metric in ("fwd_s", "fwd_bwd_s", "fwd_bytes", "fwd_bwd_bytes", "fwd_flops")
        }
    return out


def write_csv(rows: Sequence[Cost], path: str) -> None:
    """One line per (kind, n) with every measured field and the achieved GFLOP/s."""
    fields = [f.name for f in dataclasses.fields(Cost)] + ["fwd_gflops_per_s"]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for r in rows:
            writer.writerow({**dataclasses.asdict(r), "fwd_gflops_per_s": r.fwd_gflops_per_s})


def read_csv(path: str) -> list[Cost]:
    """Rows written by `write_csv`, back as Cost records (for re-plotting or notebooks)."""

    def parse(name, text):
        if name in ("kind", "note", "implementation"):
            return text
        return int(text) if name == "n" else float(text)

    names = [f.name for f in dataclasses.fields(Cost)]
    with open(path, newline="") as f:
        # Columns added later (implementation) keep their defaults when an older file lacks them.
        return [
            Cost(**{k: parse(k, line[k]) for k in names if k in line}) for line in csv.DictReader(f)
        ]


def _fmt(x: float, digits: int = 1) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def markdown(rows: Sequence[Cost], baseline: str, roofline_gflops: float) -> str:
    """A table per sequence length with time ratios against `baseline`, then the exponents."""
    base = {r.n: r for r in rows if r.kind == baseline}
    lines = [
        f"Machine matmul roofline: {roofline_gflops:.0f} GFLOP/s. Ratios are time / {baseline} "
        "time in the same process (lower is faster). GFLOP/s counts each kind's own FLOPs, so "
        "blocks a kind skips are neither counted nor timed. Memory is XLA's compiled buffer "
        "assignment (arguments + outputs + temporaries).",
        "",
        "| kind | implementation | n | fwd ms | fwd/base | fwd GFLOP/s | fwd+bwd ms | "
        "fwd+bwd/base | fwd MiB | fwd+bwd MiB | fwd GFLOP | note |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in sorted(rows, key=lambda r: (r.n, r.kind != baseline, r.kind)):
        b = base.get(r.n)
        fwd_ratio = r.fwd_s / b.fwd_s if b else math.nan
        bwd_ratio = r.fwd_bwd_s / b.fwd_bwd_s if b else math.nan
        lines.append(
            f"| {r.kind} | {r.implementation} | {r.n} | {_fmt(r.fwd_s * 1e3)} | "
            f"{_fmt(fwd_ratio, 2)} | "
            f"{_fmt(r.fwd_gflops_per_s)} | {_fmt(r.fwd_bwd_s * 1e3)} | {_fmt(bwd_ratio, 2)} | "
            f"{_fmt(r.fwd_bytes / _MIB)} | {_fmt(r.fwd_bwd_bytes / _MIB)} | "
            f"{_fmt(r.fwd_flops / 1e9, 2)} | {r.note} |"
        )
    lines += [
        "",
        "Fitted exponent p of cost ~ n^p:",
        "",
        "| kind | fwd time | fwd+bwd time | fwd memory | fwd+bwd memory | fwd FLOPs |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for kind, p in exponents(rows).items():
        lines.append(
            f"| {kind} | {_fmt(p['fwd_s'], 2)} | {_fmt(p['fwd_bwd_s'], 2)} | "
            f"{_fmt(p['fwd_bytes'], 2)} | {_fmt(p['fwd_bwd_bytes'], 2)} | "
            f"{_fmt(p['fwd_flops'], 2)} |"
        )
    return "\n".join(lines) + "\n"


def plot(rows: Sequence[Cost], path: str, title: str = "") -> None:
    """Log-log panels of forward time, forward+backward time and forward+backward memory vs n."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("fwd_s", "forward time (s)"),
        ("fwd_bwd_s", "forward+backward time (s)"),
        ("fwd_bwd_bytes", "forward+backward memory (bytes)"),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(15, 4.5))
    for ax, (metric, label) in zip(axes, panels):
        for kind in dict.fromkeys(r.kind for r in rows):
            pts = [(r.n, getattr(r, metric)) for r in rows if r.kind == kind]
            pts = [(n, y) for n, y in pts if y and math.isfinite(y)]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=kind)
        ax.set(xscale="log", yscale="log", xlabel="sequence length n", ylabel=label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
