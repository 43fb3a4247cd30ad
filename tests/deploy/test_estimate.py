"""``whisper-deploy estimate``: the arithmetic and the recommendation for four workloads, the bench
files it reads, and the inputs it refuses (argparse's exit 2, with a message). It calls nothing."""

from __future__ import annotations

import json
import re

import pytest

from deploy import cli, prices
from deploy import estimate as est

ONE_DOLLAR = est.Assumptions(hosting_price=1.0, batch_price=1.0)  # instance-hours read as dollars


def _capacity(realtime=8.0, file=20.0, live=4):
    return est.Capacity(realtime, file, live, "cpu", "test")


def _mode(result: est.Estimate, mode: str) -> est.ModeEstimate:
    return next(m for m in result.modes if m.mode == mode)


# ---- the four workloads -------------------------------------------------------------------------


def test_voice_commands_real_time_keeps_one_instance_all_month():
    # 100 h a month of 5 s commands, 10 at once at peak, words needed in seconds
    w = est.Workload(100, 10, "interactive", file_minutes=5 / 60, bitrate_kbps=64)
    r = est.estimate(w, _capacity(), ONE_DOLLAR)
    rt = _mode(r, est.REALTIME)
    assert rt.instances_at_peak == 2  # 10 / (8 x 0.7) = 1.79, rounded up
    assert rt.instance_hours == 730  # the work is 100 / 8 / 0.7 = 17.9 h: the floor of one instance bills
    assert rt.per_audio_hour == pytest.approx(7.30)
    assert _mode(r, est.STREAMED).monthly_usd == rt.monthly_usd
    # async would cost 100/20 + 30 x 25 min = 17.5 h, but answers in minutes
    assert _mode(r, est.ASYNC).instance_hours == pytest.approx(5 + 12.5)
    assert _mode(r, est.ASYNC).unfit == "answers in minutes, not in seconds"
    assert _mode(r, est.BATCH).instance_hours == pytest.approx(5 + 5)
    assert r.recommended == est.REALTIME


def test_meetings_an_hour_long_go_async():
    # 2000 h a month of one-hour recordings (64 kbps: 29 MB, over real-time's 6 MB), needed within minutes
    w = est.Workload(2000, 20, "minutes", file_minutes=60, bitrate_kbps=64)
    r = est.estimate(w, _capacity(file=20.0), ONE_DOLLAR)
    assert _mode(r, est.REALTIME).unfit == "a 60 min file is 29 MB, over 6 MB"
    assert _mode(r, est.STREAMED).unfit == "a 60 min file is 29 MB, over 6 MB"
    a = _mode(r, est.ASYNC)
    assert a.unfit is None
    assert a.instances_at_peak == 1  # 20 streams / 20 audio s per s
    assert a.instance_hours == pytest.approx(2000 / 20 + 30 * 25 / 60)
    assert _mode(r, est.BATCH).unfit == "answers when its job ends, not in minutes"
    assert r.recommended == est.ASYNC


def test_archive_goes_to_batch_and_its_own_price():
    # 50 000 h of 3-hour files by the next day: batch and async fit; batch bills no scale-in idle
    w = est.Workload(50_000, 70, "overnight", file_minutes=180, bitrate_kbps=64)
    r = est.estimate(w, _capacity(file=50.0), est.Assumptions(hosting_price=2.0, batch_price=1.5))
    b, a = _mode(r, est.BATCH), _mode(r, est.ASYNC)
    assert b.instance_hours == pytest.approx(1000 + 5)
    assert b.monthly_usd == pytest.approx(1005 * 1.5)
    assert a.instance_hours == pytest.approx(1000 + 12.5)
    assert a.monthly_usd == pytest.approx(1012.5 * 2.0)
    assert _mode(r, est.REALTIME).unfit == "a 180 min file is 86 MB, over 6 MB"
    assert r.recommended == est.BATCH
    # over 100 MB (MaxPayloadInMB) batch no longer fits, async (1 GB) does
    w = est.Workload(50_000, 70, "overnight", file_minutes=180, bitrate_kbps=128)
    r = est.estimate(w, _capacity(file=50.0), est.Assumptions(hosting_price=2.0, batch_price=1.5))
    assert _mode(r, est.BATCH).unfit == "a 180 min file is 173 MB, over 100 MB"
    assert r.recommended == est.ASYNC


