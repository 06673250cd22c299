"""Tests of the reference checkers on hand-written valid and corrupted examples."""

import itertools

import numpy as np
import pytest

from tests.data.checkers import (
    check_chars,
    check_copying,
    check_induction_heads,
    check_listops,
    check_mqar,
    evaluate_listops,
)


def _seq_example(inputs, scored):
    """Build an inputs/targets/loss_mask example with targets given as {position: target}."""
    n = len(inputs)
    targets = np.zeros(n, np.int32)
    loss_mask = np.zeros(n, np.bool_)
    for t, target in scored.items():
        targets[t] = target
        loss_mask[t] = True
    return {"inputs": np.array(inputs, np.int32), "targets": targets, "loss_mask": loss_mask}


def _corrupt(ex, key, position, value):
    """Copy of ex with ex[key][position] set to value."""
    out = {k: v.copy() for k, v in ex.items()}
    out[key][position] = value
    return out


# --- mqar -----------------------------------------------------------------------------------

MQAR = {"seq_len": 16, "num_kv_pairs": 2, "vocab_size": 16}


def _mqar_valid():
    """Keys 3->9 and 5->12; queries of 5 at 6 and of 3 at 10; fillers include key lookalikes."""
    inputs = [3, 9, 5, 12, 0, 3, 5, 15, 3, 7, 3, 1, 14, 8, 2, 6]
    return _seq_example(inputs, {6: 12, 10: 9})


def test_mqar_valid_passes():
    check_mqar(_mqar_valid(), **MQAR)


def test_mqar_single_pair_at_minimum_length():
    check_mqar(_seq_example([2, 5, 2, 0], {2: 5}), seq_len=4, num_kv_pairs=1, vocab_size=8)


@pytest.mark.parametrize(
    "corrupt, match",
    [
        (lambda ex: _corrupt(ex, "targets", 6, 9), r"targets\[6\]"),
        (lambda ex: _corrupt(ex, "inputs", 2, 3), "repeated in the context"),
        (lambda ex: _corrupt(ex, "inputs", 3, 9), "value 9 repeated"),
        (lambda ex: _corrupt(ex, "inputs", 6, 4), "not a context key"),
        (lambda ex: _corrupt(ex, "inputs", 10, 5), "queried more than once"),
        (lambda ex: _corrupt(ex, "loss_mask", 10, False), "never queried"),
        (lambda ex: _corrupt(ex, "loss_mask", 5, True), "odd offset"),
        (lambda ex: _corrupt(ex, "loss_mask", 2, True), "context position"),
        (lambda ex: _corrupt(ex, "targets", 7, 4), r"targets\[7\]"),
        (lambda ex: _corrupt(ex, "inputs", 0, 9), "context key 9"),
        (lambda ex: _corrupt(ex, "inputs", 1, 7), "context value 7"),
        (lambda ex: _corrupt(ex, "inputs", 4, 16), "outside 0..15"),
        (lambda ex: {**ex, "inputs": ex["inputs"].astype(np.int64)}, "dtype"),
        (lambda ex: {**ex, "loss_mask": ex["loss_mask"].astype(np.int32)}, "dtype"),
        (lambda ex: {k: v[:-2] for k, v in ex.items()}, "length"),
    ],
)
def test_mqar_corruptions_fail(corrupt, match):
    with pytest.raises(AssertionError, match=match):
        check_mqar(corrupt(_mqar_valid()), **MQAR)


def test_mqar_query_on_odd_offset_fails():
    # Key 3 queried at offset 5 (position 9) instead of an even offset.
    inputs = [3, 9, 5, 12, 0, 0, 5, 0, 0, 3, 0, 0, 0, 0, 0, 0]
    with pytest.raises(AssertionError, match="odd offset"):
        check_mqar(_seq_example(inputs, {6: 12, 9: 9}), **MQAR)


def _mqar_zero_valid():
    """The pairs and queries of _mqar_valid with token 0 everywhere else."""
    inputs = [3, 9, 5, 12, 0, 0, 5, 0, 0, 0, 3, 0, 0, 0, 0, 0]
    return _seq_example(inputs, {6: 12, 10: 9})


def test_mqar_zero_fillers_pass():
    check_mqar(_mqar_zero_valid(), **MQAR, random_fillers=False)
    # Zero fillers are one draw of random fillers too.
    check_mqar(_mqar_zero_valid(), **MQAR, random_fillers=True)


