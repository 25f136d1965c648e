"""Judge endpoint URLs: no credentials in the URL (refused, never echoed), identities and
messages without userinfo or secret query values, and no key over plain http:// to another host."""

import pytest
from judge_server import ChatServer

from kickbench import judge as J
from kickbench.cli import main
from kickbench.judge import HTTPJudge, JudgeError
from kickbench.judge.http import is_loopback, redact_url

SECRET = "S3CRET-pw-4711"
KEY = "sk-test-urls-0123456789"
MSG = [[{"role": "user", "content": "hi"}]]


def test_redact_url_drops_userinfo_and_secret_query_values():
    assert redact_url(f"https://alice:{SECRET}@judge.example.com/v1?api_key={SECRET}&api-version=2"
                      ) == "https://judge.example.com/v1?api_key=***&api-version=2"
    assert redact_url(f"http://{SECRET}@h:8000/v1?access_token={SECRET}&X-Api-Key={SECRET}&sig=1"
                      ) == "http://h:8000/v1?access_token=***&X-Api-Key=***&sig=***"
    assert redact_url("https://judge.example.com/v1#frag") == "https://judge.example.com/v1"
    assert redact_url("http://[::1") == "<malformed URL>"


@pytest.mark.parametrize("url", [
    f"https://alice:{SECRET}@judge.example.com/v1",
    f"https://{SECRET}@judge.example.com/v1",
    f"http://alice:{SECRET}@127.0.0.1:1/v1",
])
def test_credentials_in_the_url_are_refused_without_echoing_them(url):
    for make in (lambda: HTTPJudge(url, "m", api_key_env=None),
                 lambda: J.from_spec(url, model="m", api_key_env=None)):
        with pytest.raises(ValueError, match="credentials in it") as err:
            make()
        text = str(err.value)
        assert SECRET not in text and "alice" not in text and "--judge-key-env" in text
        assert "@" not in text.split("'")[1]  # the URL shown has no userinfo


@pytest.mark.parametrize("param", ["api_key", "key", "API_KEY", "access_token", "token", "x-api-key",
                                   "password", "sig"])
def test_keys_in_the_query_are_refused_without_echoing_them(param):
    url = f"https://judge.example.com/v1?api-version=2024-06-01&{param}={SECRET}"
    with pytest.raises(ValueError, match="in its query") as err:
        HTTPJudge(url, "m", api_key_env=None)
    text = str(err.value)
    assert SECRET not in text and param in text and "--judge-key-env" in text
    assert f"{param}=***" in text


def test_the_cli_refuses_a_credential_url_before_loading_anything(tmp_path, capsys):
    code = main(["eval", "--model", "tiny-llama", "--store", str(tmp_path / "r.sqlite"),
                 "--task", "icsum", "--judge", f"https://bob:{SECRET}@judge.example.com/v1",
                 "--judge-model", "m"])
    err = capsys.readouterr().err
    assert code == 2 and "credentials in it" in err and "--judge-key-env" in err
    assert SECRET not in err and "bob" not in err


def test_unknown_spec_message_has_no_credentials():
    with pytest.raises(ValueError, match="unknown judge") as err:
        J.from_spec(f"htps://bob:{SECRET}@judge.example.com/v1?api_key={SECRET}", model="m")
    assert SECRET not in str(err.value) and "bob" not in str(err.value)


@pytest.mark.parametrize(("host", "name"), [("judge.example.com", "judge.example.com"),
                                          ("10.0.0.5", "10.0.0.5"), ("192.168.1.20:8000", "192.168.1.20"),
                                          ("[2001:db8::1]", "2001:db8::1")])
def test_a_key_is_never_sent_over_plain_http_to_another_host(host, name, monkeypatch):
    monkeypatch.setenv("KB_URL_KEY", KEY)
    with pytest.raises(ValueError, match="https:// is required") as err:
        HTTPJudge(f"http://{host}/v1", "m", api_key_env="KB_URL_KEY")
    text = str(err.value)
    assert f"to {name}:" in text and KEY not in text
    assert "$KB_URL_KEY" in text and "--judge-key-env ''" in text
    # https to the same host, or no key at all, is fine (nothing is sent here)
    HTTPJudge(f"https://{host}/v1", "m", api_key_env="KB_URL_KEY")
    HTTPJudge(f"http://{host}/v1", "m", api_key_env=None)
    HTTPJudge(f"http://{host}/v1", "m", api_key_env="")


def test_a_key_set_after_construction_is_still_not_sent_over_http(monkeypatch):
    monkeypatch.delenv("KB_URL_KEY", raising=False)
    judge = HTTPJudge("http://judge.example.com/v1", "m", api_key_env="KB_URL_KEY")
    sent = []
    monkeypatch.setattr(judge._session, "post", lambda *a, **kw: sent.append((a, kw)))
    monkeypatch.setenv("KB_URL_KEY", KEY)
    with pytest.raises(ValueError, match="https:// is required"):
        judge.complete(MSG)
    assert sent == []


def test_loopback_hosts():
    assert all(map(is_loopback, ["localhost", "LOCALHOST", "127.0.0.1", "127.1.2.3", "::1"]))
    assert not any(map(is_loopback, ["judge.example.com", "10.0.0.1", "0.0.0.0", "", None,
                                     "localhost.example.com", "127.0.0.1.nip.io"]))


def test_loopback_http_with_a_key_works_and_identity_is_the_clean_url(monkeypatch):
    monkeypatch.setenv("KB_URL_KEY", KEY)
    with ChatServer(lambda m: "7 5") as srv:
        judge = HTTPJudge(srv.url + "/?api-version=2", "judge-x", api_key_env="KB_URL_KEY")
        assert judge.complete(MSG) == ["7 5"]
        assert srv.received[0]["path"] == "/v1/chat/completions?api-version=2"
        assert srv.received[0]["auth"] == f"Bearer {KEY}"
        assert judge.identity["base_url"] == srv.url + "?api-version=2"
        assert HTTPJudge(srv.url + "/", "judge-x").identity["base_url"] == srv.url
        srv.script = [(400, f"no such model; your key {KEY}", {})]
        with pytest.raises(JudgeError, match="HTTP 400") as err:
            judge.complete(MSG)
    assert f"at {srv.url}/chat/completions?api-version=2" in str(err.value)
    assert KEY not in str(err.value) and KEY not in repr(judge) and KEY not in str(judge.identity)


def test_other_url_mistakes_are_named():
    with pytest.raises(ValueError, match="malformed"):
        HTTPJudge("http://[::1/v1", "m", api_key_env=None)
    with pytest.raises(ValueError, match="has no host"):
        HTTPJudge("http:///v1", "m", api_key_env=None)
    with pytest.raises(ValueError, match="fragment"):
        HTTPJudge("https://judge.example.com/v1#x", "m", api_key_env=None)