def test_live_captions_only_live_fits():
    w = est.Workload(500, 8, "live", file_minutes=0.25, bitrate_kbps=256)
    r = est.estimate(w, _capacity(live=4), ONE_DOLLAR)
    live = _mode(r, est.LIVE)
    assert (live.instances_at_peak, live.instance_hours, live.unfit) == (2, 730, None)
    assert all(m.unfit == "answers after the audio is sent, not as it is spoken" for m in r.modes if m is not live)
    assert r.recommended == est.LIVE


def test_live_without_a_live_measure_fits_nothing():
    w = est.Workload(500, 8, "live", file_minutes=0.25, bitrate_kbps=256)
    r = est.estimate(w, _capacity(live=None), ONE_DOLLAR)
    assert _mode(r, est.LIVE).unfit == "no live capacity measured (--live-bench)"
    assert r.recommended is None


# ---- the arithmetic ----------------------------------------------------------------------------


def test_instances_round_up_but_an_exact_fit_is_not_one_more():
    a = est.Assumptions(hosting_price=1.0, batch_price=1.0, utilization=0.8)
    exact = est.estimate(est.Workload(100, 8, "interactive", 1, 64), _capacity(realtime=10.0), a)
    assert _mode(exact, est.REALTIME).instances_at_peak == 1  # 8 / (10 x 0.8) = 1.0
    over = est.estimate(est.Workload(100, 8.01, "interactive", 1, 64), _capacity(realtime=10.0), a)
    assert _mode(over, est.REALTIME).instances_at_peak == 2
    small = est.estimate(est.Workload(1, 0.01, "interactive", 1, 64), _capacity(), a)
    assert all(m.instances_at_peak == 1 for m in small.modes)


def test_idle_costs_real_time_bills_the_month_async_the_work():
    # one audio hour a month: real-time pays 730 h for 0.18 h of work, async and batch what they use
    r = est.estimate(est.Workload(1, 1, "overnight", 1, 64), _capacity(), ONE_DOLLAR)
    assert _mode(r, est.REALTIME).instance_hours == 730
    assert _mode(r, est.ASYNC).instance_hours == pytest.approx(1 / 20 + 12.5)
    assert _mode(r, est.REALTIME).per_audio_hour == pytest.approx(730)
    # fewer scale-ups, less idle: the start and scale-in minutes are billed per start
    fewer = est.Assumptions(1.0, 1.0, starts_per_month=4, start_minutes=10, scale_in_minutes=5)
    r = est.estimate(est.Workload(1, 1, "overnight", 1, 64), _capacity(), fewer)
    assert _mode(r, est.ASYNC).instance_hours == pytest.approx(1 / 20 + 4 * 15 / 60)
    assert _mode(r, est.BATCH).instance_hours == pytest.approx(1 / 20 + 4 * 10 / 60)


def test_heavy_real_time_bills_above_the_floor_and_at_most_its_peak():
    r = est.estimate(est.Workload(5000, 20, "interactive", 1, 64), _capacity(), ONE_DOLLAR)
    rt = _mode(r, est.REALTIME)
    assert rt.instances_at_peak == 4  # 20 / 5.6 = 3.6
    assert rt.instance_hours == pytest.approx(5000 / 8 / 0.7)  # 893 h: above 730, below 4 x 730
    # an average as high as the peak: never more than the peak's instances all month
    r = est.estimate(est.Workload(730 * 5.6, 5.6, "interactive", 1, 64), _capacity(), ONE_DOLLAR)
    assert _mode(r, est.REALTIME).instance_hours == pytest.approx(730)


def test_a_file_too_slow_for_60_s_does_not_fit_real_time():
    # 10 min at 16 kbps is 1.2 MB, but at 5x real time it takes 120 s
    r = est.estimate(est.Workload(100, 1, "interactive", 10, 16), _capacity(file=5.0), ONE_DOLLAR)
    assert _mode(r, est.REALTIME).unfit == "a 10 min file takes 120 s, over 60 s"
    assert r.recommended is None