@pytest.mark.parametrize(
    "corrupt, match",
    [
        (lambda ex: ex, None),  # _mqar_valid's fillers are random
        (lambda ex: _corrupt(_mqar_zero_valid(), "inputs", 7, 12), r"\[\(7, 12\)\] is not 0"),
        # A key outside a scored position: a stray query the loss never sees.
        (lambda ex: _corrupt(_mqar_zero_valid(), "inputs", 14, 3), r"\[\(14, 3\)\] is not 0"),
        (lambda ex: _corrupt(_mqar_zero_valid(), "inputs", 15, 1), r"\[\(15, 1\)\] is not 0"),
    ],
)
def test_mqar_zero_fillers_corruptions_fail(corrupt, match):
    with pytest.raises(AssertionError, match=match or "zero fillers expected"):
        check_mqar(corrupt(_mqar_valid()), **MQAR, random_fillers=False)


# --- copying and selective copying -----------------------------------------------------------

COPY = {"seq_len": 12, "num_tokens": 3, "vocab_size": 8}


def _copying_valid():
    """Data 5 3 7 at the start of an 8-token context, MARKER, then three BLANKs."""
    return _seq_example([5, 3, 7, 1, 1, 1, 1, 1, 2, 1, 1, 1], {9: 5, 10: 3, 11: 7})


def _selective_valid():
    """Data 5 3 7 scattered through the context."""
    return _seq_example([1, 5, 1, 1, 3, 1, 7, 1, 2, 1, 1, 1], {9: 5, 10: 3, 11: 7})


def test_copying_valid_passes():
    check_copying(_copying_valid(), **COPY, selective=False)
    # A contiguous prefix is one possible selective layout as well.
    check_copying(_copying_valid(), **COPY, selective=True)


def test_selective_copying_valid_passes():
    check_copying(_selective_valid(), **COPY, selective=True)


def test_copying_rejects_scattered_tokens():
    with pytest.raises(AssertionError, match="expected positions 0..2"):
        check_copying(_selective_valid(), **COPY, selective=False)


@pytest.mark.parametrize("selective", [False, True])
@pytest.mark.parametrize(
    "corrupt, match",
    [
        (lambda ex: _corrupt(_corrupt(ex, "targets", 9, 3), "targets", 10, 5), r"targets\[9\]"),
        (lambda ex: _corrupt(ex, "targets", 11, 6), r"targets\[11\]"),
        (lambda ex: _corrupt(ex, "inputs", 7, 2), "MARKER at"),
        (lambda ex: _corrupt(ex, "inputs", 8, 1), "MARKER at"),
        (lambda ex: _corrupt(ex, "inputs", 10, 4), "not all BLANK"),
        (lambda ex: _corrupt(ex, "inputs", 7, 6), "4 data tokens"),
        (lambda ex: _corrupt(ex, "inputs", 3, 0), "outside 1..7"),
        (lambda ex: _corrupt(ex, "inputs", 3, 8), "outside 1..7"),
        (lambda ex: _corrupt(ex, "loss_mask", 11, False), "loss_mask is True"),
        (lambda ex: _corrupt(ex, "loss_mask", 8, True), "loss_mask is True"),
        (lambda ex: _corrupt(ex, "targets", 0, 5), r"targets\[0\]"),
    ],
)
def test_copying_corruptions_fail(corrupt, match, selective):
    ex = _selective_valid() if selective else _copying_valid()
    with pytest.raises(AssertionError, match=match):
        check_copying(corrupt(ex), **COPY, selective=selective)


def test_selective_copying_missing_data_token_fails():
    ex = _corrupt(_selective_valid(), "inputs", 4, 1)
    with pytest.raises(AssertionError, match="2 data tokens"):
        check_copying(ex, **COPY, selective=True)


# --- induction heads ---------------------------------------------------------------------------

INDUCTION = {"seq_len": 10, "vocab_size": 6}


def _induction_valid():
    """TRIGGER at 2 followed by 4, so the final TRIGGER's target is 4."""
    return _seq_example([2, 3, 1, 4, 5, 2, 3, 4, 5, 1], {9: 4})


def test_induction_heads_valid_passes():
    check_induction_heads(_induction_valid(), **INDUCTION)
    # The first TRIGGER may sit as late as L-3 and as early as 0.
    check_induction_heads(_seq_example([2, 3, 4, 5, 2, 3, 4, 1, 5, 1], {9: 5}), **INDUCTION)
    check_induction_heads(_seq_example([1, 3, 4, 5, 2, 3, 4, 2, 5, 1], {9: 3}), **INDUCTION)


