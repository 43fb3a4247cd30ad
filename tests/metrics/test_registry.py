"""GET /metrics in one process (no PROMETHEUS_MULTIPROC_DIR): the text format, the API key, bounded labels."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from serve.http.app import create_app
from serve.metrics import record
from serve.settings import Settings

KEY = "test-key-0123456789abcdef"


class Idle:
    ready, backend = True, None
    concurrency = 4

    def require_ready(self):
        return self


@pytest.fixture
def app(tmp_path, monkeypatch):
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)

    def make(**env):
        return create_app(Settings.from_env({"WHISPER_TMP_DIR": str(tmp_path), **env}), Idle()).test_client()
    yield make
    record.install()


def samples(text: str) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def test_requests_and_cancels_by_reason(app):
    client = app()
    for status, error in [(200, ""), (499, ""), (504, "Timeout"), (406, "NotAcceptable")]:
        record.request(record.RequestDone("/invocations", status, error, 1.0))
    m = samples(client.get("/metrics").get_data(as_text=True))
    assert m[("whisper_requests_cancelled_total", (("reason", "client_left"),))] == 1
    assert m[("whisper_requests_cancelled_total", (("reason", "timeout"),))] == 1
    assert m[("whisper_requests_total", (("error_type", "Timeout"), ("route", "/invocations"), ("status", "504")))] == 1
    # a request that failed in the app is counted too (its one log line is where metrics are recorded)
    client.post("/invocations", data=b"x", headers={"Accept": "text/x-nothing"})
    m = samples(client.get("/metrics").get_data(as_text=True))
    assert m[("whisper_requests_total", (("error_type", "NotAcceptable"), ("route", "/invocations"),
                                         ("status", "406")))] == 2


def test_metrics_need_the_api_key_when_one_is_set(app):
    client = app(WHISPER_API_KEY=KEY)
    assert client.get("/metrics").status_code == 401
    r = client.get("/metrics", headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 200 and "whisper_requests_total" in r.get_data(as_text=True)
