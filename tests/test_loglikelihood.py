import pytest
import torch

from kickbench.engine import Choice, _batches, encode_choice, loglikelihood

REQUESTS = [
    Choice("The capital of France is", (" Paris", " Lyon", " the city of Marseille")),
    Choice("Question: 2 + 2 =\nAnswer:", (" A", " B", " C", " D")),
    Choice("A much longer context that goes on for a while before it asks: colour of the sky?",
           (" blue", " a very pale grey in winter")),
    Choice("Short", (" one", " two words")),
    Choice("Repeat after me: la la la la la", (" la la", " la")),  # likely greedy on a tiny model
]


def direct(lm, request: Choice) -> tuple[list[float], list[bool]]:
    """Each continuation's summed log-prob and greedy flag from one unpadded forward."""
    ctx, conts = encode_choice(lm.tokenizer, request)
    sums, greedy = [], []
    for c in conts:
        ids = torch.tensor([ctx + c])
        with torch.no_grad():
            logp = torch.log_softmax(lm.model(input_ids=ids).logits[0, :-1].float(), -1)
        rows = logp[len(ctx) - 1:]
        sums.append(sum(rows[t, tok].item() for t, tok in enumerate(c)))
        greedy.append(rows.argmax(-1).tolist() == c)
    return sums, greedy


@pytest.mark.parametrize("family", ["tiny-llama", "tiny-gpt2", "tiny-opt", "tiny-gemma3"])
def test_scores_equal_a_direct_computation_and_do_not_depend_on_batching(tiny, family):
    lm = tiny(family)
    one = loglikelihood(lm.model, lm.tokenizer, REQUESTS, batch_size=1, progress=False)
    many = loglikelihood(lm.model, lm.tokenizer, REQUESTS, batch_size=16, progress=False)
    concat = loglikelihood(lm.model, lm.tokenizer, REQUESTS, batch_size=16, reuse_prefix=False,
                           progress=False)
    for r, a, b, c in zip(REQUESTS, one, many, concat):
        sums, greedy = direct(lm, r)
        assert a.logprobs == pytest.approx(sums, abs=2e-4)
        assert a.greedy == tuple(greedy) == b.greedy == c.greedy
        assert b.logprobs == pytest.approx(a.logprobs, abs=2e-4)
        assert c.logprobs == pytest.approx(a.logprobs, abs=2e-4)
        assert a.tokens == tuple(len(x) for x in encode_choice(lm.tokenizer, r)[1])
        assert a.next_token == b.next_token


def test_single_token_choices_take_one_forward_pass(tiny):
    lm = tiny("tiny-llama")
    calls = []
    hook = lm.model.register_forward_hook(lambda *a: calls.append(1))
    try:
        letters = [Choice(f"Question {i}\nAnswer:", (" A", " B", " C", " D")) for i in range(10)]
        res = loglikelihood(lm.model, lm.tokenizer, letters, batch_size=16, progress=False)
    finally:
        hook.remove()
    assert len(calls) == 1
    assert all(len(r.logprobs) == 4 and r.tokens == (1, 1, 1, 1) for r in res)


def test_trailing_space_of_a_context_moves_to_the_continuation(tiny):
    tok = tiny("tiny-llama").tokenizer
    a = encode_choice(tok, Choice("Answer: ", ("A",)))
    b = encode_choice(tok, Choice("Answer:", (" A",)))
    assert a == b




PREAMBLE = ("The following are questions about small numbers and the colours of common things, "
            "answered briefly by a helpful assistant.\n\n")
SHARED = [Choice(PREAMBLE + q, conts) for q, conts in [
    ("What colour is grass?\nAnswer:", (" green", " blue", " a kind of red")),
    ("What is one plus one?\nAnswer:", (" two", " three")),
    ("Name a colour.\nAnswer:", (" A", " B", " C", " D")),
    ("What colour is the sky on a clear day at noon?\nAnswer:", (" blue", " grey")),
]]


