"""Checkpoints written by earlier versions of attention_jax still restore to the same model.

The fixtures under tests/fixtures were trained and saved by an older commit (see
make_checkpoints.py there); restoring them with today's code must give the logits they gave
then. A renamed, reshaped or re-initialised parameter fails here.
"""

import os
import shutil

import jax
import numpy as np
import pytest

from attention_jax.train import loading

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures")


@pytest.mark.parametrize("name", ["classifier_v1", "lm_v1"])
def test_an_old_checkpoint_restores_to_the_logits_it_gave(name, tmp_path):
    workdir = tmp_path / name
    shutil.copytree(os.path.join(FIXTURES, name), workdir)
    model, _, _ = loading.load_trained(str(workdir))
    model.eval()
    expected = np.load(workdir / "expected.npz")
    logits = jax.jit(lambda m, t: m(t))(model, expected["tokens"])
    np.testing.assert_allclose(np.asarray(logits), expected["logits"], rtol=1e-4, atol=1e-5)
