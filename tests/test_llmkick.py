"""Faithful science (issue 17): project data never holds a task's own few-shot examples, and
the `llmkick` templates reproduce the LLM-KICK reference code (VITA-Group/llm-kick, commit
37f2122) on crafted cases whose expected results follow by hand from the reference's lines."""

from kickbench.tasks import data, factoid, icraqa, mmlu, text


def _norm(q: str) -> str:
    return text.normalize(q)


def test_no_project_data_holds_its_own_shots():
    for module in (factoid, icraqa):
        shot_questions = {_norm(s[-2]) for s in module.SHOTS}
        items = module.load()
        overlap = [it["id"] for it in items if _norm(it["question"]) in shot_questions]
        assert not overlap, f"{module.NAME}: items repeat the prompt's shots: {overlap}"
        # nor any shot's passage (an open-book shot would hold the item's answer)
        if module is icraqa:
            passages = {_norm(c) for c, _, _ in module.SHOTS}
            assert not [it["id"] for it in items if _norm(it["context"]) in passages]
    test = {_norm(it["question"]) for it in mmlu.load()}
    dev = {_norm(r["question"]) for r in data.read_jsonl(data.PROJECT_DATA / "mmlu" / "dev.jsonl")}
    assert not test & dev, f"MMLU test items repeat dev shots: {sorted(test & dev)[:5]}"


def test_the_replaced_factoid_items_keep_their_ids():
    items = {it["id"]: it for it in factoid.load()}
    assert items["fact-0025"]["answers"] == ["Lima"]
    assert items["fact-0083"]["answers"] == ["Neptune"]
    assert "Charlotte Brontë" in items["fact-0142"]["answers"]
    assert len(items) == 300