@pytest.mark.parametrize(
    "corrupt, match",
    [
        (lambda ex: _corrupt(ex, "inputs", 6, 1), "expected exactly twice"),
        (lambda ex: _corrupt(ex, "inputs", 2, 4), "expected exactly twice"),
        (lambda ex: _corrupt(ex, "targets", 9, 3), r"targets\[9\]"),
        (lambda ex: _corrupt(ex, "targets", 3, 4), r"targets\[3\]"),
        (lambda ex: _corrupt(ex, "loss_mask", 3, True), "loss_mask is True"),
        (lambda ex: _corrupt(ex, "loss_mask", 9, False), "loss_mask is True"),
        (lambda ex: _corrupt(ex, "inputs", 5, 0), "not a data token"),
        (lambda ex: _corrupt(ex, "inputs", 5, 6), "not a data token"),
        (lambda ex: _corrupt(ex, "inputs", 3, 1), "expected exactly twice"),
    ],
)
def test_induction_heads_corruptions_fail(corrupt, match):
    with pytest.raises(AssertionError, match=match):
        check_induction_heads(corrupt(_induction_valid()), **INDUCTION)


def test_induction_heads_trigger_positions_fail():
    # Second TRIGGER not at the end.
    with pytest.raises(AssertionError, match="last position"):
        check_induction_heads(_seq_example([2, 1, 4, 5, 2, 3, 4, 1, 5, 3], {9: 4}), **INDUCTION)
    # First TRIGGER at L-2 leaves no data token between the two triggers.
    with pytest.raises(AssertionError, match="at most 7"):
        check_induction_heads(_seq_example([2, 3, 4, 5, 2, 3, 4, 5, 1, 1], {9: 1}), **INDUCTION)


# --- listops -----------------------------------------------------------------------------------

_LISTOPS_WORDS = {"[MIN": 11, "[MAX": 12, "[MED": 13, "[SM": 14, "]": 15}


def _listops_tokens(text):
    """Token ids of a space-separated ListOps expression such as '[SM 9 8 ]'."""
    return np.array(
        [_LISTOPS_WORDS[w] if w in _LISTOPS_WORDS else int(w) + 1 for w in text.split()], np.int32
    )


def _listops_example(text, label):
    """A ListOps example with the given label."""
    return {"inputs": _listops_tokens(text), "label": np.int32(label)}


LISTOPS = {"max_depth": 3, "max_args": 4, "min_length": 1, "max_length": 20}


@pytest.mark.parametrize(
    "text, value",
    [
        ("7", 7),
        ("[MED 1 2 3 4 ]", 2),
        ("[SM 9 8 ]", 7),
        ("[MIN 4 2 8 ]", 2),
        ("[MAX 0 3 1 ]", 3),
        ("[MED 0 9 ]", 4),
        ("[MED 5 1 9 ]", 5),
        ("[SM 0 0 ]", 0),
        ("[MAX 2 9 [MIN 4 7 ] 0 ]", 9),
        ("[SM [MAX 2 3 ] [MED 1 9 4 ] 8 ]", 5),
        ("[MIN [SM 9 9 ] [MAX [MED 2 6 ] 1 ] ]", 4),
    ],
)
def test_evaluate_listops_hand_computed(text, value):
    assert evaluate_listops(_listops_tokens(text)) == value


def test_evaluate_listops_median_matches_numpy():
    for args in itertools.chain.from_iterable(
        itertools.product(range(10), repeat=n) for n in (2, 3, 4)
    ):
        tokens = [13, *(a + 1 for a in args), 15]
        assert evaluate_listops(tokens) == int(np.median(args)), args


@pytest.mark.parametrize(
    "text, match",
    [
        ("[MAX 2 9 [MIN 4 7 ] 0", "never closed"),
        ("[SM 9 8 ] ]", "after the end"),
        ("[SM 9 8 ] 3", "after the end"),
        ("3 4", "after the end"),
        ("]", "unmatched"),
        ("[MIN 3 ]", "1 argument"),
        ("[MIN ]", "0 argument"),
        ("", "empty"),
    ],
)
def test_evaluate_listops_malformed_fails(text, match):
    with pytest.raises(AssertionError, match=match):
        evaluate_listops(_listops_tokens(text))


def test_evaluate_listops_invalid_token_fails():
    with pytest.raises(AssertionError, match="invalid ListOps token 0"):
        evaluate_listops([14, 0, 3, 15])
    with pytest.raises(AssertionError, match="invalid ListOps token 16"):
        evaluate_listops([14, 16, 3, 15])


