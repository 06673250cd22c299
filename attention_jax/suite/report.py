"""The suite's outputs: results.csv, sweep.csv, results.md and two plots.

Quality is the mean +- std over seeds at each kind's best learning rate; the best value of each
column is in bold; a kind whose parameter count is more than 10% off dense's is flagged.
"""

from __future__ import annotations

import csv
import math
import os
import statistics

from attention_jax.suite.plan import Suite, skip_reason

PARAMS_TOLERANCE = 0.10
# (column, header, scale, digits) of the per-task table after quality; lower is better.
COST_COLUMNS = (
    ("flops_per_token", "MFLOP/token", 1e-6, 3),
    ("train_step_ms", "train step ms", 1, 1),
    ("eval_step_ms", "eval step ms", 1, 1),
    ("peak_memory_mib", "train MiB", 1, 1),
    ("exponent_fwd_bwd_s", "time exp.", 1, 2),
)
_CSV_COLUMNS = (
    "task kind seed learning_rate metric value validation steps_to_target seconds_to_target "
    "params params_vs_dense "
    "flops_per_token train_step_ms eval_step_ms peak_memory_mib exponent_fwd_bwd_s "
    "exponent_fwd_bwd_bytes exponent_fwd_flops theory_exponent"
).split()


def write_csv(rows: list[dict], path: str, columns=None) -> None:
    """Rows as CSV with `columns` (default: the keys of the first row) in order."""
    columns = columns or list(rows[0])
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows({c: row.get(c) for c in columns} for row in rows)


def _fmt(x, digits: int) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _mean_std(values) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    # One seed has no spread to report.
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else math.nan


def summarize(rows: list[dict]) -> list[dict]:
    """One record per (task, kind): quality mean/std over the seeds that did not diverge, how
    many did not (`finite`) of how many ran (`seeds`), time to target averaged over the seeds
    that reached it (`reached` of them), and the costs (equal across seeds)."""
    out = {}
    for row in rows:
        out.setdefault((row["task"], row["kind"]), []).append(row)
    summary = []
    for group in out.values():
        finite = [r["value"] for r in group if math.isfinite(r["value"])]
        mean, std = _mean_std(finite)
        per_seed = ("seed", "value", "validation", "steps_to_target", "seconds_to_target")
        shared = {k: v for k, v in group[0].items() if k not in per_seed}
        reached = [r for r in group if math.isfinite(r.get("steps_to_target", math.nan))]
        to_target = {
            name: _mean_std([r[name] for r in reached])[0]
            for name in ("steps_to_target", "seconds_to_target")
        }
        summary.append(
            {
                **shared,
                "mean": mean,
                "std": std,
                "finite": len(finite),
                "seeds": len(group),
                "reached": len(reached),
                **to_target,
            }
        )
    return summary


def _best(values, lower_is_better: bool):
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return None
    return min(finite) if lower_is_better else max(finite)


def _bold_if(text: str, value, best) -> str:
    return f"**{text}**" if best is not None and value == best else text


def task_table(task, summary: list[dict]) -> list[str]:
    """The Markdown table of one task: quality, parameters and costs per kind."""
    mine = [s for s in summary if s["task"] == task.label]
    arrow = "↑" if task.higher_is_better else "↓"
    target = task.target is not None
    lines = [
        f"### {task.label}: test {task.metric} {arrow}",
        "",
        "| kind | "
        + f"{task.metric} | "
        + (f"steps to {task.target:g} | s to {task.target:g} | " if target else "")
        + "lr | params | "
        + " | ".join(header for _, header, *_ in COST_COLUMNS)
        + " | theory exp. |",
        "|---|---:|"
        + ("---:|---:|" if target else "")
        + "---:|---:|"
        + "---:|" * len(COST_COLUMNS)
        + "---:|",
    ]
    best_seconds = _best([s["seconds_to_target"] for s in mine], True)
    best_quality = _best([s["mean"] for s in mine], not task.higher_is_better)
    best_cost = {c: _best([s[c] for s in mine], True) for c, *_ in COST_COLUMNS}
    for s in mine:
        quality = _bold_if(f"{_fmt(s['mean'], 3)} ± {_fmt(s['std'], 3)}", s["mean"], best_quality)
        if s["finite"] < s["seeds"]:  # diverged seeds are left out of the mean: say so
            quality += f" ({s['finite']}/{s['seeds']} seeds)"
        params = f"{s['params'] / 1e3:.1f}k"
        if math.isfinite(s["params_vs_dense"]) and abs(s["params_vs_dense"] - 1) > PARAMS_TOLERANCE:
            params += f" ⚠ {s['params_vs_dense']:.2f}× dense"
        costs = [
            _bold_if(_fmt(s[c] * scale, digits), s[c], best_cost[c])
            for c, _, scale, digits in COST_COLUMNS
        ]
        reach = ""
        if target:
            reach = _time_to_target(s, best_seconds) + " | "
        lines.append(
            f"| {s['kind']} | {quality} | {reach}{s['learning_rate']:g} | {params} | "
            + " | ".join(costs)
            + f" | {s['theory_exponent']:g} |"
        )
    return lines


