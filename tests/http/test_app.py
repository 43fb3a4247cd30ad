"""serve/http/app.py in process, without a model: /execution-parameters and the API key's check."""

from __future__ import annotations

import logging

import pytest

from serve.http.app import MAX_PAYLOAD_MB, create_app, transform_parameters
from serve.settings import Settings

KEY = "test-key-0123456789abcdef"


class Idle:
    """A runtime that is ready and answers nothing: these routes never reach it."""

    ready, backend = True, None

    def __init__(self, concurrency: int = 4):
        self.concurrency = concurrency

    def require_ready(self):
        return self


@pytest.mark.parametrize("workers", [1, 2, 3, 7, 8, 16, 33, 64, 100, 101, 128])
@pytest.mark.parametrize("batch", [1, 2, 3, 4, 16, 32, 64, 99, 256])
def test_execution_parameters_keep_sagemakers_product_for_any_workers_and_batch(tmp_path, workers, batch):
    settings = Settings.from_env({"WHISPER_TMP_DIR": str(tmp_path), "SAGEMAKER_MODEL_SERVER_WORKERS": str(workers)})
    answer = create_app(settings, Idle(batch)).test_client().get("/execution-parameters").json
    concurrent, payload = answer["MaxConcurrentTransforms"], answer["MaxPayloadInMB"]
    assert concurrent * payload <= MAX_PAYLOAD_MB and concurrent >= 1 and payload >= 1
    records = workers * batch
    assert concurrent == min(records, MAX_PAYLOAD_MB)  # as many records as the workers batch, while allowed
    assert payload == MAX_PAYLOAD_MB // concurrent  # and each as large as the product leaves room for
    assert answer["BatchStrategy"] == "SINGLE_RECORD"


def test_execution_parameters_over_every_record_count():
    for records in range(0, 1000):
        p = transform_parameters(records)
        assert 1 <= p["MaxConcurrentTransforms"] and 1 <= p["MaxPayloadInMB"] <= MAX_PAYLOAD_MB
        assert p["MaxConcurrentTransforms"] * p["MaxPayloadInMB"] <= MAX_PAYLOAD_MB, (records, p)


@pytest.fixture
def keyed(tmp_path):
    settings = Settings.from_env({"WHISPER_TMP_DIR": str(tmp_path), "WHISPER_API_KEY": KEY})
    return create_app(settings, Idle()).test_client()


@pytest.mark.parametrize("headers", [{}, {"Authorization": f"Bearer {KEY}x"}, {"Authorization": f"Basic {KEY}"},
                                     {"Authorization": KEY}, {"Authorization": f"Bearer {KEY[:-1]}"},
                                     {"Authorization": "Bearer"}])
@pytest.mark.parametrize("route", ["/invocations", "/execution-parameters", "/v1/models", "/v1/audio/transcriptions",
                                   "/nope"])
def test_every_route_but_ping_needs_the_key(keyed, caplog, headers, route):
    with caplog.at_level(logging.DEBUG):
        r = (keyed.get if route in ("/execution-parameters", "/v1/models", "/nope") else keyed.post)(
            route, headers=headers)
    assert r.status_code == 401, r.data
    assert r.headers["WWW-Authenticate"] == "Bearer" and r.headers["X-Request-Id"]
    error = r.json["error"]
    if route.startswith("/v1/"):  # OpenAI's shape: the openai client raises AuthenticationError
        assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", "invalid_api_key", None)
    else:
        assert error["type"] == "Unauthorized"
    assert "Authorization: Bearer" in error["message"] and KEY not in error["message"]
    assert KEY not in caplog.text


def test_ping_needs_no_key_and_the_right_key_passes(keyed):
    assert keyed.get("/ping").status_code == 200
    r = keyed.get("/execution-parameters", headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 200 and r.json["BatchStrategy"] == "SINGLE_RECORD"
    assert keyed.get("/execution-parameters", headers={"Authorization": f"bearer {KEY}"}).status_code == 200


def test_without_a_key_the_header_changes_nothing(tmp_path):
    client = create_app(Settings.from_env({"WHISPER_TMP_DIR": str(tmp_path)}), Idle()).test_client()
    for headers in ({}, {"Authorization": "Bearer anything"}):
        assert client.get("/execution-parameters", headers=headers).status_code == 200
