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
