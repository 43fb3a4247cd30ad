"""Alarms and dashboard (--alarms, --dashboard, `monitor`) against moto: what CloudWatch holds after
a deploy, what cleanup removes, and the exact requests a dry run prints (checked against botocore's
own model of each API)."""

from __future__ import annotations

import json

import boto3
import botocore.session
import pytest
from botocore.stub import Stubber
from botocore.validate import validate_parameters

from deploy.aws import Executor
from tests._moto import IMAGE, REGION, ROLE, TEST_INSTANCE, cli, client, make_bucket

VARIANT_DIMENSIONS = [{"Name": "EndpointName", "Value": "whisper-rt"}, {"Name": "VariantName", "Value": "AllTraffic"}]


def _alarms() -> dict[str, dict]:
    return {a["AlarmName"]: a for a in client("cloudwatch").describe_alarms()["MetricAlarms"]}


def _dashboard_metrics(name: str) -> set[tuple[str, str]]:
    body = json.loads(client("cloudwatch").get_dashboard(DashboardName=name)["DashboardBody"])
    return {(m[0], m[1]) for w in body["widgets"] for m in w["properties"]["metrics"]}


def test_realtime_alarms_dashboard_and_cleanup(aws, capsys):
    topic = client("sns").create_topic(Name="whisper-ops")["TopicArn"]
    assert cli(capsys, "create-model", "--name", "whisper-rt", "--image", IMAGE, "--role", ROLE)[0] == 0
    rc, _, err = cli(capsys, "realtime", "--name", "whisper-rt", "--model", "whisper-rt", "--config-name", "rt-c",
                     "--instance-type", TEST_INSTANCE, "--alarms", "--dashboard", "--alarm-sns-topic", topic,
                     "--alarm-5xx-percent", "2", "--alarm-p99-latency", "12", "--alarm-queued-audio", "90",
                     "--alarm-queued-minutes", "3")
    assert rc == 0, err

    alarms = _alarms()
    assert set(alarms) == {"whisper-rt-5xx-rate", "whisper-rt-p99-model-latency", "whisper-rt-queued-audio"}
    for alarm in alarms.values():
        assert alarm["AlarmActions"] == [topic] and alarm["OKActions"] == [topic]
        assert alarm["TreatMissingData"] == "notBreaching"
    errors = alarms["whisper-rt-5xx-rate"]
    assert errors["Threshold"] == 2.0 and errors["ComparisonOperator"] == "GreaterThanThreshold"
    assert (errors["EvaluationPeriods"], errors["DatapointsToAlarm"]) == (5, 3)
    metrics = {m["Id"]: m for m in errors["Metrics"]}
    assert metrics["rate"]["Expression"] == "IF(invocations > 0, 100 * errors / invocations, 0)"
    assert metrics["errors"]["MetricStat"]["Metric"]["MetricName"] == "Invocation5XXErrors"
    assert metrics["invocations"]["MetricStat"]["Metric"] == {
        "Namespace": "AWS/SageMaker", "MetricName": "Invocations", "Dimensions": VARIANT_DIMENSIONS}
    assert metrics["invocations"]["MetricStat"]["Stat"] == "Sum"
    latency = alarms["whisper-rt-p99-model-latency"]
    assert (latency["MetricName"], latency["Namespace"], latency["ExtendedStatistic"]) == (
        "ModelLatency", "AWS/SageMaker", "p99")
    assert latency["Threshold"] == 12e6  # ModelLatency is in microseconds
    assert latency["Dimensions"] == VARIANT_DIMENSIONS
    queued = alarms["whisper-rt-queued-audio"]
    assert (queued["MetricName"], queued["Namespace"], queued["Statistic"]) == (
        "QueuedAudioSeconds", "WhisperSageMaker", "Maximum")
    assert (queued["Threshold"], queued["Period"], queued["EvaluationPeriods"], queued["DatapointsToAlarm"]) == (
        90.0, 60, 3, 3)

    shown = _dashboard_metrics("whisper-whisper-rt")
    assert {("AWS/SageMaker", "Invocation5XXErrors"), ("AWS/SageMaker", "ConcurrentRequestsPerModel"),
            ("AWS/SageMaker", "ModelLatency"), ("/aws/sagemaker/Endpoints", "GPUUtilization")} <= shown
    ours = {name for namespace, name in shown if namespace == "WhisperSageMaker"}
    assert ours == {"Requests", "RequestLatency", "TimeToFirstSegment", "AudioSeconds", "RealTimeFactor",
                    "QueuedWindows", "QueuedAudioSeconds", "BatchSize", "EngineCallLatency", "DecodeLatency",
                    "RequestsCancelled", "RequestsTimedOut", "LiveSessions", "LiveSessionsRefused",
                    "LiveSessionsLagging", "ModelLoadTime", "WorkerMemory", "GPUMemory"}  # the agreed catalogue

    for attempt in (1, 2):
        rc, _, err = cli(capsys, "cleanup", "--endpoint", "whisper-rt")
        assert rc == 0, f"attempt {attempt}: {err}"
    assert _alarms() == {}
    assert client("cloudwatch").list_dashboards()["DashboardEntries"] == []


