from dataclasses import replace

from kickbench.engine import GenerationConfig, cut_at_stop, generate

QUESTIONS = ["What is the capital of Italy?", "Who painted the Mona Lisa?", "2+2=",
             "The largest ocean on Earth is the", "Name a primary colour:", "Hi",
             "A long prompt " * 12 + "ends here", "Water boils at", "Question: Who wrote Hamlet?\nAnswer:",
             "x", "The first man on the moon was", "Translate 'cat' to French:",
             "Photosynthesis happens in the", "Mount Everest is in", "Sushi comes from", "Why?",
             "The speed of light is"]


def test_batch_size_does_not_change_answers_and_order_is_kept(tiny):
    for family in ("tiny-llama", "tiny-gpt2"):
        lm = tiny(family)
        one = generate(lm.model, lm.tokenizer, QUESTIONS,
                       GenerationConfig(max_new_tokens=8, stop=(), batch_size=1), progress=False)
        many = generate(lm.model, lm.tokenizer, QUESTIONS,
                        GenerationConfig(max_new_tokens=8, stop=(), batch_size=16), progress=False)
        assert [g.text for g in one] == [g.text for g in many]
        assert all(g.new_tokens == 8 for g in one)  # random weights never emit EOS this early


def test_chat_prompts_and_stop_strings(tiny):
    lm = tiny("tiny-llama")
    chat = [[{"role": "user", "content": q}] for q in QUESTIONS[:3]]
    out = generate(lm.model, lm.tokenizer, chat, GenerationConfig(max_new_tokens=6, stop=(" ",)),
                   progress=False)
    assert len(out) == 3 and all(" " not in g.text for g in out)


def test_cut_at_stop_takes_the_earliest_stop():
    assert cut_at_stop("Paris.\nQuestion: next", ("\n", "Question:")) == "Paris."
    assert cut_at_stop("no stop here", ("\n",)) == "no stop here"


def test_a_stop_counts_only_after_the_leading_whitespace(tiny):
    assert cut_at_stop("\nParis\nQ:", ("\n",)) == "Paris"
    assert cut_at_stop(" \n Paris", ()) == "Paris"
    assert cut_at_stop("  \n\n", ("\n",)) == ""
    tok = tiny("tiny-llama").tokenizer
    stops = engine._Stops(tok, ("\n",))
    ids = lambda t: tok(t, add_special_tokens=False)["input_ids"]
    nl = ids("\n")
    rows = [nl, ids("  \n\n"), ids("\nParis"), ids("\nParis\n"),
            nl * 12 + ids("Paris"), nl * 12 + ids("Paris\n")]  # the last two: wider than the window
    assert len(rows[4]) > stops.window
    assert stops.hits(rows) == [False, False, False, True, False, True]


# ---- the generation loop against model.generate; batching, stops, sampling, OOM halving ----

import pytest
import torch

from kickbench import engine, models

PREAMBLE = "The following are short questions answered by a careful assistant, one line each.\n\n"
MIXED = QUESTIONS[:9] + [PREAMBLE + q for q in QUESTIONS[:9]]


def reference(lm, prompts, config, first=None):
    """model.generate on one prompt at a time (no padding), to EOS or max_new_tokens, then cut
    by the answer rule (a stop counts only after the leading whitespace): the answers to
    equal. `first`: a token forced as the first generated one."""
    out, tok = [], lm.tokenizer
    head = [] if first is None else [first]
    for p in prompts:
        text, special = engine.render(tok, p)
        ids = torch.tensor([tok(text, add_special_tokens=special)["input_ids"] + head])
        with torch.inference_mode():
            seq = lm.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                    max_new_tokens=config.max_new_tokens - len(head),
                                    pad_token_id=tok.pad_token_id)
        toks = head + [t for t in seq[0, ids.shape[1]:].tolist() if t != tok.pad_token_id]
        stopped = (k for k in range(1, len(toks) + 1)
                   if any(s in tok.decode(toks[:k], skip_special_tokens=True).lstrip() for s in config.stop))
        toks = toks[:next(stopped, len(toks))]
        out.append((cut_at_stop(tok.decode(toks, skip_special_tokens=True), config.stop), len(toks)))
    return out