def test_check_listops_valid_passes():
    assert check_listops(_listops_example("[SM [MAX 2 3 ] [MED 1 9 4 ] 8 ]", 5), **LISTOPS) == 5
    assert check_listops({"inputs": _listops_tokens("[SM 9 8 ]"), "label": 7}, **LISTOPS) == 7
    ex = {"inputs": _listops_tokens("[MED 1 2 3 4 ]"), "label": np.array(2, np.int32)}
    assert check_listops(ex, **LISTOPS) == 2
    assert check_listops(_listops_example("6", 6), **{**LISTOPS, "max_depth": 1}) == 6


@pytest.mark.parametrize(
    "ex, params, match",
    [
        (_listops_example("[SM 9 8 ]", 8), {}, "evaluates to 7"),
        (_listops_example("[SM 9 8", 7), {}, "never closed"),
        (_listops_example("[SM [MAX 2 3 ] 8 ]", 1), {"max_depth": 2}, "depth 2"),
        (_listops_example("[MIN 5 [MAX 2 [SM 3 4 ] ] ]", 5), {}, "depth 3"),
        (_listops_example("[MAX 1 2 3 4 5 ]", 5), {}, "5 arguments"),
        (_listops_example("[MAX 1 [MIN 1 2 3 4 5 ] ]", 1), {}, "5 arguments"),
        (_listops_example("[SM 9 8 ]", 7), {"min_length": 5}, "length 4"),
        (_listops_example("[SM 9 8 ]", 7), {"max_length": 3}, "length 4"),
        (_listops_example("[SM 9 8 ]", 12), {}, "outside 0..9"),
        ({"inputs": _listops_tokens("[SM 9 8 ]"), "label": np.int64(7)}, {}, "dtype"),
        ({"inputs": _listops_tokens("[SM 9 8 ]"), "label": 7.0}, {}, "float"),
        ({"inputs": _listops_tokens("[SM 9 8 ]").astype(np.int64), "label": 7}, {}, "dtype"),
        ({"inputs": np.array([14, 10, 0, 15], np.int32), "label": 9}, {}, "token 0"),
        ({"inputs": _listops_tokens("[SM 9 8 ]")}, {}, "keys"),
    ],
)
def test_check_listops_corruptions_fail(ex, params, match):
    with pytest.raises(AssertionError, match=match):
        check_listops(ex, **{**LISTOPS, **params})


def _lra_example(text, label):
    """An LRA-tokenized ListOps example: the text's ] dropped."""
    tokens = _listops_tokens(text)
    return {"inputs": tokens[tokens != _LISTOPS_WORDS["]"]], "label": np.int32(label)}


@pytest.mark.parametrize(
    "text, value",
    [
        ("7", 7),
        ("[SM 9 8 ]", 7),
        ("[MAX 2 9 [MIN 4 7 ] 0 ]", 9),
        ("[SM [MAX 2 3 ] [MED 1 9 4 ] 8 ]", 5),
        ("[MIN [SM 9 9 ] [MAX 2 6 1 ] ]", 6),
    ],
)
def test_check_listops_lra_valid_passes(text, value):
    lra = _lra_example(text, value)
    assert _LISTOPS_WORDS["]"] not in lra["inputs"]
    assert check_listops(lra, **LISTOPS, tokenization="lra") is None
    explicit = _listops_example(text, value)
    assert check_listops(lra, **LISTOPS, tokenization="lra", explicit=explicit) == value


def test_lra_tokens_are_ambiguous_so_the_label_needs_the_explicit_tree():
    """Two trees with one LRA tokenization and different values: the tokens cannot decide."""
    first = _listops_example("[SM [MIN 1 2 ] 3 4 ]", 8)
    second = _listops_example("[SM [MIN 1 2 3 ] 4 ]", 5)
    lra = _lra_example("[SM [MIN 1 2 ] 3 4 ]", 8)
    np.testing.assert_array_equal(lra["inputs"], _lra_example("[SM [MIN 1 2 3 ] 4 ]", 5)["inputs"])
    for label in (8, 5):
        assert (
            check_listops({**lra, "label": np.int32(label)}, **LISTOPS, tokenization="lra") is None
        )
    assert check_listops(lra, **LISTOPS, tokenization="lra", explicit=first) == 8
    with pytest.raises(AssertionError, match="label 8 but the explicit expression evaluates to 5"):
        check_listops(lra, **LISTOPS, tokenization="lra", explicit=second)