def test_async_alarms_watch_the_backlog(aws, capsys):
    make_bucket("whisper-async")
    assert cli(capsys, "create-model", "--name", "whisper-async", "--image", IMAGE, "--role", ROLE)[0] == 0
    rc, _, err = cli(capsys, "async", "--name", "whisper-async", "--model", "whisper-async", "--config-name", "a-c",
                     "--instance-type", TEST_INSTANCE, "--output", "s3://whisper-async/out",
                     "--failure", "s3://whisper-async/failed", "--max-instances", "2", "--alarms", "--dashboard",
                     "--alarm-backlog-age", "600")
    assert rc == 0, err
    alarms = _alarms()
    assert set(alarms) == {"whisper-async-HasBacklogWithoutCapacity",  # the scale-from-zero alarm, unchanged
                           "whisper-async-5xx-rate", "whisper-async-p99-model-latency", "whisper-async-queued-audio",
                           "whisper-async-backlog-age"}
    age = alarms["whisper-async-backlog-age"]
    assert (age["MetricName"], age["Namespace"], age["Statistic"], age["Threshold"]) == (
        "ApproximateAgeOfOldestRequest", "AWS/SageMaker", "Maximum", 600.0)
    assert age["Dimensions"] == [{"Name": "EndpointName", "Value": "whisper-async"}]
    assert "AlarmActions" not in age or age["AlarmActions"] == []  # no topic given
    # Async endpoints publish no Invocations: the 5xx share is the Average of Invocation5XXErrors.
    rate = {m["Id"]: m for m in alarms["whisper-async-5xx-rate"]["Metrics"]}
    assert rate["rate"]["Expression"] == "100 * errors"
    assert rate["errors"]["MetricStat"]["Stat"] == "Average"
    assert alarms["whisper-async-p99-model-latency"]["Threshold"] == 1800e6
    shown = _dashboard_metrics("whisper-whisper-async")
    assert ("AWS/SageMaker", "ApproximateAgeOfOldestRequest") in shown
    assert ("AWS/SageMaker", "Invocations") not in shown

    assert cli(capsys, "cleanup", "--endpoint", "whisper-async")[0] == 0
    assert _alarms() == {}
    assert client("cloudwatch").list_dashboards()["DashboardEntries"] == []


def test_monitor_an_endpoint_that_runs(aws, capsys):
    rc, _, err = cli(capsys, "monitor", "--endpoint", "whisper-rt", "--alarms", "--metrics-namespace", "Speech/ASR")
    assert rc == 0, err
    assert _alarms()["whisper-rt-queued-audio"]["Namespace"] == "Speech/ASR"
    assert client("cloudwatch").list_dashboards()["DashboardEntries"] == []  # --dashboard not asked
    rc, _, err = cli(capsys, "monitor", "--endpoint", "whisper-rt", "--dashboard")
    assert rc == 0, err
    assert [d["DashboardName"] for d in client("cloudwatch").list_dashboards()["DashboardEntries"]] == [
        "whisper-whisper-rt"]


def test_monitor_needs_something_to_make(capsys):
    rc, out, err = cli(capsys, "--dry-run", "monitor", "--endpoint", "asr")
    assert rc == 2 and out == "" and "--alarms and/or --dashboard" in err