def test_hosted_apis_priced_per_audio_hour():
    r = est.estimate(est.Workload(100, 1, "interactive", 1, 64), _capacity(), ONE_DOLLAR)
    whisper = next(h for h in r.hosted if h.name == "OpenAI whisper-1")
    assert whisper.per_audio_hour == pytest.approx(0.36)
    assert whisper.monthly_usd == pytest.approx(36.0)
    assert {h.name for h in r.hosted} == {h.name for h in prices.HOSTED}


# ---- bench files -------------------------------------------------------------------------------

THROUGHPUT = {"device": "cpu", "batch": 8, "rows": [
    {"server": {"backend": "ctranslate2", "seq_rtf": 3.8, "concurrent_rtf": {"4": 6.4, "8": 7.8}, "long_rtf": 21.1},
     "raw": {}},
    {"server": {"backend": "openai", "seq_rtf": 3.2, "concurrent_rtf": {"4": 4.2, "8": 4.1}, "long_rtf": 10.3},
     "raw": {}},
]}
LIVE = [  # two rounds: 4 sessions held in both, 8 in one only
    {"round": 1, "kind": "short", "sessions": 1, "held": 1}, {"round": 1, "kind": "short", "sessions": 4, "held": 4},
    {"round": 1, "kind": "short", "sessions": 8, "held": 8}, {"round": 2, "kind": "short", "sessions": 1, "held": 1},
    {"round": 2, "kind": "short", "sessions": 4, "held": 4}, {"round": 2, "kind": "short", "sessions": 8, "held": 3},
    {"round": 1, "kind": "long", "sessions": 16, "held": 16},  # the long stream's count is not the short's
]


def test_capacity_from_the_bench_files():
    c = est.capacity_from_bench(THROUGHPUT, LIVE)
    assert (c.realtime_rtf, c.file_rtf, c.live_sessions, c.device) == (7.8, 21.1, 4, "cpu")
    assert "7.8 audio s/s at 8 clients" in c.source
    c = est.capacity_from_bench(THROUGHPUT, None, backend="openai")
    assert (c.realtime_rtf, c.file_rtf, c.live_sessions) == (4.2, 10.3, None)
    c = est.capacity_from_bench(THROUGHPUT, LIVE, rtf=120.0, live_sessions=40)
    assert (c.realtime_rtf, c.file_rtf, c.live_sessions, c.device) == (120.0, 120.0, 40, "unknown")
    c = est.capacity_from_bench(THROUGHPUT, None, file_rtf=30.0)
    assert (c.realtime_rtf, c.file_rtf) == (7.8, 30.0)
    c = est.capacity_from_bench(None, None, rtf=7.8, file_rtf=21.1)
    assert (c.realtime_rtf, c.file_rtf, c.device) == (7.8, 21.1, "unknown")


@pytest.mark.parametrize("throughput, live, message", [
    (None, None, "give a throughput bench file (--bench) or --rtf"),
    ({"rows": []}, None, "the throughput file has no rows"),
    ({"rows": [{"server": {"backend": "x"}}]}, None, "is not bench/throughput.py or bench/live.py"),
    (THROUGHPUT, [{"kind": "short", "sessions": 4, "held": 3}], "no session count held real time"),
    (THROUGHPUT, {"rows": []}, "the live file has no rows"),
])
def test_bench_files_it_cannot_use(throughput, live, message):
    with pytest.raises(est.EstimateError, match=re.escape(message)):
        est.capacity_from_bench(throughput, live)


# ---- the command -------------------------------------------------------------------------------


def _run(capsys, *argv) -> tuple[int, str, str]:
    try:
        code = cli.main(["estimate", *argv])
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def bench_files(tmp_path):
    throughput, live = tmp_path / "throughput.json", tmp_path / "live.json"
    throughput.write_text(json.dumps(THROUGHPUT))
    live.write_text(json.dumps(LIVE))
    return str(throughput), str(live)


