"""Issue 17, the reference protocol as a report switch: `--protocol llmkick` puts every task
under its llmkick template; factoid:llmkick's per-prompt length budget (the reference's
max_length = 3 x prompt tokens); dialogue intervals that resample whole conversations."""

import json

import numpy as np
import pytest

from kickbench import config, posthoc, runners, stats, sweep
from kickbench.cli import main
from kickbench.engine import GenerationConfig, encode, generate, iter_generate
from kickbench.judge import rubric as R
from kickbench.tasks import TaskSpec, factoid


def _params(**kw):
    params = {k: None for k in config.REPORT_PARAMETERS}
    params.update(model="tiny-llama", methods=["magnitude"], sparsities=[0.5], patterns=[],
                  bits=[], symmetric=False, partial_groups=False, options={}, data={},
                  task_limits={}, nsamples=2, seqlen=16, ppl_windows=1, batch_size=8, seed=0,
                  progress=False, tasks=["factoid", "mmlu", "icraqa", "icraqa:closed", "icsum"])
    params.update(kw)
    return params


def test_llmkick_protocol_runs_each_task_under_its_llmkick_template():
    plan = config.report_plan(_params(protocol="llmkick"))
    assert [t.label for t in plan.tasks] == ["factoid:llmkick", "mmlu:llmkick", "icraqa:llmkick",
                                             "icraqa:closed", "icsum", "perplexity"]
    assert plan.tasks[3].template_name == "closed"  # asked for explicitly: kept
    notes = config.protocol_notes(plan.tasks, "llmkick")
    assert notes[0] == "factoid: LLM-KICK's reference protocol (template llmkick)"
    assert "icraqa:closed: template closed chosen explicitly, kept" in notes[3]
    assert notes[4].startswith("icsum: no llmkick template; runs kickbench's own")
    assert notes[5].startswith("perplexity: no llmkick template")
    # the default protocol (None or "kickbench") keeps every task's own default
    for protocol in (None, "kickbench"):
        plan = config.report_plan(_params(protocol=protocol))
        assert [t.template for t in plan.tasks[:3]] == [None, None, None]
        assert config.protocol_notes(plan.tasks, protocol) == []


def test_python_api_takes_the_protocol_and_refuses_an_unknown_one():
    [t] = config.task_specs(["mmlu"], {"mmlu": "x.jsonl"}, protocol="llmkick")
    assert (t.template, t.data) == ("llmkick", "x.jsonl")
    with pytest.raises(ValueError, match="unknown protocol 'reference'; allowed: kickbench, llmkick"):
        config.report_plan(_params(protocol="reference"))


