"""Every notebook in colab/ runs top to bottom on CPU at its smallest sizes."""

import os

import nbclient
import nbformat
import pytest

COLAB = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "colab")
NOTEBOOKS = sorted(name for name in os.listdir(COLAB) if name.endswith(".ipynb"))


def test_every_notebook_is_tested():
    assert NOTEBOOKS == [
        "01_quickstart.ipynb",
        "02_attention_maps.ipynb",
        "03_cost_vs_length.ipynb",
        "04_quality_vs_cost.ipynb",
    ]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_without_errors(name, tmp_path, monkeypatch):
    notebook = nbformat.read(os.path.join(COLAB, name), as_version=4)
    # The kernel inherits this environment: the smallest sizes, generated data in a temporary
    # directory, and one CPU device as on a Colab CPU runtime.
    monkeypatch.setenv("ATTENTION_JAX_NOTEBOOK_SIZE", "smallest")
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    client = nbclient.NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": tmp_path}}
    )
    client.execute()  # raises CellExecutionError, with the cell and traceback, on any error
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert "'smallest' sizes" in "".join(o.get("text", "") for o in outputs)
