"""The tiny suite end to end: dense learns its recall task and local attention cannot; CSV
columns, the Markdown table with time to target, valid PNGs, and a resume that reads finished
runs instead of training them again."""

import csv
import json
import math
import os
import shutil

import jax
import matplotlib.image
import pytest

from attention_jax import suite
from attention_jax.configs import compare
from attention_jax.suite import plan
from attention_jax.train import group, trainer

COLUMNS = (
    "task kind seed learning_rate metric value validation steps_to_target seconds_to_target "
    "params params_vs_dense "
    "flops_per_token train_step_ms eval_step_ms peak_memory_mib exponent_fwd_bwd_s "
    "exponent_fwd_bwd_bytes exponent_fwd_flops theory_exponent"
).split()


def _tiny(tmp_path):
    config = compare.get_config("tiny")
    config.data_dir = str(tmp_path / "tfds")
    return config


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """The tiny suite run once; tests that change it work on a copy."""
    root = tmp_path_factory.mktemp("tiny_suite")
    workdir = str(root / "suite")
    rows = suite.run_suite(_tiny(root), workdir, devices=jax.devices()[:1])
    return root, workdir, rows


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_results_csv_has_every_column_and_a_row_per_kind_and_seed(finished):
    _, workdir, _ = finished
    rows = _read_csv(os.path.join(workdir, "results.csv"))
    assert list(rows[0]) == COLUMNS
    assert sorted((r["task"], r["kind"], r["seed"]) for r in rows) == [
        ("mqar_tiny", "dense", "0"),
        ("mqar_tiny", "local", "0"),
    ]
    for row in rows:
        for column in ("value", "params", "flops_per_token", "train_step_ms", "peak_memory_mib"):
            assert math.isfinite(float(row[column])) and float(row[column]) >= 0, column
        assert 0.0 <= float(row["value"]) <= 1.0
        assert float(row["learning_rate"]) in (3e-3, 1e-2)
    dense = next(r for r in rows if r["kind"] == "dense")
    assert float(dense["params_vs_dense"]) == 1.0
    assert float(dense["theory_exponent"]) == 2.0


def test_dense_learns_the_recall_task_and_short_local_attention_cannot(finished):
    """The regression guard of the comparison's recall task, at a scale that trains in seconds:
    exact attention must learn associative recall; a window of two keys must stay near chance."""
    _, workdir, _ = finished
    rows = {r["kind"]: r for r in _read_csv(os.path.join(workdir, "results.csv"))}
    assert float(rows["dense"]["value"]) >= 0.9
    assert 0 < float(rows["dense"]["steps_to_target"]) <= 200
    assert float(rows["local"]["value"]) < 0.2
    assert rows["local"]["steps_to_target"] == "nan"


def test_reported_quality_is_the_test_score_of_the_best_validation_rate(finished):
    _, workdir, _ = finished
    sweep = _read_csv(os.path.join(workdir, "sweep.csv"))
    assert len(sweep) == 4  # 2 kinds x 2 rates x 1 seed
    for row in _read_csv(os.path.join(workdir, "results.csv")):
        mine = [s for s in sweep if s["kind"] == row["kind"]]
        best = max(float(s["validation"]) for s in mine)
        chosen = [s for s in mine if float(s["validation"]) == best]
        # Ties go to the smaller rate.
        assert float(row["learning_rate"]) == min(float(s["learning_rate"]) for s in chosen)
        run = plan.run_dir(
            workdir,
            *_specs(row["kind"]),
            float(row["learning_rate"]),
            0,
        )
        with open(os.path.join(run, "results.json")) as f:
            assert json.load(f)["test/accuracy"] == pytest.approx(float(row["value"]))


def _specs(kind_label):
    tiny = plan.Suite.from_config(compare.get_config("tiny"))
    return tiny.tasks[0], next(k for k in tiny.kinds if k.label == kind_label)


def test_markdown_table_lists_every_kind_with_marked_bests(finished):
    _, workdir, _ = finished
    with open(os.path.join(workdir, "results.md")) as f:
        text = f.read()
    assert "### mqar_tiny: test accuracy ↑" in text
    assert (
        "| kind | accuracy | steps to 0.9 | s to 0.9 | lr | params | MFLOP/token | train step ms |"
        in text
    )
    table = [line for line in text.splitlines() if line.startswith(("| dense |", "| local |"))]
    assert len(table) == 4  # the task table and the sweep table, each with both kinds
    cells = [line.strip("|").split("|") for line in table[:2]]
    header = "quality steps seconds lr params flops step eval memory exponent theory".split()
    for column, name in enumerate(header, start=1):
        marked = ["**" in row[column] for row in cells]
        # Quality, time to target and every cost column mark their best; the others do not.
        assert any(marked) == (name not in ("steps", "lr", "params", "theory")), name
    assert "not reached (0/1)" in table[1]
    assert "### Learning-rate sweep" in text and "| mqar_tiny | dense |" in text


@pytest.mark.parametrize("name", ["quality_vs_cost.png", "cost_vs_length.png"])
def test_plots_are_valid_images(finished, name):
    _, workdir, _ = finished
    path = os.path.join(workdir, name)
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 400


def test_rerun_reads_finished_runs_without_training(finished, tmp_path, monkeypatch):
    root, workdir, rows = finished
    copy = str(tmp_path / "suite")
    shutil.copytree(workdir, copy)

    def refuse(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(trainer, "train_and_evaluate", refuse)
    monkeypatch.setattr(group, "train_group", refuse)
    again = suite.run_suite(_tiny(root), copy, devices=jax.devices()[:1])
    assert json.dumps(again) == json.dumps(rows)  # NaN (a target not reached) equals itself


def test_rerun_finishes_an_interrupted_group_from_its_checkpoint(finished, tmp_path):
    root, workdir, rows = finished
    copy = str(tmp_path / "suite")
    shutil.copytree(workdir, copy)
    task, kind = _specs("local")
    runs = [plan.run_dir(copy, task, kind, lr, 0) for lr in (3e-3, 1e-2)]  # one vmapped group
    logged = []
    for run in runs:
        os.remove(os.path.join(run, "results.json"))  # as if stopped after its last checkpoint
        with open(os.path.join(run, "metrics.jsonl")) as f:
            logged.append(f.read())
    again = suite.run_suite(_tiny(root), copy, devices=jax.devices()[:1])
    for run, before in zip(runs, logged):
        assert os.path.exists(os.path.join(run, "results.json"))
        with open(os.path.join(run, "metrics.jsonl")) as f:
            resumed = f.read()[len(before) :]
        # Only the final evaluation was added: no training step ran again.
        assert "train/loss" not in resumed and "test/accuracy" in resumed
    assert [r["value"] for r in again] == [r["value"] for r in rows]