@pytest.mark.parametrize("family", list(models.TINY_CONFIGS))
def test_greedy_answers_equal_model_generate(tiny, family, monkeypatch):
    """Every tiny family (gemma3 and mistral slide their windows over these prompts), with
    stops that end rows at different steps, a shared preamble and prefill buckets merged into
    one batch (PAD_ALLOWANCE 0: buckets of 10% padding)."""
    lm = tiny(family)
    monkeypatch.setattr(engine, "PAD_ALLOWANCE", 0)
    for config in (GenerationConfig(max_new_tokens=10, stop=(), batch_size=16),
                   GenerationConfig(max_new_tokens=14, stop=("e", "\n"), batch_size=5)):
        for prompts in (MIXED, [PREAMBLE + q for q in QUESTIONS[:9]]):
            mine = generate(lm.model, lm.tokenizer, prompts, config, progress=False)
            assert [(g.text, g.new_tokens) for g in mine] == reference(lm, prompts, config)


def test_finished_rows_leave_the_batch(tiny):
    lm = tiny("tiny-llama")
    stop = ("e", " ")  # ends some rows at once, others run to max_new_tokens (checked below)
    rows = []
    hook = lm.model.register_forward_pre_hook(
        lambda m, a, kw: rows.append(tuple(kw["input_ids"].shape)), with_kwargs=True)
    try:
        config = GenerationConfig(max_new_tokens=12, stop=stop, batch_size=len(MIXED))
        out = generate(lm.model, lm.tokenizer, MIXED, config, progress=False)
    finally:
        hook.remove()
    assert [(g.text, g.new_tokens) for g in out] == reference(lm, MIXED, config)
    lengths = sorted(g.new_tokens for g in out)
    assert lengths[0] < lengths[-1]
    steps = [b for b, t in rows if t == 1]  # decoding steps: one token per row
    assert steps[-1] < len(MIXED)           # rows left the batch
    assert len(steps) == lengths[-1] - 1    # and the batch ended with its longest answer
    assert sum(steps) < len(MIXED) * len(steps)


def test_stop_strings_are_found_in_the_decoded_tail(tiny):
    tok = tiny("tiny-llama").tokenizer
    stops = engine._Stops(tok, ("\n", "Question:"))
    long = tok(" and".join(["x"] * 40) + " Paris", add_special_tokens=False)["input_ids"]
    rows = [tok("Paris\nQuestion", add_special_tokens=False)["input_ids"],
            tok("Paris. Quest", add_special_tokens=False)["input_ids"],
            long, long + tok(" Question:", add_special_tokens=False)["input_ids"]]
    assert stops.hits(rows) == [True, False, False, True]
    assert engine._Stops(tok, ()).hits(rows) == [False] * 4


def test_sampling_is_reproducible_for_a_seed(tiny):
    lm = tiny("tiny-llama")
    config = GenerationConfig(max_new_tokens=8, stop=("\n",), batch_size=8, temperature=1.0)

    def run(seed):
        torch.manual_seed(seed)
        return [g.text for g in generate(lm.model, lm.tokenizer, MIXED, config, progress=False)]

    assert run(0) == run(0)
    assert run(0) != run(1)


def test_length_buckets_keep_padding_small(monkeypatch):
    monkeypatch.setattr(engine, "PAD_ALLOWANCE", 0)
    lengths = [100, 40, 39, 38, 37, 20, 20, 20, 20, 20, 5]
    buckets = engine.length_buckets(lengths, 4)
    assert [b for bucket in buckets for b in bucket] == list(range(len(lengths)))
    assert buckets[0] == [0] and all(len(b) <= 4 for b in buckets)
    for b in buckets:
        real = sum(lengths[i] for i in b)
        assert len(b) * lengths[b[0]] <= 1.1 * real