def _time_to_target(s: dict, best_seconds) -> str:
    """'steps (reached/seeds) | seconds' over the seeds that reached the target, or 'not
    reached'."""
    if not s["reached"]:
        return f"not reached (0/{s['seeds']}) | —"
    steps = f"{s['steps_to_target']:.0f}"
    if s["reached"] < s["seeds"]:
        steps += f" ({s['reached']}/{s['seeds']})"
    seconds = _bold_if(_fmt(s["seconds_to_target"], 1), s["seconds_to_target"], best_seconds)
    return f"{steps} | {seconds}"


def sweep_table(suite: Suite, sweep_rows: list[dict]) -> list[str]:
    """Validation score of every (task, kind, learning rate) on the first seed."""
    lrs = sorted({r["learning_rate"] for r in sweep_rows})
    lines = [
        f"Validation score per learning rate (seed {suite.seeds[0]}), best in bold; the table "
        "above reports the best rate (the smaller one on a tie). — marks a rate not swept or a "
        "run that diverged.",
        "",
        "| task | kind | " + " | ".join(f"lr {lr:g}" for lr in lrs) + " |",
        "|---|---|" + "---:|" * len(lrs),
    ]
    first = [r for r in sweep_rows if r["seed"] == suite.seeds[0]]
    for task in suite.tasks:
        for kind in suite.kinds:
            got = {
                r["learning_rate"]: r["validation"]
                for r in first
                if (r["task"], r["kind"]) == (task.label, kind.label)
            }
            if not got:
                continue
            best = _best(list(got.values()), not task.higher_is_better)
            cells = [_bold_if(_fmt(got.get(lr, math.nan), 3), got.get(lr), best) for lr in lrs]
            lines.append(f"| {task.label} | {kind.label} | " + " | ".join(cells) + " |")
    return lines


def length_table(sweeps: dict[str, list[dict]]) -> list[str]:
    """Forward+backward milliseconds of one attention layer per kind and n."""
    ns = sorted({p["n"] for points in sweeps.values() for p in points})
    lines = [
        "| kind | " + " | ".join(f"n={n}" for n in ns) + " |",
        "|---|" + "---:|" * len(ns),
    ]
    for kind, points in sweeps.items():
        by_n = {p["n"]: p["fwd_bwd_s"] * 1e3 for p in points}
        lines.append(f"| {kind} | " + " | ".join(_fmt(by_n.get(n, math.nan), 1) for n in ns) + " |")
    return lines


def implementation_line(summary: list[dict]) -> str:
    """Which engine ran each kind's attention (results measured before it was recorded: xla)."""
    ran = {}
    for s in summary:
        ran.setdefault(s.get("implementation") or "xla", []).append(s["kind"])
    if set(ran) == {"xla"}:
        return "Attention implementation: 'xla' (this library's engine) for every kind."
    parts = [f"'{name}' for {', '.join(dict.fromkeys(kinds))}" for name, kinds in ran.items()]
    return "Attention implementation: " + "; ".join(parts) + "."


