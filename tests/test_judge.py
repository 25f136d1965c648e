import math
import re

import pytest

from kickbench import judge as J
from kickbench.judge import rubric as R
from kickbench.judge.http import HTTPJudge, JudgeError
from kickbench.store import Store

from judge_server import ChatServer

KEY = "sk-test-very-secret-0123456789"


class Scripted:
    """A judge in plain Python: reply(messages) -> str, counting calls."""

    label = "scripted"
    identity = {"kind": "scripted"}

    def __init__(self, reply):
        self.reply, self.calls = reply, []

    def complete(self, batch, layout):
        self.calls += batch
        return [self.reply(m) for m in batch]


def answers_in(messages):
    text = messages[-1]["content"]
    return re.findall(r"Assistant \d's \w+\]\n(.*?)\n\[The End", text)


def by_content(messages):
    """Scores follow the answers' content, not their position: 'GOOD' gets 9, anything else 4."""
    first, second = answers_in(messages)
    return "\n".join(f"{9 if 'GOOD' in first else 4} {9 if 'GOOD' in second else 4}"
                     for _ in R.SUMMARY.aspects) + "\nexplanation"


def test_parse_reads_score_lines_and_rejects_the_rest():
    assert R.parse("8 6\n7 7\n9 5\n6 6\nbecause", R.SUMMARY, True) == [(8, 6), (7, 7), (9, 5), (6, 6)]
    assert R.parse("Coherence: 8/10, 6/10\nConsistency: 7 7\n**Fluency**: 9 5\nRelevance - 6 and 6",
                   R.SUMMARY, True) == [(8, 6), (7, 7), (9, 5), (6, 6)]
    assert R.parse("8 6\nnot a score\n9 5\n6 6", R.SUMMARY, True) is None  # lines must be consecutive
    assert R.parse("12 5", R.GENERAL, True) is None  # out of range
    assert R.parse("Both answers are good.", R.GENERAL, True) is None
    assert R.parse("Score: 7/10", R.GENERAL, False) == [(7,)]
    assert R.parse("7", R.GENERAL, True) is None  # a pair needs two scores


def test_both_orders_are_asked_and_averaged():
    judge = Scripted(by_content)
    [v] = J.assess(judge, R.SUMMARY, [J.Request("story", "GOOD summary", "reference")], J.DictCache())
    assert len(judge.calls) == 2
    firsts = [answers_in(m)[0] for m in judge.calls]
    assert sorted(firsts) == ["GOOD summary", "reference"]  # each answer shown first once
    assert v.scores == dict.fromkeys(R.SUMMARY.aspects, 9.0)
    assert v.reference_scores == dict.fromkeys(R.SUMMARY.aspects, 4.0)
    assert v.unparsed == 0 and v.disagreement == 0.0
    m = J.sample_metrics(R.SUMMARY, [v])
    assert m["judge_score"] == 9.0 and m["win_rate"] == 1.0


def test_position_bias_shows_as_disagreement_and_cancels_in_the_mean():
    judge = Scripted(lambda m: "\n".join("9 5" for _ in R.SUMMARY.aspects))  # always prefers the first
    [v] = J.assess(judge, R.SUMMARY, [J.Request("story", "answer", "reference")], J.DictCache())
    assert v.disagreement == 1.0
    assert v.scores == v.reference_scores == dict.fromkeys(R.SUMMARY.aspects, 7.0)
    assert J.sample_metrics(R.SUMMARY, [v])["win_rate"] == 0.5


def test_eval_warns_when_the_judge_rates_positions(capsys):
    import pandas as pd

    from kickbench.cli import _judge_warnings

    assert J.order_warning("dense", 0.0) is None and J.order_warning("dense", float("nan")) is None
    frame = pd.DataFrame({"label": ["dense", "wanda 50%", "wanda 50%"], "value": [0.2, 1.0, 0.4],
                          "metric": ["order_disagreement", "order_disagreement", "judge_score"]})
    _judge_warnings(frame)
    out = capsys.readouterr().out
    assert "warning (wanda 50%): the judge's two orders prefer different answers for 100%" in out and "dense" not in out and "--judge URL" in out


def test_unreadable_reply_is_retried_once_with_stricter_instruction():
    replies = iter(["I liked both.", "8 3"])
    judge = Scripted(lambda m: next(replies))
    [v] = J.assess(judge, R.GENERAL, [J.Request("q", "answer")], J.DictCache())  # single grading
    assert len(judge.calls) == 2 and "IMPORTANT" in judge.calls[1][-1]["content"]
    assert v.scores == {"overall": 8.0} and v.unparsed == 0
    assert "I liked both." in v.replies[0]  # the raw reply is kept


