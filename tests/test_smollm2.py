"""Integration on the built-in 135M model: a few questions, dense vs 50% magnitude."""

import json

import pytest

from kickbench import sweep
from kickbench.compress.spec import CompressionSpec
from kickbench.tasks import TaskSpec

EASY = [("What is the capital of France?", ["Paris"]),
        ("What is the capital of Japan?", ["Tokyo"]),
        ("Who wrote the play Hamlet?", ["William Shakespeare", "Shakespeare"]),
        ("What is the largest planet in the Solar System?", ["Jupiter"]),
        ("What is the capital of Italy?", ["Rome"]),
        ("Which ocean lies between Europe and North America?", ["Atlantic", "Atlantic Ocean"])]


@pytest.mark.slow
def test_smollm2_knows_easy_facts_and_loses_them_when_pruned(tmp_path, store):
    data = tmp_path / "easy.jsonl"
    data.write_text("".join(json.dumps({"id": str(i), "question": q, "answers": a}) + "\n"
                            for i, (q, a) in enumerate(EASY)))
    runs = sweep.plan(["smollm2-135m"], [CompressionSpec("dense"),
                                         CompressionSpec("magnitude", 0.6)],
                      [TaskSpec("factoid", data=str(data))])
    frame = sweep.execute(runs, store, sweep.Settings(progress=False))
    acc = frame[frame.metric == "accuracy"].set_index("method").value
    assert acc["dense"] >= 4 / 6
    assert acc["magnitude"] < acc["dense"]