def test_dry_run_prints_valid_requests_in_order(capsys):
    rc, out, err = cli(capsys, "--dry-run", "--region", "eu-west-1", "realtime", "--name", "asr", "--model", "m",
                       "--config-name", "asr-c", "--max-instances", "3", "--scale-on", "queued-audio", "--target",
                       "40", "--alarms", "--dashboard", "--alarm-sns-topic", "arn:aws:sns:eu-west-1:123456789012:ops",
                       executor=Executor(region="eu-west-1", dry_run=True))
    assert rc == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(l["service"], l["operation"]) for l in lines] == [
        ("sagemaker", "CreateEndpointConfig"), ("sagemaker", "CreateEndpoint"),
        ("application-autoscaling", "RegisterScalableTarget"), ("application-autoscaling", "PutScalingPolicy"),
        ("cloudwatch", "PutMetricAlarm"), ("cloudwatch", "PutMetricAlarm"), ("cloudwatch", "PutMetricAlarm"),
        ("cloudwatch", "PutDashboard")]
    assert [l["params"].get("AlarmName") for l in lines[4:7]] == ["asr-5xx-rate", "asr-p99-model-latency",
                                                                  "asr-queued-audio"]
    body = json.loads(lines[7]["params"]["DashboardBody"])
    assert {w["properties"]["region"] for w in body["widgets"]} == {"eu-west-1"}
    session = botocore.session.get_session()
    for line in lines:  # every printed request is one the real API accepts, field by field
        model = session.get_service_model(line["service"]).operation_model(line["operation"])
        validate_parameters(line["params"], model.input_shape)


def test_cleanup_deletes_only_the_alarms_that_exist(capsys):
    """Cleanup names only the alarms that exist (an unknown name once made DeleteAlarms delete none)."""
    cw = boto3.client("cloudwatch", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    aas = boto3.client("application-autoscaling", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    sm = boto3.client("sagemaker", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    names = ["asr-5xx-rate", "asr-p99-model-latency", "asr-queued-audio", "asr-backlog-age"]
    with Stubber(cw) as cw_stub, Stubber(aas) as aas_stub, Stubber(sm) as sm_stub:
        sm_stub.add_client_error("describe_endpoint", "ValidationException", 'Could not find endpoint "asr".')
        aas_stub.add_response("describe_scaling_policies", {"ScalingPolicies": []})
        aas_stub.add_response("deregister_scalable_target", {})
        cw_stub.add_response("delete_alarms", {}, {"AlarmNames": ["asr-HasBacklogWithoutCapacity"]})
        cw_stub.add_response("describe_alarms", {"MetricAlarms": [{"AlarmName": "asr-queued-audio"}]},
                             {"AlarmNames": names})
        cw_stub.add_response("delete_alarms", {}, {"AlarmNames": ["asr-queued-audio"]})
        cw_stub.add_client_error("delete_dashboards", "ResourceNotFound", "Dashboard whisper-asr does not exist",
                                 expected_params={"DashboardNames": ["whisper-asr"]})
        sm_stub.add_client_error("delete_endpoint", "ValidationException", 'Could not find endpoint "asr".')
        ex = Executor(region=REGION, clients={"cloudwatch": cw, "application-autoscaling": aas, "sagemaker": sm})
        rc, _, err = cli(capsys, "cleanup", "--endpoint", "asr", executor=ex)
        for stub in (cw_stub, aas_stub, sm_stub):
            stub.assert_no_pending_responses()
    assert rc == 0, err


@pytest.mark.parametrize("flags, message", [
    (("--alarms", "--alarm-sns-topic", "not-an-arn"), "--alarm-sns-topic must be an SNS topic ARN"),
    (("--alarms", "--alarm-5xx-percent", "0"), "Threshold must be greater than 0"),
    (("--alarms", "--alarm-queued-minutes", "0"), "EvaluationPeriods must be at least 1"),
    (("--dashboard", "--metrics-namespace", "a:b"), "without ':'"),
])
def test_bad_alarm_settings_are_refused_before_any_call(capsys, flags, message):
    rc, out, err = cli(capsys, "--dry-run", "realtime", "--name", "asr", "--model", "m", *flags)
    assert rc == 2, err
    assert out == ""
    assert message in err