def markdown(suite: Suite, rows, sweep_rows, sweeps, device: str, skipped) -> str:
    """The whole results.md."""
    summary = summarize(rows)
    cost = suite.cost
    lines = [
        f"Measured on {device}. Quality: mean ± std over seeds {list(suite.seeds)} at each "
        "kind's best learning rate. Costs at the task's batch and length: forward FLOPs per "
        "token, median train step (forward, backward, update) and eval step, and the train "
        "step's compiled memory. Time exp.: the fitted p of forward+backward time ~ n^p for one "
        f"attention layer (d_model {cost['d_model']}, {cost['num_heads']} heads, "
        f"n = {', '.join(map(str, cost['seq_lens']))}). Best of each column in bold; ⚠ marks "
        f"parameter counts more than {PARAMS_TOLERANCE:.0%} off dense's. Steps to target: "
        "the first validation evaluation at or past the task's target, averaged over the seeds "
        "that reached it (k/n when not all did); seconds = those steps x the kind's median "
        "train step, so every kind is timed on the same clock.",
        "",
    ]
    lines += [implementation_line(summary), ""]
    for task in suite.tasks:
        lines += task_table(task, summary) + [""]
    if skipped:
        lines += ["Not run: " + "; ".join(skipped) + ".", ""]
    lines += ["### Learning-rate sweep", ""] + sweep_table(suite, sweep_rows) + [""]
    lines += ["### One attention layer, forward+backward ms", ""] + length_table(sweeps)
    return "\n".join(lines) + "\n"


def _pareto(points: list[tuple[float, float, str]], higher_is_better: bool):
    """The points no other point beats on both cost (lower) and quality, by cost."""
    sign = 1 if higher_is_better else -1
    front, best = [], -math.inf
    for x, y, label in sorted(points, key=lambda p: (p[0], -sign * p[1])):
        if sign * y > best:
            front.append((x, y, label))
            best = sign * y
    return front


def plot_quality_vs_cost(suite: Suite, summary: list[dict], path: str) -> None:
    """One panel per task: quality against train step time (log x), Pareto front drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(suite.tasks), figsize=(5 * len(suite.tasks), 4.2))
    axes = axes if len(suite.tasks) > 1 else [axes]
    for ax, task in zip(axes, suite.tasks):
        points = [
            (s["train_step_ms"], s["mean"], s["kind"])
            for s in summary
            if s["task"] == task.label and math.isfinite(s["mean"])
        ]
        for x, y, label in points:
            ax.scatter(x, y, zorder=3)
            ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        front = _pareto(points, task.higher_is_better)
        if front:
            ax.step(*zip(*[(x, y) for x, y, _ in front]), where="post", color="gray", alpha=0.6)
        ax.set(xscale="log", xlabel="train step (ms, log)", ylabel=f"test {task.metric}")
        ax.set_title(task.label, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_cost_vs_length(sweeps: dict[str, list[dict]], path: str, title: str) -> None:
    """Log-log forward+backward time and memory of one layer per kind, with n and n^2 guides."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    panels = (("fwd_bwd_s", "forward+backward time (s)"), ("fwd_bwd_bytes", "memory (bytes)"))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    ns = sorted({p["n"] for points in sweeps.values() for p in points})
    for ax, (metric, label) in zip(axes, panels):
        anchors = []
        for kind, points in sweeps.items():
            pts = [(p["n"], p[metric]) for p in points if math.isfinite(p[metric])]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=kind)
                anchors.append(pts[0])
        if anchors:
            n0 = min(n for n, _ in anchors)
            y0 = statistics.median(y for n, y in anchors if n == n0)
            for power, style in ((1, ":"), (2, "--")):
                guide = [y0 * (n / n0) ** power for n in ns]
                ax.plot(ns, guide, style, color="black", alpha=0.5, label=f"∝ n^{power}")
        ax.set(xscale="log", yscale="log", xlabel="sequence length n", ylabel=label)
        ax.set_xticks(ns, [str(n) for n in ns])  # the measured lengths, not powers of ten
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_all(workdir: str, suite: Suite, rows, sweep_rows, sweeps, *, device: str) -> None:
    """results.csv, sweep.csv, results.md, quality_vs_cost.png and cost_vs_length.png."""
    skipped = [
        f"{kind.label} on {task.label} ({reason})"
        for task in suite.tasks
        for kind in suite.kinds
        if (reason := skip_reason(task, kind))
    ]
    write_csv(rows, os.path.join(workdir, "results.csv"), _CSV_COLUMNS)
    write_csv(sweep_rows, os.path.join(workdir, "sweep.csv"))
    with open(os.path.join(workdir, "results.md"), "w") as f:
        f.write(markdown(suite, rows, sweep_rows, sweeps, device, skipped))
    plot_quality_vs_cost(suite, summarize(rows), os.path.join(workdir, "quality_vs_cost.png"))
    cost = suite.cost
    title = f"one attention layer, d_model {cost['d_model']}, {cost['num_heads']} heads, {device}"
    plot_cost_vs_length(sweeps, os.path.join(workdir, "cost_vs_length.png"), title)