def test_cli_protocol_flag(tmp_path, capsys):
    assert main(["report", "--protocol", "llmkik", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "kickbench: error: unknown protocol 'llmkik'; allowed: kickbench, llmkick"
    from kickbench import cli, report

    args = cli.parse(["report", "--protocol", "llmkick", "--tasks", "factoid,mmlu"])
    params = cli.report_params(args)
    assert params["protocol"] == "llmkick"
    conf = report.configuration(params)
    assert conf["protocol"] == "llmkick" and conf["tasks"] == ["factoid", "mmlu"]
    assert "--protocol llmkick" in report.command_line(conf)
    default = report.configuration(cli.report_params(cli.parse(["report"])))
    assert "protocol" not in default  # the default stays out of the reproduction command


# -- factoid:llmkick's per-prompt budget ---------------------------------------------------------

QUESTIONS = ["Who?", "Which river flows through the middle of the old town of Prague?",
             "What is the capital of the small landlocked country of Liechtenstein in Europe?"]


def test_budgets_follow_the_reference_rule(tiny):
    lm = tiny("tiny-llama")
    task = TaskSpec("factoid", template="llmkick")
    prompts = [factoid.prompt({"question": q}, "llmkick") for q in QUESTIONS]
    lengths = [len(ids) for ids in encode(lm.tokenizer, prompts)]
    got = runners.budgets(lm.tokenizer, task, prompts, runners.generation_config(task))
    assert got == [2 * n for n in lengths]  # max_length = 3 x prompt tokens
    assert len(set(got)) == 3
    # every other template keeps the config's fixed max_new_tokens
    assert runners.budgets(lm.tokenizer, TaskSpec("factoid"), prompts,
                           runners.generation_config(TaskSpec("factoid"))) is None


def test_engine_per_prompt_max_new_equals_one_generation_each(tiny):
    lm = tiny("tiny-llama")
    prompts = ["a b c", "d e f g h i j", "k", "l m n o", "p q"]
    max_new = [3, 9, 1, 6, 4]
    config = GenerationConfig(max_new_tokens=64, stop=(), batch_size=2)
    got = {}
    for batch in iter_generate(lm.model, lm.tokenizer, prompts, config, False, max_new=max_new):
        got.update(batch)
    for i, p in enumerate(prompts):
        [alone] = generate(lm.model, lm.tokenizer, [p],
                           GenerationConfig(max_new_tokens=max_new[i], stop=(), batch_size=1), False)
        assert (got[i].text, got[i].new_tokens) == (alone.text, alone.new_tokens)
        assert got[i].new_tokens <= max_new[i]


def test_factoid_llmkick_generates_each_prompt_to_its_own_budget(tiny, tmp_path, store):
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps({"id": str(i), "question": q, "answers": ["x"]}) + "\n"
                            for i, q in enumerate(QUESTIONS)))
    task = TaskSpec("factoid", data=str(data), template="llmkick")
    runs = sweep.plan(["tiny-llama"], [config.spec("dense")], [task])
    sweep.execute(runs, store, sweep.Settings(batch_size=2, progress=False, dtype="float32"))
    samples = store.samples(store.rows()[0]["key"])
    lm = tiny("tiny-llama")
    for _, s in samples.iterrows():
        n = len(encode(lm.tokenizer, [s.prompt])[0])
        [alone] = generate(lm.model, lm.tokenizer, [s.prompt],
                           GenerationConfig(max_new_tokens=2 * n, stop=(), batch_size=1), False)
        assert (s.output, s.new_tokens) == (alone.text, alone.new_tokens)
        assert s.new_tokens <= 2 * n
    assert samples.new_tokens.nunique() > 1  # the budgets differ, so do the lengths
    key_fields = store.run(store.rows()[0]["key"])["meta"]["key_fields"]
    assert key_fields["decoding"]["budget"] == "2 x prompt tokens"


# -- dialogue intervals resample whole conversations --------------------------------------------

def _dialogue_samples(store, key, task="instruct"):
    rng = np.random.default_rng(3)
    store.put_run(key, "m", {"method": "dense"}, task, {})
    records = []
    for d in range(12):
        good = rng.random() < 0.5  # both turns of a conversation alike: clustering matters
        for turn in range(2):
            item = {"id": f"d{d}/turn{turn + 1}", "dialogue": f"d{d}", "turn": turn,
                    "turns": ["q"] * (turn + 1), "reference": "ref", "category": "c"}
            records.append({"idx": len(records), "item": item,
                            "prompt": "", "output": "GOOD" if good else "bad", "new_tokens": 0,
                            "metrics": {"rougeL": float(good) * 0.8 + 0.1 * turn}})
    store.add_samples(key, records)
    return store.samples(key)


def test_sweep_score_resamples_conversations(store):
    samples = _dialogue_samples(store, "k1")
    sweep._score(store, "k1", len(samples), TaskSpec("instruct"))
    got = store.scores("k1", len(samples))["rougeL"]
    dialogues = [it["dialogue"] for it in samples.item]
    assert got == pytest.approx(stats.aggregate(samples.rougeL, groups=dialogues))
    assert got != pytest.approx(stats.aggregate(samples.rougeL))  # items alone: narrower


class _Scripted:
    label, identity = "scripted", {"kind": "scripted"}

    def complete(self, batch, layout):
        return ["9 3" if "GOOD" in m[-1]["content"].split("[The End")[0] else "3 9"
                for m in batch]


def test_judge_run_resamples_conversations(store):
    from kickbench.tasks import instruct

    samples = _dialogue_samples(store, "k2")
    jkey = posthoc.judge_run(store, "k2", len(samples), instruct, _Scripted(), progress=False)
    judged = store.samples(jkey)
    dialogues = [it["dialogue"] for it in judged.item]
    got = store.scores(jkey, len(judged))["judge_score"]
    assert got == pytest.approx(stats.aggregate(judged.judge_score, groups=dialogues))
    assert R.GENERAL.aspects == ("overall",)
