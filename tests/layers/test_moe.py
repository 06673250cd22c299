"""MoE routing against hand computations; the two dispatch paths; MoE equal to a dense FFN."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from attention_jax.layers import moe, routing

# Four tokens, three experts, probabilities written out so everything below is by hand.
PROBS = np.array([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.5, 0.1, 0.4], [0.1, 0.8, 0.1]])
LOGITS = jnp.log(jnp.asarray(PROBS, jnp.float32))


def test_switch_top1_fills_slots_in_order_and_drops_past_capacity():
    r = routing.top_k_routing(LOGITS, k=1, capacity=2)
    # First choices: experts 0, 0, 0, 1. Expert 0 is full after tokens 0 and 1.
    np.testing.assert_array_equal(r.expert_index[:, 0], [0, 0, 0, 1])
    np.testing.assert_allclose(r.weight[:, 0], [0.7, 0.6, 0.0, 0.8], rtol=1e-6)
    want = np.zeros((4, 3, 2))
    want[0, 0, 0] = want[1, 0, 1] = want[3, 1, 0] = 1
    np.testing.assert_array_equal(r.dispatch, want)
    np.testing.assert_allclose(
        r.combine, want * np.array([0.7, 0.6, 0, 0.8])[:, None, None], rtol=1e-6
    )
    # f = (3, 1, 0) / 4 choices; P = column means of PROBS.
    f, p = np.array([0.75, 0.25, 0.0]), PROBS.mean(0)
    np.testing.assert_allclose(r.stats["load_balancing_loss"], 3 * np.sum(f * p), rtol=1e-6)
    # Each row of PROBS sums to 1, so logsumexp(log p) = 0.
    np.testing.assert_allclose(r.stats["z_loss"], 0.0, atol=1e-6)
    np.testing.assert_allclose(r.stats["dropped_fraction"], 0.25)
    np.testing.assert_allclose(r.stats["expert_load"], [0.5, 0.25, 0.0])


def test_top2_gives_first_choices_priority_and_renormalises_weights():
    r = routing.top_k_routing(LOGITS, k=2, capacity=2)
    # First choices fill expert 0 (tokens 0, 1) and expert 1 (token 3); token 2's first choice
    # is dropped. Second choices in token order: token 0 -> expert 1 (slot 1, kept), token 1 ->
    # expert 1 (full), token 2 -> expert 2 (slot 0), token 3 -> expert 0 (full).
    np.testing.assert_array_equal(r.expert_index, [[0, 1], [0, 1], [0, 2], [1, 0]])
    top2 = np.sort(PROBS, axis=1)[:, ::-1][:, :2]
    normalised = top2 / top2.sum(1, keepdims=True)
    kept = np.array([[1, 1], [1, 0], [0, 1], [1, 0]])
    np.testing.assert_allclose(r.weight, normalised * kept, rtol=1e-6)
    assert r.dispatch[0, 1, 1] == 1 and r.dispatch[2, 2, 0] == 1 and r.dispatch.sum() == 5
    np.testing.assert_allclose(r.stats["dropped_fraction"], 3 / 8)


def test_batch_prioritised_routing_serves_confident_tokens_first():
    r = routing.top_k_routing(LOGITS, k=1, capacity=2, batch_prioritized=True)
    # Expert 0 is wanted by tokens 0 (0.7), 1 (0.6) and 2 (0.5): the least sure is dropped.
    np.testing.assert_allclose(r.weight[:, 0], [0.7, 0.6, 0.0, 0.8], rtol=1e-6)
    shuffled = routing.top_k_routing(
        LOGITS[jnp.array([2, 0, 1, 3])], k=1, capacity=2, batch_prioritized=True
    )
    np.testing.assert_allclose(shuffled.weight[:, 0], [0.0, 0.7, 0.6, 0.8], rtol=1e-6)


def test_expert_choice_takes_each_experts_most_probable_tokens():
    r = routing.expert_choice_routing(LOGITS, capacity=2)
    # Expert 2's second pick is a tie between tokens 0, 1 and 3 (all 0.1).
    np.testing.assert_array_equal(r.expert_index[:2], [[0, 1], [3, 1]])
    assert r.expert_index[2, 0] == 2 and r.expert_index[2, 1] in (0, 1, 3)
    np.testing.assert_allclose(r.weight, [[0.7, 0.6], [0.8, 0.3], [0.4, 0.1]], rtol=1e-6)
    assert r.stats["dropped_fraction"] == 0.0  # every token is picked by someone


def test_dropless_keeps_every_choice():
    r = routing.top_k_routing(LOGITS, k=2, capacity=routing.expert_capacity(4, 3, 2, None))
    assert r.stats["dropped_fraction"] == 0.0 and r.dispatch.sum() == 8


CASES = [
    dict(router="top_k", top_k=1, capacity_factor=1.0, activation="gelu"),
    dict(router="top_k", top_k=2, capacity_factor=1.25, activation="swiglu"),
    dict(router="top_k", top_k=2, capacity_factor=None, activation="relu"),
    dict(router="expert_choice", top_k=1, capacity_factor=1.0, activation="gelu"),
    # 24 tokens routed in 3 groups of 8, each with its own capacity.
    dict(router="top_k", top_k=2, capacity_factor=1.0, activation="gelu", group_size=8),
    dict(router="expert_choice", top_k=1, capacity_factor=1.0, activation="relu", group_size=8),
]


def _layer(dispatch, **kw):
    return moe.MoEFeedForward(8, 16, num_experts=4, dispatch=dispatch, rngs=nnx.Rngs(0), **kw)


@pytest.mark.parametrize(
    "case",
    CASES,
    ids=lambda c: f"{c['router']}-k{c['top_k']}-{c['activation']}-g{c.get('group_size')}",
)
def test_einsum_and_sort_dispatch_agree_in_value_and_gradient(case):
    x = jax.random.normal(jax.random.key(1), (2, 12, 8))

    def value_and_grads(dispatch):
        layer = _layer(dispatch, **case)
        graphdef, params, rest = nnx.split(layer, nnx.Param, ...)

        def loss(params, x, rest):
            return jnp.sum(jnp.sin(nnx.merge(graphdef, params, rest, copy=True)(x)))

        return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(params, x, rest)

    (want, want_grads), (got, got_grads) = value_and_grads("einsum"), value_and_grads("sort")
    np.testing.assert_allclose(got, want, rtol=1e-5)
    for g, w in zip(jax.tree.leaves(got_grads), jax.tree.leaves(want_grads), strict=True):
        np.testing.assert_allclose(g, w, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dispatch", moe.DISPATCHES)
def test_identical_experts_with_every_expert_chosen_equal_one_ffn(dispatch):
    layer = _layer(dispatch, top_k=4, capacity_factor=None, activation="gelu")
    layer.up[...] = jnp.broadcast_to(layer.up[0], layer.up.shape)
    layer.down[...] = jnp.broadcast_to(layer.down[0], layer.down.shape)
    x = np.random.default_rng(0).standard_normal((2, 5, 8))
    up, down = np.asarray(layer.up[0], np.float64), np.asarray(layer.down[0], np.float64)
    h = x @ up
    gelu = 0.5 * h * (1 + np.vectorize(math.erf)(h / np.sqrt(2)))
    np.testing.assert_allclose(
        layer(jnp.asarray(x, jnp.float32)), gelu @ down, atol=1e-5, rtol=1e-5
    )


def test_jitter_only_in_training_and_stats_follow_each_call():
    layer = _layer("einsum", top_k=1, router_jitter=0.5)
    x = jax.random.normal(jax.random.key(2), (1, 16, 8))
    np.testing.assert_array_equal(layer(x), layer(x))
    assert not np.array_equal(layer(x, deterministic=False), layer(x, deterministic=False))
    layer(x)
    first = np.asarray(layer.stats.get_value()["load_balancing_loss"])
    layer(x * 10.0 + 3.0)
    assert first != np.asarray(layer.stats.get_value()["load_balancing_loss"])


def test_auxiliary_losses_reach_the_router():
    layer = _layer("einsum", top_k=2)
    graphdef, params, rest = nnx.split(layer, nnx.Param, ...)

    def aux(params, rest):
        model = nnx.merge(graphdef, params, rest, copy=True)
        model(jax.random.normal(jax.random.key(5), (2, 8, 8)))
        stats = model.stats.get_value()
        return stats["load_balancing_loss"] + stats["z_loss"]

    grads = jax.grad(aux)(params, rest)
    assert float(jnp.abs(grads["router_kernel"][...]).sum()) > 0


def test_tokens_are_grouped_by_the_largest_even_split():
    layer = _layer("einsum", top_k=1, group_size=1024)
    assert layer.groups(1500) == (2, 750)  # not a multiple of 1024: 2 groups of 750
    assert layer.groups(300) == (1, 300)
    assert layer.groups(1031) == (1, 1031)  # prime: one group rather than tiny ones


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(router="nope"), "router must be one of"),
        (dict(top_k=5), "1 <= top_k <= num_experts"),
        (dict(router="expert_choice", capacity_factor=None), "expert choice needs"),
        (dict(capacity_factor=0.0), "capacity_factor must be > 0"),
    ],
)
def test_bad_settings_are_refused(kw, match):
    with pytest.raises(ValueError, match=match):
        layer = _layer("einsum", **kw)
        layer(jnp.ones((1, 8, 8)))


@pytest.mark.parametrize("activation", ["gelu", "swiglu"])
def test_expert_parallel_over_8_devices_equals_one_device(activation):
    mesh = jax.make_mesh((8,), ("expert",), (jax.sharding.AxisType.Auto,))
    layer = moe.MoEFeedForward(
        8,
        16,
        num_experts=8,
        top_k=2,
        capacity_factor=1.5,
        group_size=8,
        mesh=mesh,
        activation=activation,
        rngs=nnx.Rngs(3),
    )
    x = jax.random.normal(jax.random.key(4), (4, 16, 8))  # 64 tokens: 8 groups of 8

    def value_and_grads(parallel):
        layer.mesh = mesh if parallel else None
        graphdef, params, rest = nnx.split(layer, nnx.Param, ...)

        def loss(params, x, rest):
            return jnp.sum(jnp.sin(nnx.merge(graphdef, params, rest, copy=True)(x)))

        return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(params, x, rest)

    (want, want_grads), (got, got_grads) = value_and_grads(False), value_and_grads(True)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    for g, w in zip(jax.tree.leaves(got_grads), jax.tree.leaves(want_grads), strict=True):
        np.testing.assert_allclose(g, w, atol=1e-5, rtol=1e-5)