def test_out_of_memory_halves_the_batch_and_retries_it():
    seen = []

    def run(batch):
        seen.append(len(batch))
        if len(batch) > 3:
            raise torch.cuda.OutOfMemoryError("fake: out of memory")
        return [i * 10 for i in batch]

    batches = [list(range(k, min(k + 8, 20))) for k in range(0, 20, 8)]
    out = list(engine.halving(iter(batches), run, "cpu"))
    assert [i for b, _ in out for i in b] == list(range(20))
    assert all(r == [i * 10 for i in b] for b, r in out)
    assert seen[:3] == [8, 4, 2] and max(seen[3:]) <= 2  # later batches start at the size that fit
    with pytest.raises(torch.cuda.OutOfMemoryError):
        list(engine.halving(iter([[1]]), lambda b: run([0] * 4), "cpu"))


def test_auto_batch_size():
    assert engine.batch_limit("auto", "cuda", 10_000) == engine.AUTO_BATCH["cuda"]
    assert engine.batch_limit("auto", "cuda", 7) == 7
    assert engine.batch_limit("auto", "cpu", 10_000) == engine.AUTO_BATCH_OTHER
    assert engine.batch_limit(3, "cpu", 100) == 3
    with pytest.raises(ValueError, match="batch_size"):
        engine.batch_limit("big", "cpu", 10)


class OutOfMemoryAbove(torch.nn.Module):
    """The model, raising CUDA's out-of-memory error for batches larger than `rows` once
    `after` calls have passed."""

    def __init__(self, model, rows, after=0):
        super().__init__()
        self.inner, self.rows, self.after, self.config = model, rows, after, model.config
        self.generation_config, self.raised = model.generation_config, 0

    def forward(self, input_ids=None, **kw):
        self.after -= 1
        if input_ids.shape[0] > self.rows and self.after < 0:
            self.raised += 1
            raise torch.cuda.OutOfMemoryError("fake: CUDA out of memory")
        return self.inner(input_ids=input_ids, **kw)


def test_generation_and_scoring_survive_out_of_memory(tiny):
    lm = tiny("tiny-llama")
    small = OutOfMemoryAbove(lm.model, 3)
    config = GenerationConfig(max_new_tokens=6, stop=("\n",), batch_size="auto")
    fits = generate(small, lm.tokenizer, MIXED, config, progress=False)
    one = generate(lm.model, lm.tokenizer, MIXED, replace(config, batch_size=1), progress=False)
    assert fits == one
    # out of memory in the middle of decoding, after some rows have finished and been yielded
    late = OutOfMemoryAbove(lm.model, 3, after=12)
    stops = replace(config, stop=("e", " "), batch_size=6)
    seen, raised = [], []
    for batch in engine.iter_generate(late, lm.tokenizer, MIXED, stops, progress=False):
        seen += [i for i, _ in batch]
        raised.append(late.raised)
    assert sorted(seen) == list(range(len(MIXED)))
    assert raised[0] == 0 and raised[-1] > 0  # a batch was out before the error
    late.after = 12
    assert generate(late, lm.tokenizer, MIXED, stops, progress=False) == \
        generate(lm.model, lm.tokenizer, MIXED, replace(stops, batch_size=1), progress=False)
    wins = [list(range(100 + k, 140 + k)) for k in range(7)]
    a = [r for b in engine.iter_window_nll(small, wins, "auto", progress=False) for r in b]
    b = [r for b in engine.iter_window_nll(lm.model, wins, 1, progress=False) for r in b]
    assert [r[0] for r in a] == [r[0] for r in b] and [r[2] for r in a] == [r[2] for r in b]
    assert [r[1] for r in a] == pytest.approx([r[1] for r in b], rel=1e-5)