def test_the_command_prints_every_mode_the_hosted_apis_and_a_recommendation(capsys, bench_files):
    code, out, _ = _run(capsys, "--audio-hours", "2000", "--peak-streams", "20", "--need", "minutes",
                        "--file-minutes", "60", "--bench", bench_files[0], "--live-bench", bench_files[1])
    assert code == 0
    rows = {line.split(" | ")[0].lstrip("| "): line for line in out.splitlines() if line.startswith("| ")}
    assert set(est.MODES) <= set(rows)
    # ml.g5.xlarge from the table: async bills 2000 / 21.1 + 12.5 instance-hours at $1.408
    hours = 2000 / 21.1 + 12.5
    assert f"| {hours:,.1f} | {hours * 1.408:,.2f} |" in rows[est.ASYNC]
    assert "| 720.00 | 0.360 |" in rows["OpenAI whisper-1 (hosted)"]
    assert f"Recommendation: async, ${hours * 1.408:,.2f} a month" in out
    assert f"read {prices.READ_ON}" in out
    assert "no batch transform price in the table: the hosting price is used" in out
    assert "capacity was measured on a CPU; ml.g5.xlarge has an accelerator" in out


def test_a_price_override_and_an_instance_without_a_listed_price(capsys):
    code, _, err = _run(capsys, "--audio-hours", "10", "--peak-streams", "1", "--rtf", "50",
                        "--instance-type", "ml.g6.xlarge")
    assert code == 2
    assert "no us-east-1 price for ml.g6.xlarge in deploy/prices.py" in err and "--price-per-hour" in err
    code, out, _ = _run(capsys, "--audio-hours", "10", "--peak-streams", "1", "--rtf", "50",
                        "--instance-type", "ml.g6.xlarge", "--price-per-hour", "2", "--batch-price-per-hour", "1")
    assert code == 0
    assert "$2/h hosting, $1/h batch" in out and "| 1 | 730.0 | 1,460.00 |" in out


@pytest.mark.parametrize("argv, message", [
    (["--audio-hours", "-5", "--peak-streams", "1", "--rtf", "8"], "--audio-hours must be above 0"),
    (["--audio-hours", "10", "--peak-streams", "0", "--rtf", "8"], "--peak-streams must be above 0"),
    (["--audio-hours", "10000", "--peak-streams", "1", "--rtf", "8"], "13.70 streams on average"),
    (["--audio-hours", "10", "--peak-streams", "1"], "give a throughput bench file (--bench) or --rtf"),
    (["--audio-hours", "10", "--peak-streams", "1", "--rtf", "0"], "a real-time factor must be above 0"),
    (["--audio-hours", "10", "--peak-streams", "1", "--rtf", "8", "--file-rtf", "-1"],
     "a real-time factor must be above 0"),
    (["--audio-hours", "10", "--peak-streams", "1", "--rtf", "8", "--utilization", "1.5"], "--utilization"),
    (["--audio-hours", "10", "--peak-streams", "1", "--rtf", "8", "--instance-type", "g5.xlarge"],
     "must look like ml.<family>.<size>"),
    (["--audio-hours", "10", "--peak-streams", "1", "--rtf", "8", "--need", "soon"], "invalid choice"),
    (["--audio-hours", "ten", "--peak-streams", "1", "--rtf", "8"], "invalid float value"),
    (["--audio-hours", "10", "--peak-streams", "1", "--bench", "/nonexistent/bench.json"], "cannot read"),
    (["--peak-streams", "1", "--rtf", "8"], "--audio-hours"),
])
def test_bad_inputs_are_usage_errors(capsys, argv, message):
    code, out, err = _run(capsys, *argv)
    assert code == 2
    assert message in err
    assert out == ""


def test_a_bench_file_that_is_not_one(capsys, tmp_path):
    bad = tmp_path / "bench.json"
    bad.write_text(json.dumps({"rows": [{"server": {"backend": "x", "seq_rtf": "fast"}}]}))
    code, _, err = _run(capsys, "--audio-hours", "10", "--peak-streams", "1", "--bench", str(bad))
    assert code == 2
    assert "is not bench/throughput.py or bench/live.py --json output" in err


def test_the_estimate_calls_nothing(capsys, monkeypatch, bench_files):
    """No session, no client, no credentials: every way to AWS raises, and the estimate still prints."""
    import boto3

    def refuse(*args, **kwargs):
        raise AssertionError("estimate reached for AWS")

    monkeypatch.setattr(cli, "Executor", refuse)
    monkeypatch.setattr(boto3, "client", refuse)
    monkeypatch.setattr(boto3, "Session", refuse)
    code, out, _ = _run(capsys, "--audio-hours", "100", "--peak-streams", "2", "--bench", bench_files[0])
    assert code == 0 and "Recommendation: real-time" in out
