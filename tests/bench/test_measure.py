"""The cost harness: scaling fit, memory accounting, and a small end-to-end comparison."""

import csv
import json
import math
import sys

import jax
import pytest

from attention_jax import bench, ops
from attention_jax.bench import compare, measure, report, torch_peer


def test_fit_exponent_recovers_powers():
    ns = [128, 256, 512, 1024]
    assert bench.fit_exponent(ns, [3.0 * n**2 for n in ns]) == pytest.approx(2.0)
    assert bench.fit_exponent(ns, [0.5 * n for n in ns]) == pytest.approx(1.0)
    assert math.isnan(bench.fit_exponent(ns, [1.0, math.nan, math.nan, math.nan]))


def test_flash_memory_grows_linearly_dense_quadratically():
    shape = bench.Shape(batch=1, num_heads=2, num_kv_heads=2, head_dim=16)
    ns = [512, 1024, 2048]
    rows = {
        kind: [
            bench.measure_cost(kind, ops.get(kind), shape, n, repeats=1, memory_budget_bytes=0)
            for n in ns
        ]
        for kind in ("dense", "flash")
    }
    dense_p = bench.fit_exponent(ns, [r.fwd_bwd_bytes for r in rows["dense"]])
    flash_p = bench.fit_exponent(ns, [r.fwd_bwd_bytes for r in rows["flash"]])
    # Dense keeps one to three n x n arrays for its backward (XLA's buffer assignment decides
    # per n): clearly superlinear, as flash is not.
    assert dense_p > 1.6
    assert flash_p < 1.2
    # A zero budget means nothing runs: the rows say so instead of timing anything.
    assert all(math.isnan(r.fwd_s) and "not run" in r.note for r in rows["flash"])


def test_run_comparison_writes_tables_and_plot(tmp_path, monkeypatch):
    # The roofline is still measured, on 256 x 256 matmuls: 2048 x 2048 ones take seconds here.
    roofline = measure.matmul_gflops_per_s
    monkeypatch.setattr(
        measure,
        "matmul_gflops_per_s",
        lambda dtype="float32": roofline(size=256, dtype=dtype, repeats=3),
    )
    rows, table = compare.run_comparison(
        str(tmp_path),
        kinds=["dense", "flash"],
        seq_lens=[64, 128],
        shape=bench.Shape(batch=1, num_heads=2, num_kv_heads=1, head_dim=16, is_causal=True),
        kind_params={"flash": {"block_q": 32, "block_kv": 32}},
        repeats=1,
    )
    assert {r.kind for r in rows} == {"jax.nn", "dense", "flash"}
    assert all(r.fwd_s > 0 and r.fwd_bwd_s > 0 for r in rows)
    with open(tmp_path / "costs.csv") as f:
        assert len(list(csv.DictReader(f))) == 6
    assert report.read_csv(str(tmp_path / "costs.csv")) == rows
    assert "| flash | xla | 128 |" in table and "Fitted exponent" in table
    assert {r.implementation for r in rows} == {"xla"}
    assert (tmp_path / "costs.png").stat().st_size > 0
    with open(tmp_path / "shape.json") as f:
        assert json.load(f)["roofline_gflops_per_s"] > 0


def test_unknown_kind_is_refused_before_measuring(tmp_path):
    with pytest.raises(ValueError, match="unknown kind"):
        compare.run_comparison(str(tmp_path), kinds=["nope"], seq_lens=[8], shape=bench.Shape())


def test_markdown_ratio_is_against_baseline():
    def row(kind, fwd_s):
        return bench.Cost(kind, 8, fwd_s, 2 * fwd_s, 1, 1, 10, 30, 10.0)

    table = report.markdown([row("jax.nn", 2.0), row("flash", 0.5)], "jax.nn", 100.0)
    assert "| flash | xla | 8 | 500.0 | 0.25 |" in table


def test_torch_peer_without_torch_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    with pytest.raises(ValueError, match=r"\[torch\]"):
        torch_peer.measure_torch(bench.Shape(), 16)


def test_bad_baseline_and_mask_params_are_refused_early(tmp_path):
    shape = bench.Shape()
    with pytest.raises(ValueError, match="jax_nn"):
        compare.run_comparison(
            str(tmp_path), kinds=["flash"], seq_lens=[8], shape=shape, baseline="jax_nn"
        )
    with pytest.raises(ValueError, match="is_causal"):
        compare.run_comparison(
            str(tmp_path),
            kinds=["flash"],
            seq_lens=[8],
            shape=shape,
            kind_params={"flash": {"is_causal": True}},
        )
    with pytest.raises(ValueError, match="local_window_size"):
        compare.run_comparison(
            str(tmp_path),
            kinds=["local"],
            seq_lens=[8],
            shape=bench.Shape(local_window_size=(2, 2)),
            kind_params={"local": {"local_window_size": (1, 1)}},
        )


def test_kinds_by_implementation_are_named_and_recorded():
    known = compare.known_kinds()
    assert {"flash@cudnn", "local@pallas_tpu", "jax.nn@cudnn"} <= set(known)
    assert "strided@xla" not in known  # one engine: no names by implementation
    assert compare.split_name("flash@pallas_gpu") == ("flash", "pallas_gpu")
    assert compare.split_name("flash") == ("flash", None)
    shape = bench.Shape(batch=1, num_heads=2, num_kv_heads=1, head_dim=16, is_causal=True)
    assert compare.ran_with("flash", None, shape, 64) == "xla"
    assert compare.ran_with("torch.sdpa", None, shape, 64) == "torch"
    with ops.interpret_kernels():
        assert compare.ran_with("flash@pallas_tpu", None, shape, 64) == "pallas_tpu"


def test_vendor_rows_count_the_xla_kinds_flops():
    """A vendor kernel is opaque to the FLOP count: its row counts the same kind in XLA."""
    shape = bench.Shape(batch=1, num_heads=2, num_kv_heads=2, head_dim=16, is_causal=True)
    with ops.interpret_kernels():
        vendor = measure.measure_cost(
            "flash@pallas_tpu",
            compare.resolve("flash@pallas_tpu"),
            shape,
            128,
            repeats=1,
            backward=False,
            flops_op=compare.resolve("flash@xla"),
            implementation="pallas_tpu",
        )
    xla = measure.measure_cost(
        "flash", compare.resolve("flash"), shape, 128, repeats=1, backward=False
    )
    assert vendor.implementation == "pallas_tpu" and xla.implementation == "xla"
    assert vendor.fwd_flops == xla.fwd_flops > 0


def test_read_csv_takes_files_written_before_the_implementation_column(tmp_path):
    path = tmp_path / "old.csv"
    row = bench.Cost("flash", 8, 1.0, 2.0, 1, 1, 10, 30, 10.0, "note")
    report.write_csv([row], str(path))
    with open(path) as f:
        lines = list(csv.DictReader(f))
    with open(path, "w", newline="") as f:
        fields = [name for name in lines[0] if name != "implementation"]
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerow({name: lines[0][name] for name in fields})
    assert report.read_csv(str(path)) == [row]


def test_a_case_that_exhausts_device_memory_while_compiling_is_reported(monkeypatch):
    def exhausted(fn, args):
        raise jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: out of memory while autotuning")

    monkeypatch.setattr(jax.stages.Lowered, "compile", lambda self: exhausted(None, None))
    cost = measure.measure_cost("flash", compare.resolve("flash"), bench.Shape(), 64, repeats=1)
    assert cost.note == "not compiled: out of device memory" and math.isnan(cost.fwd_s)