def test_a_long_stream_stays_narrow(tiny):
    """New rows keep joining a batch whose first rows have left: the slots only those held
    are dropped, so the cache does not widen by one slot a step for good."""
    lm = tiny("tiny-llama")
    prompts = [f"Question {i}: {'why ' * (i % 7)}?" for i in range(40)]
    widths = []
    hook = lm.model.register_forward_pre_hook(
        lambda m, a, kw: widths.append(kw["attention_mask"].shape[1]), with_kwargs=True)
    config = GenerationConfig(max_new_tokens=16, stop=("t",), batch_size=4)  # rows end at 5-12 tokens
    try:
        out = generate(lm.model, lm.tokenizer, prompts, config, progress=False)
    finally:
        hook.remove()
    longest = max(len(lm.tokenizer(p)["input_ids"]) for p in prompts)
    assert len(widths) > 3 * (longest + config.max_new_tokens)  # a long stream ...
    assert max(widths) <= 2 * (longest + config.max_new_tokens)  # ... of bounded width
    assert [(g.text, g.new_tokens) for g in out] == reference(lm, prompts, config)


def test_rows_longer_than_the_batch_widen_it(tiny):
    """Prompts taken shortest first (iter_generate takes the longest first): each new row is
    wider than the batch it joins, which is padded after the shared prefix to hold it."""
    for family in ("tiny-llama", "tiny-gemma3"):
        lm = tiny(family)
        prompts = sorted(MIXED, key=lambda p: len(lm.tokenizer(p)["input_ids"]))
        config = GenerationConfig(max_new_tokens=16, stop=("t", "e"), batch_size=4)
        encoded = engine.encode(lm.tokenizer, prompts)
        n = engine.shared_prefix_len(encoded) if engine.prefix_sharing_safe(lm.model) else 0
        shared = engine.prefix_cache(lm.model, encoded[0][:n], "cpu") if n else None
        got = dict(engine._stream(lm.model, [e[n:] for e in encoded], shared, n, config,
                                  engine._Stops(lm.tokenizer, config.stop),
                                  engine._eos_ids(lm.model, lm.tokenizer),
                                  lm.tokenizer.pad_token_id, torch.device("cpu"), 4))
        texts = [(cut_at_stop(lm.tokenizer.decode(got[i], skip_special_tokens=True), config.stop),
                  len(got[i])) for i in range(len(prompts))]
        assert texts == reference(lm, prompts, config)


class NewlineFirst(torch.nn.Module):
    """The model, with every prompt's first generated token forced to be a newline: prefill
    passes (logits_to_keep=1) get their last logits replaced; decoding steps run untouched."""

    def __init__(self, model, newline):
        super().__init__()
        self.inner, self.newline, self.config = model, newline, model.config
        self.generation_config = model.generation_config

    def forward(self, **kw):
        out = self.inner(**kw)
        if "logits_to_keep" in kw:
            out.logits[:, -1] = -1e4
            out.logits[:, -1, self.newline] = 1e4
        return out


@pytest.mark.parametrize("family", ["tiny-llama", "tiny-gemma3"])
def test_an_answer_on_the_next_line_is_not_cut_to_nothing(tiny, family):
    """The first generated token is "\n" and "\n" is a stop: the row runs on to the stop
    after the answer's first word (issue 17), as model.generate's text cut by the same rule."""
    lm = tiny(family)
    newline = lm.tokenizer("\n", add_special_tokens=False)["input_ids"][-1]
    config = GenerationConfig(max_new_tokens=10, stop=("\n",), batch_size=5)
    out = generate(NewlineFirst(lm.model, newline), lm.tokenizer, MIXED, config, progress=False)
    assert [(g.text, g.new_tokens) for g in out] == reference(lm, MIXED, config, first=newline)
    assert min(g.new_tokens for g in out) > 1 and any(g.text for g in out)
