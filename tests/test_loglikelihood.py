import pytest
import torch

from kickbench.engine import Choice, encode_choice, loglikelihood

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


