"""Independent reference checkers for one example of each synthetic task dataset.

Each checker is written from the task specification alone (not from the generators) and raises
AssertionError saying what is wrong when an example breaks the specification.
"""

import numpy as np

# Copying and selective copying.
COPY_PAD, COPY_BLANK, COPY_MARKER, COPY_FIRST_DATA = 0, 1, 2, 3
# Induction heads.
INDUCTION_PAD, INDUCTION_TRIGGER, INDUCTION_FIRST_DATA = 0, 1, 2
# ListOps: digit d is token d + 1.
LISTOPS_MIN, LISTOPS_MAX, LISTOPS_MED, LISTOPS_SM, LISTOPS_CLOSE = 11, 12, 13, 14, 15
LISTOPS_OPERATORS = {LISTOPS_MIN: "MIN", LISTOPS_MAX: "MAX", LISTOPS_MED: "MED", LISTOPS_SM: "SM"}


def _check_keys(ex, keys):
    """Assert the example has exactly the given keys."""
    assert set(ex) == set(keys), f"example keys {sorted(ex)} != expected {sorted(keys)}"


def _check_array(ex, key, length, dtype):
    """Assert ex[key] is a 1-D numpy array of the given dtype and (if not None) length."""
    arr = ex[key]
    assert isinstance(arr, np.ndarray), f"{key} is {type(arr).__name__}, not a numpy array"
    assert arr.ndim == 1, f"{key} has shape {arr.shape}, expected 1-D"
    assert arr.dtype == dtype, f"{key} has dtype {arr.dtype}, expected {np.dtype(dtype)}"
    if length is not None:
        assert arr.shape[0] == length, f"{key} has length {arr.shape[0]}, expected {length}"


def _check_sequence_arrays(ex, seq_len):
    """Assert the inputs/targets/loss_mask layout shared by the sequence-to-sequence tasks."""
    _check_keys(ex, ["inputs", "targets", "loss_mask"])
    _check_array(ex, "inputs", seq_len, np.int32)
    _check_array(ex, "targets", seq_len, np.int32)
    _check_array(ex, "loss_mask", seq_len, np.bool_)


def _check_scored_positions(ex, expected):
    """Assert loss_mask is True exactly at the keys of `expected`, with those targets, else 0."""
    targets, loss_mask = ex["targets"].tolist(), ex["loss_mask"].tolist()
    scored = [t for t, m in enumerate(loss_mask) if m]
    assert scored == sorted(expected), (
        f"loss_mask is True at {scored}, expected exactly {sorted(expected)}"
    )
    for t, target in enumerate(targets):
        want = expected.get(t, 0)
        assert target == want, f"targets[{t}] = {target}, expected {want}"


def check_mqar(ex, *, seq_len, num_kv_pairs, vocab_size, random_fillers=True):
    """Check one multi-query associative recall example.

    With random_fillers=False (Zoology's paper configs) every position that is neither in the
    key-value context nor a scored query must hold token 0; with True, fillers may be anything
    in the vocabulary.
    """
    assert seq_len % 2 == 0, f"seq_len {seq_len} must be even"
    _check_sequence_arrays(ex, seq_len)
    tokens = ex["inputs"].tolist()
    bad = [(t, tok) for t, tok in enumerate(tokens) if not 0 <= tok < vocab_size]
    assert not bad, f"(position, token) outside 0..{vocab_size - 1}: {bad[:5]}"

    context_len = 2 * num_kv_pairs
    # Every query needs its own even offset after the context.
    assert 4 * num_kv_pairs <= seq_len, f"{num_kv_pairs} pairs cannot fit in seq_len {seq_len}"
    half = vocab_size // 2
    pairs = {}
    values_seen = set()
    for t in range(0, context_len, 2):
        key, value = tokens[t], tokens[t + 1]
        assert 1 <= key < half, f"context key {key} at position {t} outside 1..{half - 1}"
        assert half <= value < vocab_size, (
            f"context value {value} at position {t + 1} outside {half}..{vocab_size - 1}"
        )
        assert key not in pairs, f"key {key} repeated in the context at position {t}"
        assert value not in values_seen, f"value {value} repeated in the context at {t + 1}"
        pairs[key] = value
        values_seen.add(value)

    # Scan the query region: each scored position must be an even-offset query of an unseen key.
    expected = {}
    queried = set()
    for t in np.flatnonzero(ex["loss_mask"]).tolist():
        assert t >= context_len, f"loss_mask is True at context position {t}"
        assert (t - context_len) % 2 == 0, f"query at position {t} sits on an odd offset"
        key = tokens[t]
        assert key in pairs, f"query token {key} at position {t} is not a context key"
        assert key not in queried, f"key {key} is queried more than once"
        queried.add(key)
        expected[t] = pairs[key]
    missing = sorted(set(pairs) - queried)
    assert not missing, f"context keys never queried: {missing}"
    _check_scored_positions(ex, expected)

    if not random_fillers:
        fillers = [
            (t, tokens[t]) for t in range(context_len, seq_len) if t not in expected and tokens[t]
        ]
        assert not fillers, f"zero fillers expected, but (position, token) {fillers[:5]} is not 0"