@pytest.mark.parametrize(
    "ex, params, match",
    [
        (_listops_example("[SM 9 8 ]", 7), {}, "] at position 3"),
        (_lra_example("[MIN 3 ]", 3), {}, "MIN at position 0 is followed by fewer than 2"),
        (_lra_example("[MAX [MIN 3 ] 4 ]", 4), {}, "MAX at position 0 is followed by fewer than 2"),
        (_lra_example("3 4", 4), {}, "leaves 2..2 values"),
        (_lra_example("3 [SM 9 8 ]", 7), {}, "leaves 2..2 values"),
        # Five arguments for max_args 4: no tree reads these tokens.
        (_lra_example("[MAX 1 2 3 4 5 ]", 5), {}, "no tree with 2..4 arguments"),
        (_lra_example("", 0), {}, "explicit length 0"),
        # "[SM 9 8 ]" is 4 tokens long before its ] is dropped.
        (_lra_example("[SM 9 8 ]", 7), {"min_length": 5}, "explicit length 4"),
        (_lra_example("[SM 9 8 ]", 7), {"max_length": 3}, "explicit length 4"),
        ({"inputs": np.array([14, 10, 0], np.int32), "label": 9}, {}, "token 0"),
        (_lra_example("[SM 9 8 ]", 12), {}, "outside 0..9"),
        ({**_lra_example("[SM 9 8 ]", 7), "label": np.int64(7)}, {}, "dtype"),
        ({"inputs": _lra_example("[SM 9 8 ]", 7)["inputs"]}, {}, "keys"),
    ],
)
def test_check_listops_lra_corruptions_fail(ex, params, match):
    with pytest.raises(AssertionError, match=match):
        check_listops(ex, **{**LISTOPS, **params}, tokenization="lra")


@pytest.mark.parametrize(
    "lra, explicit, match",
    [
        # The explicit twin is checked in full.
        (_lra_example("[SM 9 8 ]", 7), _listops_example("[SM 9 8 ]", 8), "evaluates to 7"),
        (
            _lra_example("[MIN 5 [MAX 2 [SM 3 4 ] ] ]", 5),
            _listops_example("[MIN 5 [MAX 2 [SM 3 4 ] ] ]", 5),
            "depth 3",
        ),
        # The tokens must be the twin's without its ].
        (_lra_example("[SM 9 7 ]", 7), _listops_example("[SM 9 8 ]", 7), "with its ] dropped"),
        (_lra_example("[SM 9 8 ]", 6), _listops_example("[SM 9 8 ]", 7), "label 6 but"),
    ],
)
def test_check_listops_lra_with_its_explicit_twin_fails(lra, explicit, match):
    with pytest.raises(AssertionError, match=match):
        check_listops(lra, **LISTOPS, tokenization="lra", explicit=explicit)


def test_check_listops_rejects_an_unknown_tokenization():
    with pytest.raises(AssertionError, match="unknown tokenization 'bpe'"):
        check_listops(_listops_example("7", 7), **LISTOPS, tokenization="bpe")


# --- chars -------------------------------------------------------------------------------------


def _chars_example(data):
    """A chars example holding the given bytes."""
    return {"text": np.frombuffer(data, np.uint8).astype(np.int32) + 1}


def test_chars_valid_passes():
    check_chars(_chars_example("def f(x):\n    return 'é' * x  # ∑\n".encode()))
    check_chars(_chars_example(bytes([0, 255 - 128])))
    check_chars(_chars_example(b""))


@pytest.mark.parametrize(
    "ex, match",
    [
        ({"text": np.array([0, 100, 101], np.int32)}, "outside 1..256"),
        ({"text": np.array([100, 257], np.int32)}, "outside 1..256"),
        (_chars_example(b"ok \xff"), "not valid UTF-8"),
        (_chars_example("é".encode()[:1]), "not valid UTF-8"),
        (_chars_example(b"\x80abc"), "not valid UTF-8"),
        ({"text": np.array([100, 101], np.int64)}, "dtype"),
        ({"text": np.array([[100, 101]], np.int32)}, "1-D"),
        ({"text": [100, 101]}, "not a numpy array"),
        ({"inputs": np.array([100, 101], np.int32)}, "keys"),
    ],
)
def test_chars_corruptions_fail(ex, match):
    with pytest.raises(AssertionError, match=match):
        check_chars(ex)