@pytest.mark.parametrize("family", ["tiny-llama", "tiny-gpt2", "tiny-qwen2"])
def test_a_shared_preamble_runs_once_and_changes_no_score(tiny, family):
    lm = tiny(family)
    shapes = []
    hook = lm.model.register_forward_pre_hook(
        lambda m, args, kw: shapes.append(tuple(kw["input_ids"].shape)), with_kwargs=True)
    try:
        shared = loglikelihood(lm.model, lm.tokenizer, SHARED, batch_size=16, progress=False)
    finally:
        hook.remove()
    prefix = len(lm.tokenizer(PREAMBLE.rstrip())["input_ids"]) - 1
    assert shapes[0][0] == 1 and shapes[0][1] >= prefix  # the preamble, once
    assert shapes[1][0] == len(SHARED) and shapes[1][1] < 20  # then only the questions
    for r, s in zip(SHARED, shared):
        sums, greedy = direct(lm, r)
        assert s.logprobs == pytest.approx(sums, abs=2e-4) and s.greedy == tuple(greedy)


def test_sliding_window_models_do_not_share_a_prefix(tiny):
    """Padding between a shared prefix and the suffixes would shift Gemma 3's window."""
    lm = tiny("tiny-gemma3")
    shared = loglikelihood(lm.model, lm.tokenizer, SHARED, batch_size=16, progress=False)
    for r, s in zip(SHARED, shared):
        assert s.logprobs == pytest.approx(direct(lm, r)[0], abs=2e-4)


def test_requests_sharing_a_long_preamble_are_batched_together():
    a, b = list(range(100)), [7] * 100  # two "subjects": 100-token preambles
    ctxs = [a + [1000 + i] for i in range(3)] + [b + [2000 + i] for i in range(3)] + [[5, i] for i in range(4)]
    assert list(_batches(list(range(10)), ctxs, 16)) == [[0, 1, 2], [3, 4, 5], [6, 7, 8, 9]]
    assert list(_batches(list(range(10)), ctxs, 2)) == [[0, 1], [2], [3, 4], [5], [6, 7], [8, 9]]


def test_a_group_preamble_runs_once_for_all_its_batches(tiny):
    """batch_size 2 makes the group's four requests two batches: the preamble still runs once."""
    lm = tiny("tiny-llama")
    shapes = []
    hook = lm.model.register_forward_pre_hook(
        lambda m, args, kw: shapes.append(tuple(kw["input_ids"].shape)), with_kwargs=True)
    try:
        out = loglikelihood(lm.model, lm.tokenizer, SHARED, batch_size=2, progress=False)
    finally:
        hook.remove()
    contexts = [s for s in shapes if s[1] > 1 or s[0] == 1]
    assert sum(1 for s in shapes if s[0] == 1 and s[1] > 20) == 1  # the preamble, once
    assert len(contexts) >= 3
    for r, s in zip(SHARED, out):
        sums, greedy = direct(lm, r)
        assert s.logprobs == pytest.approx(sums, abs=2e-4) and s.greedy == tuple(greedy)


def test_batches_are_length_buckets(monkeypatch):
    import kickbench.engine as engine

    monkeypatch.setattr(engine, "PAD_ALLOWANCE", 0)
    pre = list(range(100))
    ctxs = [pre + [7] * k for k in (60, 58, 57, 12, 11, 10, 2)]
    batches = list(_batches(list(range(7)), ctxs, 16))
    assert batches == [[0, 1, 2], [3, 4, 5], [6]]  # padding is measured after the preamble


def test_scoring_survives_out_of_memory(tiny):
    from test_engine import OutOfMemoryAbove

    lm = tiny("tiny-llama")
    reqs = REQUESTS + SHARED
    a = loglikelihood(OutOfMemoryAbove(lm.model, 2), lm.tokenizer, reqs, batch_size="auto", progress=False)
    b = loglikelihood(lm.model, lm.tokenizer, reqs, batch_size=1, progress=False)
    for x, y in zip(a, b):
        assert x.logprobs == pytest.approx(y.logprobs, abs=2e-4) and x.greedy == y.greedy