def check_copying(ex, *, seq_len, num_tokens, vocab_size, selective):
    """Check one copying (selective=False) or selective copying example."""
    _check_sequence_arrays(ex, seq_len)
    tokens = ex["inputs"].tolist()
    context_len = seq_len - num_tokens - 1
    assert num_tokens >= 1, f"num_tokens {num_tokens} must be positive"
    assert context_len >= num_tokens, f"{num_tokens} tokens cannot fit in seq_len {seq_len}"
    bad = [(t, tok) for t, tok in enumerate(tokens) if not COPY_BLANK <= tok < vocab_size]
    assert not bad, f"(position, token) outside {COPY_BLANK}..{vocab_size - 1}: {bad[:5]}"
    markers = [t for t, tok in enumerate(tokens) if tok == COPY_MARKER]
    assert markers == [context_len], f"MARKER at {markers}, expected only at {context_len}"
    tail = tokens[context_len + 1 :]
    assert all(tok == COPY_BLANK for tok in tail), f"last {num_tokens} inputs not all BLANK: {tail}"

    # Walk the context collecting data tokens; everything else there must be BLANK.
    data_positions, data = [], []
    for t in range(context_len):
        if tokens[t] >= COPY_FIRST_DATA:
            data_positions.append(t)
            data.append(tokens[t])
    assert len(data) == num_tokens, f"context holds {len(data)} data tokens, expected {num_tokens}"
    if not selective:
        assert data_positions == list(range(num_tokens)), (
            f"copying data tokens at {data_positions}, expected positions 0..{num_tokens - 1}"
        )
    _check_scored_positions(ex, {context_len + 1 + i: tok for i, tok in enumerate(data)})


def check_induction_heads(ex, *, seq_len, vocab_size):
    """Check one induction heads example."""
    _check_sequence_arrays(ex, seq_len)
    tokens = ex["inputs"].tolist()
    triggers = [t for t, tok in enumerate(tokens) if tok == INDUCTION_TRIGGER]
    assert len(triggers) == 2, f"TRIGGER appears at {triggers}, expected exactly twice"
    first, last = triggers
    assert last == seq_len - 1, f"second TRIGGER at {last}, expected the last position"
    assert first <= seq_len - 3, f"first TRIGGER at {first}, expected at most {seq_len - 3}"
    bad = [
        (t, tok)
        for t, tok in enumerate(tokens)
        if t not in triggers and not INDUCTION_FIRST_DATA <= tok < vocab_size
    ]
    assert not bad, f"non-trigger (position, token) not a data token: {bad[:5]}"
    _check_scored_positions(ex, {seq_len - 1: tokens[first + 1]})


def _median(args):
    """Median of digits, truncating the mean of the two middle values for an even count."""
    ordered = sorted(args)
    mid = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[mid]
    # Digits are non-negative, so floor division truncates toward zero.
    return (ordered[mid - 1] + ordered[mid]) // 2


def _apply(op, args):
    """Value of a ListOps operator applied to its argument values."""
    if op == LISTOPS_MIN:
        return min(args)
    if op == LISTOPS_MAX:
        return max(args)
    if op == LISTOPS_MED:
        return _median(args)
    return sum(args) % 10


def _parse_listops(tokens):
    """Parse and evaluate ListOps tokens; return (value, deepest operator depth, most args)."""
    tokens = [int(tok) for tok in tokens]
    assert tokens, "empty ListOps expression"
    # Each open operator is [op, argument values]; its depth is its index in the stack + 1.
    stack = []
    result = None
    deepest_op, most_args = 0, 0
    for t, tok in enumerate(tokens):
        assert result is None, f"tokens after the end of the expression at position {t}"
        if 1 <= tok <= 10:
            value = tok - 1
        elif tok in LISTOPS_OPERATORS:
            stack.append([tok, []])
            deepest_op = max(deepest_op, len(stack))
            continue
        elif tok == LISTOPS_CLOSE:
            assert stack, f"unmatched ] at position {t}"
            op, args = stack.pop()
            assert len(args) >= 2, (
                f"[{LISTOPS_OPERATORS[op]} closed at position {t} with {len(args)} argument(s)"
            )
            most_args = max(most_args, len(args))
            value = _apply(op, args)
        else:
            raise AssertionError(f"invalid ListOps token {tok} at position {t}")
        if stack:
            stack[-1][1].append(value)
        else:
            result = value
    assert not stack, f"{len(stack)} operator(s) never closed with ]"
    return result, deepest_op, most_args


def evaluate_listops(tokens):
    """Evaluate ListOps token ids with a stack; raise AssertionError on malformed input."""
    return _parse_listops(tokens)[0]


