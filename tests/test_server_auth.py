"""WHISPER_API_KEY through the real server (nginx in front): every route but /ping needs the key.

For direct runs (ECS, EKS, a laptop), where nothing else guards the port.
Unset, nothing changes: the shared servers of the other tests run without it,
and the OpenAI tests send the client's ``api_key="unused"`` to them.
"""

from __future__ import annotations

import openai
import pytest
import requests

from tests import speech
from tests.server_harness import ServerHandle, running_server

KEY = "sk-test-2f9c1e7a4b6d8e0f1a3c5e7b9d1f3a5c"
WRONG = "sk-test-000000000000000000000000000000"
TEXT = speech.SENTENCES[2]


@pytest.fixture(scope="module")
def keyed() -> ServerHandle:
    with running_server("ctranslate2", env={"WHISPER_API_KEY": KEY}) as handle:
        yield handle
        assert KEY not in handle.log() and WRONG not in handle.log(), "a key reached the log"


@pytest.fixture(scope="module")
def wav() -> bytes:
    return speech.speak(TEXT).path.read_bytes()


def invoke(server, wav: bytes, key: str | None) -> requests.Response:
    headers = {"Content-Type": "audio/wav", **({"Authorization": f"Bearer {key}"} if key else {})}
    return requests.post(server.url + "/invocations", data=wav, headers=headers, timeout=120)


def test_ping_needs_no_key(keyed):
    r = requests.get(keyed.url + "/ping", timeout=5)
    assert r.status_code == 200 and r.content == b""


@pytest.mark.parametrize("key", [None, WRONG])
def test_invocations_without_the_right_key_is_a_json_401(keyed, wav, key):
    r = invoke(keyed, wav, key)
    assert r.status_code == 401 and r.headers["Content-Type"] == "application/json"
    assert r.headers["WWW-Authenticate"] == "Bearer"
    error = r.json()["error"]
    assert error["type"] == "Unauthorized" and "Authorization: Bearer" in error["message"]
    assert ("wrong" in error["message"]) == (key is not None)


def test_the_right_key_transcribes(keyed, wav):
    r = invoke(keyed, wav, KEY)
    assert r.status_code == 200, r.text
    assert speech.wer([TEXT], [r.json()["text"]]) <= speech.MAX_CLIP_WER


@pytest.mark.parametrize("route", ["/execution-parameters", "/v1/models", "/no-such-route"])
def test_other_routes_need_it_too(keyed, route):
    assert requests.get(keyed.url + route, timeout=5).status_code == 401
    authorized = requests.get(keyed.url + route, headers={"Authorization": f"Bearer {KEY}"}, timeout=5)
    assert authorized.status_code == (404 if route == "/no-such-route" else 200)


def test_v1_routes_answer_openais_401_shape(keyed):
    r = requests.get(keyed.url + "/v1/models", headers={"Authorization": f"Bearer {WRONG}"}, timeout=5)
    assert r.status_code == 401
    assert {k: r.json()["error"][k] for k in ("type", "code", "param")} == \
        {"type": "invalid_request_error", "code": "invalid_api_key", "param": None}


def test_the_official_openai_client_with_its_api_key(keyed, tmp_path):
    clip = speech.speak(TEXT, fmt="mp3")

    def client(key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=keyed.url + "/v1", api_key=key, max_retries=0, timeout=300)

    with open(clip.path, "rb") as f:
        result = client(KEY).audio.transcriptions.create(file=f, model="whisper-1")
    assert speech.wer([TEXT], [result.text]) <= speech.MAX_CLIP_WER
    with open(clip.path, "rb") as f, pytest.raises(openai.AuthenticationError) as err:
        client(WRONG).audio.transcriptions.create(file=f, model="whisper-1")
    assert err.value.status_code == 401 and err.value.code == "invalid_api_key"