def test_still_unreadable_is_counted_not_scored_as_zero():
    judge = Scripted(lambda m: "no idea")
    vs = J.assess(judge, R.GENERAL, [J.Request("q", "a", "ref"), J.Request("q2", "a2")], J.DictCache())
    assert len(judge.calls) == 6  # 2 orders + 1 single, each retried once
    assert [v.unparsed for v in vs] == [2, 1]
    m = J.sample_metrics(R.GENERAL, vs[:1])
    assert math.isnan(m["judge_score"]) and math.isnan(m["overall"]) and m["unparsed"] == 2


def test_http_judge_retries_then_answers_and_sends_the_key_only_in_the_header(monkeypatch):
    monkeypatch.setenv("KB_TEST_KEY", KEY)
    with ChatServer(lambda m: "6 4") as srv:
        srv.script = [(500, "oops", {}), (429, "slow down", {"Retry-After": "0"}),
                      (200, "not json at all", {}), (200, '{"choices": []}', {})]
        judge = HTTPJudge(srv.url, "judge-x", api_key_env="KB_TEST_KEY", backoff=0.01)
        assert judge.complete([[{"role": "user", "content": "hi"}]]) == ["6 4"]
        assert len(srv.received) == 5
        assert all(r["auth"] == f"Bearer {KEY}" for r in srv.received)
        assert srv.received[0]["body"]["temperature"] == 0.0 and srv.received[0]["body"]["seed"] == 0
        assert srv.received[0]["path"] == "/v1/chat/completions"
    assert KEY not in repr(judge) and KEY not in str(judge.identity)


def test_http_judge_times_out_and_retries():
    with ChatServer(lambda m: "5 5") as srv:
        srv.script = [("sleep", 1.0)]
        judge = HTTPJudge(srv.url, "m", api_key_env=None, timeout=0.2, backoff=0.01)
        assert judge.complete([[{"role": "user", "content": "x"}]]) == ["5 5"]
        assert len(srv.received) == 2


def test_http_judge_errors_name_the_problem_without_the_key(monkeypatch):
    monkeypatch.setenv("KB_TEST_KEY", KEY)
    with ChatServer() as srv:
        srv.script = [(401, f"bad key {KEY}", {})]  # a server echoing the key back
        judge = HTTPJudge(srv.url, "m", api_key_env="KB_TEST_KEY", backoff=0.01)
        with pytest.raises(JudgeError, match="HTTP 401") as err:
            judge.complete([[{"role": "user", "content": "x"}]])
        assert KEY not in str(err.value) and len(srv.received) == 1  # 401 is not retried
        srv.script = [(503, "down", {})] * 3
        judge.retries = 2
        with pytest.raises(JudgeError, match="gave up after 3 attempts"):
            judge.complete([[{"role": "user", "content": "x"}]])


def test_http_judge_rate_limit_spaces_requests(monkeypatch):
    slept = []
    monkeypatch.setattr("kickbench.judge.http.time.sleep", slept.append)
    with ChatServer() as srv:
        judge = HTTPJudge(srv.url, "m", api_key_env=None, requests_per_minute=60)
        judge.complete([[{"role": "user", "content": str(i)}] for i in range(3)])
    assert len(slept) == 2 and all(0.9 < s <= 1.0 for s in slept)


def test_bad_judge_spec_is_refused():
    with pytest.raises(ValueError, match="unknown judge 'gpt4'"):
        J.from_spec("gpt4")
    with pytest.raises(ValueError, match="needs a model name"):
        J.from_spec("http://127.0.0.1:1/v1")
    with pytest.raises(ValueError, match="http:// or https://"):
        HTTPJudge("ftp://x", "m")


def test_store_caches_judgments_and_never_holds_the_key(tmp_path, monkeypatch):
    monkeypatch.setenv("KB_TEST_KEY", KEY)
    store = Store(tmp_path / "r.sqlite")
    with ChatServer(by_content) as srv:
        judge = HTTPJudge(srv.url, "judge-x", api_key_env="KB_TEST_KEY")
        reqs = [J.Request("story", "GOOD one", "ref"), J.Request("story 2", "bad", "ref")]
        first = J.assess(judge, R.SUMMARY, reqs, store)
        assert len(srv.received) == 4
        again = J.assess(judge, R.SUMMARY, reqs, store)
        assert len(srv.received) == 4 and again == first  # all from the cache
        other = HTTPJudge(srv.url, "judge-y", api_key_env="KB_TEST_KEY")
        J.assess(other, R.SUMMARY, reqs[:1], store)
        assert len(srv.received) == 6  # another judge identity is another cache entry
    store.close()
    for f in tmp_path.iterdir():
        assert KEY.encode() not in f.read_bytes()