def _check_lra_tokens(tokens, max_args):
    """Assert LRA-tokenized ListOps (operators and digits, no `]`) is the pre-order of some tree.

    Without `]` an operator's arity is not marked, so the tree is ambiguous; but a sequence is
    the pre-order of a tree whose operators take 2..max_args arguments iff reading it right to
    left, with each digit pushing a value and each operator popping 2..max_args and pushing one,
    can end with exactly one value. The stack sizes reachable after each token form an interval.
    """
    assert tokens, "empty ListOps expression"
    lo = hi = 0
    for t in range(len(tokens) - 1, -1, -1):
        tok = tokens[t]
        if tok == LISTOPS_CLOSE:
            raise AssertionError(f"] at position {t}: LRA tokenization drops every ]")
        if 1 <= tok <= 10:
            lo, hi = lo + 1, hi + 1
        elif tok in LISTOPS_OPERATORS:
            assert hi >= 2, (
                f"{LISTOPS_OPERATORS[tok]} at position {t} is followed by fewer than 2 arguments"
            )
            lo, hi = max(1, max(lo, 2) - max_args + 1), hi - 1
        else:
            raise AssertionError(f"invalid ListOps token {tok} at position {t}")
    assert lo <= 1 <= hi, (
        f"no tree with 2..{max_args} arguments per operator has this pre-order (it leaves "
        f"{lo}..{hi} values, not one)"
    )


def _check_label(ex):
    """Assert the label is an int32 scalar (or a Python int) in 0..9 and return it."""
    label = ex["label"]
    if isinstance(label, np.ndarray | np.generic):
        assert label.shape == (), f"label has shape {label.shape}, expected a scalar"
        assert label.dtype == np.int32, f"label has dtype {label.dtype}, expected int32"
    else:
        assert isinstance(label, int) and not isinstance(label, bool), (
            f"label is {type(label).__name__}, expected an int"
        )
    label = int(label)
    assert 0 <= label <= 9, f"label {label} outside 0..9"
    return label


def check_listops(
    ex, *, max_depth, max_args, min_length, max_length, tokenization="explicit", explicit=None
):
    """Check one ListOps example and return its label computed independently.

    tokenization="explicit": the tokens are parsed and evaluated; the label must be the value.
    tokenization="lra" (LRA's tokenizer: no `]`): the tree is ambiguous, so from the tokens
    alone this checks the vocabulary (digits and operators only), that the explicit length
    (tokens plus one `]` per operator) lies in min_length..max_length, and that some tree with
    2..max_args arguments per operator has this pre-order; it returns None. Given `explicit`, the
    explicit-tokenized example of the same tree, it also checks `explicit` fully, that dropping
    its `]` tokens gives these tokens and that the labels agree, and returns the value.
    """
    assert tokenization in ("explicit", "lra"), f"unknown tokenization {tokenization!r}"
    _check_keys(ex, ["inputs", "label"])
    _check_array(ex, "inputs", None, np.int32)
    if tokenization == "lra":
        tokens = ex["inputs"].tolist()
        label = _check_label(ex)
        num_operators = sum(tok in LISTOPS_OPERATORS for tok in tokens)
        n = len(tokens) + num_operators
        assert min_length <= n <= max_length, (
            f"explicit length {n} ({len(tokens)} tokens and {num_operators} dropped ]) outside "
            f"{min_length}..{max_length}"
        )
        _check_lra_tokens(tokens, max_args)
        if explicit is None:
            return None
        value = check_listops(
            explicit,
            max_depth=max_depth,
            max_args=max_args,
            min_length=min_length,
            max_length=max_length,
        )
        stripped = [tok for tok in explicit["inputs"].tolist() if tok != LISTOPS_CLOSE]
        assert tokens == stripped, "tokens are not the explicit expression with its ] dropped"
        assert label == value, f"label {label} but the explicit expression evaluates to {value}"
        return value

    n = ex["inputs"].shape[0]
    assert min_length <= n <= max_length, f"length {n} outside {min_length}..{max_length}"

    label = _check_label(ex)
    value, deepest_op, most_args = _parse_listops(ex["inputs"])
    assert deepest_op < max_depth, (
        f"an operator sits at depth {deepest_op}, operators must sit above depth {max_depth}"
    )
    assert most_args <= max_args, f"an operator has {most_args} arguments, max_args {max_args}"
    assert label == value, f"label {label} but the expression evaluates to {value}"
    return value


def check_chars(ex):
    """Check one byte-level text example: int32 tokens 1..256 that decode as UTF-8."""
    _check_keys(ex, ["text"])
    _check_array(ex, "text", None, np.int32)
    tokens = ex["text"]
    bad = np.flatnonzero((tokens < 1) | (tokens > 256)).tolist()
    assert not bad, f"tokens outside 1..256 at positions {bad[:5]}"
    data = bytes((tokens - 1).astype(np.uint8).tolist())
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise AssertionError(f"text is not valid UTF-8: {err}") from err
