"""Losses and accuracies against float64 NumPy."""

import numpy as np

from attention_jax.train import losses


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_next_token_loss_counts_only_masked_positions():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((3, 5, 7)).astype(np.float32)
    targets = rng.integers(0, 7, (3, 5))
    mask = rng.random((3, 5)) < 0.4
    mask[0, 0] = True
    loss, accuracy, count = losses.next_token_loss(logits, targets, mask)
    log_p = _log_softmax(logits.astype(np.float64))
    nll = -np.take_along_axis(log_p, targets[..., None], -1)[..., 0]
    np.testing.assert_allclose(loss, nll[mask].mean(), rtol=1e-5)
    np.testing.assert_allclose(accuracy, (logits.argmax(-1) == targets)[mask].mean(), rtol=1e-6)
    assert count == mask.sum()


def test_next_token_loss_of_an_empty_mask_is_zero_not_nan():
    loss, accuracy, count = losses.next_token_loss(
        np.zeros((1, 2, 3), np.float32), np.zeros((1, 2), np.int32), np.zeros((1, 2), bool)
    )
    assert loss == 0 and accuracy == 0 and count == 0
