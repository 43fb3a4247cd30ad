"""Every request's id: SageMaker's inference id when the caller set one (checked), else one made here.

In process, without a model; the real server's log lines, streamed ``done``
lines and error bodies are checked in tests/metrics/test_server_metrics.py.
"""

from __future__ import annotations

import pytest

from serve.http.app import INFERENCE_ID_HEADER, create_app, request_id
from serve.settings import Settings


class Idle:
    ready, backend = True, None
    concurrency = 4

    def require_ready(self):
        return self


@pytest.mark.parametrize("given", ["a", "client-0001", "x" * 64, "id with spaces", "~!@#$%^&*()"])
def test_an_inference_id_that_fits_a_header_and_a_log_line_is_the_requests_id(given):
    assert request_id(given) == given


@pytest.mark.parametrize("given", [None, "", " leading-space", "x" * 65, "tab\there", "new\nline", "é-accent",
                                   "nul\x00"])
def test_anything_else_gets_an_id_of_ours(given):
    made = request_id(given)
    assert made != given and len(made) == 32 and int(made, 16) >= 0
    assert request_id(given) != made  # a new one each time


@pytest.fixture
def client(tmp_path):
    return create_app(Settings.from_env({"WHISPER_TMP_DIR": str(tmp_path), "WHISPER_METRICS": "off"}),
                      Idle()).test_client()


def test_the_id_comes_back_in_the_header_and_the_error_body(client):
    r = client.post("/invocations", data=b"x", headers={"Accept": "text/x-nothing", INFERENCE_ID_HEADER: "abc-42"})
    assert r.status_code == 406
    assert r.headers["X-Request-Id"] == "abc-42" and r.json["error"]["request_id"] == "abc-42"
    r = client.post("/invocations", data=b"x", headers={"Accept": "text/x-nothing"})
    assert r.headers["X-Request-Id"] == r.json["error"]["request_id"] and len(r.headers["X-Request-Id"]) == 32


def test_openai_errors_keep_openais_shape_and_carry_the_id_in_the_header(client):
    r = client.post("/v1/audio/transcriptions", data={}, headers={INFERENCE_ID_HEADER: "abc-43"})
    assert r.status_code == 400 and set(r.json["error"]) == {"message", "type", "param", "code"}
    assert r.headers["X-Request-Id"] == "abc-43"


def test_with_metrics_off_there_is_no_metrics_route(client):
    r = client.get("/metrics")
    assert r.status_code == 404
